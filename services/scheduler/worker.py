"""The scheduler's request handlers: place, kill, set timeout, pause, resume."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from libs.bus import Bus, BusError
from libs.contracts import subjects
from libs.contracts.messages import (
    DeleteSnapshotRequest,
    Failure,
    ForkReply,
    ForkRequest,
    KillReply,
    KillRequest,
    NodeCreateReply,
    NodeCreateRequest,
    NodeDeleteSnapshotRequest,
    NodeKillRequest,
    NodePauseReply,
    NodePauseRequest,
    NodeResumeRequest,
    NodeSnapshotReply,
    NodeSnapshotRequest,
    PauseRequest,
    PlaceRequest,
    ResumeRequest,
    SandboxGone,
    SandboxPaused,
    SandboxReply,
    SnapshotReply,
    SnapshotRequest,
    TimeoutRequest,
)
from libs.contracts.records import (
    SANDBOX_PAUSED,
    SANDBOX_RUNNING,
    SNAPSHOT_DEFAULT_TAG,
    SandboxRecord,
    SnapshotRecord,
)
from libs.ids import new_sandbox_id, new_token
from libs.state import Store

from . import placement
from .settings import SchedulerSettings

log = logging.getLogger(__name__)


R = TypeVar("R", bound=msgspec.Struct)

# Pauses and resumes move memory to or from disk: they take seconds, not milliseconds.
NODE_LIFECYCLE_TIMEOUT_S = 120.0
# Forks restore on the one node that holds the image: a few at a time.
FORK_RESTORES_AT_ONCE = 4


def _failure(status: int, message: str) -> Failure:
    return Failure(status=status, message=message)


class Refused(Exception):
    """A request that cannot be done, with the status the API answers it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.failure = _failure(status, message)


# Snapshot names: `name`, `namespace/name`, either with `:tag`.
_SNAPSHOT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?(:[a-z0-9][a-z0-9._-]*)?")


def snapshot_name(name: str | None) -> str:
    """The snapshot id a requested name gives: the name with its tag (`default` if none);
    an unnamed snapshot gets a generated name."""
    if not name:
        return f"{new_sandbox_id()}:{SNAPSHOT_DEFAULT_TAG}"
    if len(name) > 128 or not _SNAPSHOT_NAME.fullmatch(name):
        raise Refused(
            400,
            f"invalid snapshot name '{name}': use lowercase letters, digits, '.', '_' and '-', "
            "optionally as namespace/name and with :tag",
        )
    return name if ":" in name else f"{name}:{SNAPSHOT_DEFAULT_TAG}"


