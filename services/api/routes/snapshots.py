"""Persistent snapshots and forks: `POST /sandboxes/{id}/snapshots`, `GET /snapshots`,
`DELETE /templates/{id}` (a snapshot is a template to the SDKs) and `POST /sandboxes/{id}/fork`."""

from __future__ import annotations

import base64

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import (
    DeleteSnapshotRequest,
    ForkReply,
    ForkRequest,
    KillReply,
    SnapshotReply,
    SnapshotRequest,
)
from corral_libs.contracts.records import SnapshotRecord
from corral_libs.state import Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import sandbox_body
from .common import ask, check_timeout, owned_sandbox, read_json
from .templates import TemplateRoutes

LIST_LIMIT_MAX = 100
FORK_COUNT_MAX = 100
FORK_DEFAULT_TIMEOUT_S = 15
# Snapshots and forks stop the sandbox for a checkpoint and write its memory to disk.
SNAPSHOT_TIMEOUT_S = 150


class SnapshotBody(msgspec.Struct, kw_only=True):
    name: str | None = None
    memory: bool | None = None


class ForkBody(msgspec.Struct, kw_only=True):
    timeout: int | None = None
    count: int | None = None


def snapshot_body(record: SnapshotRecord) -> dict[str, object]:
    return {"snapshotID": record.snapshot_id, "names": record.names}


def _matches(record: SnapshotRecord, name: str) -> bool:
    """`name` is the id, a name with or without its tag, or the bare name of a namespaced one."""
    bare = record.snapshot_id.partition(":")[0]
    return name in (record.snapshot_id, bare, bare.rpartition("/")[2]) or name in record.names


def _page_token(record: SnapshotRecord) -> str:
    return base64.urlsafe_b64encode(f"{record.created_at!r}|{record.snapshot_id}".encode()).decode()


def _after_token(token: str) -> tuple[float, str]:
    try:
        created, _, snapshot_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return float(created), snapshot_id
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid nextToken") from None


class SnapshotRoutes:
    def __init__(
        self, bus: Bus, store: Store, auth: Authenticator, domain: str, templates: TemplateRoutes
    ) -> None:
        self._bus = bus
        self._store = store
        self._auth = auth
        self._domain = domain
        self._templates = templates

    async def create(self, request: Request) -> Response:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        body = await read_json(request, SnapshotBody, optional=True)
        assert isinstance(body, SnapshotBody)
        message = SnapshotRequest(
            sandbox_id=record.sandbox_id, name=body.name, memory=body.memory is not False
        )
        reply = await ask(self._bus, subjects.SNAPSHOT, message, SnapshotReply, SNAPSHOT_TIMEOUT_S)
        assert reply.snapshot is not None
        return JSONResponse(snapshot_body(reply.snapshot), status_code=201)

    async def list(self, request: Request) -> Response:
        key = await self._auth(request)
        query = request.query_params
        try:
            limit = int(query.get("limit", LIST_LIMIT_MAX))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise ApiError(400, f"limit must be between 1 and {LIST_LIMIT_MAX}")
        sandbox_id, name = query.get("sandboxID"), query.get("name")
        records = [
            r
            for r in await self._store.snapshots_newest_first()
            if r.owner == key.key_hash
            and (not sandbox_id or r.source_sandbox_id == sandbox_id)
            and (not name or _matches(r, name))
        ]
        records.sort(key=lambda r: (r.created_at, r.snapshot_id), reverse=True)
        token = query.get("nextToken")
        if token:
            after = _after_token(token)
            records = [r for r in records if (r.created_at, r.snapshot_id) < after]
        page = records[:limit]
        headers = {"X-Next-Token": _page_token(page[-1])} if len(records) > limit else {}
        return JSONResponse([snapshot_body(r) for r in page], headers=headers)

    async def delete(self, request: Request) -> Response:
        """`DELETE /templates/{id}`: a snapshot of this key's, or a template it built."""
        key = await self._auth(request)
        name = request.path_params["template_id"]
        snapshot = await self._store.find_snapshot(name)
        if snapshot is not None and snapshot.owner == key.key_hash:
            message = DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id)
            await ask(self._bus, subjects.DELETE_SNAPSHOT, message, KillReply, 60)
            return Response(status_code=204)
        deleted = await self._templates.delete(name, key)
        if deleted is not None:
            return deleted
        raise ApiError(404, f"template '{name}' not found")

    async def fork(self, request: Request) -> Response:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        body = await read_json(request, ForkBody, optional=True)
        assert isinstance(body, ForkBody)
        count = 1 if body.count is None else body.count
        if not 1 <= count <= FORK_COUNT_MAX:
            raise ApiError(400, f"count must be between 1 and {FORK_COUNT_MAX}")
        timeout = check_timeout(body.timeout, FORK_DEFAULT_TIMEOUT_S)
        message = ForkRequest(
            sandbox_id=record.sandbox_id, count=count, timeout_s=timeout, owner_limit=key.max_sandboxes
        )
        reply = await ask(self._bus, subjects.FORK, message, ForkReply, SNAPSHOT_TIMEOUT_S + 15 * count)
        results: list[dict[str, object]] = []
        for fork in reply.forks:
            if fork.sandbox is not None:
                results.append({"sandbox": sandbox_body(fork.sandbox, self._domain)})
            else:
                error = fork.error
                code, message_text = (error.status, error.message) if error else (500, "fork failed")
                results.append({"error": {"code": code, "message": message_text}})
        return JSONResponse(results, status_code=201)
