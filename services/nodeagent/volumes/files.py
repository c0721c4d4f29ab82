"""File operations inside one volume, safe against what sandboxes leave in it.

Sandboxes write volumes too, symlinks included: a path the content API is given is resolved
on this host, where a link to `/etc/shadow` would lead out of the volume. So every path is
resolved without following the last component, every file is opened without following it
(`O_NOFOLLOW`), and what was opened is checked to lie inside the volume (by the kernel's own
name for the descriptor) before anything is read or written."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO


class VolumePathError(Exception):
    """A request about a path the volume cannot satisfy, with the HTTP status it answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Entry:
    """One file, directory or symlink, in the shape E2B's VolumeEntryStat has."""

    name: str
    type: str
    path: str
    size: int
    mode: int
    uid: int
    gid: int
    atime: str
    mtime: str
    ctime: str
    target: str | None = None

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "name": self.name,
            "type": self.type,
            "path": self.path,
            "size": self.size,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "atime": self.atime,
            "mtime": self.mtime,
            "ctime": self.ctime,
        }
        if self.target is not None:
            body["target"] = self.target
        return body


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "unknown"


class VolumeFiles:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    # Paths

    def host_path(self, path: str) -> Path:
        """Where the volume path `path` (absolute within the volume, or relative to its top)
        is on this host; the parents must not lead outside the volume."""
        if "\x00" in path:
            raise VolumePathError(400, "path contains a NUL byte")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise VolumePathError(400, f"path '{path}' must not contain '..'")
        if not parts:
            return self.root
        host = self.root.joinpath(*parts)
        parent = host.parent.resolve()
        if parent != self.root and self.root not in parent.parents:
            raise VolumePathError(404, f"path '{path}' not found")  # leads out through a symlink
        return parent / host.name

    def volume_path(self, host: Path) -> str:
        return "/" + str(host.relative_to(self.root)) if host != self.root else "/"

    def _inside(self, fd: int) -> None:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if opened != self.root and self.root not in opened.parents:
            raise VolumePathError(404, "path not found")

    # Queries

    def entry(self, host: Path) -> Entry:
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            raise VolumePathError(404, f"path '{self.volume_path(host)}' not found") from None
        target = os.readlink(host) if stat.S_ISLNK(st.st_mode) else None
        return Entry(
            name=host.name if host != self.root else "",
            type=_kind(st.st_mode),
            path=self.volume_path(host),
            size=st.st_size,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            atime=_iso(st.st_atime),
            mtime=_iso(st.st_mtime),
            ctime=_iso(st.st_ctime),
            target=target,
        )

    def list_dir(self, host: Path, depth: int) -> list[Entry]:
        top = self.entry(host)
        if top.type != "directory":
            raise VolumePathError(400, f"path '{top.path}' is not a directory")
        entries: list[Entry] = []
        self._walk(host, max(depth, 1), entries)
        return entries

    def _walk(self, directory: Path, depth: int, into: list[Entry]) -> None:
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            path = self.volume_path(directory)
            raise VolumePathError(400, f"cannot list '{path}': {exc.strerror}") from None
        for name in names:
            entry = self.entry(directory / name)
            into.append(entry)
            if entry.type == "directory" and depth > 1:
                self._walk(directory / name, depth - 1, into)

    # Changes

    def make_dir(
        self, host: Path, *, parents: bool, uid: int | None, gid: int | None, mode: int | None
    ) -> Entry:
        if host.exists() or host.is_symlink():
            if parents and host.is_dir() and not host.is_symlink():
                return self.entry(host)
            raise VolumePathError(409, f"path '{self.volume_path(host)}' already exists")
        missing: list[Path] = []
        cursor = host
        while not cursor.exists():
            missing.append(cursor)
            cursor = cursor.parent
        if len(missing) > 1 and not parents:
            raise VolumePathError(404, f"parent of '{self.volume_path(host)}' not found (force creates it)")
        if not cursor.is_dir():
            raise VolumePathError(400, f"'{self.volume_path(cursor)}' is not a directory")
        for directory in reversed(missing):
            self._guard(directory.parent)
            owner = os.stat(directory.parent)
            try:
                os.mkdir(directory, 0o755 if mode is None else mode & 0o7777)
            except OSError as exc:
                raise _os_error(exc, self.volume_path(directory)) from None
            os.chown(
                directory,
                owner.st_uid if uid is None else uid,
                owner.st_gid if gid is None else gid,
                follow_symlinks=False,
            )
            if mode is not None:
                os.chmod(directory, mode & 0o7777)
        return self.entry(host)

    def open_for_read(self, host: Path) -> IO[bytes]:
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise VolumePathError(404, f"path '{self.volume_path(host)}' not found") from None
        except OSError as exc:
            raise _os_error(exc, self.volume_path(host)) from None
        try:
            self._inside(fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise VolumePathError(400, f"path '{self.volume_path(host)}' is not a file")
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    def begin_write(self, host: Path) -> tuple[IO[bytes], Path]:
        """A new file next to `host` to write into (renamed over it by `finish_write`);
        missing parent directories are made."""
        if host == self.root:
            raise VolumePathError(400, "cannot write to the volume's top directory")
        if host.is_dir() and not host.is_symlink():
            raise VolumePathError(400, f"path '{self.volume_path(host)}' is a directory")
        if not host.parent.exists():
            self.make_dir(host.parent, parents=True, uid=None, gid=None, mode=None)
        self._guard(host.parent)
        work = host.parent / f".{host.name}.upload-{os.getpid()}-{id(host)}"
        try:
            fd = os.open(work, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _os_error(exc, self.volume_path(host)) from None
        return os.fdopen(fd, "wb"), work

    def finish_write(
        self, work: Path, host: Path, *, uid: int | None, gid: int | None, mode: int | None
    ) -> Entry:
        owner = os.stat(host.parent)
        os.chown(work, owner.st_uid if uid is None else uid, owner.st_gid if gid is None else gid)
        os.chmod(work, 0o644 if mode is None else mode & 0o7777)
        os.replace(work, host)
        return self.entry(host)

    def update(self, host: Path, *, uid: int | None, gid: int | None, mode: int | None) -> Entry:
        entry = self.entry(host)
        self._guard(host.parent)
        if uid is not None or gid is not None:
            os.chown(host, -1 if uid is None else uid, -1 if gid is None else gid, follow_symlinks=False)
        if mode is not None:
            if entry.type == "symlink":
                raise VolumePathError(400, f"'{entry.path}' is a symlink: its mode cannot change")
            os.chmod(host, mode & 0o7777, follow_symlinks=False)
        return self.entry(host)

    def remove(self, host: Path) -> None:
        if host == self.root:
            raise VolumePathError(400, "cannot remove the volume's top directory")
        entry = self.entry(host)
        self._guard(host.parent)
        if entry.type == "directory":
            shutil.rmtree(host)
        else:
            os.unlink(host)

    def _guard(self, directory: Path) -> None:
        """`directory` really is inside the volume now (no symlink swapped in meanwhile)."""
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._inside(fd)
        finally:
            os.close(fd)


def _os_error(exc: OSError, path: str) -> VolumePathError:
    if exc.errno == errno.ENOSPC:
        return VolumePathError(507, f"the volume is full (writing '{path}')")
    if exc.errno == errno.ELOOP:  # the last component is a symlink, not followed
        return VolumePathError(400, f"path '{path}' is a symlink")
    return VolumePathError(400, f"'{path}': {exc.strerror}")


def read_chunks(f: IO[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    with f:
        while chunk := f.read(size):
            yield chunk
