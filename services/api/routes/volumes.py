"""Volumes: E2B's control plane (`/volumes`, API key) through the scheduler, and the volume
content API (`/volumecontent/{volumeID}/…`, the volume's own token) forwarded as it came to
the content server of the node that holds the volume."""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import CreateVolumeRequest, DeleteVolumeRequest, KillReply, VolumeReply
from corral_libs.contracts.records import ApiKeyRecord, VolumeMount, VolumeRecord
from corral_libs.state import Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import NewVolume, VolumeMountBody
from .common import ask, read_json

VOLUME_TIMEOUT_S = 60.0
# What of the SDK's request the node needs; the rest (Host, hop-by-hop headers) stays here.
FORWARDED_REQUEST_HEADERS = ("authorization", "content-type", "content-length", "traceparent")
FORWARDED_RESPONSE_HEADERS = ("content-type", "content-length")


# Where a volume may not go: over the sandbox's root or its kernel's file systems.
RESERVED_MOUNT_PATHS = ("/proc", "/sys", "/dev")


async def volume_mounts(store: Store, key: ApiKeyRecord, mounts: list[VolumeMountBody]) -> list[VolumeMount]:
    """The create body's `volumeMounts` (volumes by name), checked and resolved."""
    resolved: list[VolumeMount] = []
    for mount in mounts:
        path = posixpath.normpath(mount.path) if mount.path else ""
        if not path.startswith("/") or path.startswith("//"):
            raise ApiError(400, f"volume mount path '{mount.path}' must be an absolute path")
        if path == "/" or any(path == p or path.startswith(p + "/") for p in RESERVED_MOUNT_PATHS):
            raise ApiError(400, f"volume mount path '{mount.path}' is reserved")
        if any(m.path == path for m in resolved):
            raise ApiError(400, f"two volumes are mounted at '{path}'")
        volume = await store.owner_volume(key.key_hash, mount.name)
        if volume is None:
            raise ApiError(404, f"volume '{mount.name}' not found")
        resolved.append(VolumeMount(volume_id=volume.volume_id, name=volume.name, path=path))
    return resolved


def volume_body(record: VolumeRecord, *, with_token: bool) -> dict[str, object]:
    body: dict[str, object] = {"volumeID": record.volume_id, "name": record.name}
    if with_token:
        body["token"] = record.token
    return body


class VolumeRoutes:
    def __init__(self, bus: Bus, store: Store, auth: Authenticator) -> None:
        self._bus = bus
        self._store = store
        self._auth = auth
        # No timeout on reads: a download lasts as long as the file is big.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(VOLUME_TIMEOUT_S, read=None, write=None))

    async def _owned(self, request: Request) -> VolumeRecord:
        key = await self._auth(request)
        volume_id = request.path_params["volume_id"]
        record = await self._store.volume(volume_id)
        if record is None or record.owner != key.key_hash:
            raise ApiError(404, f"volume '{volume_id}' not found")
        return record

    async def list(self, request: Request) -> Response:
        key = await self._auth(request)
        volumes = [v for v in await self._store.volumes() if v.owner == key.key_hash]
        return JSONResponse([volume_body(v, with_token=False) for v in volumes])

    async def create(self, request: Request) -> Response:
        key = await self._auth(request)
        body = await read_json(request, NewVolume)
        assert isinstance(body, NewVolume)
        message = CreateVolumeRequest(name=body.name, owner=key.key_hash)
        reply = await ask(self._bus, subjects.CREATE_VOLUME, message, VolumeReply, VOLUME_TIMEOUT_S)
        assert reply.volume is not None
        return JSONResponse(volume_body(reply.volume, with_token=True), status_code=201)

    async def get(self, request: Request) -> Response:
        return JSONResponse(volume_body(await self._owned(request), with_token=True))

    async def delete(self, request: Request) -> Response:
        record = await self._owned(request)
        message = DeleteVolumeRequest(volume_id=record.volume_id, owner=record.owner)
        await ask(self._bus, subjects.DELETE_VOLUME, message, KillReply, VOLUME_TIMEOUT_S)
        return Response(status_code=204)

    async def content(self, request: Request) -> Response:
        """Forwards to the volume's node, which checks the volume's token."""
        volume_id = request.path_params["volume_id"]
        volume = await self._store.volume(volume_id)
        node = None if volume is None else await self._store.node(volume.node_id)
        if volume is None:
            raise ApiError(404, f"volume '{volume_id}' not found")
        if node is None or not node.holds_volumes:
            message = f"the node that holds volume '{volume_id}' is not available"
            raise ApiError(503, message, {"Retry-After": "1"})
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS}
        upstream = self._http.build_request(
            request.method,
            f"{node.content_url}{request.url.path}",
            params=request.url.query,
            headers=headers,
            content=_body(request) if request.method in ("PUT", "POST", "PATCH") else None,
        )
        try:
            response = await self._http.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            raise ApiError(
                503, f"the node that holds volume '{volume_id}' is not answering: {exc}", {"Retry-After": "1"}
            ) from None
        kept = {k: v for k, v in response.headers.items() if k.lower() in FORWARDED_RESPONSE_HEADERS}
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers=kept,
            background=BackgroundTask(response.aclose),
        )


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk
