"""Snapshot names (what `create_snapshot(name=...)` turns into) and the node's image store
(unfinished images a crashed agent leaves, and which template builds images still need)."""

from __future__ import annotations

import pytest

from corral_services.nodeagent.images import ImageStore
from corral_services.scheduler.refused import Refused
from corral_services.scheduler.sources import snapshot_name


def test_snapshot_names():
    assert snapshot_name("my-snap") == "my-snap:default"
    assert snapshot_name("team/my-snap:v1") == "team/my-snap:v1"
    generated = snapshot_name(None)
    assert generated.endswith(":default") and len(generated) > len(":default")
    assert snapshot_name(None) != generated
    for bad in ("Bad Name", "-dash-first", "a/b/c", "x:", "a" * 200):
        with pytest.raises(Refused) as refused:
            snapshot_name(bad)
        assert refused.value.failure.status == 400


def test_unfinished_images_are_found_by_sandbox(tmp_path):
    images = ImageStore(tmp_path)
    first = images.begin(images.paused("sbxone"), "sbxone", "base", "build1")
    second = images.begin(images.snapshot("imgtwo"), "sbxone", "base", "build2")
    images.begin(images.paused("sbxother"), "sbxother", "base", "build3")
    assert images.interrupted("sbxone") == [second, first]  # newest first
    assert not images.holds_checkpoint(first)
    (first / "checkpoint.img").write_bytes(b"state")
    assert images.holds_checkpoint(first)

    # Unfinished images are no images yet: only finished ones keep their builds.
    assert images.builds_in_use() == set()
    first.rename(images.paused("sbxone"))
    assert images.builds_in_use() == {"build1"}
    assert images.snapshot_ids() == []
    images.collect_work_dirs(older_than_s=-1)
    assert images.interrupted("sbxone") == [] and images.interrupted("sbxother") == []
    assert images.paused("sbxone").is_dir()
