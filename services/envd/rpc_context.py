"""What every Connect RPC handler reads from its request: the user it acts for and the
keepalive interval the client asked for."""

from __future__ import annotations

import base64
import binascii

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from .state import Identity
from .users import UnknownUserError, User, lookup_user

KEEPALIVE_HEADER = "keepalive-ping-interval"
DEFAULT_KEEPALIVE_S = 90.0


def username_from_basic_auth(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ConnectError(Code.UNAUTHENTICATED, "invalid authorization header") from None
    return decoded.split(":", 1)[0] or None


def rpc_user(ctx: RequestContext, identity: Identity) -> User:
    name = username_from_basic_auth(ctx.request_headers.get("authorization"))
    try:
        return lookup_user(name or identity.default_user)
    except UnknownUserError as exc:
        raise ConnectError(Code.UNAUTHENTICATED, str(exc)) from None


def keepalive_interval(ctx: RequestContext) -> float:
    raw = ctx.request_headers.get(KEEPALIVE_HEADER)
    try:
        value = float(raw) if raw else DEFAULT_KEEPALIVE_S
    except ValueError:
        return DEFAULT_KEEPALIVE_S
    return value if value > 0 else DEFAULT_KEEPALIVE_S


def deadline_s(ctx: RequestContext) -> float | None:
    timeout_ms = ctx.timeout_ms
    return None if timeout_ms is None or timeout_ms <= 0 else timeout_ms / 1000
