"""What every route module needs: JSON bodies, asking the scheduler, owned sandboxes."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from corral_libs.bus import Bus, BusError
from corral_libs.contracts.records import ApiKeyRecord, SandboxRecord
from corral_libs.state import Store

from ..errors import ApiError

R = TypeVar("R", bound=msgspec.Struct)

MAX_TIMEOUT_S = 24 * 3600


async def read_json(
    request: Request, body_type: type[msgspec.Struct], *, optional: bool = False
) -> msgspec.Struct:
    raw = await request.body()
    if not raw.strip():
        if optional:
            raw = b"{}"
        else:
            raise ApiError(400, "request body is required")
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def check_timeout(value: int | None, default: int) -> int:
    timeout = default if value is None else value
    if timeout < 0 or timeout > MAX_TIMEOUT_S:
        raise ApiError(400, f"timeout must be between 0 and {MAX_TIMEOUT_S} seconds")
    return timeout


async def ask(bus: Bus, subject: str, message: msgspec.Struct, reply_type: type[R], timeout_s: float) -> R:
    """A request to the scheduler; its refusal becomes the API's error."""
    try:
        reply = await bus.request(subject, message, reply_type, timeout_s=timeout_s)
    except BusError as exc:
        raise ApiError(503, f"the scheduler is not answering: {exc}") from None
    error = getattr(reply, "error", None)
    if error is not None:
        trace = f" (trace {error.trace_id})" if error.trace_id and error.status >= 500 else ""
        raise ApiError(error.status, error.message + trace)
    return reply


async def owned_sandbox(store: Store, request: Request, key: ApiKeyRecord) -> SandboxRecord:
    """The path's sandbox, if this key holds it (anyone else's is as good as missing)."""
    sandbox_id = request.path_params["sandbox_id"]
    record = await store.sandbox(sandbox_id)
    if record is None or record.owner != key.key_hash:
        raise ApiError(404, f"sandbox '{sandbox_id}' not found")
    return record
