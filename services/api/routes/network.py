"""Sandbox egress: the policy a create or `PUT /sandboxes/{id}/network` asks for, checked
here (400s name the field), and the record of connections it refused."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import NetworkUpdateRequest, SandboxReply
from corral_libs.contracts.records import EgressPolicy
from corral_libs.egress_policy import CompiledPolicy, PolicyError, parse
from corral_libs.state import Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import NetworkConfig, NetworkUpdate, denial_body
from .common import ask, owned_sandbox, read_json

MAX_DNS_SERVERS = 10
DENIALS_LIMIT_MAX = 1000


def egress_policy(network: NetworkConfig | NetworkUpdate, allow_internet_access: bool | None) -> EgressPolicy:
    """The policy a create's or an update's body names, or a 400 naming the field."""
    if network.egress_proxy:
        raise ApiError(400, "network.egressProxy: tunnelling egress through a SOCKS5 proxy is not supported")
    if network.rules:
        raise ApiError(400, "network.rules: per-host request transforms are not supported")
    try:
        policy = parse(network.allow_out, network.deny_out, allow_internet_access)
    except PolicyError as exc:
        raise ApiError(400, f"network.{exc}") from None
    servers = network.dns_servers or []
    if len(servers) > MAX_DNS_SERVERS:
        raise ApiError(400, f"network.dnsServers: at most {MAX_DNS_SERVERS} servers")
    for server in servers:
        try:
            if ipaddress.ip_address(server).version != 4:
                raise ValueError
        except ValueError:
            raise ApiError(400, f"network.dnsServers: '{server}' is not an IPv4 address") from None
    if (
        servers and CompiledPolicy.of(policy).has_names
    ):  # as E2B: the servers are reachable where domains are allowed
        extra = [f"{server}/32" for server in servers if f"{server}/32" not in policy.allow_out]
        return EgressPolicy(
            allow_out=[*policy.allow_out, *extra],
            deny_out=policy.deny_out,
            allow_internet_access=policy.allow_internet_access,
        )
    return policy


class NetworkRoutes:
    def __init__(self, bus: Bus, store: Store, auth: Authenticator) -> None:
        self._bus = bus
        self._store = store
        self._auth = auth

    async def update(self, request: Request) -> Response:
        """Replaces the policy at once; 409 while the sandbox is between states."""
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        body = await read_json(request, NetworkUpdate)
        assert isinstance(body, NetworkUpdate)
        policy = egress_policy(body, body.allow_internet_access)
        message = NetworkUpdateRequest(sandbox_id=record.sandbox_id, egress=policy)
        await ask(self._bus, subjects.NETWORK, message, SandboxReply, 30)
        return Response(status_code=204)

    async def denials(self, request: Request) -> Response:
        """The connections the sandbox's policy refused, newest first."""
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        try:
            limit = int(request.query_params.get("limit", 100))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        if not 1 <= limit <= DENIALS_LIMIT_MAX:
            raise ApiError(400, f"limit must be between 1 and {DENIALS_LIMIT_MAX}")
        denials = await self._store.denials(record.sandbox_id, limit)
        return JSONResponse({"denials": [denial_body(d) for d in denials]})
