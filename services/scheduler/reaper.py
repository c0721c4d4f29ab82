"""Lease expiry and node failure. Any number of schedulers run this loop; the one holding
the Redis lock does the work, and the lock's expiry hands it over when that one dies."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import msgspec

from corral_libs.contracts import keys
from corral_libs.contracts.messages import PauseRequest
from corral_libs.contracts.records import NODE_DOWN, SandboxRecord

from .worker import Scheduler

log = logging.getLogger(__name__)

LOCK_TTL_S = 2.0
# A reservation without a record this long after it was first seen is a create whose
# scheduler died midway (a create takes seconds, at most the node's create timeout).
RESERVATION_GRACE_S = 300.0
SWEEP_EVERY_S = 30.0


class Reaper:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.holder = uuid.uuid4().hex
        self.reaped = 0
        self._expiring: set[str] = set()  # a pause takes a while; the lease stays until it is done
        self._unrecorded: dict[tuple[str, str], float] = {}  # (owner, sandbox id) -> first seen
        self._swept_at = 0.0

    async def run(self) -> None:
        period = self.scheduler.settings.reap_every_s
        while True:
            try:
                if await self.scheduler.store.try_lock(keys.REAPER_LOCK, self.holder, LOCK_TTL_S):
                    await self.reap_expired()
                    await self.mark_dead_nodes()
                    if time.monotonic() - self._swept_at >= SWEEP_EVERY_S:
                        await self.sweep_reservations()
                        self._swept_at = time.monotonic()
            except Exception:
                log.exception("reaper pass failed")
            await asyncio.sleep(period)

    async def reap_expired(self) -> None:
        store = self.scheduler.store
        expired = await store.expired_leases(time.time())
        records = [r for r in await store.sandboxes(expired) if r.sandbox_id not in self._expiring]
        await asyncio.gather(*(self._expire(record) for record in records))
        self.reaped += len(records)
        # Leases whose record vanished (killed meanwhile) must not linger in the index.
        gone = set(expired) - {r.sandbox_id for r in records}
        if gone:
            await store.redis.zrem(keys.LEASES, *gone)

    async def _expire(self, record: SandboxRecord) -> None:
        """Lease over: pause when the sandbox asked for it (kill if the pause fails)."""
        self._expiring.add(record.sandbox_id)
        try:
            await self._pause_or_kill(record)
        finally:
            self._expiring.discard(record.sandbox_id)

    async def _pause_or_kill(self, record: SandboxRecord) -> None:
        if record.auto_pause:
            pause = PauseRequest(sandbox_id=record.sandbox_id, memory=record.auto_pause_memory)
            reply = await self.scheduler.pause(pause)
            if reply.error is None or reply.error.status == 409:
                return
            log.warning("auto-pause of %s failed (%s): killing it", record.sandbox_id, reply.error.message)
        await self.scheduler.remove(record, "timeout")

    async def sweep_reservations(self, now: float | None = None) -> list[str]:
        """Frees the concurrency slots of creates that never finished (their scheduler died
        between reserving and recording): a slot whose sandbox has no record, still so after
        the grace period. The sandbox ids freed."""
        store = self.scheduler.store
        now = time.monotonic() if now is None else now
        seen: set[tuple[str, str]] = set()
        freed = []
        for key in await store.api_keys():
            held = await store.owner_sandbox_ids(key.key_hash)
            recorded = {r.sandbox_id for r in await store.sandboxes(held)}
            for sandbox_id in set(held) - recorded:
                entry = (key.key_hash, sandbox_id)
                seen.add(entry)
                first = self._unrecorded.setdefault(entry, now)
                if now - first >= RESERVATION_GRACE_S:
                    await store.release_owner_slot(key.key_hash, sandbox_id)
                    log.warning("freed the reservation of %s: its create never finished", sandbox_id)
                    freed.append(sandbox_id)
                    seen.discard(entry)
        self._unrecorded = {entry: at for entry, at in self._unrecorded.items() if entry in seen}
        return freed

    async def mark_dead_nodes(self) -> None:
        store = self.scheduler.store
        now = time.time()
        for node in await store.nodes():
            if node.status == NODE_DOWN or now - node.heartbeat_at <= self.scheduler.settings.node_timeout_s:
                continue
            log.warning("node %s missed its heart-beats: marking it down", node.node_id)
            await store.save_node(msgspec.structs.replace(node, status=NODE_DOWN))
            records = await store.sandboxes(await store.node_sandbox_ids(node.node_id))
            await asyncio.gather(*(self.scheduler.remove(record, "node down") for record in records))
