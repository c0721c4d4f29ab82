"""E2B's volume content API (`/volumecontent/{volumeID}/…`) for the volumes this node holds.
The API forwards the SDK's requests here unchanged; each one carries the volume's token
(`Authorization: Bearer`), checked against the volume's record."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from corral_libs.state import Store

from .disks import VolumeDisks, VolumeError
from .files import VolumeFiles, VolumePathError, read_chunks

log = logging.getLogger(__name__)

MAX_DEPTH = 32


class MetadataBody(msgspec.Struct, kw_only=True):
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _int_param(request: Request, name: str, *, low: int = 0, high: int = 2**32 - 1) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise VolumePathError(400, f"{name} must be an integer, not '{raw}'") from None
    if not low <= value <= high:
        raise VolumePathError(400, f"{name} must be between {low} and {high}")
    return value


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("true", "1")


def _path(request: Request) -> str:
    path = request.query_params.get("path")
    if path is None:
        raise VolumePathError(400, "the path query parameter is required")
    return path


Handler = Callable[[Request, VolumeFiles], Awaitable[Response]]


class VolumeContent:
    def __init__(self, node_id: str, disks: VolumeDisks, store: Store) -> None:
        self._node_id = node_id
        self._disks = disks
        self._store = store

    def routes(self) -> list[BaseRoute]:
        def route(path: str, handler: Handler, method: str) -> Route:
            return Route(f"/volumecontent/{{volume_id}}/{path}", self._guarded(handler), methods=[method])

        return [
            route("dir", self.list_dir, "GET"),
            route("dir", self.make_dir, "POST"),
            route("path", self.stat, "GET"),
            route("path", self.update, "PATCH"),
            route("path", self.remove, "DELETE"),
            route("file", self.read, "GET"),
            route("file", self.write, "PUT"),
        ]

    def _guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            volume_id = request.path_params["volume_id"]
            record = await self._store.volume(volume_id)
            if record is None or record.node_id != self._node_id:
                return _error(404, f"volume '{volume_id}' not found")
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), record.token.encode()):
                return _error(401, "a valid volume token is required (Authorization: Bearer <token>)")
            try:
                root = await self._disks.ensure_mounted(volume_id)
                return await handler(request, VolumeFiles(root))
            except VolumePathError as exc:
                return _error(exc.status, exc.message)
            except VolumeError as exc:
                return _error(404, str(exc))

        return endpoint

    async def list_dir(self, request: Request, files: VolumeFiles) -> Response:
        depth = _int_param(request, "depth", low=1, high=MAX_DEPTH) or 1
        host = await asyncio.to_thread(files.host_path, _path(request))
        entries = await asyncio.to_thread(files.list_dir, host, depth)
        return JSONResponse([e.body() for e in entries])

    async def make_dir(self, request: Request, files: VolumeFiles) -> Response:
        host = await asyncio.to_thread(files.host_path, _path(request))
        entry = await asyncio.to_thread(
            lambda: files.make_dir(
                host,
                parents=_flag(request, "force"),
                uid=_int_param(request, "uid"),
                gid=_int_param(request, "gid"),
                mode=_int_param(request, "mode", high=0o7777),
            )
        )
        return JSONResponse(entry.body(), status_code=201)

    async def stat(self, request: Request, files: VolumeFiles) -> Response:
        host = await asyncio.to_thread(files.host_path, _path(request))
        return JSONResponse((await asyncio.to_thread(files.entry, host)).body())

    async def update(self, request: Request, files: VolumeFiles) -> Response:
        try:
            body = msgspec.json.decode(await request.body() or b"{}", type=MetadataBody)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise VolumePathError(400, f"invalid request body: {exc}") from None
        if body.mode is not None and not 0 <= body.mode <= 0o7777:
            raise VolumePathError(400, "mode must be between 0 and 0o7777")
        host = await asyncio.to_thread(files.host_path, _path(request))
        entry = await asyncio.to_thread(
            lambda: files.update(host, uid=body.uid, gid=body.gid, mode=body.mode)
        )
        return JSONResponse(entry.body())

    async def remove(self, request: Request, files: VolumeFiles) -> Response:
        host = await asyncio.to_thread(files.host_path, _path(request))
        await asyncio.to_thread(files.remove, host)
        return Response(status_code=204)

    async def read(self, request: Request, files: VolumeFiles) -> Response:
        host = await asyncio.to_thread(files.host_path, _path(request))
        f = await asyncio.to_thread(files.open_for_read, host)
        chunks = read_chunks(f)

        async def body() -> AsyncIterator[bytes]:
            while chunk := await asyncio.to_thread(next, chunks, b""):
                yield chunk

        return StreamingResponse(body(), media_type="application/octet-stream")

    async def write(self, request: Request, files: VolumeFiles) -> Response:
        uid, gid = _int_param(request, "uid"), _int_param(request, "gid")
        mode = _int_param(request, "mode", high=0o7777)
        host = await asyncio.to_thread(files.host_path, _path(request))
        f, work = await asyncio.to_thread(files.begin_write, host)
        try:
            try:
                async for chunk in request.stream():
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(f.close)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    path = files.volume_path(host)
                    raise VolumePathError(507, f"the volume is full (writing '{path}')") from None
                raise
            entry = await asyncio.to_thread(
                lambda: files.finish_write(work, host, uid=uid, gid=gid, mode=mode)
            )
        except BaseException:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(f.close)
            await asyncio.to_thread(Path(work).unlink, True)
            raise
        return JSONResponse(entry.body(), status_code=201)
