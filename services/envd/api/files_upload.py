"""`POST /files`: multipart (one part per file, the part's filename naming its path) or a
raw octet-stream body (optionally gzip), written straight to the target as it streams.

Writes go anywhere, as with E2B's envd (root): missing parent directories are made (0755,
owned by the requesting user, only those made), and the file is written and then owned by
that user. The sandbox user has passwordless sudo, so this opens nothing sudo does not.
An upload that cannot fit is refused before anything is written; one that runs out of space
midway leaves no partial file."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import zlib
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import HTTPFailure
from ..filesystem.entry import METADATA_XATTR_PREFIX
from ..multipart_stream import MultipartError, PartEnd, PartStart, iter_multipart, multipart_boundary
from ..state import EnvdState
from ..users import User, make_dirs_as, nearest_existing, resolve_path
from .files_access import authorize_file_request

FLUSH_AT = 1 << 20
METADATA_HEADER = "x-metadata-"
METADATA_MAX_TOTAL = 4096
METADATA_MAX_KEY = 246


def _failure_for(exc: OSError, path: str) -> HTTPFailure:
    if exc.errno == errno.ENOSPC:
        return HTTPFailure(507, f"not enough disk space to write '{path}'")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return HTTPFailure(403, f"permission denied: '{path}'")
    if exc.errno in (errno.EISDIR, errno.ENOTDIR):
        return HTTPFailure(400, f"cannot write '{path}': {exc.strerror}")
    return HTTPFailure(500, f"cannot write '{path}': {exc.strerror or exc}")


def parse_metadata(request: Request) -> dict[str, str] | None:
    metadata: dict[str, str] = {}
    for name, value in request.headers.items():
        if name.startswith(METADATA_HEADER):
            key = name[len(METADATA_HEADER) :].lower()
            if not key or len(key) > METADATA_MAX_KEY or not (key.isascii() and key.isprintable()):
                raise HTTPFailure(400, f"invalid metadata key: '{key}'")
            metadata[key] = value
    if sum(len(k) + len(v) for k, v in metadata.items()) > METADATA_MAX_TOTAL:
        raise HTTPFailure(400, f"metadata is larger than {METADATA_MAX_TOTAL} bytes")
    return metadata or None


def check_space(path: str, size: int | None) -> None:
    """507 when `size` bytes cannot fit where `path` is to be written (before any write)."""
    if not size:
        return
    try:
        st = os.statvfs(nearest_existing(os.path.dirname(path)))
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise HTTPFailure(507, f"not enough disk space to write '{path}': {size} bytes, {free} free")


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length", "")
    return int(raw) if raw.isdigit() else None


class FileSink:
    """One file being written: opened (parents made, owned by the user) and fed chunks,
    flushed to disk off the event loop in batches; removed again if the write fails."""

    def __init__(self, path: str, user: User) -> None:
        self.path = path
        self._user = user
        self._fd = -1
        self._buffer = bytearray()
        self._done = False

    async def open(self) -> None:
        try:
            self._fd = await asyncio.to_thread(self._open)
        except OSError as exc:
            raise _failure_for(exc, self.path) from None

    def _open(self) -> int:
        if os.path.isdir(self.path):
            raise HTTPFailure(400, f"path '{self.path}' is a directory")
        make_dirs_as(os.path.dirname(self.path), self._user)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.fchown(fd, self._user.uid, self._user.gid)
        return fd

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= FLUSH_AT:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            await asyncio.to_thread(_write_all, self._fd, data)
        except OSError as exc:
            raise _failure_for(exc, self.path) from None

    async def close(self, metadata: dict[str, str] | None) -> None:
        try:
            await self._flush()
            await asyncio.to_thread(_replace_metadata, self._fd, metadata or {}, self.path)
            self._done = True
        finally:
            self.abort()

    def abort(self) -> None:
        """Closes the file; unless it was written whole, removes what there is of it."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if not self._done:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _replace_metadata(fd: int, metadata: dict[str, str], path: str) -> None:
    """The file's metadata becomes exactly `metadata`: an overwrite leaves none of the old.
    (A filesystem without extended attributes holds none to clear.)"""
    try:
        stale = [name for name in os.listxattr(fd) if name.startswith(METADATA_XATTR_PREFIX)]
    except OSError as exc:
        if not metadata and exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise HTTPFailure(400, f"cannot store metadata on '{path}': {exc.strerror}") from None
    try:
        for name in stale:
            os.removexattr(fd, name)
        for key, value in metadata.items():
            os.setxattr(fd, METADATA_XATTR_PREFIX + key, value.encode())
    except OSError as exc:
        raise HTTPFailure(400, f"cannot store metadata on '{path}': {exc.strerror}") from None


