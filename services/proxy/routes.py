"""Sandbox id -> where it runs, read from Redis and cached until a SANDBOX_GONE event (or a
short expiry, should an event be missed) says otherwise."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from corral_libs.bus import Bus, BusError
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import ResumeRequest, SandboxGone, SandboxReply
from corral_libs.contracts.records import SANDBOX_PAUSED, SANDBOX_RUNNING, SandboxRecord
from corral_libs.state import Store

CACHE_S = 30.0


@dataclass(frozen=True, slots=True)
class Route:
    host: str
    traffic_access_token: str | None
    mask_request_host: str | None = None  # the Host the sandbox sees; `${PORT}` is the port


class RouteCache:
    def __init__(self, store: Store, bus: Bus | None = None) -> None:
        self._store = store
        self._bus = bus
        self._routes: dict[str, tuple[float, Route]] = {}
        self._resuming: dict[str, asyncio.Future[SandboxRecord | None]] = {}

    async def lookup(self, sandbox_id: str) -> Route | None:
        cached = self._routes.get(sandbox_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        record = await self._store.sandbox(sandbox_id)
        if record is not None and record.state == SANDBOX_PAUSED and record.auto_resume:
            record = await self._resume(sandbox_id)
        if record is None or record.state != SANDBOX_RUNNING:
            self._routes.pop(sandbox_id, None)
            return None
        route = Route(record.host, record.traffic_access_token, record.mask_request_host)
        self._routes[sandbox_id] = (now, route)
        return route

    async def _resume(self, sandbox_id: str) -> SandboxRecord | None:
        """Wakes an auto-resume sandbox; requests arriving meanwhile wait for the same wake."""
        if self._bus is None:
            return None
        pending = self._resuming.get(sandbox_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[SandboxRecord | None] = asyncio.get_running_loop().create_future()
        self._resuming[sandbox_id] = future
        try:
            reply = await self._bus.request(
                subjects.RESUME,
                ResumeRequest(sandbox_id=sandbox_id, timeout_s=0),
                SandboxReply,
                timeout_s=150,
            )
            future.set_result(reply.sandbox)
        except BusError:
            future.set_result(None)
        finally:
            del self._resuming[sandbox_id]
        return future.result()

    async def on_gone(self, event: SandboxGone) -> None:
        self._routes.pop(event.sandbox_id, None)
