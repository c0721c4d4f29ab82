"""Build layers: a template assembled from its base and overlayfs upper directories the way
the kernel's overlay shows them (whiteouts, opaque directories, a symlink replaced by a
directory), hard-linked, and the build steps' cache keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from corral_libs.build_steps import InvalidStep, validate
from corral_libs.contracts.messages import BuildStep
from corral_services.nodeagent.builds.layers import LayerStore, flatten
from corral_services.nodeagent.builds.steps import StepState, chain_key, script_argv

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and opaque directories need root")


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


@root_only
def test_flatten_applies_layers_as_overlayfs_shows_them(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "keep").write_text("base")
    (base / "etc" / "gone").write_text("base")
    (base / "opt" / "old").mkdir(parents=True)
    (base / "opt" / "old" / "file").write_text("base")
    (base / "lib").symlink_to("usr/lib")
    (base / "usr" / "lib").mkdir(parents=True)

    first = tmp_path / "l1"
    (first / "etc").mkdir(parents=True)
    (first / "etc" / "keep").write_text("layer one")
    whiteout(first / "etc" / "gone")
    (first / "opt" / "old").mkdir(parents=True)
    os.setxattr(first / "opt" / "old", "trusted.overlay.opaque", b"y")
    (first / "opt" / "old" / "new").write_text("fresh")
    (first / "lib").mkdir()
    (first / "lib" / "real").write_text("not through the symlink")

    second = tmp_path / "l2"
    (second / "etc").mkdir(parents=True)
    (second / "etc" / "added").write_text("layer two")

    target = tmp_path / "rootfs"
    flatten(base, [first, second], target)
    assert (target / "etc" / "keep").read_text() == "layer one"
    assert not (target / "etc" / "gone").exists()
    assert (target / "etc" / "added").read_text() == "layer two"
    assert sorted(p.name for p in (target / "opt" / "old").iterdir()) == ["new"]
    assert not (target / "lib").is_symlink() and (target / "lib" / "real").is_file()
    assert not (base / "usr" / "lib" / "real").exists()
    # Files are shared with the base and the layers, never copied or changed.
    assert (target / "etc" / "added").stat().st_ino == (second / "etc" / "added").stat().st_ino
    assert (base / "etc" / "keep").read_text() == "base" and (base / "etc" / "gone").exists()


def test_layer_store_keys_name_the_latest_layer(tmp_path: Path) -> None:
    store = LayerStore(tmp_path)
    first_id, work = store.new_work()
    (work / "upper" / "f").write_text("1")
    store.commit("k", first_id, work)
    assert store.cached("k") == first_id
    second_id, work = store.new_work()
    store.commit("k", second_id, work)  # a forced step replaces what the key names
    assert store.cached("k") == second_id
    assert store.collect(older_than_s=3600) == 1  # the replaced layer
    assert store.cached("k") == second_id and not store.upper(first_id).exists()


def test_cache_keys_follow_every_input() -> None:
    state = StepState(user="user", workdir="/home/user")
    run = BuildStep(type="RUN", args=["make"])
    key = chain_key("parent", run, state)
    assert key == chain_key("parent", run, state)
    assert key != chain_key("other-parent", run, state)
    assert key != chain_key("parent", BuildStep(type="RUN", args=["make all"]), state)
    assert key != chain_key("parent", run, StepState(user="root", workdir="/home/user"))
    assert key != chain_key("parent", run, StepState(user="user", workdir="/home/user", env={"A": "1"}))


def test_state_and_arguments_never_spliced_into_scripts() -> None:
    state = StepState(user="user", workdir="/home/user")
    state = state.after(BuildStep(type="WORKDIR", args=["app"]))
    state = state.after(BuildStep(type="ENV", args=["A", "1", "B", "two words"]))
    assert state.workdir == "/home/user/app" and state.env == {"A": "1", "B": "two words"}
    argv = script_argv(BuildStep(type="RUN", args=["echo '$(x)'; rm -rf /", "root"]), state)
    assert argv[4:] == ["root", "/home/user/app", "echo '$(x)'; rm -rf /"]
    assert "rm -rf" not in argv[2]


def test_invalid_steps_name_the_step() -> None:
    with pytest.raises(InvalidStep, match="step 2: invalid user"):
        validate([BuildStep(type="ENV", args=["A", "1"]), BuildStep(type="USER", args=["no body"])])
    with pytest.raises(InvalidStep, match="step 1: invalid environment variable name"):
        validate([BuildStep(type="ENV", args=["1A", "x"])])
    with pytest.raises(InvalidStep, match="invalid mode"):
        validate([BuildStep(type="COPY", args=["a", "/b", "", "999"], files_hash="f" * 64)])
    validate([BuildStep(type="COPY", args=["a/*.txt", "/b/", "user:user", "0644"], files_hash="f" * 64)])
