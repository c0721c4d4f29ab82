"""Volumes on this node's disk: each one an ext4 filesystem in a sparse image file, so its
size is a hard quota (a full volume answers ENOSPC to whoever writes, sandbox or content
API, and nothing else on the node fills up), loop-mounted while the node runs.

What users see of a volume is the `data` directory inside its filesystem (owned by the
sandbox user, uid 1000, as E2B's templates have it), so ext4's `lost+found` stays out of
sight."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from pathlib import Path

from ..commands import run

log = logging.getLogger(__name__)

# The owner of a new volume's top directory: E2B templates' `user`.
SANDBOX_UID = 1000
SANDBOX_GID = 1000
_VOLUME_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class VolumeError(RuntimeError):
    pass


class VolumeDisks:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = asyncio.Lock()  # mounts and unmounts one at a time

    def _image(self, volume_id: str) -> Path:
        if not _VOLUME_ID.match(volume_id):
            raise VolumeError(f"invalid volume id '{volume_id}'")
        return self.root / f"{volume_id}.ext4"

    def _mountpoint(self, volume_id: str) -> Path:
        return self.root / "mnt" / volume_id

    def data_dir(self, volume_id: str) -> Path:
        """Where the volume's files are on this host (what sandboxes mount)."""
        return self._mountpoint(volume_id) / "data"

    def holds(self, volume_id: str) -> bool:
        return self._image(volume_id).is_file()

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.ext4"))

    async def create(self, volume_id: str, size_mb: int) -> None:
        """A new, empty volume of `size_mb`, mounted; on failure nothing of it is left."""
        image = self._image(volume_id)
        async with self._lock:
            if await asyncio.to_thread(image.exists):
                raise VolumeError(f"volume '{volume_id}' already exists on this node")
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            work = image.with_suffix(".new")
            try:
                await asyncio.to_thread(_sparse_file, work, size_mb << 20)
                await run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", volume_id[:16], str(work))
                await asyncio.to_thread(work.rename, image)
                await self._mount(volume_id)
            except BaseException:
                await asyncio.to_thread(work.unlink, True)
                await self._unmount(volume_id)
                await asyncio.to_thread(image.unlink, True)
                raise

    async def ensure_mounted(self, volume_id: str) -> Path:
        """The volume's files, mounting it if it is not (after a host restart)."""
        if not await asyncio.to_thread(self.holds, volume_id):
            raise VolumeError(f"volume '{volume_id}' is not on this node")
        async with self._lock:
            await self._mount(volume_id)
        return self.data_dir(volume_id)

    async def mount_all(self) -> None:
        for volume_id in await asyncio.to_thread(self.ids):
            try:
                await self.ensure_mounted(volume_id)
            except Exception:
                log.exception("volume %s could not be mounted", volume_id)

    async def unmount_all(self) -> None:
        """Unmounts every volume (their images stay): when the node stops for good."""
        for volume_id in await asyncio.to_thread(self.ids):
            async with self._lock:
                try:
                    await self._unmount(volume_id)
                except Exception:
                    log.exception("volume %s could not be unmounted", volume_id)

    async def delete(self, volume_id: str) -> bool:
        """Unmounts and removes the volume; False if this node does not hold it."""
        image = self._image(volume_id)
        async with self._lock:
            if not await asyncio.to_thread(image.exists):
                return False
            await self._unmount(volume_id)
            await asyncio.to_thread(image.unlink, True)
            await asyncio.to_thread(shutil.rmtree, self._mountpoint(volume_id), True)
        return True

    async def _mount(self, volume_id: str) -> None:
        mountpoint = self._mountpoint(volume_id)
        if await asyncio.to_thread(os.path.ismount, mountpoint):
            return
        await asyncio.to_thread(mountpoint.mkdir, parents=True, exist_ok=True)
        await run("mount", "-o", "loop,nosuid,nodev", str(self._image(volume_id)), str(mountpoint))
        await asyncio.to_thread(_make_data_dir, self.data_dir(volume_id))

    async def _unmount(self, volume_id: str) -> None:
        mountpoint = self._mountpoint(volume_id)
        if await asyncio.to_thread(os.path.ismount, mountpoint):
            await run("umount", str(mountpoint))


def _sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _make_data_dir(path: Path) -> None:
    if path.is_dir():
        return
    path.mkdir(mode=0o755)
    os.chown(path, SANDBOX_UID, SANDBOX_GID)
