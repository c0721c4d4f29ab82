"""A build's log: entries buffered and written to Redis in batches (the SDK polls it every
0.2 s; a step printing thousands of lines must not make as many round trips)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from corral_libs.contracts.records import BuildLogEntry
from corral_libs.state import Store

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 0.2
# The last lines of a failing step that go into the build's error reason.
TAIL_LINES = 20


class BuildLog:
    def __init__(self, store: Store, build_id: str) -> None:
        self._store = store
        self._build_id = build_id
        self._pending: list[BuildLogEntry] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BuildLog:
        self._task = asyncio.create_task(self._flush_regularly())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    def __call__(self, message: str, *, level: str = "info", step: str | None = None) -> None:
        self._pending.append(BuildLogEntry(timestamp=time.time(), level=level, message=message, step=step))

    async def flush(self) -> None:
        entries, self._pending = self._pending, []
        try:
            await self._store.add_build_logs(self._build_id, entries)
        except Exception:
            log.exception("writing the log of build %s failed", self._build_id)

    async def _flush_regularly(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            await self.flush()
