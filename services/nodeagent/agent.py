"""The node agent: serves `corral.node.<id>.*`, heart-beats this node's capacity and
templates into Redis, and keeps the host's sandboxes and the records of them in step."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from libs.bus import Bus
from libs.contracts import subjects
from libs.contracts.messages import (
    Failure,
    KillReply,
    NodeCreateReply,
    NodeCreateRequest,
    NodeDeleteSnapshotRequest,
    NodeKillRequest,
    NodeListReply,
    NodeListRequest,
    NodeLogsReply,
    NodeLogsRequest,
    NodePauseReply,
    NodePauseRequest,
    NodeResumeRequest,
    NodeSnapshotReply,
    NodeSnapshotRequest,
    SandboxGone,
    SandboxPaused,
)
from libs.contracts.records import NodeRecord, TemplateRecord
from libs.state import Store

from . import envd_client
from .images import ImageStore
from .pool import WarmPool
from .runtime.base import RestartFailed, RunningSandbox, Runtime
from .settings import NodeSettings
from .slots import NoFreeSlot, Slots
from .snapshots import TemplateSnapshots
from .templates.store import TemplateManifest, TemplateStore

log = logging.getLogger(__name__)

# A sandbox younger than this may still be on its way into Redis: never reaped as orphan.
ORPHAN_GRACE_S = 180.0
RECONCILE_EVERY_S = 15.0
# How long a restarted agent waits for checkpoints and restores its predecessor left running.
LIFECYCLE_SETTLE_S = 120.0
# A replaced template build stays while a sandbox started from it may still run.
OLD_BUILD_KEEP_S = 25 * 3600.0


class NodeAgent:
    def __init__(self, settings: NodeSettings, runtime: Runtime, bus: Bus, store: Store) -> None:
        self.settings = settings
        self.runtime = runtime
        self.bus = bus
        self.store = store
        self.templates = TemplateStore(Path(settings.template_dir or Path(settings.data_dir) / "templates"))
        self.slots = Slots(settings.slot_base, settings.max_sandboxes)
        self.images = ImageStore(Path(settings.data_dir))
        self._sandboxes: dict[str, RunningSandbox] = {}
        self._created_at: dict[str, float] = {}
        self._lifecycle_locks: dict[str, asyncio.Lock] = {}
        self._snapshotting: set[str] = set()  # snapshot images being written
        self._started_at = time.time()
        self._http = httpx.AsyncClient()
        self.snapshots = TemplateSnapshots(
            runtime, self.templates, self.slots, self._http, settings.envd_ready_timeout_s
        )
        self.pool = WarmPool(settings, runtime, self.templates, self.snapshots, self.slots, self._http)
        self._tasks: list[asyncio.Task[None]] = []

    def subject(self, verb: str) -> str:
        return subjects.node_subject(self.settings.node_id, verb)

    async def start(self) -> None:
        await self.adopt()
        await self.bus.serve(self.subject(subjects.NODE_CREATE), NodeCreateRequest, self.create)
        await self.bus.serve(self.subject(subjects.NODE_KILL), NodeKillRequest, self.kill)
        await self.bus.serve(self.subject(subjects.NODE_LIST), NodeListRequest, self.list)
        await self.bus.serve(self.subject(subjects.NODE_LOGS), NodeLogsRequest, self.logs)
        await self.bus.serve(self.subject(subjects.NODE_PAUSE), NodePauseRequest, self.pause)
        await self.bus.serve(self.subject(subjects.NODE_RESUME), NodeResumeRequest, self.resume)
        await self.bus.serve(self.subject(subjects.NODE_SNAPSHOT), NodeSnapshotRequest, self.snapshot)
        await self.bus.serve(
            self.subject(subjects.NODE_DELETE_SNAPSHOT), NodeDeleteSnapshotRequest, self.delete_snapshot
        )
        await self.heartbeat()
        self._tasks = [
            asyncio.create_task(self._every(self.settings.heartbeat_s, self.heartbeat)),
            asyncio.create_task(self._every(RECONCILE_EVERY_S, self.reconcile)),
        ]
        if self.settings.pool_max > 0:
            self._tasks.append(asyncio.create_task(self.pool.run()))
        log.info("node %s ready (%s runtime)", self.settings.node_id, self.runtime.name)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pool.drain()
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
        clean away what crashed sandboxes left. Pauses and snapshots the previous process
        left half-done are finished or undone, so no sandbox's data is lost:
        - a checkpoint that completed stops the sandbox: it becomes a paused sandbox;
        - a checkpoint that never happened: the sandbox runs on (envd listens again);
        - a resume cut short: the paused image is still whole; the half-restored one goes.
        """
        await self.runtime.settle(LIFECYCLE_SETTLE_S)
        recorded = set(await self.store.node_sandbox_ids(self.settings.node_id))
        for sandbox in await self.runtime.list():
            sandbox_id = sandbox.sandbox_id
            half_resumed = await asyncio.to_thread(self.images.paused(sandbox_id).exists)
            if sandbox_id not in recorded or half_resumed:
                log.info(
                    "killing sandbox %s: %s",
                    sandbox_id,
                    "a resume cut short" if half_resumed else "no record",
                )
                await self.runtime.kill(sandbox_id)
                continue
            for work in await asyncio.to_thread(self.images.interrupted, sandbox_id):
                await asyncio.to_thread(shutil.rmtree, work, True)
            await self.runtime.wake_envd(sandbox_id)  # it may have let go of its sockets for a save
            self.slots.mark_used(sandbox.slot)
            self._track(sandbox)
            log.info("re-adopted sandbox %s", sandbox_id)
        for sandbox_id in await self.runtime.leftovers():
            if sandbox_id in recorded:
                await self._finish_interrupted_save(sandbox_id)
            log.info("cleaning leftovers of sandbox %s", sandbox_id)
            await self.runtime.kill(sandbox_id)
        await self.reconcile()

    async def _finish_interrupted_save(self, sandbox_id: str) -> None:
        """A recorded sandbox that stopped during a pause or snapshot: its newest complete
        checkpoint becomes its paused image, and the scheduler hears it is paused."""
        paused = self.images.paused(sandbox_id)
        works = await asyncio.to_thread(self.images.interrupted, sandbox_id)
        for work in works:
            if not await asyncio.to_thread(paused.exists) and await asyncio.to_thread(
                self.images.holds_checkpoint, work
            ):
                await asyncio.to_thread(paused.parent.mkdir, parents=True, exist_ok=True)
                await asyncio.to_thread(work.rename, paused)
                log.info("sandbox %s stopped in a save: kept its checkpoint as its paused image", sandbox_id)
            else:
                await asyncio.to_thread(shutil.rmtree, work, True)
        if await asyncio.to_thread(paused.exists):
            await self.bus.publish(subjects.SANDBOX_PAUSED, SandboxPaused(sandbox_id=sandbox_id))

    async def reconcile(self) -> None:
        """Records of this node whose sandbox is gone are reported gone; sandboxes this agent
        handed out that nobody recorded (a create whose caller died) are killed once past the
        grace period."""
        running = {s.sandbox_id for s in await self.runtime.list()}
        recorded = set(await self.store.node_sandbox_ids(self.settings.node_id))
        for sandbox_id in recorded - running:
            paused = await asyncio.to_thread(self.images.paused(sandbox_id).exists)
            if sandbox_id not in self._sandboxes and not paused:
                await self.bus.publish(
                    subjects.SANDBOX_GONE, SandboxGone(sandbox_id=sandbox_id, reason="not running")
                )
        await self._collect_images()
        now = time.time()
        for sandbox_id in running - recorded - self.pool.sandbox_ids:
            # No creation time: a restore or boot of this process still under way (whatever
            # ran unrecorded before this process started was killed by `adopt`).
            created = self._created_at.get(sandbox_id)
            if created is not None and now - created > ORPHAN_GRACE_S:
                log.warning("killing orphan sandbox %s (no record)", sandbox_id)
                await self._kill(sandbox_id)

    async def _collect_images(self) -> None:
        """Snapshot images nobody records (their delete came while this node was away, or
        their snapshot call died half-way) go, then builds that no image needs any more."""
        recorded = await self.store.node_snapshot_images(self.settings.node_id)
        for image_id in await asyncio.to_thread(self.images.snapshot_ids):
            if image_id in recorded or image_id in self._snapshotting:
                continue
            image = self.images.snapshot(image_id)
            meta = await asyncio.to_thread(self.images.meta, image)
            if meta is None or time.time() - meta.taken_at > ORPHAN_GRACE_S:
                log.info("removing snapshot image %s: nothing records it", image_id)
                await asyncio.to_thread(shutil.rmtree, image, True)
        await asyncio.to_thread(self.images.collect_work_dirs, ORPHAN_GRACE_S)
        in_use = await asyncio.to_thread(self.images.builds_in_use)
        await asyncio.to_thread(self.templates.collect_old_builds, OLD_BUILD_KEEP_S, in_use)

    async def heartbeat(self) -> None:
        manifests = await asyncio.to_thread(self.templates.list)
        for manifest in manifests:
            await self.store.save_template(
                TemplateRecord(
                    template_id=manifest.template_id,
                    aliases=manifest.aliases,
                    build_id=manifest.build_id,
                    envd_version=manifest.envd_version,
                    cpu_count=manifest.cpu_count,
                    memory_mb=manifest.memory_mb,
                    disk_mb=manifest.disk_mb,
                    created_at=manifest.built_at,
                )
            )
        await self.store.save_node(
            NodeRecord(
                node_id=self.settings.node_id,
                runtimes=[self.runtime.name],
                templates=[m.template_id for m in manifests],
                cpu_count=_cpu_count(),
                memory_mb=_memory_mb(),
                sandboxes=len(self._sandboxes),
                warm=self.pool.depths(),
                max_sandboxes=self.settings.max_sandboxes,
                heartbeat_at=time.time(),
                started_at=self._started_at,
            )
        )

    async def create(self, request: NodeCreateRequest) -> NodeCreateReply:
        """A warm clone if the pool has one, else a restore from the template's snapshot,
        else a boot; or a restore of a persistent snapshot. Then personalised through envd
        /init."""
        if request.snapshot_image_id:
            return await self._create_from_snapshot(request)
        manifest = await asyncio.to_thread(self.templates.get, request.template_id)
        if manifest is None:
            message = f"template '{request.template_id}' is not on this node"
            return NodeCreateReply(error=Failure(status=404, message=message))
        sandbox_id = request.sandbox_id
        try:
            sandbox = self.pool.claim(manifest.template_id) or await self.pool.restore(manifest, sandbox_id)
            if sandbox is None:
                sandbox = await self._boot(manifest, sandbox_id)
            sandbox_id = sandbox.sandbox_id
            self._track(sandbox)
            await self._personalise(sandbox, manifest, request)
        except NoFreeSlot as exc:
            return NodeCreateReply(error=Failure(status=503, message=str(exc)))
        except Exception as exc:
            log.exception("create of %s failed", sandbox_id)
            await self._kill(sandbox_id)
            return NodeCreateReply(error=Failure(status=500, message=f"sandbox did not start: {exc}"))
        return NodeCreateReply(
            sandbox_id=sandbox_id, host=sandbox.address, envd_version=manifest.envd_version
        )

    async def _create_from_snapshot(self, request: NodeCreateRequest) -> NodeCreateReply:
        image = self.images.snapshot(request.snapshot_image_id)
        build = await self._image_build(image, request.template_id)
        if build is None:
            message = f"snapshot image '{request.snapshot_image_id}' or its template is not on this node"
            return NodeCreateReply(error=Failure(status=404, message=message))
        manifest, build_dir = build
        try:
            sandbox = await self._restore(manifest, build_dir, request.sandbox_id, image)
            self._track(sandbox)
            await self._personalise(sandbox, manifest, request, current_token=request.snapshot_access_token)
        except NoFreeSlot as exc:
            return NodeCreateReply(error=Failure(status=503, message=str(exc)))
        except Exception as exc:
            log.exception("create of %s from snapshot failed", request.sandbox_id)
            await self._kill(request.sandbox_id)
            return NodeCreateReply(error=Failure(status=500, message=f"sandbox did not start: {exc}"))
        return NodeCreateReply(
            sandbox_id=request.sandbox_id, host=sandbox.address, envd_version=manifest.envd_version
        )

    async def _image_build(self, image: Path, template_id: str) -> tuple[TemplateManifest, Path] | None:
        """The template build an image was taken on (images from before builds were
        recorded: the template's current build)."""
        if not await asyncio.to_thread(image.is_dir):
            return None
        meta = await asyncio.to_thread(self.images.meta, image)
        if meta is not None:
            return await asyncio.to_thread(self.templates.find_build, meta.template_id, meta.build_id)
        manifest = await asyncio.to_thread(self.templates.get, template_id)
        return None if manifest is None else (manifest, self.templates.root / template_id)

    def _track(self, sandbox: RunningSandbox) -> None:
        self._sandboxes[sandbox.sandbox_id] = sandbox
        self._created_at[sandbox.sandbox_id] = time.time()

    async def _personalise(
        self,
        sandbox: RunningSandbox,
        manifest: TemplateManifest,
        request: NodeCreateRequest | NodeResumeRequest,
        current_token: str | None = None,
    ) -> None:
        """envd /init: the sandbox's env vars, access token, default user and the clock.
        `current_token`: the token a restored envd still holds from its snapshot."""
        await envd_client.init(
            self._http,
            sandbox.address,
            env_vars=request.env_vars,
            access_token=request.envd_access_token,
            default_user=manifest.user,
            current_token=current_token,
        )

    async def _boot(self, manifest: TemplateManifest, sandbox_id: str) -> RunningSandbox:
        slot = self.slots.take()
        spec = self.templates.sandbox_spec(manifest, sandbox_id, slot)
        try:
            sandbox = await self.runtime.create(spec)
            await envd_client.wait_ready(self._http, sandbox.address, self.settings.envd_ready_timeout_s)
        except BaseException:
            await self.runtime.kill(sandbox_id)
            self.slots.release(slot)
            raise
        return sandbox

    async def _restore(
        self, manifest: TemplateManifest, build_dir: Path, sandbox_id: str, image: Path
    ) -> RunningSandbox:
        """A sandbox from a paused or snapshot image, envd answering; nothing left on failure."""
        slot = self.slots.take()
        spec = self.templates.sandbox_spec(manifest, sandbox_id, slot, build_dir)
        try:
            sandbox = await self.runtime.restore(spec, image)
            await envd_client.wait_ready(self._http, sandbox.address, self.settings.envd_ready_timeout_s)
        except BaseException:
            await self.runtime.kill(sandbox_id)
            self.slots.release(slot)
            raise
        return sandbox

    async def _kill(self, sandbox_id: str) -> bool:
        """Kills a running sandbox or deletes a paused one's image."""
        killed = await self.runtime.kill(sandbox_id)
        self._forget(sandbox_id)
        paused = self.images.paused(sandbox_id)
        if await asyncio.to_thread(paused.exists):
            await asyncio.to_thread(shutil.rmtree, paused, True)
            killed = True
        return killed

    def _forget(self, sandbox_id: str) -> None:
        sandbox = self._sandboxes.pop(sandbox_id, None)
        self._created_at.pop(sandbox_id, None)
        if sandbox is not None:
            self.slots.release(sandbox.slot)

    def _lifecycle_lock(self, sandbox_id: str) -> asyncio.Lock:
        """One pause, resume or snapshot of a sandbox at a time."""
        return self._lifecycle_locks.setdefault(sandbox_id, asyncio.Lock())

    async def _save(self, sandbox: RunningSandbox, image: Path, *, keep_running: bool) -> None:
        """Checkpoints a sandbox whose envd let go of its sockets into `image` (written
        aside with the build it needs, then renamed into place)."""
        build_id = sandbox.build_id
        if not build_id:  # adopted from an agent that did not record builds
            manifest = await asyncio.to_thread(self.templates.get, sandbox.template_id)
            build_id = manifest.build_id if manifest else ""
        work = await asyncio.to_thread(
            self.images.begin, image, sandbox.sandbox_id, sandbox.template_id, build_id
        )
        try:
            if keep_running:
                await self.runtime.snapshot(sandbox.sandbox_id, work)
            else:
                await self.runtime.checkpoint(sandbox.sandbox_id, work)
        except RestartFailed:
            await asyncio.to_thread(work.rename, image)
            raise
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, work, True)
            raise
        await asyncio.to_thread(work.rename, image)

    async def _prepare(self, sandbox: RunningSandbox, access_token: str | None) -> None:
        try:
            await envd_client.prepare_snapshot(self._http, sandbox.address, access_token)
        except Exception as exc:
            raise _Refusal(409, f"envd did not get ready for the snapshot: {exc}") from None

    async def pause(self, request: NodePauseRequest) -> NodePauseReply:
        """Checkpoints the sandbox into the node's image store and frees what it held. A
        pause that fails leaves the sandbox running."""
        sandbox_id = request.sandbox_id
        async with self._lifecycle_lock(sandbox_id):
            sandbox = self._sandboxes.get(sandbox_id)
            try:
                if sandbox is None:
                    raise _Refusal(404, f"sandbox '{sandbox_id}' is not running here")
                await self._prepare(sandbox, request.envd_access_token)
                try:
                    await self._save(sandbox, self.images.paused(sandbox_id), keep_running=False)
                except Exception as exc:
                    log.exception("pause of %s failed", sandbox_id)
                    await self.runtime.wake_envd(sandbox_id)
                    raise _Refusal(500, f"pause failed, the sandbox keeps running: {exc}") from None
            except _Refusal as refusal:
                return NodePauseReply(error=refusal.failure)
            await self.runtime.kill(sandbox_id)  # the checkpoint stopped it: clear what is left
            self._forget(sandbox_id)
            return NodePauseReply(paused=True)

    async def snapshot(self, request: NodeSnapshotRequest) -> NodeSnapshotReply:
        """Saves a running sandbox into a persistent snapshot image; the sandbox goes on
        with the same processes and files. If it cannot go on, its image becomes the
        sandbox's paused image too (`source_paused`): nothing is lost."""
        sandbox_id = request.sandbox_id
        image = self.images.snapshot(request.image_id)
        async with self._lifecycle_lock(sandbox_id):
            sandbox = self._sandboxes.get(sandbox_id)
            self._snapshotting.add(request.image_id)
            try:
                if sandbox is None:
                    raise _Refusal(404, f"sandbox '{sandbox_id}' is not running here")
                await self._prepare(sandbox, request.envd_access_token)
                try:
                    await self._save(sandbox, image, keep_running=True)
                    await envd_client.wait_ready(
                        self._http, sandbox.address, self.settings.envd_ready_timeout_s
                    )
                except RestartFailed:
                    log.exception("snapshot of %s: the sandbox did not go on; it is paused", sandbox_id)
                    paused = self.images.paused(sandbox_id)
                    await asyncio.to_thread(shutil.copytree, image, paused, copy_function=os.link)
                    await self.runtime.kill(sandbox_id)
                    self._forget(sandbox_id)
                    size = await asyncio.to_thread(self.images.size, image)
                    return NodeSnapshotReply(size_bytes=size, source_paused=True)
                except Exception as exc:
                    log.exception("snapshot of %s failed", sandbox_id)
                    await self.runtime.wake_envd(sandbox_id)
                    raise _Refusal(500, f"snapshot failed, the sandbox keeps running: {exc}") from None
            except _Refusal as refusal:
                return NodeSnapshotReply(error=refusal.failure)
            finally:
                self._snapshotting.discard(request.image_id)
            return NodeSnapshotReply(size_bytes=await asyncio.to_thread(self.images.size, image))

    async def delete_snapshot(self, request: NodeDeleteSnapshotRequest) -> KillReply:
        image = self.images.snapshot(request.image_id)
        existed = await asyncio.to_thread(image.exists)
        await asyncio.to_thread(shutil.rmtree, image, True)
        return KillReply(killed=existed)

    async def resume(self, request: NodeResumeRequest) -> NodeCreateReply:
        """Restores a paused sandbox: same processes, files, env vars and token. A resume that
        fails keeps the image for the next try; one that arrives while another runs (the
        proxy's auto-resume and a connect, say) waits for it and answers the same."""
        async with self._lifecycle_lock(request.sandbox_id):
            running = self._sandboxes.get(request.sandbox_id)
            if running is not None:
                manifest = await asyncio.to_thread(self.templates.get, request.template_id)
                version = manifest.envd_version if manifest else ""
                return NodeCreateReply(
                    sandbox_id=request.sandbox_id, host=running.address, envd_version=version
                )
            return await self._resume(request)

    async def _resume(self, request: NodeResumeRequest) -> NodeCreateReply:
        image = self.images.paused(request.sandbox_id)
        build = await self._image_build(image, request.template_id)
        if build is None:
            return NodeCreateReply(
                error=Failure(status=404, message=f"no image of '{request.sandbox_id}' here")
            )
        manifest, build_dir = build
        try:
            sandbox = await self._restore(manifest, build_dir, request.sandbox_id, image)
        except NoFreeSlot as exc:
            return NodeCreateReply(error=Failure(status=503, message=str(exc)))
        except Exception as exc:
            log.exception("resume of %s failed", request.sandbox_id)
            return NodeCreateReply(
                error=Failure(status=500, message=f"resume failed, the image is kept: {exc}")
            )
        try:
            await self._personalise(sandbox, manifest, request)
        except Exception as exc:
            log.exception("resume of %s failed", request.sandbox_id)
            await self.runtime.kill(request.sandbox_id)
            self.slots.release(sandbox.slot)
            return NodeCreateReply(
                error=Failure(status=500, message=f"resume failed, the image is kept: {exc}")
            )
        self._track(sandbox)
        await asyncio.to_thread(shutil.rmtree, image, True)
        return NodeCreateReply(
            sandbox_id=request.sandbox_id, host=sandbox.address, envd_version=manifest.envd_version
        )

    async def kill(self, request: NodeKillRequest) -> KillReply:
        return KillReply(killed=await self._kill(request.sandbox_id))

    async def list(self, request: NodeListRequest) -> NodeListReply:
        return NodeListReply(sandbox_ids=sorted(s.sandbox_id for s in await self.runtime.list()))

    async def logs(self, request: NodeLogsRequest) -> NodeLogsReply:
        return NodeLogsReply(lines=await self.runtime.logs(request.sandbox_id, request.limit))


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(status=status, message=message)


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) // 1024
