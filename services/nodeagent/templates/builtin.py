"""Corral's own templates (the recipes in `templates/`): a node agent told to hold them
(`builtin_templates`) builds each that is missing or older than this checkout, in the
background, one at a time, with a build record and log in Redis like any build (what
`corral up` shows while it waits). Node agents sharing a template directory take turns
through a file lock, and the second finds the first's build current."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from corral_libs.contracts.records import BUILD_BUILDING, BUILD_ERROR, BUILD_READY, TemplateBuildRecord
from corral_libs.state import Store

from ..builds.build_log import BuildLog
from .build import BuildError, build_template
from .fingerprint import source_fingerprint
from .recipe import UnknownRecipe, load_recipe, recipe_path
from .store import TemplateStore, is_current

log = logging.getLogger(__name__)


def stale(store: TemplateStore, names: list[str]) -> list[str]:
    """The recipes among `names` whose template is missing or was built from other sources."""
    return [name for name in names if not is_current(store.get(name), source_fingerprint(recipe_path(name)))]


def ensure_template(store: TemplateStore, name: str = "base") -> None:
    """Builds the recipe's template here and now if it is stale (tests, and hosts without a
    node agent yet)."""
    recipe = load_recipe(name)
    if not stale(store, [name]):
        return
    print(f"template {name} is missing or older than this checkout: building it", flush=True)

    def report(message: str, *, detail: bool = False) -> None:
        if not detail:
            print(f"building {name}: {message}", flush=True)

    with _BuildTurn(store.root, name):
        if stale(store, [name]):
            asyncio.run(build_template(recipe, store, report))


class _BuildTurn:
    """An exclusive lock on building one recipe in one template directory."""

    def __init__(self, root: Path, name: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._path = root / f".builtin-{name}.lock"

    def __enter__(self) -> None:
        self._file = self._path.open("a")
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


class BuiltinTemplates:
    def __init__(self, names: list[str], templates: TemplateStore, store: Store) -> None:
        for name in names:
            load_recipe(name)  # an unknown recipe stops the agent at start, said clearly
        self._names = names
        self._templates = templates
        self._store = store
        self.pending: list[str] = []

    async def check(self) -> None:
        self.pending = await asyncio.to_thread(stale, self._templates, self._names)

    async def build_pending(self, built: Callable[[], Awaitable[None]]) -> None:
        """Builds what `check` found stale; `built` after each (a heart-beat)."""
        for name in list(self.pending):
            try:
                await self._build(name)
            except Exception:
                log.exception("building template %s failed", name)
            finally:
                self.pending.remove(name)
                await built()

    async def _build(self, name: str) -> None:
        recipe = await asyncio.to_thread(load_recipe, name)
        now = time.time()
        record = TemplateBuildRecord(
            template_id=name,
            build_id=str(uuid.uuid4()),
            owner="",
            name=name,
            tags=[],
            cpu_count=recipe.cpu_count,
            memory_mb=recipe.memory_mb,
            created_at=now,
            updated_at=now,
            status=BUILD_BUILDING,
        )
        await self._store.save_build(record)
        turn = _BuildTurn(self._templates.root, name)
        await asyncio.to_thread(turn.__enter__)
        try:
            async with BuildLog(self._store, record.build_id) as out:

                def report(message: str, *, detail: bool = False) -> None:
                    out(message, level="debug" if detail else "info")

                try:
                    if await asyncio.to_thread(stale, self._templates, [name]):
                        await build_template(recipe, self._templates, report)
                    else:
                        out(f"template {name} is current (built by a node sharing this directory)")
                except (BuildError, UnknownRecipe) as exc:
                    out(str(exc), level="error")
                    record.status, record.reason = BUILD_ERROR, str(exc)
                else:
                    record.status = BUILD_READY
        finally:
            await asyncio.to_thread(turn.__exit__)
        record.finished_at = record.updated_at = time.time()
        await self._store.save_build(record)
