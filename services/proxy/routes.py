"""Sandbox id -> where it runs, read from Redis and cached until a SANDBOX_GONE event (or a
short expiry, should an event be missed) says otherwise."""

from __future__ import annotations

import time
from dataclasses import dataclass

from libs.contracts.messages import SandboxGone
from libs.contracts.records import SANDBOX_RUNNING
from libs.state import Store

CACHE_S = 30.0


@dataclass(frozen=True, slots=True)
class Route:
    host: str
    traffic_access_token: str | None


class RouteCache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._routes: dict[str, tuple[float, Route]] = {}

    async def lookup(self, sandbox_id: str) -> Route | None:
        cached = self._routes.get(sandbox_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        record = await self._store.sandbox(sandbox_id)
        if record is None or record.state != SANDBOX_RUNNING:
            self._routes.pop(sandbox_id, None)
            return None
        route = Route(record.host, record.traffic_access_token)
        self._routes[sandbox_id] = (now, route)
        return route

    async def on_gone(self, event: SandboxGone) -> None:
        self._routes.pop(event.sandbox_id, None)
