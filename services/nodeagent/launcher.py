"""The one way a sandbox starts on this node, from any source: a boot, a template snapshot
(warm clones), a paused sandbox's image, a persistent snapshot or fork, or a filesystem-only
image. Every step registers its undo as it succeeds (`AsyncExitStack`), so a failure at any
point leaves nothing: no runsc container or VM, no network namespace, no slot, no egress
rules, no record of it as running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from corral_libs.contracts.records import EgressPolicy

from . import envd_client
from .app_ready import wait_app_ready
from .running import RunningSandboxes
from .runtime.base import RunningSandbox, Runtime
from .slots import Slots
from .templates.store import TemplateManifest, TemplateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Launch:
    """What to start: `manifest`'s template as `sandbox_id`, booted, or from `image`."""

    manifest: TemplateManifest
    sandbox_id: str
    image: Path | None = None  # a checkpoint to restore
    files_only: bool = False  # `image` holds files only: boot on them
    build_dir: Path | None = None  # the template build `image` was taken on, if not the current
    volumes: list[tuple[Path, str]] = field(default_factory=list)  # (host directory, sandbox path)


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a started sandbox is handed to, and what envd's `/init` tells it."""

    egress: EgressPolicy
    access_token: str | None
    env_vars: dict[str, str]
    volume_ids: tuple[str, ...] = ()
    current_token: str | None = None  # what a restored envd still holds from its image


class Launcher:
    def __init__(
        self,
        runtime: Runtime,
        templates: TemplateStore,
        slots: Slots,
        running: RunningSandboxes,
        http: httpx.AsyncClient,
        ready_timeout_s: float,
    ) -> None:
        self._runtime = runtime
        self._templates = templates
        self._slots = slots
        self._running = running
        self._http = http
        self._ready_timeout_s = ready_timeout_s
        self._retiring: dict[str, asyncio.Task[None]] = {}  # sandbox id -> its teardown

    async def start(self, launch: Launch) -> RunningSandbox:
        """A slot, the sandbox started on it, its envd and the template's services
        answering. `NoFreeSlot` when the node is full. A sandbox of the same id still being
        torn down (a resume right after its pause) is gone first."""
        retiring = self._retiring.get(launch.sandbox_id)
        if retiring is not None:
            await asyncio.shield(retiring)
        async with contextlib.AsyncExitStack() as undo:
            slot = self._slots.take()
            undo.callback(self._slots.release, slot)
            spec = self._templates.sandbox_spec(
                launch.manifest, launch.sandbox_id, slot, launch.build_dir, launch.volumes
            )
            # Runtimes leave nothing of a start that fails; this undoes one that succeeded.
            undo.push_async_callback(self._runtime.kill, spec.sandbox_id)
            if launch.image is None:
                sandbox = await self._runtime.create(spec)
            elif launch.files_only:
                sandbox = await self._runtime.create(spec, files_from=launch.image)
            else:
                sandbox = await self._runtime.restore(spec, launch.image)
            await envd_client.wait_ready(
                self._http, sandbox.address, self._ready_timeout_s, launch.manifest.services
            )
            if launch.image is None:  # images were taken with the template's app ready
                await wait_app_ready(
                    self._runtime, sandbox.sandbox_id, launch.manifest, self._ready_timeout_s
                )
            undo.pop_all()
        return sandbox

    async def hand_over(self, sandbox: RunningSandbox, manifest: TemplateManifest, owner: Owner) -> None:
        """Makes a started sandbox its owner's: its egress policy first (before anything
        of the owner's runs in it), then envd's `/init` with the owner's token and env vars.
        On failure the sandbox is gone."""
        async with contextlib.AsyncExitStack() as undo:
            undo.push_async_callback(self.discard, sandbox)
            await self._running.track(sandbox, owner.egress, owner.access_token, owner.volume_ids)
            await envd_client.init(
                self._http,
                sandbox.address,
                env_vars={**manifest.env_vars, **owner.env_vars},
                access_token=owner.access_token,
                default_user=manifest.user,
                default_workdir=manifest.workdir,
                current_token=owner.current_token,
            )
            undo.pop_all()

    async def retire(self, sandbox: RunningSandbox) -> None:
        """Fences the sandbox off now (its egress rules go and its processes die: nothing
        passes either way, whatever a proxy still has cached) and tears it down behind the
        caller's answer. A crash before the teardown ends leaves a sandbox no record claims,
        which the next agent kills."""
        await self._running.forget(sandbox.sandbox_id, keep_slot=True)
        await self._runtime.stop(sandbox.sandbox_id)
        task = asyncio.create_task(self._tear_down(sandbox))
        self._retiring[sandbox.sandbox_id] = task
        task.add_done_callback(lambda _: self._retiring.pop(sandbox.sandbox_id, None))

    async def _tear_down(self, sandbox: RunningSandbox) -> None:
        try:
            await self.discard(sandbox)
        except Exception:
            log.exception("tearing down sandbox %s failed", sandbox.sandbox_id)

    async def settle(self) -> None:
        """Waits for the teardowns under way (on shutdown)."""
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)

    async def discard(self, sandbox: RunningSandbox) -> None:
        """Stops a sandbox this node started and frees its slot once its network is gone."""
        await self._running.forget(sandbox.sandbox_id, keep_slot=True)
        try:
            await self._runtime.kill(sandbox.sandbox_id)
            await self._running.forget_flows(sandbox.address)
        finally:
            self._slots.release(sandbox.slot)
