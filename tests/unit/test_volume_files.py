"""File operations inside a volume (the content API's): E2B's shapes, and no way out of
the volume through `..` or through symlinks a sandbox left in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral_services.nodeagent.volumes.files import VolumeFiles, VolumePathError


@pytest.fixture
def files(tmp_path: Path) -> VolumeFiles:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret").write_text("host only")
    return VolumeFiles(root)


def write(files: VolumeFiles, path: str, data: bytes, **meta: int | None) -> dict[str, object]:
    host = files.host_path(path)
    f, work = files.begin_write(host)
    with f:
        f.write(data)
    entry = files.finish_write(work, host, uid=meta.get("uid"), gid=meta.get("gid"), mode=meta.get("mode"))
    return entry.body()


def read(files: VolumeFiles, path: str) -> bytes:
    with files.open_for_read(files.host_path(path)) as f:
        return f.read()


def test_write_read_stat_list(files: VolumeFiles):
    body = write(files, "/a/b/c.txt", b"hello", mode=0o600)
    assert body["path"] == "/a/b/c.txt" and body["name"] == "c.txt"
    assert body["type"] == "file" and body["size"] == 5 and body["mode"] == 0o600
    assert str(body["mtime"]).endswith("Z")
    assert read(files, "a/b/c.txt") == b"hello"
    assert [e.path for e in files.list_dir(files.host_path("/"), 1)] == ["/a"]
    assert [e.path for e in files.list_dir(files.host_path("/"), 3)] == ["/a", "/a/b", "/a/b/c.txt"]
    write(files, "/a/b/c.txt", b"again")  # overwrites
    assert read(files, "/a/b/c.txt") == b"again"
    assert not [p for p in os.listdir(files.root / "a" / "b") if p.startswith(".")]  # no upload left


def test_make_dir_needs_force_for_parents_and_refuses_existing(files: VolumeFiles):
    with pytest.raises(VolumePathError) as missing:
        files.make_dir(files.host_path("/x/y"), parents=False, uid=None, gid=None, mode=None)
    assert missing.value.status == 404
    entry = files.make_dir(files.host_path("/x/y"), parents=True, uid=1234, gid=1234, mode=0o700)
    assert (entry.type, entry.uid, entry.mode) == ("directory", 1234, 0o700)
    with pytest.raises(VolumePathError) as exists:
        files.make_dir(files.host_path("/x/y"), parents=False, uid=None, gid=None, mode=None)
    assert exists.value.status == 409
    files.make_dir(files.host_path("/x/y"), parents=True, uid=None, gid=None, mode=None)  # fine


def test_update_and_remove(files: VolumeFiles):
    write(files, "/d/f", b"x")
    entry = files.update(files.host_path("/d/f"), uid=4321, gid=None, mode=0o640)
    assert (entry.uid, entry.mode) == (4321, 0o640)
    files.remove(files.host_path("/d"))
    with pytest.raises(VolumePathError) as gone:
        files.entry(files.host_path("/d"))
    assert gone.value.status == 404
    with pytest.raises(VolumePathError):
        files.remove(files.host_path("/"))


def test_no_way_out(files: VolumeFiles):
    with pytest.raises(VolumePathError) as dotdot:
        files.host_path("/../secret")
    assert dotdot.value.status == 400
    # What a sandbox can leave behind: links to the host's files and directories.
    os.symlink(files.root.parent / "secret", files.root / "link")
    os.symlink(files.root.parent, files.root / "dirlink")
    entry = files.entry(files.host_path("/link"))
    assert entry.type == "symlink" and entry.target == str(files.root.parent / "secret")
    with pytest.raises(VolumePathError):
        read(files, "/link")
    with pytest.raises(VolumePathError):
        read(files, "/dirlink/secret")
    with pytest.raises(VolumePathError):
        write(files, "/dirlink/new", b"x")
    with pytest.raises(VolumePathError):
        files.list_dir(files.host_path("/dirlink"), 1)
    assert not (files.root.parent / "new").exists()
    assert (files.root.parent / "secret").read_text() == "host only"
