"""A create whose scheduler died between reserving the owner's slot and recording the
sandbox leaves a reservation: the reaper frees it after the grace period, and only it."""

from __future__ import annotations

import time

from corral_libs.apikeys import new_api_key
from corral_libs.contracts.records import SandboxRecord
from corral_services.scheduler.reaper import RESERVATION_GRACE_S, Reaper
from corral_services.scheduler.settings import SchedulerSettings
from corral_services.scheduler.worker import Scheduler


async def test_orphaned_reservations_are_swept(store, bus):
    _, key = new_api_key("sweep", 5)
    await store.save_api_key(key)
    now = time.time()
    live = SandboxRecord(
        sandbox_id="live0000000000000000",
        template_id="base",
        node_id="n1",
        host="198.18.0.2",
        envd_version="0.4.0",
        cpu_count=1,
        memory_mb=512,
        disk_mb=2048,
        started_at=now,
        end_at=now + 300,
        owner=key.key_hash,
    )
    assert await store.reserve_owner_slot(key.key_hash, live.sandbox_id, 5)
    await store.save_sandbox(live)
    assert await store.reserve_owner_slot(key.key_hash, "orphan00000000000000", 5)

    reaper = Reaper(Scheduler(SchedulerSettings(), bus, store))
    assert await reaper.sweep_reservations(now=1000.0) == []  # maybe a create under way
    assert await reaper.sweep_reservations(now=1000.0 + RESERVATION_GRACE_S / 2) == []
    assert await reaper.sweep_reservations(now=1000.0 + RESERVATION_GRACE_S) == ["orphan00000000000000"]
    assert set(await store.owner_sandbox_ids(key.key_hash)) == {live.sandbox_id}
