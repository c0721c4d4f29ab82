"""The scheduler's request handlers: place, kill, set timeout, pause, resume (snapshots and
forks: snapshots.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TypeVar

import msgspec

from corral_libs.bus import Bus, BusError, NoResponders
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import (
    CreateVolumeRequest,
    DeleteSnapshotRequest,
    DeleteTemplateRequest,
    DeleteVolumeRequest,
    Failure,
    ForkRequest,
    KillReply,
    KillRequest,
    NetworkUpdateRequest,
    NodeCreateReply,
    NodeCreateRequest,
    NodeEgressReply,
    NodeEgressRequest,
    NodeKillRequest,
    NodePauseReply,
    NodePauseRequest,
    NodeResumeRequest,
    PauseRequest,
    PlaceBuildRequest,
    PlaceRequest,
    ResumeRequest,
    SandboxGone,
    SandboxPaused,
    SandboxReply,
    SnapshotRequest,
    StartBuildRequest,
    TimeoutRequest,
)
from corral_libs.contracts.records import (
    NODE_STARTING,
    SANDBOX_PAUSED,
    SANDBOX_RUNNING,
    EgressPolicy,
    SandboxRecord,
    SnapshotRecord,
    VolumeMount,
)
from corral_libs.ids import new_sandbox_id, new_token
from corral_libs.state import Store

from . import placement
from .builds import BuildHandlers
from .refused import Refused, failure
from .settings import SchedulerSettings
from .snapshots import SnapshotHandlers
from .sources import Source
from .volumes import VolumeHandlers

log = logging.getLogger(__name__)


R = TypeVar("R", bound=msgspec.Struct)

# Pauses and resumes move memory to or from disk: they take seconds, not milliseconds.
NODE_LIFECYCLE_TIMEOUT_S = 120.0
PLACE_RETRY_S = 0.2


class Scheduler:
    def __init__(self, settings: SchedulerSettings, bus: Bus, store: Store) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store

    async def start(self) -> None:
        queue = subjects.SCHEDULER_QUEUE
        await self.bus.serve(subjects.PLACE, PlaceRequest, self.place, queue=queue)
        await self.bus.serve(subjects.KILL, KillRequest, self.kill, queue=queue)
        await self.bus.serve(subjects.SET_TIMEOUT, TimeoutRequest, self.set_timeout, queue=queue)
        await self.bus.serve(subjects.PAUSE, PauseRequest, self.pause, queue=queue)
        await self.bus.serve(subjects.RESUME, ResumeRequest, self.resume, queue=queue)
        snapshots = SnapshotHandlers(self)
        await self.bus.serve(subjects.SNAPSHOT, SnapshotRequest, snapshots.snapshot, queue=queue)
        await self.bus.serve(
            subjects.DELETE_SNAPSHOT, DeleteSnapshotRequest, snapshots.delete_snapshot, queue=queue
        )
        await self.bus.serve(subjects.FORK, ForkRequest, snapshots.fork, queue=queue)
        await self.bus.serve(subjects.NETWORK, NetworkUpdateRequest, self.update_network, queue=queue)
        volumes = VolumeHandlers(self)
        await self.bus.serve(subjects.CREATE_VOLUME, CreateVolumeRequest, volumes.create, queue=queue)
        await self.bus.serve(subjects.DELETE_VOLUME, DeleteVolumeRequest, volumes.delete, queue=queue)
        builds = BuildHandlers(self)
        await self.bus.serve(subjects.PLACE_BUILD, PlaceBuildRequest, builds.place, queue=queue)
        await self.bus.serve(subjects.START_BUILD, StartBuildRequest, builds.start, queue=queue)
        await self.bus.serve(subjects.DELETE_TEMPLATE, DeleteTemplateRequest, builds.delete, queue=queue)
        await self.bus.listen(subjects.SANDBOX_GONE, SandboxGone, self.forget, queue=queue)
        await self.bus.listen(subjects.SANDBOX_PAUSED, SandboxPaused, self.found_paused, queue=queue)

    async def place(self, request: PlaceRequest) -> SandboxReply:
        try:
            source = await self._source(request.template_id, request.owner)
        except Refused as exc:
            return SandboxReply(error=exc.failure)
        return await self.place_from(request, source)

    async def _source(self, name: str, owner: str) -> Source:
        """A template by id or alias, or one of the owner's snapshots by id or name."""
        template = await self.store.template(name)
        if template is not None and (template.public or template.owner == owner):
            return Source(
                template_id=template.template_id,
                alias=template.aliases[0] if template.aliases else None,
                cpu_count=template.cpu_count,
                memory_mb=template.memory_mb,
                disk_mb=template.disk_mb,
            )
        snapshot = await self.store.find_snapshot(name)
        if snapshot is None or snapshot.owner != owner:
            raise Refused(404, f"template '{name}' not found")
        return Source.of_snapshot(snapshot)

    async def place_from(self, request: PlaceRequest, source: Source) -> SandboxReply:
        """Reserves a slot of the owner's budget, places the sandbox and records it; the
        reservation goes whenever no record came of it, whatever failed (and the reaper
        frees what a scheduler that died midway left)."""
        sandbox_id = new_sandbox_id()
        if not await self.store.reserve_owner_slot(request.owner, sandbox_id, request.owner_limit):
            return SandboxReply(
                error=failure(
                    429, f"you have reached the maximum of {request.owner_limit} concurrent sandboxes"
                )
            )
        reply = SandboxReply()
        try:
            reply = await self._place_reserved(request, source, sandbox_id)
            return reply
        finally:
            if reply.sandbox is None:
                await self.store.release_owner_slot(request.owner, sandbox_id)

    async def _place_reserved(self, request: PlaceRequest, source: Source, sandbox_id: str) -> SandboxReply:
        token = new_token() if request.secure else None
        snapshot = source.snapshot
        env_vars = {**snapshot.env_vars, **request.env_vars} if snapshot else request.env_vars
        egress = request.egress or (snapshot.egress if snapshot else EgressPolicy())
        try:
            mounts, volume_node = await self._volume_mounts(request, snapshot)
        except Refused as exc:
            return SandboxReply(error=exc.failure)
        tried: set[str] = set()
        restarting: set[str] = set()  # nodes whose agent did not answer: maybe back in a moment
        last_error = "no node has the template and room for a sandbox"
        wait_until = time.monotonic() + self.settings.place_wait_s
        while True:
            every_node = await self.store.nodes()
            nodes = placement.candidates(every_node, source.template_id, self.settings.node_timeout_s, tried)
            if snapshot is not None:  # its image is on one node only
                nodes = [node for node in nodes if node.node_id == snapshot.node_id]
            if volume_node is not None:  # so are its volumes
                nodes = [node for node in nodes if node.node_id == volume_node]
            node = placement.pick(nodes, self.settings.placement_k, template_id=source.template_id)
            if node is None:
                starting = any(
                    n.status == NODE_STARTING and source.template_id in n.templates for n in every_node
                )
                if (restarting or starting) and time.monotonic() < wait_until:
                    # A restarting agent (the only way a whole node's creates would 503) is
                    # back within a second or two: the create waits for it instead.
                    await asyncio.sleep(PLACE_RETRY_S)
                    tried -= restarting
                    restarting.clear()
                    continue
                return SandboxReply(error=failure(503, last_error))
            tried.add(node.node_id)
            create = NodeCreateRequest(
                sandbox_id=sandbox_id,
                template_id=source.template_id,
                env_vars=env_vars,
                envd_access_token=token,
                cpu_count=source.cpu_count,
                memory_mb=source.memory_mb,
                egress=egress,
                snapshot_image_id=snapshot.image_id if snapshot else "",
                snapshot_access_token=snapshot.envd_access_token if snapshot else None,
                volume_mounts=mounts,
            )
            try:
                reply = await self.bus.request(
                    subjects.node_subject(node.node_id, subjects.NODE_CREATE),
                    create,
                    NodeCreateReply,
                    timeout_s=self.settings.node_create_timeout_s,
                )
            except NoResponders as exc:  # nothing received it: nothing to undo
                last_error = f"node {node.node_id}: {exc}"
                restarting.add(node.node_id)
                continue
            except BusError as exc:
                last_error = f"node {node.node_id}: {exc}"
                log.warning("placing %s: %s", sandbox_id, last_error)
                await self._node_kill(node.node_id, sandbox_id)
                continue
            if reply.error is not None:
                last_error = f"node {node.node_id}: {reply.error.message}"
                log.warning("placing %s: %s", sandbox_id, last_error)
                continue
            now = time.time()
            record = SandboxRecord(
                sandbox_id=reply.sandbox_id or sandbox_id,
                template_id=source.template_id,
                alias=source.alias,
                node_id=node.node_id,
                host=reply.host,
                envd_version=reply.envd_version,
                envd_access_token=token,
                traffic_access_token=None if request.allow_public_traffic else new_token(),
                egress=egress,
                mask_request_host=request.mask_request_host,
                metadata=request.metadata,
                env_vars=env_vars,
                cpu_count=source.cpu_count,
                memory_mb=source.memory_mb,
                disk_mb=source.disk_mb,
                started_at=now,
                end_at=now + request.timeout_s,
                owner=request.owner,
                timeout_s=request.timeout_s,
                auto_pause=request.auto_pause,
                auto_pause_memory=request.auto_pause_memory,
                auto_resume=request.auto_resume,
                snapshot_id=source.snapshot_id,
                volume_mounts=mounts,
            )
            try:
                await self.store.save_sandbox(record, reserved_as=sandbox_id)
            except Exception as exc:
                log.exception("recording %s failed", record.sandbox_id)
                await self._node_kill(node.node_id, record.sandbox_id)
                return SandboxReply(error=failure(500, f"could not record the sandbox: {exc}"))
            return SandboxReply(sandbox=record)

    async def _volume_mounts(
        self, request: PlaceRequest, snapshot: SnapshotRecord | None
    ) -> tuple[list[VolumeMount], str | None]:
        """The volumes the sandbox mounts and the node that holds them (None: no volumes). A
        sandbox from a snapshot mounts what its source did: its checkpoint holds those mounts."""
        mounts = request.volume_mounts
        if snapshot is not None:
            if mounts and mounts != snapshot.volume_mounts:
                raise Refused(400, "a sandbox created from a snapshot mounts the volumes its source mounted")
            mounts = snapshot.volume_mounts
        nodes: set[str] = set()
        for mount in mounts:
            volume = await self.store.volume(mount.volume_id)
            if volume is None or volume.owner != request.owner:
                raise Refused(404, f"volume '{mount.name}' not found")
            nodes.add(volume.node_id)
        if len(nodes) > 1:
            raise Refused(400, "the volumes are on different nodes: a sandbox can mount volumes of one node")
        return mounts, next(iter(nodes), None)

    async def _node_kill(self, node_id: str, sandbox_id: str) -> bool:
        try:
            reply = await self.bus.request(
                subjects.node_subject(node_id, subjects.NODE_KILL),
                NodeKillRequest(sandbox_id=sandbox_id),
                KillReply,
                timeout_s=60,
            )
        except BusError as exc:
            log.warning("kill of %s on node %s: %s", sandbox_id, node_id, exc)
            return False
        return reply.killed

    async def existing(self, sandbox_id: str) -> SandboxRecord:
        record = await self.store.sandbox(sandbox_id)
        if record is None:
            raise Refused(404, f"sandbox '{sandbox_id}' not found")
        return record

    async def ask_node(self, node_id: str, verb: str, message: msgspec.Struct, reply_type: type[R]) -> R:
        """A lifecycle request to a node; an unreachable node or its refusal is `Refused`."""
        subject = subjects.node_subject(node_id, verb)
        try:
            reply = await self.bus.request(subject, message, reply_type, timeout_s=NODE_LIFECYCLE_TIMEOUT_S)
        except BusError as exc:
            raise Refused(503, f"node {node_id}: {exc}") from None
        error: Failure | None = getattr(reply, "error", None)
        if error is not None:
            raise Refused(error.status, error.message)
        return reply

    async def kill(self, request: KillRequest) -> KillReply:
        try:
            record = await self.existing(request.sandbox_id)
        except Refused as exc:
            return KillReply(error=exc.failure)
        await self.remove(record, request.reason)
        return KillReply(killed=True)

    async def remove(self, record: SandboxRecord, reason: str) -> None:
        """Forgets the record and tells the proxies, then kills on the node (best effort: a
        dead node's sandboxes die with it, and a node agent kills what no record claims). In
        that order: once the sandbox stops answering, whoever asks about it must hear that it
        is gone, not that it runs."""
        await self.store.delete_sandbox(record)
        await self.bus.publish(
            subjects.SANDBOX_GONE, SandboxGone(sandbox_id=record.sandbox_id, reason=reason)
        )
        await self._node_kill(record.node_id, record.sandbox_id)

    async def forget(self, event: SandboxGone) -> None:
        """A node reports a sandbox it no longer runs: drop its record (a paused sandbox
        runs nowhere by design and keeps its record)."""
        record = await self.store.sandbox(event.sandbox_id)
        if record is not None and record.state == SANDBOX_RUNNING:
            await self.store.delete_sandbox(record)

    async def found_paused(self, event: SandboxPaused) -> None:
        """A node kept a sandbox that stopped in a save (its agent crashed) as paused."""
        record = await self.store.sandbox(event.sandbox_id)
        if record is not None and record.state == SANDBOX_RUNNING:
            await self.mark_paused(record)

    async def pause(self, request: PauseRequest) -> SandboxReply:
        try:
            return SandboxReply(sandbox=await self._pause(request))
        except Refused as exc:
            return SandboxReply(error=exc.failure)

    async def _pause(self, request: PauseRequest) -> SandboxRecord:
        record = await self.existing(request.sandbox_id)
        if record.state == SANDBOX_PAUSED:
            raise Refused(409, f"sandbox '{request.sandbox_id}' is already paused")
        message = NodePauseRequest(
            sandbox_id=record.sandbox_id, envd_access_token=record.envd_access_token, memory=request.memory
        )
        await self.ask_node(record.node_id, subjects.NODE_PAUSE, message, NodePauseReply)
        return await self.mark_paused(record, memory=request.memory)

    async def mark_paused(self, record: SandboxRecord, *, memory: bool = True) -> SandboxRecord:
        paused = msgspec.structs.replace(record, state=SANDBOX_PAUSED, host="", pause_memory=memory)
        await self.store.save_paused(paused)
        await self.bus.publish(
            subjects.SANDBOX_GONE, SandboxGone(sandbox_id=record.sandbox_id, reason="paused")
        )
        return paused

    async def resume(self, request: ResumeRequest) -> SandboxReply:
        try:
            return SandboxReply(sandbox=await self._resume(request))
        except Refused as exc:
            return SandboxReply(error=exc.failure)

    async def _resume(self, request: ResumeRequest) -> SandboxRecord:
        record = await self.existing(request.sandbox_id)
        if record.state != SANDBOX_PAUSED:
            if request.timeout_s == 0:  # an auto-resume that another request beat: fine
                return record
            raise Refused(409, f"sandbox '{request.sandbox_id}' is not paused")
        message = NodeResumeRequest(
            sandbox_id=record.sandbox_id,
            template_id=record.template_id,
            env_vars=record.env_vars,
            envd_access_token=record.envd_access_token,
            egress=record.egress,
            volume_mounts=record.volume_mounts,
        )
        reply = await self.ask_node(record.node_id, subjects.NODE_RESUME, message, NodeCreateReply)
        lease_s = request.timeout_s or record.timeout_s  # 0: the sandbox's own (auto-resume)
        resumed = msgspec.structs.replace(
            record, state=SANDBOX_RUNNING, host=reply.host, end_at=time.time() + lease_s, pause_memory=True
        )
        await self.store.save_sandbox(resumed)
        return resumed

    async def update_network(self, request: NetworkUpdateRequest) -> SandboxReply:
        """A running sandbox's node applies the policy first (nothing is stored if it cannot);
        a paused one gets it when it resumes."""
        try:
            record = await self.existing(request.sandbox_id)
            if record.state == SANDBOX_RUNNING:
                message = NodeEgressRequest(sandbox_id=record.sandbox_id, egress=request.egress)
                await self.ask_node(record.node_id, subjects.NODE_EGRESS, message, NodeEgressReply)
        except Refused as exc:
            return SandboxReply(error=exc.failure)
        updated = msgspec.structs.replace(record, egress=request.egress)
        await self.store.set_egress(updated)
        return SandboxReply(sandbox=updated)

    async def set_timeout(self, request: TimeoutRequest) -> SandboxReply:
        try:
            record = await self.existing(request.sandbox_id)
        except Refused as exc:
            return SandboxReply(error=exc.failure)
        end_at = time.time() + request.timeout_s
        if request.extend_only:
            end_at = max(end_at, record.end_at)
        return SandboxReply(sandbox=await self.store.set_end(record, end_at))
