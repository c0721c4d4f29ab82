"""The warm pool: per template, sandboxes restored from the template's snapshot and ready,
so a create only claims one and personalises it through envd `/init`.

A template's target is its peak demand (`pool_demand.py`: the most creates in any ten
seconds of the last minutes), at least its minimum, at most `pool_max`; all clones together
stay within the memory budget. Refills run in the background, a few at a time, and wait
while creates restore sandboxes of their own; clones beyond a shrunken target are killed.
An empty pool never fails a create (the node restores or boots one directly).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from pathlib import Path

from corral_libs.ids import new_sandbox_id

from .launcher import Launch, Launcher
from .pool_demand import Demand
from .runtime.base import RunningSandbox
from .settings import NodeSettings
from .slots import NoFreeSlot
from .template_snapshots import TemplateSnapshots
from .templates.store import TemplateManifest, TemplateStore

log = logging.getLogger(__name__)

# A restored, idle clone holds about this much host memory (gVisor: no sharing between
# clones; bench/density.py measures it).
CLONE_MEMORY_MB = 64
# Claims and finished restores wake the refill at once; this is only the idle re-check.
REFILL_IDLE_S = 1.0
REFILL_DELAY_S = 0.1
REFILL_RATE_WINDOW_S = 60.0


class WarmPool:
    def __init__(
        self,
        settings: NodeSettings,
        templates: TemplateStore,
        snapshots: TemplateSnapshots,
        launcher: Launcher,
    ) -> None:
        self._settings = settings
        self._templates = templates
        self._snapshots = snapshots
        self._launcher = launcher
        self._ready: dict[str, collections.deque[RunningSandbox]] = collections.defaultdict(collections.deque)
        self._restoring: dict[str, int] = collections.defaultdict(int)
        self._demand: dict[str, Demand] = collections.defaultdict(
            lambda: Demand(settings.pool_window_s, settings.pool_peak_horizon_s)
        )
        self._refilled: collections.deque[float] = collections.deque()  # when restores finished
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._direct = 0  # restores for creates that found the pool empty
        self._create_restores = asyncio.Semaphore(settings.create_restore_concurrency)
        self._budget = settings.pool_memory_budget_mb // CLONE_MEMORY_MB
        # One file per ready clone: what a restarted agent takes back into its pool instead
        # of killing (a clone is unmarked before anything of a create's owner reaches it).
        self._marks = Path(settings.data_dir) / "pool"
        self._known: set[str] = set()  # the templates on this node, as of the last refill
        self._users: set[str] = set()  # those built through the API

    @property
    def sandbox_ids(self) -> set[str]:
        return {s.sandbox_id for clones in self._ready.values() for s in clones}

    def depths(self) -> dict[str, int]:
        return {template: len(clones) for template, clones in self._ready.items() if clones}

    def targets(self) -> dict[str, int]:
        return {template: self.target(template) for template in self._demand if template in self._known}

    def refill_rate(self) -> float:
        """Clones restored per minute, lately."""
        horizon = time.monotonic() - REFILL_RATE_WINDOW_S
        while self._refilled and self._refilled[0] < horizon:
            self._refilled.popleft()
        return len(self._refilled) * 60.0 / REFILL_RATE_WINDOW_S

    async def claim(self, manifest: TemplateManifest) -> RunningSandbox | None:
        """A ready clone of the template's current build, if there is one. The refill it
        causes starts a moment later: a restore takes both cores of a small node for most of
        a second, and the create that claimed should get its answer out first."""
        template_id = manifest.template_id
        self._demand[template_id].claim()
        asyncio.get_running_loop().call_later(REFILL_DELAY_S, self._wake.set)
        self._drop_stale(manifest)
        clones = self._ready.get(template_id)
        if not clones:
            return None
        clone = clones.popleft()
        await asyncio.to_thread(self._unmark, clone.sandbox_id)
        return clone

    async def adopt(self, sandbox: RunningSandbox) -> bool:
        """Takes back a ready clone a previous agent left running (marked, of the template's
        current build); False for any other sandbox."""
        marked = await asyncio.to_thread((self._marks / sandbox.sandbox_id).is_file)
        manifest = await asyncio.to_thread(self._templates.get, sandbox.template_id)
        if not marked or manifest is None or manifest.build_id != sandbox.build_id:
            await asyncio.to_thread(self._unmark, sandbox.sandbox_id)
            return False
        self._ready[sandbox.template_id].append(sandbox)
        return True

    async def drop_other_marks(self) -> None:
        """After adopting: marks of clones that are gone (they died with the previous agent)."""
        kept = self.sandbox_ids

        def drop() -> None:
            for mark in self._marks.glob("*") if self._marks.is_dir() else []:
                if mark.name not in kept:
                    mark.unlink(missing_ok=True)

        await asyncio.to_thread(drop)

    def _mark(self, sandbox_id: str) -> None:
        self._marks.mkdir(parents=True, exist_ok=True)
        (self._marks / sandbox_id).touch()

    def _unmark(self, sandbox_id: str) -> None:
        (self._marks / sandbox_id).unlink(missing_ok=True)

    def _drop_stale(self, manifest: TemplateManifest) -> None:
        """Clones of a build the template no longer is (it was built again) go."""
        clones = self._ready.get(manifest.template_id)
        if not clones:
            return
        for sandbox in [c for c in clones if c.build_id != manifest.build_id]:
            clones.remove(sandbox)
            self._discard(sandbox)

    def _discard(self, sandbox: RunningSandbox) -> None:
        task = asyncio.create_task(self._throw_away(sandbox))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def target(self, template_id: str) -> int:
        minimum = self._settings.pool_minimum(template_id, users=template_id in self._users)
        wanted = max(minimum, self._demand[template_id].peak())
        return min(self._settings.pool_max, self._budget, wanted)

    async def run(self) -> None:
        """Keeps every template's pool at its target, until cancelled."""
        try:
            while True:
                self._refill(await asyncio.to_thread(self._templates.list))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), REFILL_IDLE_S)
        finally:
            # Restores under way clean up after themselves when cancelled: wait for that,
            # or a half-started clone (or template VM) outlives the agent unrecorded.
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _refill(self, manifests: list[TemplateManifest]) -> None:
        self._trim()
        if self._direct:  # creates are waiting on restores of their own: they go first
            return
        pooled = self._settings.pooled_templates
        current = {m.template_id for m in manifests}
        self._known = current
        self._users = {m.template_id for m in manifests if m.owner}
        for template_id in [t for t in self._demand if t not in current]:
            del self._demand[template_id]
        for template_id in [t for t in self._ready if t not in current]:  # deleted templates
            while self._ready[template_id]:
                self._discard(self._ready[template_id].popleft())
        for manifest in manifests:
            self._drop_stale(manifest)
            template_id = manifest.template_id
            if pooled is not None and template_id not in pooled:
                continue
            while (
                len(self._ready[template_id]) + self._restoring[template_id] < self.target(template_id)
                and sum(self._restoring.values()) < self._settings.pool_refills_at_once
                and self._held() < self._budget
            ):
                self._restoring[template_id] += 1
                task = asyncio.create_task(self._restore_one(manifest))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _held(self) -> int:
        return sum(len(c) for c in self._ready.values()) + sum(self._restoring.values())

    def _trim(self) -> None:
        """Kills the clones beyond each template's target (its demand has passed), newest
        first: the oldest have been touched least since their restore."""
        for template_id, clones in self._ready.items():
            while len(clones) > self.target(template_id):
                self._discard(clones.pop())

    async def _throw_away(self, sandbox: RunningSandbox) -> None:
        await asyncio.to_thread(self._unmark, sandbox.sandbox_id)
        await self._launcher.discard(sandbox)

    async def _restore_one(self, manifest: TemplateManifest) -> None:
        try:
            sandbox = await self.restore(manifest)
            if sandbox is not None:
                await asyncio.to_thread(self._mark, sandbox.sandbox_id)
                self._ready[manifest.template_id].append(sandbox)
                self._refilled.append(time.monotonic())
        except Exception:
            log.exception("warm clone of %s failed", manifest.template_id)
            await asyncio.sleep(1)  # do not spin on a broken template
        finally:
            self._restoring[manifest.template_id] -= 1
            self._wake.set()

    async def restore_for_create(self, manifest: TemplateManifest, sandbox_id: str) -> RunningSandbox | None:
        """A pool miss: the create restores its own sandbox, and refills wait meanwhile.
        Such restores take turns (a few at a time, in arrival order): a burst then gets its
        first sandboxes early instead of all of them late."""
        self._direct += 1
        try:
            async with self._create_restores:
                return await self.restore(manifest, sandbox_id)
        finally:
            self._direct -= 1
            self._wake.set()

    async def restore(
        self, manifest: TemplateManifest, sandbox_id: str | None = None
    ) -> RunningSandbox | None:
        """One sandbox from the template's snapshot, envd answering; None without a snapshot."""
        image = await self._snapshots.ensure(manifest)
        if image is None:
            return None
        try:
            return await self._launcher.start(Launch(manifest, sandbox_id or new_sandbox_id(), image))
        except NoFreeSlot:
            return None

    async def drain(self) -> None:
        """Kills every warm clone (on shutdown)."""
        for clones in self._ready.values():
            while clones:
                await self._throw_away(clones.popleft())
