"""A template build's root filesystem as the ext4 image every microVM of it boots from
(`<build>/rootfs.ext4`), made from the build's `rootfs/` the first time it is needed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ...commands import run

ROOT_IMAGE = "rootfs.ext4"
# Room for what the template's packages hold plus what the guest writes before the
# sandbox's own layer takes over (the image is sparse: free space costs nothing).
MIN_FREE_MB = 512

_locks: dict[Path, asyncio.Lock] = {}


async def ensure_root_image(build_dir: Path, rootfs: Path, disk_mb: int) -> Path:
    image = build_dir / ROOT_IMAGE
    async with _locks.setdefault(build_dir, asyncio.Lock()):
        if await asyncio.to_thread(image.is_file):
            return image
        used_mb = int((await run("du", "-sm", "--apparent-size", str(rootfs))).split()[0])
        size_mb = max(disk_mb, used_mb + MIN_FREE_MB)
        partial = build_dir / f".{ROOT_IMAGE}.{os.getpid()}"
        try:
            await run(
                "mkfs.ext4", "-q", "-F", "-L", "corral-root", "-E", "root_owner=0:0",
                "-d", str(rootfs), str(partial), f"{size_mb}M", timeout_s=600,
            )  # fmt: skip
            await asyncio.to_thread(os.rename, partial, image)
        finally:
            await asyncio.to_thread(partial.unlink, True)
    return image
