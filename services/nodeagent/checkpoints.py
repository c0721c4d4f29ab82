"""Pauses, resumes, persistent snapshots and creates from them on this node, and putting
right what an agent killed in the middle of one of them left behind.

Images (`images.py`) are written aside and renamed when complete. A pause that fails leaves
the sandbox running; a resume that fails keeps the image; a snapshot whose sandbox cannot go
on turns into a pause. Only one of these runs at a time for a sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

import httpx

from corral_libs.contracts.messages import (
    Failure,
    KillReply,
    NodeCreateReply,
    NodeCreateRequest,
    NodeDeleteSnapshotRequest,
    NodePauseReply,
    NodePauseRequest,
    NodeResumeRequest,
    NodeSnapshotReply,
    NodeSnapshotRequest,
)

from . import envd_client
from .images import ImageStore
from .launcher import Launch, Launcher, Owner
from .running import RunningSandboxes
from .runtime.base import RestartFailed, RunningSandbox, Runtime
from .settings import NodeSettings
from .slots import NoFreeSlot
from .templates.store import TemplateManifest, TemplateStore
from .volumes.service import Volumes, VolumeUnavailable, volume_ids

log = logging.getLogger(__name__)

# Images nothing records (their delete came while this node was away) go after this long.
UNRECORDED_IMAGE_GRACE_S = 180.0


class Refusal(Exception):
    """A request this node turns down, with the status the API answers it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(status=status, message=message)