def _written(path: str, metadata: dict[str, str] | None) -> dict[str, object]:
    entry: dict[str, object] = {"path": path, "name": os.path.basename(path), "type": "file"}
    if metadata is not None:
        entry["metadata"] = metadata
    return entry


async def _gunzip(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    inflater = zlib.decompressobj(31)
    try:
        async for chunk in body:
            out = inflater.decompress(chunk)
            if out:
                yield out
        tail = inflater.flush()
    except zlib.error as exc:
        raise HTTPFailure(400, f"invalid gzip body: {exc}") from None
    if tail:
        yield tail


class UploadEndpoint:
    def __init__(self, state: EnvdState) -> None:
        self._state = state

    async def handle(self, request: Request) -> Response:
        access = authorize_file_request(request, self._state, "write")
        metadata = parse_metadata(request)
        content_type = request.headers.get("content-type", "")
        boundary = multipart_boundary(content_type)
        if boundary is not None:
            written = await self._multipart(request, boundary, access.user, access.path, metadata)
        elif content_type.split(";")[0].strip().lower() == "application/octet-stream":
            if access.path is None:
                raise HTTPFailure(400, "the path parameter is required for octet-stream uploads")
            written = [await self._octet_stream(request, access.user, access.path, metadata)]
        else:
            raise HTTPFailure(400, f"unsupported content type '{content_type}'")
        if not written:
            raise HTTPFailure(400, "no file part in the upload (expected form field 'file')")
        return JSONResponse([_written(path, metadata) for path in written])

    async def _octet_stream(
        self, request: Request, user: User, path: str, metadata: dict[str, str] | None
    ) -> str:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            raise HTTPFailure(400, f"unsupported content encoding '{encoding}'")
        body = request.stream()
        if encoding == "gzip":
            body = _gunzip(body)
        else:
            check_space(path, _content_length(request))
        sink = FileSink(path, user)
        await sink.open()
        try:
            async for chunk in body:
                await sink.write(chunk)
        except BaseException:
            sink.abort()
            raise
        await sink.close(metadata)
        return path

    async def _multipart(
        self, request: Request, boundary: bytes, user: User, path: str | None, metadata: dict[str, str] | None
    ) -> list[str]:
        identity = self._state.identity
        written: list[str] = []
        sink: FileSink | None = None
        skipping = False
        try:
            async for item in iter_multipart(request.stream(), boundary):
                if isinstance(item, PartStart):
                    skipping = item.field != "file"
                    if skipping:
                        continue
                    target = path or resolve_path(item.filename or "", user, identity.default_workdir)
                    if target in written:
                        raise HTTPFailure(400, f"path '{target}' is given more than once in one upload")
                    if not written:  # the whole body bounds what is left to write
                        check_space(target, _content_length(request))
                    sink = FileSink(target, user)
                    await sink.open()
                elif isinstance(item, PartEnd):
                    if sink is not None:
                        current, sink = sink, None
                        await current.close(metadata)
                        written.append(current.path)
                elif sink is not None and not skipping:
                    await sink.write(item)
        except MultipartError as exc:
            raise HTTPFailure(400, str(exc)) from None
        finally:
            if sink is not None:
                sink.abort()
        return written
