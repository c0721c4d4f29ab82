"""Sandbox endpoints, both generations (`/sandboxes` and `/v2/sandboxes`)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import (
    KillReply,
    KillRequest,
    PauseRequest,
    PlaceRequest,
    ResumeRequest,
    SandboxReply,
    TimeoutRequest,
)
from corral_libs.contracts.records import SANDBOX_PAUSED, SANDBOX_RUNNING, ApiKeyRecord, SandboxRecord
from corral_libs.state import Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import (
    ConnectBody,
    NetworkConfig,
    NewSandbox,
    PauseBody,
    RefreshBody,
    TimeoutBody,
    detail_body,
    listed_body,
    sandbox_body,
)
from .common import ask, check_timeout, owned_sandbox, read_json
from .idempotency import Idempotency
from .network import egress_policy
from .volumes import volume_mounts

V1_DEFAULT_TIMEOUT_S = 15
V2_DEFAULT_TIMEOUT_S = 300
LIST_LIMIT_MAX = 100
STATES = {SANDBOX_RUNNING, SANDBOX_PAUSED}


def parse_metadata_filter(raw: str) -> dict[str, str]:
    """`metadata=k=v&k2=v2`, itself URL-encoded once more by the SDKs (see the protocol notes)."""
    pairs: dict[str, str] = {}
    for part in unquote(raw).split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ApiError(400, f"invalid metadata filter '{raw}': expected key=value pairs")
        pairs[unquote(key)] = unquote(value)
    return pairs


def parse_time(name: str, raw: str | None) -> datetime | None:
    """An ISO 8601 time from the query (no zone: UTC)."""
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ApiError(400, f"invalid {name} '{raw}': expected an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _shown(ts: float) -> datetime:
    """A time as the API shows it (`startedAt`, to the microsecond): a client that sends one
    back as a bound must find the sandbox it came from on its side of it."""
    return datetime.fromtimestamp(ts, UTC)


def _page_token(record: SandboxRecord) -> str:
    return base64.urlsafe_b64encode(f"{record.started_at!r}:{record.sandbox_id}".encode()).decode()


def _after_token(token: str) -> tuple[float, str]:
    try:
        started, _, sandbox_id = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        return float(started), sandbox_id
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid nextToken") from None


def _ascending(request: Request) -> bool:
    order = request.query_params.get("order", "desc").lower()
    if order not in ("asc", "desc"):
        raise ApiError(400, f"invalid order '{order}': use asc or desc")
    return order == "asc"


class SandboxRoutes:
    def __init__(
        self, bus: Bus, store: Store, auth: Authenticator, domain: str, place_timeout_s: float
    ) -> None:
        self._bus = bus
        self._store = store
        self._auth = auth
        self._domain = domain
        self._place_timeout_s = place_timeout_s
        self._idempotency = Idempotency(store, place_timeout_s)

    async def create_v1(self, request: Request) -> Response:
        return await self._create(request, V1_DEFAULT_TIMEOUT_S, v2=False)

    async def create_v2(self, request: Request) -> Response:
        return await self._create(request, V2_DEFAULT_TIMEOUT_S, v2=True)

    async def _create(self, request: Request, default_timeout: int, *, v2: bool) -> Response:
        key = await self._auth(request)
        return await self._idempotency(
            request, key.key_hash, lambda: self._place(request, key, default_timeout, v2=v2)
        )

    async def _place(
        self, request: Request, key: ApiKeyRecord, default_timeout: int, *, v2: bool
    ) -> Response:
        body = await read_json(request, NewSandbox)
        assert isinstance(body, NewSandbox)
        if not body.template_id:
            raise ApiError(400, "templateID is required")
        auto_resume = bool(body.auto_resume and body.auto_resume.enabled)
        if auto_resume and body.auto_pause_memory is False:
            raise ApiError(400, "autoResume needs pauses that keep memory (autoPauseMemory: true)")
        if auto_resume and not body.auto_pause:
            raise ApiError(400, "autoResume needs autoPause (on timeout: pause)")
        network = body.network or NetworkConfig()
        if network.https_ports:
            raise ApiError(400, "network.httpsPorts: HTTPS to sandbox ports is not supported")
        mounts = await volume_mounts(self._store, key, body.volume_mounts or [])
        named = body.allow_internet_access is not None or body.network is not None
        # Not named: the source's (a snapshot's own policy, or the default).
        egress = egress_policy(network, body.allow_internet_access) if named else None
        place = PlaceRequest(
            template_id=body.template_id,
            owner=key.key_hash,
            owner_limit=key.max_sandboxes,
            timeout_s=check_timeout(body.timeout, default_timeout),
            metadata=body.metadata or {},
            env_vars=body.env_vars or {},
            # v2 always secures envd; v1 only when asked (`secure: true`).
            secure=True if v2 else bool(body.secure),
            allow_public_traffic=network.allow_public_traffic,
            mask_request_host=network.mask_request_host,
            egress=egress,
            auto_pause=bool(body.auto_pause),
            auto_pause_memory=body.auto_pause_memory is not False,
            auto_resume=auto_resume,
            volume_mounts=mounts,
        )
        reply: SandboxReply = await ask(self._bus, subjects.PLACE, place, SandboxReply, self._place_timeout_s)
        assert reply.sandbox is not None
        return JSONResponse(sandbox_body(reply.sandbox, self._domain), status_code=201)

    async def get(self, request: Request) -> Response:
        key = await self._auth(request)
        return JSONResponse(detail_body(await owned_sandbox(self._store, request, key), self._domain))

    async def list_v1(self, request: Request) -> Response:
        key = await self._auth(request)
        records = await self._filtered(request, key, {SANDBOX_RUNNING})
        return JSONResponse([listed_body(r) for r in records])

    async def list_v2(self, request: Request) -> Response:
        key = await self._auth(request)
        raw_states = request.query_params.get("state")
        states = {s.strip() for s in raw_states.split(",") if s.strip()} if raw_states else set(STATES)
        if not states <= STATES:
            raise ApiError(400, f"invalid state filter '{raw_states}': use running and/or paused")
        try:
            limit = int(request.query_params.get("limit", LIST_LIMIT_MAX))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise ApiError(400, f"limit must be between 1 and {LIST_LIMIT_MAX}")
        records = await self._filtered(request, key, states)
        token = request.query_params.get("nextToken")
        if token:
            after = _after_token(token)
            if _ascending(request):
                records = [r for r in records if (r.started_at, r.sandbox_id) > after]
            else:
                records = [r for r in records if (r.started_at, r.sandbox_id) < after]
        page = records[:limit]
        headers = {"X-Next-Token": _page_token(page[-1])} if len(records) > limit else {}
        return JSONResponse([listed_body(r) for r in page], headers=headers)

    async def _filtered(self, request: Request, key: ApiKeyRecord, states: set[str]) -> list[SandboxRecord]:
        """The key's sandboxes that match every filter of the query, in its order (newest
        first unless `order=asc`)."""
        query = request.query_params
        metadata = parse_metadata_filter(query.get("metadata", ""))
        template = query.get("template")
        after = parse_time("startedAfter", query.get("startedAfter"))
        before = parse_time("startedBefore", query.get("startedBefore"))
        records = await self._store.sandboxes(await self._store.sandbox_ids_newest_first())
        selected = [
            r
            for r in records
            if r.owner == key.key_hash
            and r.state in states
            and all(r.metadata.get(k) == v for k, v in metadata.items())
            and (template is None or template in (r.template_id, r.alias, r.snapshot_id))
            and (after is None or _shown(r.started_at) >= after)
            and (before is None or _shown(r.started_at) < before)
        ]
        selected.sort(key=lambda r: (r.started_at, r.sandbox_id), reverse=not _ascending(request))
        return selected

    async def kill(self, request: Request) -> Response:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        await ask(self._bus, subjects.KILL, KillRequest(sandbox_id=record.sandbox_id), KillReply, 90)
        return Response(status_code=204)

    async def set_timeout(self, request: Request) -> Response:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        body = await read_json(request, TimeoutBody)
        assert isinstance(body, TimeoutBody)
        timeout = check_timeout(body.timeout, 0)
        await ask(
            self._bus,
            subjects.SET_TIMEOUT,
            TimeoutRequest(sandbox_id=record.sandbox_id, timeout_s=timeout),
            SandboxReply,
            10,
        )
        return Response(status_code=204)

    async def refresh(self, request: Request) -> Response:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        body = await read_json(request, RefreshBody, optional=True)
        assert isinstance(body, RefreshBody)
        duration = body.duration if body.duration is not None else 60
        if not 0 <= duration <= 3600:
            raise ApiError(400, "duration must be between 0 and 3600 seconds")
        message = TimeoutRequest(sandbox_id=record.sandbox_id, timeout_s=duration, extend_only=True)
        await ask(self._bus, subjects.SET_TIMEOUT, message, SandboxReply, 10)
        return Response(status_code=204)

    async def connect(self, request: Request) -> Response:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        body = await read_json(request, ConnectBody, optional=True)
        assert isinstance(body, ConnectBody)
        timeout = check_timeout(body.timeout, V2_DEFAULT_TIMEOUT_S)
        if record.state == SANDBOX_PAUSED:
            return await self._resume(record, timeout)
        message = TimeoutRequest(sandbox_id=record.sandbox_id, timeout_s=timeout, extend_only=True)
        reply: SandboxReply = await ask(self._bus, subjects.SET_TIMEOUT, message, SandboxReply, 10)
        assert reply.sandbox is not None
        return JSONResponse(sandbox_body(reply.sandbox, self._domain), status_code=200)

    async def _resume(self, record: SandboxRecord, lease_s: int) -> Response:
        message = ResumeRequest(sandbox_id=record.sandbox_id, timeout_s=lease_s)
        reply = await ask(self._bus, subjects.RESUME, message, SandboxReply, 150)
        assert reply.sandbox is not None
        return JSONResponse(sandbox_body(reply.sandbox, self._domain), status_code=201)

    async def resume(self, request: Request) -> Response:
        """The 2.0-era resume: 201 when resumed, 409 when it was running."""
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        body = await read_json(request, ConnectBody, optional=True)
        assert isinstance(body, ConnectBody)
        if record.state != SANDBOX_PAUSED:
            raise ApiError(409, f"sandbox '{record.sandbox_id}' is already running")
        return await self._resume(record, check_timeout(body.timeout, V1_DEFAULT_TIMEOUT_S))

    async def pause(self, request: Request) -> Response:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        body = await read_json(request, PauseBody, optional=True)
        assert isinstance(body, PauseBody)
        message = PauseRequest(sandbox_id=record.sandbox_id, memory=body.memory is not False)
        await ask(self._bus, subjects.PAUSE, message, SandboxReply, 150)
        return Response(status_code=204)
