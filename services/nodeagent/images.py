"""Checkpoint images on this node: paused sandboxes (`<data_dir>/paused/<sandbox id>`) and
persistent snapshots (`<data_dir>/snapshots/<image id>`).

Each image records the template build it was taken on (`image.json`): restoring needs that
build's root filesystem, so a template rebuild keeps old builds that images still use.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import msgspec

from .runtime.base import CHECKPOINT_FILE, FILES_CHECKPOINT_FILE

META_FILE = "image.json"
WORK_PREFIX = "."


class ImageMeta(msgspec.Struct, frozen=True):
    template_id: str
    build_id: str
    taken_at: float


class ImageStore:
    def __init__(self, data_dir: Path) -> None:
        self._paused = data_dir / "paused"
        self._snapshots = data_dir / "snapshots"

    def paused(self, sandbox_id: str) -> Path:
        return self._paused / sandbox_id

    def snapshot(self, image_id: str) -> Path:
        return self._snapshots / image_id

    @staticmethod
    def begin(image: Path, sandbox_id: str, template_id: str, build_id: str) -> Path:
        """The directory an image of `sandbox_id` is written in before it is renamed into
        place, made and described: a crash mid-write leaves no half image under the real
        name, and the next agent can tell whose save it was (`interrupted`)."""
        work = image.with_name(f"{WORK_PREFIX}{image.name}-{sandbox_id}-{time.time_ns()}")
        work.mkdir(parents=True)
        meta = ImageMeta(template_id=template_id, build_id=build_id, taken_at=time.time())
        (work / META_FILE).write_bytes(msgspec.json.encode(meta))
        return work

    def interrupted(self, sandbox_id: str) -> list[Path]:
        """Unfinished images of a sandbox (pauses or snapshots cut short by a crash), newest first."""
        found = [
            entry
            for root in (self._paused, self._snapshots)
            if root.is_dir()
            for entry in root.iterdir()
            if entry.name.startswith(WORK_PREFIX) and entry.name.split("-")[1:2] == [sandbox_id]
        ]
        return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True)

    @staticmethod
    def holds_checkpoint(image: Path) -> bool:
        checkpoint = image / CHECKPOINT_FILE
        return (checkpoint.is_file() and checkpoint.stat().st_size > 0) or ImageStore.files_only(image)

    @staticmethod
    def files_only(image: Path) -> bool:
        """A filesystem-only image: what it starts boots fresh on its files."""
        return (image / FILES_CHECKPOINT_FILE).is_file()

    @staticmethod
    def meta(image: Path) -> ImageMeta | None:
        try:
            return msgspec.json.decode((image / META_FILE).read_bytes(), type=ImageMeta)
        except (OSError, msgspec.DecodeError):
            return None

    @staticmethod
    def size(image: Path) -> int:
        return sum(p.stat().st_size for p in image.iterdir() if p.is_file())

    def snapshot_ids(self) -> list[str]:
        return _names(self._snapshots)

    def builds_in_use(self) -> set[str]:
        images = [self._paused / n for n in _names(self._paused)]
        images += [self._snapshots / n for n in _names(self._snapshots)]
        return {meta.build_id for meta in map(self.meta, images) if meta is not None}

    def collect_work_dirs(self, older_than_s: float) -> None:
        """Removes the half-written images of pauses and snapshots a crash interrupted."""
        cutoff = time.time() - older_than_s
        for root in (self._paused, self._snapshots):
            if not root.is_dir():
                continue
            for entry in root.iterdir():
                if entry.name.startswith(WORK_PREFIX) and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)


def _names(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(WORK_PREFIX))
