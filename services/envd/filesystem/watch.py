"""Directory watches on inotify: one watch per directory, more added as directories appear
when recursive, each kernel event mapped to E2B's event types the way fsnotify does."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from asyncinotify import Inotify, Mask

from ..gen.filesystem import filesystem_pb as pb

_WATCH_MASK = (
    Mask.CREATE | Mask.MODIFY | Mask.DELETE | Mask.MOVED_FROM | Mask.MOVED_TO | Mask.ATTRIB | Mask.DELETE_SELF
)

# Kernel event -> E2B event; a rename's new name arrives as a create, as with fsnotify.
_EVENT_TYPES = (
    (Mask.CREATE, pb.EventType.CREATE),
    (Mask.MOVED_TO, pb.EventType.CREATE),
    (Mask.MODIFY, pb.EventType.WRITE),
    (Mask.DELETE, pb.EventType.REMOVE),
    (Mask.MOVED_FROM, pb.EventType.RENAME),
    (Mask.ATTRIB, pb.EventType.CHMOD),
)


@dataclass(frozen=True, slots=True)
class DirEvent:
    name: str  # relative to the watched directory
    path: str
    type: pb.EventType


class DirWatch:
    """Open it (or use it as an async context manager), then iterate `events()`."""

    def __init__(self, root: str, recursive: bool, check: Callable[[], None] | None = None) -> None:
        self.root = root
        self.recursive = recursive
        self._check = check
        self._inotify = Inotify()

    async def open(self) -> None:
        """Runs the check (which may raise), then installs the watches; events from then on
        are seen."""
        try:
            await asyncio.to_thread(self._check_and_add)
        except BaseException:
            self.close()
            raise

    def _check_and_add(self) -> None:
        if self._check is not None:
            self._check()
        self._add_tree(self.root)

    def close(self) -> None:
        self._inotify.close()

    async def __aenter__(self) -> DirWatch:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _add(self, directory: str) -> None:
        with contextlib.suppress(OSError):
            self._inotify.add_watch(directory, _WATCH_MASK)

    def _add_tree(self, directory: str) -> None:
        self._add(directory)
        if not self.recursive:
            return
        for current, dirs, _ in os.walk(directory):
            for name in dirs:
                self._add(os.path.join(current, name))

    async def events(self) -> AsyncIterator[DirEvent]:
        async for event in self._inotify:
            if event.path is None:
                continue
            path = str(event.path)
            if event.mask & Mask.DELETE_SELF:
                if path == self.root:
                    return
                continue
            if self.recursive and event.mask & Mask.ISDIR and event.mask & (Mask.CREATE | Mask.MOVED_TO):
                await asyncio.to_thread(self._add_tree, path)
            name = path[len(self.root) :].lstrip("/")
            for mask, event_type in _EVENT_TYPES:
                if event.mask & mask:
                    yield DirEvent(name, path, event_type)
