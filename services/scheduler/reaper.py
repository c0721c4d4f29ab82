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


class Reaper:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.holder = uuid.uuid4().hex
        self.reaped = 0
        self._expiring: set[str] = set()  # a pause takes a while; the lease stays until it is done

    async def run(self) -> None:
        period = self.scheduler.settings.reap_every_s
        while True:
            try:
                if await self.scheduler.store.try_lock(keys.REAPER_LOCK, self.holder, LOCK_TTL_S):
                    await self.reap_expired()
                    await self.mark_dead_nodes()
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