@dataclass(frozen=True, slots=True)
class Source:
    """What a new sandbox starts from: a template, or a snapshot image on one node."""

    template_id: str
    alias: str | None
    cpu_count: int
    memory_mb: int
    disk_mb: int
    snapshot: SnapshotRecord | None = None
    snapshot_id: str | None = None  # recorded on the sandbox: persistent snapshots only

    @classmethod
    def of_snapshot(cls, snapshot: SnapshotRecord, persistent: bool = True) -> Source:
        return cls(
            template_id=snapshot.template_id,
            alias=snapshot.alias,
            cpu_count=snapshot.cpu_count,
            memory_mb=snapshot.memory_mb,
            disk_mb=snapshot.disk_mb,
            snapshot=snapshot,
            snapshot_id=snapshot.snapshot_id if persistent else None,
        )


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
        await self.bus.serve(subjects.SNAPSHOT, SnapshotRequest, self.snapshot, queue=queue)
        await self.bus.serve(
            subjects.DELETE_SNAPSHOT, DeleteSnapshotRequest, self.delete_snapshot, queue=queue
        )
        await self.bus.serve(subjects.FORK, ForkRequest, self.fork, queue=queue)
        await self.bus.listen(subjects.SANDBOX_GONE, SandboxGone, self.forget, queue=queue)
        await self.bus.listen(subjects.SANDBOX_PAUSED, SandboxPaused, self.found_paused, queue=queue)

    async def place(self, request: PlaceRequest) -> SandboxReply:
        try:
            source = await self._source(request.template_id, request.owner)
        except Refused as exc:
            return SandboxReply(error=exc.failure)
        return await self._place(request, source)

    async def _source(self, name: str, owner: str) -> Source:
        """A template by id or alias, or one of the owner's snapshots by id or name."""
        template = await self.store.template(name)
        if template is not None:
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

    async def _place(self, request: PlaceRequest, source: Source) -> SandboxReply:
        sandbox_id = new_sandbox_id()
        if not await self.store.reserve_owner_slot(request.owner, sandbox_id, request.owner_limit):
            return SandboxReply(
                error=_failure(
                    429, f"you have reached the maximum of {request.owner_limit} concurrent sandboxes"
                )
            )
        token = new_token() if request.secure else None
        snapshot = source.snapshot
        env_vars = {**snapshot.env_vars, **request.env_vars} if snapshot else request.env_vars
        tried: set[str] = set()
        last_error = "no node has the template and room for a sandbox"
        while True:
            nodes = placement.candidates(
                await self.store.nodes(), source.template_id, self.settings.node_timeout_s, tried
            )
            if snapshot is not None:  # its image is on one node only
                nodes = [node for node in nodes if node.node_id == snapshot.node_id]
            node = placement.pick(nodes, self.settings.placement_k, template_id=source.template_id)
            if node is None:
                await self.store.release_owner_slot(request.owner, sandbox_id)
                return SandboxReply(error=_failure(503, last_error))
            tried.add(node.node_id)
            create = NodeCreateRequest(
                sandbox_id=sandbox_id,
                template_id=source.template_id,
                env_vars=env_vars,
                envd_access_token=token,
                cpu_count=source.cpu_count,
                memory_mb=source.memory_mb,
                snapshot_image_id=snapshot.image_id if snapshot else "",
                snapshot_access_token=snapshot.envd_access_token if snapshot else None,
            )
            try:
                reply = await self.bus.request(
                    subjects.node_subject(node.node_id, subjects.NODE_CREATE),
                    create,
                    NodeCreateReply,
                    timeout_s=self.settings.node_create_timeout_s,
                )
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
                auto_resume=request.auto_resume,
                snapshot_id=source.snapshot_id,
            )
            try:
                await self.store.save_sandbox(record, reserved_as=sandbox_id)
            except Exception as exc:
                log.exception("recording %s failed", record.sandbox_id)
                await self._node_kill(node.node_id, record.sandbox_id)
                await self.store.release_owner_slot(request.owner, sandbox_id)
                return SandboxReply(error=_failure(500, f"could not record the sandbox: {exc}"))
            return SandboxReply(sandbox=record)

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

    async def _existing(self, sandbox_id: str) -> SandboxRecord:
        record = await self.store.sandbox(sandbox_id)
        if record is None:
            raise Refused(404, f"sandbox '{sandbox_id}' not found")
        return record

    async def _ask_node(self, node_id: str, verb: str, message: msgspec.Struct, reply_type: type[R]) -> R:
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
            record = await self._existing(request.sandbox_id)
        except Refused as exc:
            return KillReply(error=exc.failure)
        await self.remove(record, request.reason)
        return KillReply(killed=True)

    async def remove(self, record: SandboxRecord, reason: str) -> None:
        """Kills on the node (best effort: a dead node's sandboxes die with it), forgets the
        record and tells the proxies."""
        await self._node_kill(record.node_id, record.sandbox_id)
        await self.store.delete_sandbox(record)
        await self.bus.publish(
            subjects.SANDBOX_GONE, SandboxGone(sandbox_id=record.sandbox_id, reason=reason)
        )

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
            await self._mark_paused(record)

    async def pause(self, request: PauseRequest) -> SandboxReply:
        try:
            return SandboxReply(sandbox=await self._pause(request))
        except Refused as exc:
            return SandboxReply(error=exc.failure)

    async def _pause(self, request: PauseRequest) -> SandboxRecord:
        record = await self._existing(request.sandbox_id)
        if record.state == SANDBOX_PAUSED:
            raise Refused(409, f"sandbox '{request.sandbox_id}' is already paused")
        message = NodePauseRequest(sandbox_id=record.sandbox_id, envd_access_token=record.envd_access_token)
        await self._ask_node(record.node_id, subjects.NODE_PAUSE, message, NodePauseReply)
        return await self._mark_paused(record)

    async def _mark_paused(self, record: SandboxRecord) -> SandboxRecord:
        paused = msgspec.structs.replace(record, state=SANDBOX_PAUSED, host="")
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
        record = await self._existing(request.sandbox_id)
        if record.state != SANDBOX_PAUSED:
            if request.timeout_s == 0:  # an auto-resume that another request beat: fine
                return record
            raise Refused(409, f"sandbox '{request.sandbox_id}' is not paused")
        message = NodeResumeRequest(
            sandbox_id=record.sandbox_id,
            template_id=record.template_id,
            env_vars=record.env_vars,
            envd_access_token=record.envd_access_token,
        )
        reply = await self._ask_node(record.node_id, subjects.NODE_RESUME, message, NodeCreateReply)
        lease_s = request.timeout_s or record.timeout_s  # 0: the sandbox's own (auto-resume)
        resumed = msgspec.structs.replace(
            record, state=SANDBOX_RUNNING, host=reply.host, end_at=time.time() + lease_s
        )
        await self.store.save_sandbox(resumed)
        return resumed

    async def set_timeout(self, request: TimeoutRequest) -> SandboxReply:
        try:
            record = await self._existing(request.sandbox_id)
        except Refused as exc:
            return SandboxReply(error=exc.failure)
        end_at = time.time() + request.timeout_s
        if request.extend_only:
            end_at = max(end_at, record.end_at)
        return SandboxReply(sandbox=await self.store.set_end(record, end_at))

    async def snapshot(self, request: SnapshotRequest) -> SnapshotReply:
        try:
            return SnapshotReply(snapshot=await self._snapshot(request))
        except Refused as exc:
            return SnapshotReply(error=exc.failure)

    async def _snapshot(self, request: SnapshotRequest) -> SnapshotRecord:
        record = await self._existing(request.sandbox_id)
        snapshot_id = (
            snapshot_name(request.name) if request.name else f"{new_sandbox_id()}:{SNAPSHOT_DEFAULT_TAG}"
        )
        replaced = await self.store.snapshot(snapshot_id)
        if replaced is not None and replaced.owner != record.owner:
            raise Refused(409, f"the snapshot name '{snapshot_id}' is taken")
        snapshot = await self._take_snapshot(record, snapshot_id)
        try:
            await self.store.save_snapshot(snapshot, replaces=replaced)
        except Exception as exc:
            log.exception("recording snapshot %s failed", snapshot_id)
            await self._node_delete_image(snapshot)
            raise Refused(500, f"could not record the snapshot: {exc}") from None
        if replaced is not None:
            await self._node_delete_image(replaced)
        return snapshot

    async def _take_snapshot(self, record: SandboxRecord, snapshot_id: str) -> SnapshotRecord:
        """The node saves the running sandbox into a new image and lets it go on."""
        if record.state == SANDBOX_PAUSED:
            raise Refused(409, f"sandbox '{record.sandbox_id}' is paused: resume it first")
        image_id = new_sandbox_id()
        message = NodeSnapshotRequest(
            sandbox_id=record.sandbox_id, image_id=image_id, envd_access_token=record.envd_access_token
        )
        reply = await self._ask_node(record.node_id, subjects.NODE_SNAPSHOT, message, NodeSnapshotReply)
        if reply.source_paused:
            await self._mark_paused(record)
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
            cpu_count=record.cpu_count,
            memory_mb=record.memory_mb,
            disk_mb=record.disk_mb,
            size_bytes=reply.size_bytes,
            created_at=time.time(),
        )

    async def _node_delete_image(self, snapshot: SnapshotRecord) -> None:
        """Best effort: a node that misses it removes the unrecorded image itself."""
        try:
            await self.bus.request(
                subjects.node_subject(snapshot.node_id, subjects.NODE_DELETE_SNAPSHOT),
                NodeDeleteSnapshotRequest(image_id=snapshot.image_id),
                KillReply,
                timeout_s=60,
            )
        except BusError as exc:
            log.warning("deleting image %s on node %s: %s", snapshot.image_id, snapshot.node_id, exc)

    async def delete_snapshot(self, request: DeleteSnapshotRequest) -> KillReply:
        snapshot = await self.store.snapshot(request.snapshot_id)
        if snapshot is None:
            return KillReply(error=_failure(404, f"snapshot '{request.snapshot_id}' not found"))
        await self.store.delete_snapshot(snapshot)
        await self._node_delete_image(snapshot)
        return KillReply(killed=True)

    async def fork(self, request: ForkRequest) -> ForkReply:
        """Snapshots the sandbox once (it goes on running) and starts `count` sandboxes from
        that image, each succeeding or failing on its own; the image goes afterwards."""
        try:
            record = await self._existing(request.sandbox_id)
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
            auto_pause=record.auto_pause,
            auto_resume=record.auto_resume,
        )
        source = Source.of_snapshot(snapshot, persistent=False)
        gate = asyncio.Semaphore(FORK_RESTORES_AT_ONCE)

        async def one_fork() -> SandboxReply:
            async with gate:
                return await self._place(place, source)

        try:
            forks = await asyncio.gather(*(one_fork() for _ in range(request.count)))
        finally:
            await self._node_delete_image(snapshot)
        return ForkReply(forks=list(forks))
