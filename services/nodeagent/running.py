"""The sandboxes this agent runs for the scheduler (warm clones are the pool's), each
holding a network slot and enforcing its egress policy until it is forgotten."""

from __future__ import annotations

import time

from corral_libs.contracts.records import EgressPolicy

from .egress.service import Egress
from .runtime.base import RunningSandbox
from .slots import Slots


class RunningSandboxes:
    def __init__(self, slots: Slots, egress: Egress) -> None:
        self._slots = slots
        self._egress = egress
        self._by_id: dict[str, RunningSandbox] = {}
        self._since: dict[str, float] = {}
        self._tokens: dict[str, str | None] = {}
        self._volumes: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, sandbox_id: str) -> RunningSandbox | None:
        return self._by_id.get(sandbox_id)

    def all(self) -> list[RunningSandbox]:
        return list(self._by_id.values())

    def access_token(self, sandbox_id: str) -> str | None:
        """What its envd takes as `X-Access-Token` (None: an unsecured envd)."""
        return self._tokens.get(sandbox_id)

    async def track(
        self,
        sandbox: RunningSandbox,
        egress: EgressPolicy,
        access_token: str | None,
        volume_ids: tuple[str, ...] = (),
    ) -> None:
        """Ours from now on; its egress policy holds before anything else runs in it."""
        await self._egress.attach(sandbox.sandbox_id, sandbox.slot, sandbox.address, egress)
        self._by_id[sandbox.sandbox_id] = sandbox
        self._since[sandbox.sandbox_id] = time.time()
        self._tokens[sandbox.sandbox_id] = access_token
        self._volumes[sandbox.sandbox_id] = volume_ids

    def volume_ids(self, sandbox_id: str) -> tuple[str, ...]:
        return self._volumes.get(sandbox_id, ())

    def mounting(self, volume_id: str) -> list[str]:
        """The sandboxes here that mount the volume."""
        return sorted(s for s, volumes in self._volumes.items() if volume_id in volumes)

    async def forget(self, sandbox_id: str, *, keep_slot: bool = False) -> None:
        """No longer ours (killed, paused): its egress rules go and its slot is free again.
        With `keep_slot` (a kill: the sandbox still runs for a moment) the caller frees the
        slot and calls `forget_flows` once the sandbox is gone."""
        sandbox = self._by_id.pop(sandbox_id, None)
        self._since.pop(sandbox_id, None)
        self._tokens.pop(sandbox_id, None)
        self._volumes.pop(sandbox_id, None)
        if sandbox is not None:
            await self._egress.detach(sandbox_id, sandbox.slot, sandbox.address, flows=not keep_slot)
            if not keep_slot:
                self._slots.release(sandbox.slot)

    async def forget_flows(self, address: str) -> None:
        await self._egress.forget_flows(address)

    def started_at(self, sandbox_id: str) -> float | None:
        return self._since.get(sandbox_id)
