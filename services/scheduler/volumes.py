"""The scheduler's volume handlers: a new volume goes to the node with the most free slots
that serves volume content (it stays there: sandboxes that mount it are placed on it), and a
volume is deleted only while no sandbox of its owner, running or paused, mounts it."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from corral_libs.contracts import subjects
from corral_libs.contracts.messages import (
    CreateVolumeRequest,
    DeleteVolumeRequest,
    KillReply,
    NodeVolumeRequest,
    VolumeReply,
)
from corral_libs.contracts.records import VolumeRecord
from corral_libs.ids import new_sandbox_id, new_token

from .refused import Refused

if TYPE_CHECKING:
    from .worker import Scheduler

log = logging.getLogger(__name__)

# E2B's volume names: letters, digits, '-' and '_'.
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


class VolumeHandlers:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._store = scheduler.store

    async def create(self, request: CreateVolumeRequest) -> VolumeReply:
        try:
            return VolumeReply(volume=await self._create(request))
        except Refused as exc:
            return VolumeReply(error=exc.failure)

    async def _create(self, request: CreateVolumeRequest) -> VolumeRecord:
        if not _VOLUME_NAME.fullmatch(request.name):
            raise Refused(
                400,
                f"invalid volume name '{request.name}': use up to 63 letters, digits, '-' and '_', "
                "starting with a letter or digit",
            )
        if await self._store.owner_volume(request.owner, request.name) is not None:
            raise Refused(409, f"a volume named '{request.name}' already exists")
        now = time.time()
        live = [
            node
            for node in await self._store.nodes()
            if node.holds_volumes and now - node.heartbeat_at <= self._scheduler.settings.node_timeout_s
        ]
        if not live:
            raise Refused(503, "no node that holds volumes is available (microVM nodes hold none)")
        node = max(live, key=lambda n: n.free_slots)
        volume_id = f"vol-{new_sandbox_id()}"
        await self._scheduler.ask_node(
            node.node_id, subjects.NODE_CREATE_VOLUME, NodeVolumeRequest(volume_id=volume_id), KillReply
        )
        record = VolumeRecord(
            volume_id=volume_id,
            name=request.name,
            owner=request.owner,
            token=new_token(),
            node_id=node.node_id,
            created_at=now,
        )
        if not await self._store.add_volume(record):  # the same name, created meanwhile
            await self._node_delete(record)
            raise Refused(409, f"a volume named '{request.name}' already exists")
        log.info("volume %s (%s) created on node %s", volume_id, request.name, node.node_id)
        return record

    async def delete(self, request: DeleteVolumeRequest) -> KillReply:
        try:
            volume = await self._store.volume(request.volume_id)
            if volume is None or volume.owner != request.owner:
                raise Refused(404, f"volume '{request.volume_id}' not found")
            sandboxes = await self._store.sandboxes(await self._store.owner_sandbox_ids(request.owner))
            users = sorted(
                s.sandbox_id
                for s in sandboxes
                if any(m.volume_id == volume.volume_id for m in s.volume_mounts)
            )
            if users:
                raise Refused(409, f"volume '{volume.name}' is mounted by sandbox {', '.join(users)}")
            await self._scheduler.ask_node(
                volume.node_id,
                subjects.NODE_DELETE_VOLUME,
                NodeVolumeRequest(volume_id=volume.volume_id),
                KillReply,
            )
        except Refused as exc:
            return KillReply(error=exc.failure)
        await self._store.delete_volume(volume)
        return KillReply(killed=True)

    async def _node_delete(self, volume: VolumeRecord) -> None:
        try:
            await self._scheduler.ask_node(
                volume.node_id,
                subjects.NODE_DELETE_VOLUME,
                NodeVolumeRequest(volume_id=volume.volume_id),
                KillReply,
            )
        except Refused:
            log.exception("volume %s could not be removed from node %s", volume.volume_id, volume.node_id)
