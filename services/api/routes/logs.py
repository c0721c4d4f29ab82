"""A sandbox's logs in E2B's two shapes: `GET /sandboxes/{id}/logs` (what the e2b CLI reads:
each `line` a JSON object with `level` and `logger`) and `GET /v2/sandboxes/{id}/logs`
(structured entries, a cursor and a direction). The node reads them from the sandbox's
console (envd's own log) while it runs there."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import LogEntry, NodeLogsReply, NodeLogsRequest
from corral_libs.contracts.records import SANDBOX_PAUSED
from corral_libs.state import Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import rfc3339
from .common import ask, owned_sandbox

LIMIT_MAX = 1000
# What the node reads from the end of the console, whatever the query narrows it to.
READ_LINES = 10_000
LEVELS = ("debug", "info", "warn", "error")


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}")
    return value


def _entry(entry: LogEntry) -> dict[str, object]:
    return {
        "timestamp": rfc3339(entry.timestamp),
        "level": entry.level,
        "message": entry.message,
        "fields": {"logger": entry.logger},
    }


class LogRoutes:
    def __init__(self, bus: Bus, store: Store, auth: Authenticator) -> None:
        self._bus = bus
        self._store = store
        self._auth = auth

    async def _entries(self, request: Request) -> list[LogEntry]:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        if record.state == SANDBOX_PAUSED:  # its console is not on any node while paused
            return []
        subject = subjects.node_subject(record.node_id, subjects.NODE_LOGS)
        message = NodeLogsRequest(sandbox_id=record.sandbox_id, limit=READ_LINES)
        reply: NodeLogsReply = await ask(self._bus, subject, message, NodeLogsReply, 10)
        return reply.entries

    async def v1(self, request: Request) -> Response:
        """Oldest first from `start` (unix ms), at most `limit`."""
        start_ms = _int(request, "start", 0, 0, 1 << 62)
        limit = _int(request, "limit", LIMIT_MAX, 1, LIMIT_MAX)
        entries = [e for e in await self._entries(request) if e.timestamp * 1000 >= start_ms][:limit]
        logs = [
            {
                "timestamp": rfc3339(e.timestamp),
                "line": json.dumps({"level": e.level, "logger": e.logger, "message": e.message}),
            }
            for e in entries
        ]
        return JSONResponse({"logs": logs, "logEntries": [_entry(e) for e in entries]})

    async def v2(self, request: Request) -> Response:
        """From `cursor` (unix ms) `forward` (oldest first) or `backward` (newest first, the
        default from now), at least `level`, containing `search`."""
        direction = request.query_params.get("direction", "forward")
        if direction not in ("forward", "backward"):
            raise ApiError(400, f"invalid direction '{direction}': use forward or backward")
        level = request.query_params.get("level", "debug").lower()
        if level not in LEVELS:
            raise ApiError(400, f"invalid level '{level}': use one of {', '.join(LEVELS)}")
        limit = _int(request, "limit", LIMIT_MAX, 1, LIMIT_MAX)
        forward = direction == "forward"
        cursor = _int(request, "cursor", 0 if forward else int(time.time() * 1000), 0, 1 << 62)
        search = request.query_params.get("search")
        wanted = LEVELS.index(level)
        entries = [
            e
            for e in await self._entries(request)
            if (e.timestamp * 1000 >= cursor if forward else e.timestamp * 1000 <= cursor)
            and LEVELS.index(e.level) >= wanted
            and (not search or search in e.message)
        ]
        if not forward:
            entries.reverse()
        return JSONResponse({"logs": [_entry(e) for e in entries[:limit]]})
