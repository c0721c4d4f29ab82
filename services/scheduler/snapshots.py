"""The scheduler's snapshot handlers: take a persistent snapshot, delete one, fork a
sandbox (one unrecorded snapshot, `count` sandboxes from it)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from corral_libs.bus import BusError
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import (
    DeleteSnapshotRequest,
    ForkReply,
    ForkRequest,
    KillReply,
    NodeDeleteSnapshotRequest,
    NodeSnapshotReply,
    NodeSnapshotRequest,
    PlaceRequest,
    SandboxReply,
    SnapshotReply,
    SnapshotRequest,
)
from corral_libs.contracts.records import SANDBOX_PAUSED, SandboxRecord, SnapshotRecord
from corral_libs.ids import new_sandbox_id

from .refused import Refused, failure
from .sources import Source, snapshot_name

if TYPE_CHECKING:
    from .worker import Scheduler

log = logging.getLogger(__name__)

# Forks restore on the one node that holds the image: a few at a time.
FORK_RESTORES_AT_ONCE = 4


class SnapshotHandlers:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._store = scheduler.store
        self._bus = scheduler.bus

    async def snapshot(self, request: SnapshotRequest) -> SnapshotReply:
        try:
            return SnapshotReply(snapshot=await self._snapshot(request))
        except Refused as exc:
            return SnapshotReply(error=exc.failure)

    async def _snapshot(self, request: SnapshotRequest) -> SnapshotRecord:
        record = await self._scheduler.existing(request.sandbox_id)
        snapshot_id = snapshot_name(request.name)
        replaced = await self._store.snapshot(snapshot_id)
        if replaced is not None and replaced.owner != record.owner:
            raise Refused(409, f"the snapshot name '{snapshot_id}' is taken")
        snapshot = await self._take_snapshot(record, snapshot_id, memory=request.memory)
        try:
            await self._store.save_snapshot(snapshot, replaces=replaced)
        except Exception as exc:
            log.exception("recording snapshot %s failed", snapshot_id)
            await self._node_delete_image(snapshot)
            raise Refused(500, f"could not record the snapshot: {exc}") from None
        if replaced is not None:
            await self._node_delete_image(replaced)
        return snapshot

    async def _take_snapshot(
        self, record: SandboxRecord, snapshot_id: str, *, memory: bool = True
    ) -> SnapshotRecord:
        """The node saves the running sandbox (or only its files) into a new image and lets
        it go on."""
        if record.state == SANDBOX_PAUSED:
            raise Refused(409, f"sandbox '{record.sandbox_id}' is paused: resume it first")
        image_id = new_sandbox_id()
        message = NodeSnapshotRequest(
            sandbox_id=record.sandbox_id,
            image_id=image_id,
            envd_access_token=record.envd_access_token,
            memory=memory,
        )
        reply = await self._scheduler.ask_node(
            record.node_id, subjects.NODE_SNAPSHOT, message, NodeSnapshotReply
        )
        if reply.source_paused:
            await self._scheduler.mark_paused(record)
        return SnapshotRecord(
            snapshot_id=snapshot_id,
            names=[snapshot_id],
            image_id=image_id,
            node_id=record.node_id,
            template_id=record.template_id,
            alias=record.alias,
            source_sandbox_id=record.sandbox_id,
            owner=record.owner,
            envd_version=record.envd_version,
            envd_access_token=record.envd_access_token,
            env_vars=record.env_vars,
            metadata=record.metadata,
            egress=record.egress,
            cpu_count=record.cpu_count,
            memory_mb=record.memory_mb,
            disk_mb=record.disk_mb,
            size_bytes=reply.size_bytes,
            created_at=time.time(),
            volume_mounts=record.volume_mounts,
        )

    async def _node_delete_image(self, snapshot: SnapshotRecord) -> None:
        """Best effort: a node that misses it removes the unrecorded image itself."""
        try:
            await self._bus.request(
                subjects.node_subject(snapshot.node_id, subjects.NODE_DELETE_SNAPSHOT),
                NodeDeleteSnapshotRequest(image_id=snapshot.image_id),
                KillReply,
                timeout_s=60,
            )
        except BusError as exc:
            log.warning("deleting image %s on node %s: %s", snapshot.image_id, snapshot.node_id, exc)

    async def delete_snapshot(self, request: DeleteSnapshotRequest) -> KillReply:
        snapshot = await self._store.snapshot(request.snapshot_id)
        if snapshot is None:
            return KillReply(error=failure(404, f"snapshot '{request.snapshot_id}' not found"))
        await self._store.delete_snapshot(snapshot)
        await self._node_delete_image(snapshot)
        return KillReply(killed=True)

    async def fork(self, request: ForkRequest) -> ForkReply:
        """Snapshots the sandbox once (it goes on running) and starts `count` sandboxes from
        that image, each succeeding or failing on its own; the image goes afterwards."""
        try:
            record = await self._scheduler.existing(request.sandbox_id)
            snapshot = await self._take_snapshot(record, f"fork-{record.sandbox_id}")
        except Refused as exc:
            return ForkReply(error=exc.failure)
        place = PlaceRequest(
            template_id=snapshot.snapshot_id,
            owner=record.owner,
            owner_limit=request.owner_limit,
            timeout_s=request.timeout_s,
            metadata=record.metadata,
            secure=record.envd_access_token is not None,
            allow_public_traffic=record.traffic_access_token is None,
            mask_request_host=record.mask_request_host,
            egress=record.egress,
            auto_pause=record.auto_pause,
            auto_resume=record.auto_resume,
        )
        source = Source.of_snapshot(snapshot, persistent=False)
        gate = asyncio.Semaphore(FORK_RESTORES_AT_ONCE)

        async def one_fork() -> SandboxReply:
            async with gate:
                return await self._scheduler.place_from(place, source)

        try:
            forks = await asyncio.gather(*(one_fork() for _ in range(request.count)))
        finally:
            await self._node_delete_image(snapshot)
        return ForkReply(forks=list(forks))
