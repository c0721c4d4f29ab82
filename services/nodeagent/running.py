"""The sandboxes this agent runs for the scheduler (warm clones are the pool's), each
holding a network slot until it is forgotten."""

from __future__ import annotations

import time

from .runtime.base import RunningSandbox
from .slots import Slots


class RunningSandboxes:
    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._by_id: dict[str, RunningSandbox] = {}
        self._since: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, sandbox_id: str) -> RunningSandbox | None:
        return self._by_id.get(sandbox_id)

    def track(self, sandbox: RunningSandbox) -> None:
        self._by_id[sandbox.sandbox_id] = sandbox
        self._since[sandbox.sandbox_id] = time.time()

    def forget(self, sandbox_id: str) -> None:
        """No longer ours (killed, paused): its slot is free again."""
        sandbox = self._by_id.pop(sandbox_id, None)
        self._since.pop(sandbox_id, None)
        if sandbox is not None:
            self._slots.release(sandbox.slot)

    def started_at(self, sandbox_id: str) -> float | None:
        return self._since.get(sandbox_id)