class Checkpoints:
    def __init__(
        self,
        settings: NodeSettings,
        runtime: Runtime,
        templates: TemplateStore,
        launcher: Launcher,
        running: RunningSandboxes,
        volumes: Volumes,
        http: httpx.AsyncClient,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._templates = templates
        self._launcher = launcher
        self._running = running
        self._volumes = volumes
        self._http = http
        self.images = ImageStore(Path(settings.data_dir))
        self._locks: dict[str, asyncio.Lock] = {}
        self._writing: set[str] = set()  # snapshot images being written

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def busy(self, sandbox_id: str) -> bool:
        """Whether a pause, resume or snapshot of the sandbox is under way."""
        lock = self._locks.get(sandbox_id)
        return lock is not None and lock.locked()

    # Pause and resume

    async def pause(self, request: NodePauseRequest) -> NodePauseReply:
        """Checkpoints the sandbox into its paused image and frees what it held."""
        sandbox_id = request.sandbox_id
        async with self._lock(sandbox_id):
            try:
                sandbox = self._savable_or_refuse(sandbox_id, request.memory)
                if request.memory:
                    await self._prepare(sandbox, request.envd_access_token)
                try:
                    paused = self.images.paused(sandbox_id)
                    await self._save(sandbox, paused, keep_running=False, memory=request.memory)
                except Exception as exc:
                    log.exception("pause of %s failed", sandbox_id)
                    raise Refusal(500, f"pause failed, {await self._carry_on(sandbox_id)}: {exc}") from None
            except Refusal as refusal:
                return NodePauseReply(error=refusal.failure)
            # The checkpoint stopped it; what is left goes behind the answer (a resume waits).
            await self._launcher.retire(sandbox)
            return NodePauseReply(paused=True)

    async def resume(self, request: NodeResumeRequest) -> NodeCreateReply:
        """Restores a paused sandbox: same processes, files, env vars and token. One that
        arrives while another runs (the proxy's auto-resume and a connect, say) waits for it
        and answers the same."""
        async with self._lock(request.sandbox_id):
            running = self._running.get(request.sandbox_id)
            if running is not None:
                manifest = await asyncio.to_thread(self._templates.get, request.template_id)
                version = manifest.envd_version if manifest else ""
                return NodeCreateReply(
                    sandbox_id=request.sandbox_id, host=running.address, envd_version=version
                )
            image = self.images.paused(request.sandbox_id)
            reply = await self._restore_and_personalise(request.sandbox_id, image, request, None)
            if reply.error is None:
                await asyncio.to_thread(shutil.rmtree, image, True)
            return reply

    async def drop_paused(self, sandbox_id: str) -> bool:
        """Deletes a paused sandbox's image (its kill)."""
        paused = self.images.paused(sandbox_id)
        if not await asyncio.to_thread(paused.exists):
            return False
        await asyncio.to_thread(shutil.rmtree, paused, True)
        return True

    def is_paused(self, sandbox_id: str) -> bool:
        return self.images.paused(sandbox_id).exists()

    # Persistent snapshots

    async def snapshot(self, request: NodeSnapshotRequest) -> NodeSnapshotReply:
        """Saves a running sandbox into a snapshot image; the sandbox goes on with the same
        processes and files. If it cannot go on, the image also becomes its paused image
        (`source_paused`): nothing is lost."""
        sandbox_id = request.sandbox_id
        image = self.images.snapshot(request.image_id)
        async with self._lock(sandbox_id):
            self._writing.add(request.image_id)
            try:
                sandbox = self._savable_or_refuse(sandbox_id, request.memory)
                if not request.memory:  # the sandbox is not even stopped
                    await self._save(sandbox, image, keep_running=True, memory=False)
                    size = await asyncio.to_thread(self.images.size, image)
                    return NodeSnapshotReply(size_bytes=size)
                await self._prepare(sandbox, request.envd_access_token)
                try:
                    await self._save(sandbox, image, keep_running=True)
                    await envd_client.wait_ready(
                        self._http,
                        sandbox.address,
                        self._settings.envd_ready_timeout_s,
                        await self._services(sandbox),
                    )
                except RestartFailed:
                    log.exception("snapshot of %s: the sandbox did not go on; it is paused", sandbox_id)
                    paused = self.images.paused(sandbox_id)
                    await asyncio.to_thread(shutil.copytree, image, paused, copy_function=os.link)
                    await self._running.forget(sandbox_id)
                    await self._runtime.kill(sandbox_id)
                    size = await asyncio.to_thread(self.images.size, image)
                    return NodeSnapshotReply(size_bytes=size, source_paused=True)
                except Exception as exc:
                    log.exception("snapshot of %s failed", sandbox_id)
                    raise Refusal(
                        500, f"snapshot failed, {await self._carry_on(sandbox_id)}: {exc}"
                    ) from None
            except Refusal as refusal:
                return NodeSnapshotReply(error=refusal.failure)
            finally:
                self._writing.discard(request.image_id)
            return NodeSnapshotReply(size_bytes=await asyncio.to_thread(self.images.size, image))

    async def delete_snapshot(self, request: NodeDeleteSnapshotRequest) -> KillReply:
        image = self.images.snapshot(request.image_id)
        existed = await asyncio.to_thread(image.exists)
        await asyncio.to_thread(shutil.rmtree, image, True)
        return KillReply(killed=existed)

    async def create_from_snapshot(self, request: NodeCreateRequest) -> NodeCreateReply:
        """A new sandbox from a snapshot image; its envd still holds the token it was taken
        with, which authorises the new one."""
        image = self.images.snapshot(request.snapshot_image_id)
        return await self._restore_and_personalise(
            request.sandbox_id, image, request, request.snapshot_access_token
        )

    # Shared steps

    async def _carry_on(self, sandbox_id: str) -> str:
        """After a failed save: envd listens again if the sandbox survived it. Says which."""
        try:
            await self._runtime.wake_envd(sandbox_id)
        except Exception:
            log.exception("sandbox %s did not survive a failed save", sandbox_id)
            return "and the sandbox did not survive it"
        return "the sandbox keeps running"

    def _savable_or_refuse(self, sandbox_id: str, memory: bool) -> RunningSandbox:
        """The running sandbox, if this node's runtime can save it as asked."""
        sandbox = self._running.get(sandbox_id)
        if sandbox is None:
            raise Refusal(404, f"sandbox '{sandbox_id}' is not running here")
        if not memory and not self._runtime.saves_files_only:
            raise Refusal(
                400,
                f"filesystem-only pauses and snapshots are not supported by the {self._runtime.name} runtime",
            )
        if self._running.volume_ids(sandbox_id) and not self._runtime.saves_volumes:
            # Not a 409: the SDK reads that as "already paused".
            raise Refusal(
                400,
                f"sandbox '{sandbox_id}' mounts volumes, which the {self._runtime.name} runtime "
                "cannot save: it cannot be paused or snapshotted (its volumes keep what it wrote)",
            )
        return sandbox

    async def _services(self, sandbox: RunningSandbox) -> list[int]:
        """The ports of the sandbox's services besides envd (from its template build)."""
        build = await asyncio.to_thread(self._templates.find_build, sandbox.template_id, sandbox.build_id)
        manifest = build[0] if build else await asyncio.to_thread(self._templates.get, sandbox.template_id)
        return manifest.services if manifest else []

    async def _prepare(self, sandbox: RunningSandbox, access_token: str | None) -> None:
        if not self._runtime.releases_sockets:
            return
        services = await self._services(sandbox)
        try:
            await envd_client.prepare_snapshot(self._http, sandbox.address, access_token, services)
        except Exception as exc:
            raise Refusal(409, f"envd did not get ready for the checkpoint: {exc}") from None

    async def _save(
        self, sandbox: RunningSandbox, image: Path, *, keep_running: bool, memory: bool = True
    ) -> None:
        """Checkpoints a sandbox whose envd let go of its sockets into `image` (written
        aside with the build it needs, then renamed into place); without `memory`, only
        its files."""
        build_id = sandbox.build_id
        if not build_id:  # adopted from an agent that did not record builds
            manifest = await asyncio.to_thread(self._templates.get, sandbox.template_id)
            build_id = manifest.build_id if manifest else ""
        work = await asyncio.to_thread(
            self.images.begin, image, sandbox.sandbox_id, sandbox.template_id, build_id
        )
        try:
            if not memory:
                await self._runtime.checkpoint_files(sandbox.sandbox_id, work, keep_running=keep_running)
            elif keep_running:
                await self._runtime.snapshot(sandbox.sandbox_id, work)
            else:
                await self._runtime.checkpoint(sandbox.sandbox_id, work)
        except RestartFailed:
            await asyncio.to_thread(work.rename, image)
            raise
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, work, True)
            raise
        await asyncio.to_thread(work.rename, image)

    async def _image_build(self, image: Path, template_id: str) -> tuple[TemplateManifest, Path] | None:
        """The template build an image was taken on (images from before builds were
        recorded: the template's current build)."""
        if not await asyncio.to_thread(image.is_dir):
            return None
        meta = await asyncio.to_thread(self.images.meta, image)
        if meta is not None:
            return await asyncio.to_thread(self._templates.find_build, meta.template_id, meta.build_id)
        manifest = await asyncio.to_thread(self._templates.get, template_id)
        return None if manifest is None else (manifest, self._templates.root / template_id)

    async def _restore_and_personalise(
        self,
        sandbox_id: str,
        image: Path,
        request: NodeCreateRequest | NodeResumeRequest,
        current_token: str | None,
    ) -> NodeCreateReply:
        """Restores `image` as `sandbox_id` and sends envd /init; on failure nothing of the
        new sandbox is left and the image is untouched."""
        build = await self._image_build(image, request.template_id)
        if build is None:
            message = f"no image for '{sandbox_id}' on this node, or its template build is gone"
            return NodeCreateReply(error=Failure(status=404, message=message))
        manifest, build_dir = build
        try:
            volumes = await self._volumes.host_dirs(request.volume_mounts)
        except VolumeUnavailable as exc:
            return NodeCreateReply(error=Failure(status=409, message=str(exc)))
        files_only = await asyncio.to_thread(self.images.files_only, image)
        launch = Launch(manifest, sandbox_id, image, files_only, build_dir, volumes)
        owner = Owner(
            egress=request.egress,
            access_token=request.envd_access_token,
            env_vars=request.env_vars,
            volume_ids=volume_ids(request.volume_mounts),
            current_token=None if files_only else current_token,  # a booted envd holds none
        )
        try:
            sandbox = await self._launcher.start(launch)
            await self._launcher.hand_over(sandbox, manifest, owner)
        except NoFreeSlot as exc:
            return NodeCreateReply(error=Failure(status=503, message=str(exc)))
        except Exception as exc:
            log.exception("restore of %s failed", sandbox_id)
            return NodeCreateReply(
                error=Failure(status=500, message=f"sandbox did not start, its image is kept: {exc}")
            )
        return NodeCreateReply(
            sandbox_id=sandbox_id, host=sandbox.address, envd_version=manifest.envd_version
        )

    # After a crash

    async def recover_running(self, sandbox: RunningSandbox) -> bool:
        """A recorded sandbox found running after a restart: False when it is a resume cut
        short (the paused image is whole; the half-restored copy must go). Otherwise any
        save of it that never finished is dropped and its envd listens again."""
        sandbox_id = sandbox.sandbox_id
        if await asyncio.to_thread(self.is_paused, sandbox_id):
            return False
        # Woken first: a sandbox a save stopped a moment ago can still be listed as running,
        # and then its save is whole and must stay (the caller goes on to `recover_stopped`).
        await self._runtime.wake_envd(sandbox_id)
        for work in await asyncio.to_thread(self.images.interrupted, sandbox_id):
            await asyncio.to_thread(shutil.rmtree, work, True)
        return True

    async def recover_stopped(self, sandbox_id: str) -> bool:
        """A recorded sandbox stopped during a pause or snapshot: its newest complete
        checkpoint becomes its paused image. True when it is paused now."""
        paused = self.images.paused(sandbox_id)
        for work in await asyncio.to_thread(self.images.interrupted, sandbox_id):
            complete = await asyncio.to_thread(self.images.holds_checkpoint, work)
            if complete and not await asyncio.to_thread(paused.exists):
                await asyncio.to_thread(paused.parent.mkdir, parents=True, exist_ok=True)
                await asyncio.to_thread(work.rename, paused)
                log.info("sandbox %s stopped in a save: its checkpoint is its paused image", sandbox_id)
            else:
                await asyncio.to_thread(shutil.rmtree, work, True)
        return await asyncio.to_thread(paused.exists)

    async def collect_images(self, recorded: set[str]) -> set[str]:
        """Removes snapshot images nothing records (`recorded`: the image ids the cluster
        knows) and unfinished images; answers the template builds images still need."""
        for image_id in await asyncio.to_thread(self.images.snapshot_ids):
            if image_id in recorded or image_id in self._writing:
                continue
            image = self.images.snapshot(image_id)
            meta = await asyncio.to_thread(self.images.meta, image)
            if meta is None or time.time() - meta.taken_at > UNRECORDED_IMAGE_GRACE_S:
                log.info("removing snapshot image %s: nothing records it", image_id)
                await asyncio.to_thread(shutil.rmtree, image, True)
        await asyncio.to_thread(self.images.collect_work_dirs, UNRECORDED_IMAGE_GRACE_S)
        return await asyncio.to_thread(self.images.builds_in_use)
