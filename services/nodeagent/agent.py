"""The node agent: serves `corral.node.<id>.*`, heart-beats this node's capacity and
templates into Redis, and keeps the host's sandboxes and the records of them in step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import (
    Failure,
    KillReply,
    NodeBuildRequest,
    NodeCreateReply,
    NodeCreateRequest,
    NodeDeleteSnapshotRequest,
    NodeDeleteTemplateRequest,
    NodeEgressReply,
    NodeEgressRequest,
    NodeKillRequest,
    NodeListReply,
    NodeListRequest,
    NodeLogsReply,
    NodeLogsRequest,
    NodeMetricsRequest,
    NodePauseRequest,
    NodeResumeRequest,
    NodeSnapshotRequest,
    NodeVolumeRequest,
    SandboxGone,
    SandboxPaused,
)
from corral_libs.contracts.records import (
    NODE_READY,
    NODE_STARTING,
    NODE_STOPPED,
    NodeRecord,
)
from corral_libs.state import Store

from .builds.assemble import template_record
from .builds.builder import TemplateBuilds
from .builds.distribution import TemplateDistribution
from .checkpoints import Checkpoints
from .content_server import ContentServer
from .egress.service import Egress
from .launcher import Launch, Launcher, Owner
from .pool import WarmPool
from .running import RunningSandboxes
from .runtime.base import RunningSandbox, Runtime
from .sandbox_logs import parse_console
from .sandbox_metrics import EVERY_S as METRICS_EVERY_S
from .sandbox_metrics import MetricsSampler
from .settings import NodeSettings
from .slots import NoFreeSlot, Slots
from .template_snapshots import TemplateSnapshots
from .templates.builtin import BuiltinTemplates
from .templates.store import TemplateStore
from .volumes.service import Volumes, VolumeUnavailable, volume_ids

log = logging.getLogger(__name__)

# A sandbox younger than this may still be on its way into Redis: never reaped as orphan.
ORPHAN_GRACE_S = 180.0
RECONCILE_EVERY_S = 15.0
# How long a restarted agent waits for checkpoints and restores its predecessor left running.
LIFECYCLE_SETTLE_S = 120.0
# Sandboxes a restarted agent looks at together (each costs a runsc call or two).
ADOPT_AT_ONCE = 4
# A replaced template build stays while a sandbox started from it may still run.
OLD_BUILD_KEEP_S = 25 * 3600.0


class NodeAgent:
    def __init__(self, settings: NodeSettings, runtime: Runtime, bus: Bus, store: Store) -> None:
        self.settings = settings
        self.runtime = runtime
        self.bus = bus
        self.store = store
        self.templates = TemplateStore(settings.template_root, runtime.name)
        self.slots = Slots(settings.slot_base, settings.max_sandboxes)
        self.egress = Egress(settings, store)
        self.running = RunningSandboxes(self.slots, self.egress)
        self.volumes = Volumes(settings, store)
        self._started_at = time.time()
        self._http = httpx.AsyncClient()
        self.launcher = Launcher(
            runtime, self.templates, self.slots, self.running, self._http, settings.envd_ready_timeout_s
        )
        self.checkpoints = Checkpoints(
            settings, runtime, self.templates, self.launcher, self.running, self.volumes, self._http
        )
        self.template_snapshots = TemplateSnapshots(
            runtime, self.templates, self.slots, self._http, settings.envd_ready_timeout_s
        )
        self.pool = WarmPool(settings, self.templates, self.template_snapshots, self.launcher)
        self.builds = TemplateBuilds(
            settings, runtime, self.templates, self.template_snapshots, self.slots, self.egress, store
        )
        self.distribution = TemplateDistribution(settings.node_id, runtime.name, self.templates, store)
        self.content = ContentServer(settings)
        self.builtins = BuiltinTemplates(settings.builtin_template_names, self.templates, store)
        self.metrics = MetricsSampler(self.running, self._http, self.checkpoints.busy)
        self._tasks: list[asyncio.Task[None]] = []
        self._status = NODE_STARTING

    def subject(self, verb: str) -> str:
        return subjects.node_subject(self.settings.node_id, verb)

    async def start(self) -> None:
        await self.builtins.check()
        await self.egress.start()
        await self.volumes.start()
        await self.distribution.start()
        await self.content.start(
            [*self.volumes.routes(), *self.builds.files.routes(), *self.distribution.routes()]
        )
        # Heart-beats first: adopting many sandboxes takes a while, and a node silent for
        # the node timeout is declared dead (its sandboxes with it). Until the handlers are
        # served, creates sent here find no responder and go elsewhere at once.
        await self.heartbeat()
        self._tasks = [asyncio.create_task(self._every(self.settings.heartbeat_s, self.heartbeat))]
        await self.adopt()
        await self.builds.recover()
        checkpoints = self.checkpoints
        handlers: list[tuple[str, type[msgspec.Struct], Callable[[Any], Awaitable[msgspec.Struct]]]] = [
            (subjects.NODE_CREATE, NodeCreateRequest, self.create),
            (subjects.NODE_KILL, NodeKillRequest, self.kill),
            (subjects.NODE_LIST, NodeListRequest, self.list),
            (subjects.NODE_LOGS, NodeLogsRequest, self.logs),
            (subjects.NODE_PAUSE, NodePauseRequest, checkpoints.pause),
            (subjects.NODE_RESUME, NodeResumeRequest, checkpoints.resume),
            (subjects.NODE_SNAPSHOT, NodeSnapshotRequest, checkpoints.snapshot),
            (subjects.NODE_DELETE_SNAPSHOT, NodeDeleteSnapshotRequest, checkpoints.delete_snapshot),
            (subjects.NODE_EGRESS, NodeEgressRequest, self.update_egress),
            (subjects.NODE_METRICS, NodeMetricsRequest, self.metrics.query),
            (subjects.NODE_CREATE_VOLUME, NodeVolumeRequest, self.volumes.create),
            (subjects.NODE_DELETE_VOLUME, NodeVolumeRequest, self.delete_volume),
            (subjects.NODE_BUILD, NodeBuildRequest, self.builds.start),
            (subjects.NODE_DELETE_TEMPLATE, NodeDeleteTemplateRequest, self.delete_template),
        ]
        for verb, request_type, handler in handlers:
            await self.bus.serve(self.subject(verb), request_type, handler)
        self._status = NODE_READY
        await self.heartbeat()
        self._tasks += [
            asyncio.create_task(self._every(RECONCILE_EVERY_S, self.reconcile)),
            asyncio.create_task(self._every(METRICS_EVERY_S, self.metrics.sample_all)),
            asyncio.create_task(self._every(self.settings.heartbeat_s, self.distribution.sync)),
        ]
        if self.builtins.pending:
            self._tasks.append(asyncio.create_task(self.builtins.build_pending(self.heartbeat)))
        if self.settings.pool_max > 0:
            self._tasks.append(asyncio.create_task(self.pool.run()))
        log.info("node %s ready (%s runtime)", self.settings.node_id, self.runtime.name)

    async def stop(self) -> None:
        self._status = NODE_STOPPED
        with contextlib.suppress(Exception):  # Redis may be gone first
            await self.heartbeat()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.launcher.settle()
        await self.pool.drain()
        await self.builds.stop()
        await self.distribution.stop()
        await self.content.stop()
        await self.egress.stop()
        await self._http.aclose()

    async def _every(self, period_s: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await step()
            except Exception:
                log.exception("%s failed", step.__name__)

    async def adopt(self) -> None:
        """After a restart: keep the sandboxes that still run and still have a record; kill
        the rest (no create can be in flight: its caller was the previous process) and
        clean away what crashed sandboxes left. Pauses, resumes and snapshots the previous
        process left half-done are finished or undone (`Checkpoints.recover_*`), so no
        sandbox's data is lost; a sandbox that became paused is reported to the scheduler."""
        await self.runtime.settle(LIFECYCLE_SETTLE_S)
        recorded = set(await self.store.node_sandbox_ids(self.settings.node_id))
        stopped = set(await self.runtime.leftovers())
        at_once = asyncio.Semaphore(ADOPT_AT_ONCE)

        async def adopt_one(sandbox: RunningSandbox) -> None:
            async with at_once:
                sandbox_id = sandbox.sandbox_id
                record = await self.store.sandbox(sandbox_id) if sandbox_id in recorded else None
                try:
                    keep = record is not None and await self.checkpoints.recover_running(sandbox)
                except Exception as exc:
                    # Listed as running, but the checkpoint it was in stopped it a moment ago.
                    log.warning("sandbox %s does not answer (%s): treating it as stopped", sandbox_id, exc)
                    stopped.add(sandbox_id)
                    return
                if record is None and await self.pool.adopt(sandbox):
                    self.slots.mark_used(sandbox.slot)
                    log.info("took warm clone %s back into the pool", sandbox_id)
                    return
                if not keep or record is None:
                    # Behind the start-up: its slot stays taken until it is gone.
                    log.info("killing sandbox %s: unrecorded, or a resume cut short", sandbox_id)
                    self.slots.mark_used(sandbox.slot)
                    await self.launcher.retire(sandbox)
                    return
                self.slots.mark_used(sandbox.slot)
                await self.running.track(
                    sandbox, record.egress, record.envd_access_token, volume_ids(record.volume_mounts)
                )
                log.info("re-adopted sandbox %s", sandbox_id)

        await asyncio.gather(*(adopt_one(sandbox) for sandbox in await self.runtime.list()))
        await self.pool.drop_other_marks()
        for sandbox_id in sorted(stopped):
            if sandbox_id in recorded and await self.checkpoints.recover_stopped(sandbox_id):
                await self.bus.publish(subjects.SANDBOX_PAUSED, SandboxPaused(sandbox_id=sandbox_id))
            log.info("cleaning leftovers of sandbox %s", sandbox_id)
            await self.runtime.kill(sandbox_id)
        slots = range(self.settings.slot_base, self.settings.slot_base + self.settings.max_sandboxes)
        await self.egress.reconcile(slots)
        await self.reconcile()

    async def reconcile(self) -> None:
        """Records of this node whose sandbox is gone are reported gone; sandboxes this agent
        handed out that nobody recorded (a create whose caller died) are killed once past the
        grace period."""
        running = {s.sandbox_id for s in await self.runtime.list()}
        recorded = set(await self.store.node_sandbox_ids(self.settings.node_id))
        for sandbox_id in recorded - running:
            paused = await asyncio.to_thread(self.checkpoints.is_paused, sandbox_id)
            if self.running.get(sandbox_id) is None and not paused:
                await self.bus.publish(
                    subjects.SANDBOX_GONE, SandboxGone(sandbox_id=sandbox_id, reason="not running")
                )
        images = await self.store.node_snapshot_images(self.settings.node_id)
        in_use = await self.checkpoints.collect_images(images)
        await asyncio.to_thread(self.templates.collect_old_builds, OLD_BUILD_KEEP_S, in_use)
        await self.builds.collect()
        now = time.time()
        for sandbox_id in running - recorded - self.pool.sandbox_ids:
            # No creation time: a restore or boot of this process still under way (whatever
            # ran unrecorded before this process started was killed by `adopt`).
            created = self.running.started_at(sandbox_id)
            if created is not None and now - created > ORPHAN_GRACE_S:
                log.warning("killing orphan sandbox %s (no record)", sandbox_id)
                await self._kill(sandbox_id)

    async def heartbeat(self) -> None:
        manifests = await asyncio.to_thread(self.templates.list)
        if any(m.owner for m in manifests):
            deleted = await self.store.deleted_templates()
            for manifest in [m for m in manifests if m.owner and m.template_id in deleted]:
                log.info(
                    "template %s was deleted while this node was away: letting it go", manifest.template_id
                )
                await asyncio.to_thread(self.templates.retire, manifest.template_id)
                manifests.remove(manifest)
        for manifest in manifests:
            if manifest.owner:  # built through the API: its builder's record is the current build
                await self.store.save_template_if_absent(template_record(manifest))
            else:
                await self.store.save_template(template_record(manifest))
        await self.store.save_node(
            NodeRecord(
                node_id=self.settings.node_id,
                runtimes=[self.runtime.name],
                runtime_version=self.runtime.version,
                templates=[m.template_id for m in manifests],
                cpu_count=_cpu_count(),
                memory_mb=_memory_mb(),
                sandboxes=len(self.running),
                warm=self.pool.depths(),
                warm_targets=self.pool.targets(),
                warm_refills_per_min=self.pool.refill_rate(),
                max_sandboxes=self.settings.max_sandboxes,
                heartbeat_at=time.time(),
                started_at=self._started_at,
                content_url=self.content.url,
                holds_volumes=self.runtime.supports_volumes,
                builds_templates=self.builds.available,
                templates_pending=list(self.builtins.pending),
                status=self._status,
            )
        )

    async def create(self, request: NodeCreateRequest) -> NodeCreateReply:
        """A warm clone if the pool has one, else a restore from the template's snapshot,
        else a boot, personalised through envd /init; or a restore of a persistent snapshot.
        A sandbox that mounts volumes is booted with them (a checkpoint restores only the
        mounts it was taken with)."""
        if request.volume_mounts and not self.runtime.supports_volumes:
            message = f"volumes cannot be mounted by this node's {self.runtime.name} runtime"
            return NodeCreateReply(error=Failure(status=400, message=message))
        if request.snapshot_image_id:
            return await self.checkpoints.create_from_snapshot(request)
        manifest = await asyncio.to_thread(self.templates.get, request.template_id)
        if manifest is None:
            message = f"template '{request.template_id}' is not on this node"
            return NodeCreateReply(error=Failure(status=404, message=message))
        sandbox_id = request.sandbox_id
        owner = Owner(
            egress=request.egress,
            access_token=request.envd_access_token,
            env_vars=request.env_vars,
            volume_ids=volume_ids(request.volume_mounts),
        )
        try:
            if request.volume_mounts:
                volumes = await self.volumes.host_dirs(request.volume_mounts)
                sandbox = await self.launcher.start(Launch(manifest, sandbox_id, volumes=volumes))
            else:
                sandbox = await self.pool.claim(manifest) or await self.pool.restore_for_create(
                    manifest, sandbox_id
                )
                if sandbox is None:  # no template snapshot: a boot
                    sandbox = await self.launcher.start(Launch(manifest, sandbox_id))
            await self.launcher.hand_over(sandbox, manifest, owner)
        except NoFreeSlot as exc:
            return NodeCreateReply(error=Failure(status=503, message=str(exc)))
        except VolumeUnavailable as exc:
            return NodeCreateReply(error=Failure(status=409, message=str(exc)))
        except Exception as exc:
            log.exception("create of %s failed", sandbox_id)
            return NodeCreateReply(error=Failure(status=500, message=f"sandbox did not start: {exc}"))
        return NodeCreateReply(
            sandbox_id=sandbox.sandbox_id, host=sandbox.address, envd_version=manifest.envd_version
        )

    async def _kill(self, sandbox_id: str) -> bool:
        """Kills a running sandbox or deletes a paused one's image."""
        sandbox = self.running.get(sandbox_id)
        if sandbox is not None:
            await self.launcher.discard(sandbox)
            return True
        killed = await self.runtime.kill(sandbox_id)
        return await self.checkpoints.drop_paused(sandbox_id) or killed

    async def kill(self, request: NodeKillRequest) -> KillReply:
        """Answers as soon as the sandbox is fenced off (`Launcher.retire`; the scheduler
        drops its record and the proxies their routes); its runsc container, namespace and
        files go behind the answer."""
        sandbox = self.running.get(request.sandbox_id)
        if sandbox is None:  # paused, a leftover, or unknown: nothing runs to fence off
            return KillReply(killed=await self._kill(request.sandbox_id))
        await self.launcher.retire(sandbox)
        return KillReply(killed=True)

    async def delete_volume(self, request: NodeVolumeRequest) -> KillReply:
        in_use = self.running.mounting(request.volume_id)
        if in_use:
            message = f"volume '{request.volume_id}' is mounted by sandbox {in_use[0]}"
            return KillReply(error=Failure(status=409, message=message))
        return await self.volumes.delete(request)

    async def delete_template(self, request: NodeDeleteTemplateRequest) -> KillReply:
        """The template goes from this node's store (its sandboxes run on: the build is put
        aside until none needs it) with its uploaded build files."""
        retired = await asyncio.to_thread(self.templates.retire, request.template_id)
        await asyncio.to_thread(self.builds.remove_template, request.template_id)
        return KillReply(killed=retired)

    async def update_egress(self, request: NodeEgressRequest) -> NodeEgressReply:
        if self.running.get(request.sandbox_id) is None:
            message = f"sandbox '{request.sandbox_id}' is not running on this node"
            return NodeEgressReply(error=Failure(status=409, message=message))
        try:
            applied = await self.egress.update(request.sandbox_id, request.egress)
        except Exception as exc:
            log.exception("egress update of %s failed", request.sandbox_id)
            return NodeEgressReply(error=Failure(status=500, message=f"the policy was not applied: {exc}"))
        return NodeEgressReply(applied=applied)

    async def list(self, request: NodeListRequest) -> NodeListReply:
        return NodeListReply(sandbox_ids=sorted(s.sandbox_id for s in await self.runtime.list()))

    async def logs(self, request: NodeLogsRequest) -> NodeLogsReply:
        return NodeLogsReply(
            entries=parse_console(await self.runtime.logs(request.sandbox_id, request.limit))
        )


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) // 1024
