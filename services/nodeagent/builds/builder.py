"""Template builds on this node: E2B's builder steps run one by one, each in a sandbox of
its own (gVisor, egress to the package registries only, the template's CPU and memory, a
time limit) whose root is an overlay over the base template and the layers before it. A
step whose inputs did not change since an earlier build is not run again (its layer is
reused). The finished template is installed, its ready command waited for in a snapshot of
it, and recorded for the scheduler; a failed build leaves no template behind."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from corral_libs.build_steps import InvalidStep, validate
from corral_libs.contracts.messages import BuildReply, BuildStep, Failure, NodeBuildRequest
from corral_libs.contracts.records import (
    BUILD_BUILDING,
    BUILD_ERROR,
    BUILD_READY,
    EgressPolicy,
    TemplateBuildRecord,
)
from corral_libs.state import Store

from ..app_ready import AppNotReady
from ..egress.service import Egress
from ..network import SandboxNetwork
from ..runtime.base import Runtime
from ..runtime.gvisor import GVisorRuntime, OneShot, OneShotTimeout
from ..settings import NodeSettings
from ..slots import NoFreeSlot, Slots
from ..template_snapshots import TemplateSnapshots
from ..templates.build import host_mirror
from ..templates.store import TemplateStore
from ..volumes.disks import VolumeDisks
from . import envd_kit
from . import layers as layer_fs
from .assemble import BuildFailed, assemble, template_record
from .bases import PROVISION_SCRIPT, SANDBOX_USER, Base, BaseUnavailable, image_base, template_base
from .build_log import TAIL_LINES, BuildLog
from .files import BuildFiles
from .images import ImageStore
from .layers import LayerError, LayerStore
from .steps import (
    BUILD_DIR,
    CA_ENV,
    CA_MOUNT,
    FILES_MOUNT,
    LAYER_TYPES,
    SCRATCH_MOUNT,
    StepState,
    chain_key,
    label,
    script_argv,
)

log = logging.getLogger(__name__)

# Builds at a time on one node (each step is a sandbox; a node also serves its sandboxes).
BUILDS_AT_ONCE = 1
# Layers no build used for this long are deleted.
LAYER_KEEP_S = 7 * 24 * 3600.0
STEP_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


class TemplateBuilds:
    def __init__(
        self,
        settings: NodeSettings,
        runtime: Runtime,
        templates: TemplateStore,
        snapshots: TemplateSnapshots,
        slots: Slots,
        egress: Egress,
        store: Store,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._templates = templates
        self._snapshots = snapshots
        self._slots = slots
        self._egress = egress
        self._store = store
        data = Path(settings.data_dir)
        self.files = BuildFiles(data / "build-files", settings.node_id, store)
        self.layers = LayerStore(templates.root / ".layers")
        insecure = {name.strip() for name in settings.insecure_registries.split(",") if name.strip()}
        self.images = ImageStore(templates.root / ".images", insecure)
        self._active = data / "builds-active"
        # Each build's steps write onto a disk of its own: a build that fills it fails, the
        # node's disk stays free.
        self._disks = VolumeDisks(data / "build-disks")
        self._scratch: dict[str, Path] = {}  # build id -> where its layers are made
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._turns = asyncio.Semaphore(BUILDS_AT_ONCE)

    @property
    def available(self) -> bool:
        """Builds run in one-shot gVisor sandboxes: only gVisor nodes build."""
        return isinstance(self._runtime, GVisorRuntime)

    async def recover(self) -> None:
        """Builds a previous agent left unfinished failed with it: said so, and their work
        (sandboxes, overlay mounts) removed."""
        if not self.available:
            return
        assert isinstance(self._runtime, GVisorRuntime)
        await self._runtime.clean_one_shots()
        for disk in await asyncio.to_thread(self._disks.ids):
            for work in await asyncio.to_thread(lambda d=disk: list(self._disks.data_dir(d).glob(".work-*"))):
                await asyncio.to_thread(layer_fs.unmount, work / "merged")
            await self._disks.delete(disk)
        markers = await asyncio.to_thread(
            lambda: list(self._active.glob("*")) if self._active.is_dir() else []
        )
        for marker in markers:
            record = await self._store.build(marker.name)
            if (
                record is not None
                and record.status == BUILD_BUILDING
                and record.node_id == self._settings.node_id
            ):
                await self._finish(record, BUILD_ERROR, "the node agent restarted during the build", "base")
            marker.unlink(missing_ok=True)
        await asyncio.to_thread(self.layers.collect, LAYER_KEEP_S)

    async def start(self, request: NodeBuildRequest) -> BuildReply:
        if not self.available:
            return BuildReply(
                error=Failure(status=409, message="this node cannot build templates (gVisor nodes do)")
            )
        if request.build_id in self._tasks:
            return BuildReply(node_id=self._settings.node_id)
        try:
            validate(request.spec.steps)
        except InvalidStep as exc:
            return BuildReply(error=Failure(status=400, message=str(exc)))
        spec = request.spec
        if not (spec.from_template or spec.from_image):
            return BuildReply(error=Failure(status=400, message="a build needs a base template or image"))
        if spec.from_template and await asyncio.to_thread(self._templates.get, spec.from_template) is None:
            message = f"template '{spec.from_template}' is not on node {self._settings.node_id}"
            return BuildReply(error=Failure(status=409, message=message))
        task = asyncio.create_task(self._build(request))
        self._tasks[request.build_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(request.build_id, None))
        return BuildReply(node_id=self._settings.node_id)

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def remove_template(self, template_id: str) -> None:
        self.files.remove_template(template_id)

    async def collect(self) -> None:
        """Layers, pulled images and uploaded files no build used for a week go (not while
        a build runs: it may be about to use them)."""
        if self._tasks:
            return
        await asyncio.to_thread(self.layers.collect, LAYER_KEEP_S)
        await asyncio.to_thread(self.images.collect, LAYER_KEEP_S)
        await asyncio.to_thread(self.files.collect, LAYER_KEEP_S)
        await asyncio.to_thread(envd_kit.collect, self._templates.root / ".envd-kit")

    async def _build(self, request: NodeBuildRequest) -> None:
        async with self._turns:
            record = await self._store.build(request.build_id)
            if record is None:
                return  # its template was deleted meanwhile
            record.status = BUILD_BUILDING
            record.updated_at = time.time()
            await self._store.save_build(record)
            marker = self._active / request.build_id
            await asyncio.to_thread(self._active.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(marker.touch)
            started = time.monotonic()
            async with BuildLog(self._store, request.build_id) as out:
                disk = _disk_id(request.build_id)
                try:
                    await self._disks.create(disk, self._settings.build_disk_mb)
                    self._scratch[request.build_id] = self._disks.data_dir(disk)
                    await self._run(request, record, out)
                except BuildFailed as exc:
                    out(exc.message, level="error", step=exc.step)
                    await out.flush()
                    await self._finish(record, BUILD_ERROR, exc.reason, exc.step)
                except asyncio.CancelledError:
                    await self._finish(record, BUILD_ERROR, "the node agent stopped during the build", "base")
                    raise
                except Exception as exc:
                    log.exception("build %s of template %s failed", record.build_id, record.template_id)
                    out(f"internal error: {exc}", level="error", step="finalize")
                    await self._finish(record, BUILD_ERROR, f"internal error: {exc}", "finalize")
                else:
                    out(f"Build finished in {time.monotonic() - started:.1f}s", step="finalize")
                    await out.flush()
                    await self._finish(record, BUILD_READY, None, None)
                finally:
                    self._scratch.pop(request.build_id, None)
                    with contextlib.suppress(Exception):
                        await self._disks.delete(disk)
                    await asyncio.to_thread(marker.unlink, True)

    async def _finish(
        self, record: TemplateBuildRecord, status: str, reason: str | None, step: str | None
    ) -> None:
        record.status = status
        record.reason = reason
        record.reason_step = step
        record.finished_at = record.updated_at = time.time()
        await self._store.save_build(record)

    async def _base(self, request: NodeBuildRequest, out: BuildLog) -> Base:
        spec = request.spec
        try:
            if spec.from_image:
                return await image_base(
                    self.images, spec, self._templates.root, lambda m: out(m, step="base")
                )
            parent = await asyncio.to_thread(self._templates.get, spec.from_template)
            if parent is None:
                raise BaseUnavailable(f"template '{spec.from_template}' is not on this node")
            return template_base(self._templates, parent)
        except BaseUnavailable as exc:
            raise BuildFailed(str(exc), "base") from None

    async def _run(self, request: NodeBuildRequest, record: TemplateBuildRecord, out: BuildLog) -> None:
        spec = request.spec
        base = await self._base(request, out)
        out(f"Building {record.name} from {base.describe}", step="base")
        state = StepState(user=base.user, workdir=base.workdir, env=dict(base.env))
        chain = base.key
        layers: list[str] = []
        if base.needs_provisioning:
            provision = BuildStep(type="RUN", args=[PROVISION_SCRIPT, "root"])
            key = chain_key(chain, provision, state)
            cached = None if spec.force else await asyncio.to_thread(self.layers.cached, key)
            out(
                "Adding the sandbox user" if cached is None else "CACHED Adding the sandbox user", step="base"
            )
            if cached is None:
                cached = await self._run_step(record, base, layers, provision, state, key, "base", out)
            layers.append(cached)
            chain = cached
            state = StepState(user=SANDBOX_USER, workdir=f"/home/{SANDBOX_USER}", env=state.env)
        count = len(spec.steps)
        for index, step in enumerate(spec.steps, 1):
            tag = str(index)
            key = chain_key(chain, step, state)
            shown = f"[{index}/{count}] {label(step)}"
            if step.type not in LAYER_TYPES:
                out(shown, step=tag)
                chain = key
            else:
                forced = spec.force or step.force
                cached = None if forced else await asyncio.to_thread(self.layers.cached, key)
                if cached is not None:
                    out(f"CACHED {shown}", step=tag)
                    await asyncio.to_thread(self.layers.touch, cached)
                else:
                    out(shown, step=tag)
                    cached = await self._run_step(record, base, layers, step, state, key, tag, out)
                layers.append(cached)
                chain = cached
            state = state.after(step)
        out("Finalizing the template", step="finalize")
        uppers = [self.layers.upper(layer) for layer in layers]
        manifest = await assemble(
            self._templates, record, base, uppers, state, spec.start_cmd, spec.ready_cmd, self._runtime.name
        )
        if manifest.ready_cmd:
            out(f"Waiting for the ready command: {manifest.ready_cmd}", step="finalize")
        try:
            await self._snapshots.ensure(manifest, raise_errors=True)
        except AppNotReady as exc:
            await asyncio.to_thread(self._templates.roll_back, manifest.template_id, manifest.build_id)
            raise BuildFailed(str(exc), "finalize") from None
        except Exception as exc:
            if spec.from_image:  # envd must start in it: a template it does not is no template
                await asyncio.to_thread(self._templates.roll_back, manifest.template_id, manifest.build_id)
                raise BuildFailed(f"a sandbox of the image did not start: {exc}", "finalize") from None
            # The template works without its snapshot (sandboxes boot instead of restoring).
            out(f"the template's snapshot could not be taken ({exc}); its sandboxes will boot", level="warn")
        await self._store.save_template(template_record(manifest))

    async def _run_step(
        self,
        record: TemplateBuildRecord,
        base: Base,
        layers: list[str],
        step: BuildStep,
        state: StepState,
        key: str,
        tag: str,
        out: BuildLog,
    ) -> str:
        try:
            base_rootfs = await asyncio.to_thread(base.rootfs)
        except BaseUnavailable as exc:
            raise BuildFailed(str(exc), tag) from None
        files: tuple[tuple[str, str], ...] = ()
        if step.type == "COPY":
            assert step.files_hash is not None
            archive = self.files.path(record.template_id, step.files_hash)
            if not await asyncio.to_thread(archive.is_file):
                raise BuildFailed(f"step {tag} ({label(step)}): its files were never uploaded", tag)
            files = ((str(archive), FILES_MOUNT),)
        layer_id, work = await asyncio.to_thread(self.layers.new_work, self._scratch.get(record.build_id))
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

        def on_line(line: str) -> None:
            tail.append(line)
            out(line, step=tag)

        shown = "adding the sandbox user" if tag == "base" else label(step)
        try:
            lowers = [self.layers.upper(layer) for layer in reversed(layers)] + [base_rootfs]
            try:
                merged = await asyncio.to_thread(layer_fs.mount, work, lowers)
            except LayerError as exc:
                raise BuildFailed(f"step {tag}: {exc}", tag) from None
            env = {**STEP_ENV, **state.env}
            if self._settings.build_ca_bundle:
                files = (*files, (self._settings.build_ca_bundle, CA_MOUNT))
                env |= dict.fromkeys(CA_ENV, CA_MOUNT)
            job = OneShot(
                container_id=f"build-{layer_id}",
                rootfs=merged,
                slot=0,
                argv=script_argv(step, state),
                env=env,
                cpu_count=record.cpu_count,
                memory_mb=max(record.memory_mb, 1024),
                files=files,
                tmpfs=(SCRATCH_MOUNT,) if step.type == "COPY" else (),
            )
            code = await self._in_sandbox(job, on_line, tag)
            if code != 0:
                message = f"step {tag} ({shown}) failed with exit code {code}"
                if any("No space left on device" in line for line in tail):
                    message += f" (the build's disk, {self._settings.build_disk_mb} MiB, is full)"
                raise BuildFailed(message, tag, list(tail))
            await asyncio.to_thread(layer_fs.unmount, merged)
            await asyncio.to_thread(_drop_mount_points, work / "upper")
            try:
                await asyncio.to_thread(self.layers.commit, key, layer_id, work)
            except LayerError as exc:
                raise BuildFailed(f"step {tag}: {exc}", tag) from None
        finally:
            await asyncio.to_thread(self.layers.discard, work)
        return layer_id

    async def _in_sandbox(self, job: OneShot, on_line: Callable[[str], None], tag: str) -> int:
        assert isinstance(self._runtime, GVisorRuntime)
        try:
            slot = self._slots.take()
        except NoFreeSlot:
            raise BuildFailed(f"step {tag}: the node has no free sandbox slot for the build", tag) from None
        job = replace(job, slot=slot)
        address = SandboxNetwork(slot, job.container_id).address
        try:
            await self._egress.attach(job.container_id, slot, address, self._policy())
            try:
                return await self._runtime.run_once(job, on_line, self._settings.build_step_timeout_s)
            except OneShotTimeout as exc:
                raise BuildFailed(f"step {tag} {exc}", tag) from None
        finally:
            await self._egress.detach(job.container_id, slot, address)
            self._slots.release(slot)

    def _policy(self) -> EgressPolicy:
        allowed = [name.strip() for name in self._settings.build_allow_out.split(",") if name.strip()]
        mirror = urlparse(host_mirror()).hostname
        if mirror:
            allowed.append(mirror)
        networks = [n.strip() for n in self._settings.build_allow_networks.split(",") if n.strip()]
        return EgressPolicy(allow_out=allowed, allow_internet_access=False, reach_reserved=networks)


def _disk_id(build_id: str) -> str:
    return "build-" + build_id.replace("-", "")[:24]


def _drop_mount_points(upper: Path) -> None:
    """What gVisor made in the root for the step's own mounts is not part of the layer."""
    target = upper / BUILD_DIR
    with contextlib.suppress(FileNotFoundError):
        if target.is_symlink() or not target.is_dir():
            target.unlink()
        else:
            shutil.rmtree(target)
