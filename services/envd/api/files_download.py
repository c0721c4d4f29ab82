"""`GET /files`: a file's bytes, streamed until EOF (procfs files report size 0, so the
size is never trusted), gzip-compressed only for a client that asks for gzip alone."""

from __future__ import annotations

import asyncio
import os
import stat
import zlib
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import HTTPFailure
from ..state import EnvdState
from ..users import User, can_access
from .files_access import authorize_file_request

CHUNK = 1 << 20


def _wants_only_gzip(accept_encoding: str) -> bool:
    # httpx sends "gzip, deflate" on every request, where identity is faster end to end;
    # the SDK's `gzip=True` sends exactly "gzip".
    codings = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",") if part.strip()}
    return codings == {"gzip"}


async def _read_chunks(fd: int, compress: bool) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if compress else None
    try:
        while True:
            chunk = await asyncio.to_thread(os.read, fd, CHUNK)
            if not chunk:
                break
            if compressor is None:
                yield chunk
            else:
                out = compressor.compress(chunk)
                if out:
                    yield out
        if compressor is not None:
            yield compressor.flush()
    finally:
        os.close(fd)


def _disposition(name: str) -> str:
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return f'inline; filename="{name}"'
    return f"inline; filename*=UTF-8''{quote(name)}"


def _open_for_read(path: str, user: User) -> int:
    if not can_access(path, user, os.R_OK):
        raise HTTPFailure(403, f"permission denied: '{path}'")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HTTPFailure(404, f"path '{path}' does not exist") from None
    except OSError as exc:
        raise HTTPFailure(400, f"cannot open '{path}': {exc.strerror}") from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise HTTPFailure(400, f"path '{path}' is a directory")
    return fd


class DownloadEndpoint:
    def __init__(self, state: EnvdState) -> None:
        self._state = state

    async def handle(self, request: Request) -> Response:
        access = authorize_file_request(request, self._state, "read")
        path = access.path or ""
        if not path:
            raise HTTPFailure(400, "path is required")
        fd = await asyncio.to_thread(_open_for_read, path, access.user)
        compress = _wants_only_gzip(request.headers.get("accept-encoding", ""))
        name = os.path.basename(path)
        headers = {
            "Content-Disposition": _disposition(name),
            "Vary": "Accept-Encoding",
        }
        if compress:
            headers["Content-Encoding"] = "gzip"
        return StreamingResponse(
            _read_chunks(fd, compress), media_type="application/octet-stream", headers=headers
        )
