"""Build layers: each file-changing step's result is the upper directory of a kernel
overlayfs mounted over the template it builds on and the layers before it. A layer is kept
under the cache key of its inputs (`steps.chain_key`), so a rebuild reuses every step
before the first that changed; the finished template is the base's root with the layers
applied, hard-linked (layers and templates never change once written)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

# Overlay features that would leave metadata in the upper directory (redirects, metacopy)
# instead of plain files: off, so a layer is just files and whiteouts.
_OVERLAY_OPTIONS = "redirect_dir=off,index=off,metacopy=off,xino=off"
# The kernel takes mount options up to a page.
_MAX_OPTIONS = 4000


class LayerError(RuntimeError):
    pass


class LayerStore:
    """`<root>/<layer id>/upper` and `<root>/keys/<cache key>` -> layer id. On the template
    store's filesystem (hard links)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._keys = root / "keys"

    def upper(self, layer_id: str) -> Path:
        return self.root / layer_id / "upper"

    def cached(self, key: str) -> str | None:
        """The layer stored under `key`, if it is still there."""
        try:
            layer_id = (self._keys / key).read_text().strip()
        except OSError:
            return None
        return layer_id if self.upper(layer_id).is_dir() else None

    def new_work(self, scratch: Path | None = None) -> tuple[str, Path]:
        """A fresh layer id and its work directory (upper, work, merged), in `scratch` (the
        build's own size-limited disk) or next to the layers."""
        layer_id = uuid.uuid4().hex[:16]
        work = (scratch or self.root) / f".work-{layer_id}"
        for name in ("upper", "work", "merged"):
            (work / name).mkdir(parents=True)
        return layer_id, work

    def commit(self, key: str, layer_id: str, work: Path) -> None:
        """Keeps the work directory's upper as layer `layer_id` under `key` (replacing what
        `key` named: a forced step)."""
        target = self.root / layer_id
        target.mkdir(parents=True)
        if os.stat(work).st_dev == os.stat(self.root).st_dev:
            os.rename(work / "upper", target / "upper")
        else:  # from the build's disk: a copy with everything overlayfs keeps (xattrs, whiteouts)
            result = subprocess.run(
                ["cp", "-a", str(work / "upper"), str(target / "upper")], capture_output=True
            )
            if result.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise LayerError(
                    f"keeping the layer failed: {result.stderr.decode(errors='replace').strip()}"
                )
        self._keys.mkdir(exist_ok=True)
        tmp = self._keys / f".{key}.{layer_id}"
        tmp.write_text(layer_id)
        os.rename(tmp, self._keys / key)
        os.utime(target)

    def discard(self, work: Path) -> None:
        unmount(work / "merged")
        shutil.rmtree(work, ignore_errors=True)

    def collect(self, older_than_s: float) -> int:
        """Deletes layers not used for `older_than_s` and work directories left by crashed
        builds; how many went."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        named = set()
        for entry in self._keys.iterdir() if self._keys.is_dir() else []:
            with contextlib.suppress(OSError):
                named.add(entry.read_text().strip())
        removed = 0
        for entry in self.root.iterdir():
            if entry.name == "keys":
                continue
            if entry.name.startswith(".work-"):
                unmount(entry / "merged")
                shutil.rmtree(entry, ignore_errors=True)
                continue
            if entry.stat().st_mtime < cutoff or entry.name not in named:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        for entry in self._keys.iterdir() if self._keys.is_dir() else []:
            with contextlib.suppress(OSError):
                if not self.upper(entry.read_text().strip()).is_dir():
                    entry.unlink()
        return removed

    def touch(self, layer_id: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.root / layer_id)


def mount(work: Path, lowers: list[Path]) -> Path:
    """Mounts the overlay of `lowers` (top first) with `work`'s upper on `work/merged`."""
    lowerdir = ":".join(str(p) for p in lowers)
    options = f"lowerdir={lowerdir},upperdir={work / 'upper'},workdir={work / 'work'},{_OVERLAY_OPTIONS}"
    if len(options) > _MAX_OPTIONS:
        raise LayerError(f"too many layers ({len(lowers) - 1}) for one overlay mount")
    merged = work / "merged"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise LayerError(f"mounting the build's overlay failed: {result.stderr.strip()}")
    return merged


def unmount(merged: Path) -> None:
    if os.path.ismount(merged):
        subprocess.run(["umount", "-l", str(merged)], capture_output=True)


def flatten(base_rootfs: Path, uppers: list[Path], target: Path) -> None:
    """`target` = `base_rootfs` with `uppers` (oldest first) applied as overlayfs would show
    them, every file hard-linked, nothing followed out of `target`."""
    result = subprocess.run(["cp", "-al", str(base_rootfs), str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        raise LayerError(f"linking the base template's files failed: {result.stderr.strip()}")
    for upper in uppers:
        _apply(str(upper), str(target))


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _entries(directory: str) -> Iterator[os.DirEntry[str]]:
    with os.scandir(directory) as found:
        yield from found


def _apply(upper: str, target: str) -> None:
    """One layer onto `target`, a real directory (never a symlink: each level is checked
    before it is entered)."""
    for entry in _entries(upper):
        source = entry.path
        dest = os.path.join(target, entry.name)
        st = entry.stat(follow_symlinks=False)
        if _is_whiteout(st):
            _remove(dest)
            continue
        if stat.S_ISDIR(st.st_mode):
            existing = os.lstat(dest) if os.path.lexists(dest) else None
            if existing is None or not stat.S_ISDIR(existing.st_mode) or _is_opaque(source):
                _remove(dest)
                os.mkdir(dest)
            _apply(source, dest)
            os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
            os.chmod(dest, stat.S_IMODE(st.st_mode))
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            continue
        _remove(dest)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), dest)
            os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
        elif stat.S_ISREG(st.st_mode):
            try:
                os.link(source, dest, follow_symlinks=False)
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    raise
                shutil.copy2(source, dest, follow_symlinks=False)
                os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
        else:
            os.mknod(dest, st.st_mode, st.st_rdev)
            os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
