"""Connect RPC `filesystem.Filesystem`: stat, list, make, move, remove and watch, each
acting for the request's user with that user's permissions."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof

from ..gen.filesystem import filesystem_pb as pb
from ..rpc_context import keepalive_interval, rpc_user
from ..state import EnvdState
from ..users import User, can_access, can_create, make_dirs_as, resolve_path
from .entry import entry_info
from .mounts import is_network_mount
from .watch import DirEvent, DirWatch

T = TypeVar("T")

_ENTRY_EVENTS = frozenset({pb.EventType.CREATE, pb.EventType.WRITE, pb.EventType.CHMOD})


def _denied(path: str) -> ConnectError:
    return ConnectError(Code.PERMISSION_DENIED, f"permission denied: '{path}'")


def _os_error(exc: OSError, path: str) -> ConnectError:
    if exc.errno == errno.ENOENT:
        return ConnectError(Code.NOT_FOUND, f"path '{path}' does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return _denied(path)
    if exc.errno == errno.ENOSPC:
        return ConnectError(Code.RESOURCE_EXHAUSTED, f"not enough space to write '{path}'")
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EINVAL):
        return ConnectError(Code.INVALID_ARGUMENT, f"{exc.strerror}: '{path}'")
    return ConnectError(Code.INTERNAL, f"{exc.strerror or exc}: '{path}'")


def _stat(path: str, user: User) -> pb.EntryInfo:
    if not can_access(os.path.dirname(path), user, os.X_OK):
        raise _denied(path)
    return entry_info(path)


def _list_dir(path: str, depth: int, user: User) -> list[pb.EntryInfo]:
    real = os.path.realpath(path)
    if not os.path.lexists(real):
        raise ConnectError(Code.NOT_FOUND, f"path '{path}' does not exist")
    if not os.path.isdir(real):
        raise ConnectError(Code.INVALID_ARGUMENT, f"path '{path}' is not a directory")
    if not can_access(real, user, os.R_OK | os.X_OK):
        raise _denied(path)
    entries: list[pb.EntryInfo] = []

    def walk(directory: str, level: int) -> None:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return  # vanished or unreadable mid-walk: skipped, as the reference does
        for name in names:
            child = os.path.join(directory, name)
            try:
                entry = entry_info(child)
            except OSError:
                continue
            entries.append(entry)
            descend = level < depth and entry.type == pb.FileType.DIRECTORY and not entry.is_symlink
            if descend and can_access(child, user, os.R_OK | os.X_OK):
                walk(child, level + 1)

    walk(path, 1)
    return entries


def _make_dir(path: str, user: User) -> pb.EntryInfo:
    """Anywhere, as E2B's envd (root) does: the levels it creates belong to the user."""
    if os.path.isdir(path):
        raise ConnectError(Code.ALREADY_EXISTS, f"directory '{path}' already exists")
    if os.path.lexists(path):
        raise ConnectError(Code.INVALID_ARGUMENT, f"path '{path}' already exists and is not a directory")
    make_dirs_as(path, user)
    return entry_info(path)


def _move(source: str, destination: str, user: User) -> pb.EntryInfo:
    """As E2B's envd (root) does: the destination's missing parents are made for the user."""
    if not os.path.lexists(source):
        raise ConnectError(Code.NOT_FOUND, f"path '{source}' does not exist")
    make_dirs_as(os.path.dirname(destination), user)
    os.rename(source, destination)
    return entry_info(destination)


def _remove(path: str, user: User) -> None:
    """A missing path is no error: the caller wanted it gone and it is."""
    if not os.path.lexists(path):
        return
    if not can_create(path, user):
        raise _denied(path)
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _check_watchable(path: str, user: User, allow_network: bool) -> None:
    if not os.path.exists(path):
        raise ConnectError(Code.NOT_FOUND, f"path '{path}' does not exist")
    if not os.path.isdir(path):
        raise ConnectError(Code.INVALID_ARGUMENT, f"path '{path}' is not a directory")
    if not can_access(path, user, os.R_OK | os.X_OK):
        raise _denied(path)
    if not allow_network and is_network_mount(path):
        raise ConnectError(
            Code.FAILED_PRECONDITION,
            f"path '{path}' is on a network mount; set allow_network_mounts to watch it",
        )


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    """Runs blocking file work off the event loop; OS errors become Connect errors."""
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        path = exc.filename if isinstance(exc.filename, str) else str(args[0])
        raise _os_error(exc, path) from None


class Watcher:
    """A polling watcher (CreateWatcher): its events queue until GetWatcherEvents."""

    def __init__(self, watch: DirWatch, include_entry: bool) -> None:
        """`watch` must be open already, so no change after creation is missed."""
        self.events: list[pb.FilesystemEvent] = []
        self._watch = watch
        self._include_entry = include_entry
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        try:
            async for event in self._watch.events():
                self.events.append(_fs_event(event, self._include_entry))
        finally:
            self._watch.close()

    def drain(self) -> list[pb.FilesystemEvent]:
        events, self.events = self.events, []
        return events


def _fs_event(event: DirEvent, include_entry: bool) -> pb.FilesystemEvent:
    message = pb.FilesystemEvent(name=event.name, type=event.type)
    if include_entry and event.type in _ENTRY_EVENTS:
        with contextlib.suppress(OSError):
            message.entry = entry_info(event.path)
    return message


class FilesystemService:
    def __init__(self, state: EnvdState) -> None:
        self._state = state
        self._watchers: dict[str, Watcher] = {}

    def _resolve(self, ctx: RequestContext, path: str) -> tuple[User, str]:
        identity = self._state.identity
        user = rpc_user(ctx, identity)
        return user, resolve_path(path, user, identity.default_workdir)

    async def stat(self, request: pb.StatRequest, ctx: RequestContext) -> pb.StatResponse:
        user, path = self._resolve(ctx, request.path)
        return pb.StatResponse(entry=await _in_thread(_stat, path, user))

    async def list_dir(self, request: pb.ListDirRequest, ctx: RequestContext) -> pb.ListDirResponse:
        user, path = self._resolve(ctx, request.path)
        entries = await _in_thread(_list_dir, path, max(request.depth, 1), user)
        return pb.ListDirResponse(entries=entries)

    async def make_dir(self, request: pb.MakeDirRequest, ctx: RequestContext) -> pb.MakeDirResponse:
        user, path = self._resolve(ctx, request.path)
        return pb.MakeDirResponse(entry=await _in_thread(_make_dir, path, user))

    async def move(self, request: pb.MoveRequest, ctx: RequestContext) -> pb.MoveResponse:
        user, source = self._resolve(ctx, request.source)
        _, destination = self._resolve(ctx, request.destination)
        return pb.MoveResponse(entry=await _in_thread(_move, source, destination, user))

    async def remove(self, request: pb.RemoveRequest, ctx: RequestContext) -> pb.RemoveResponse:
        user, path = self._resolve(ctx, request.path)
        await _in_thread(_remove, path, user)
        return pb.RemoveResponse()

    def _new_watch(self, ctx: RequestContext, path: str, recursive: bool, allow_network: bool) -> DirWatch:
        user, resolved = self._resolve(ctx, path)
        return DirWatch(resolved, recursive, check=lambda: _check_watchable(resolved, user, allow_network))

    async def watch_dir(
        self, request: pb.WatchDirRequest, ctx: RequestContext
    ) -> AsyncIterator[pb.WatchDirResponse]:
        watch = self._new_watch(ctx, request.path, request.recursive, request.allow_network_mounts)
        keepalive_s = keepalive_interval(ctx)
        queue: asyncio.Queue[DirEvent | None] = asyncio.Queue()

        async def collect() -> None:
            async for event in watch.events():
                await queue.put(event)
            await queue.put(None)

        async with watch:
            collector = asyncio.create_task(collect())
            try:
                yield pb.WatchDirResponse(event=Oneof(field="start", value=pb.WatchDirResponse.StartEvent()))
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), keepalive_s)
                    except TimeoutError:
                        yield pb.WatchDirResponse(
                            event=Oneof(field="keepalive", value=pb.WatchDirResponse.KeepAlive())
                        )
                        continue
                    if event is None:
                        return
                    message = _fs_event(event, request.include_entry)
                    yield pb.WatchDirResponse(event=Oneof(field="filesystem", value=message))
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector

    async def create_watcher(
        self, request: pb.CreateWatcherRequest, ctx: RequestContext
    ) -> pb.CreateWatcherResponse:
        watch = self._new_watch(ctx, request.path, request.recursive, request.allow_network_mounts)
        await watch.open()
        watcher_id = uuid.uuid4().hex
        self._watchers[watcher_id] = Watcher(watch, request.include_entry)
        return pb.CreateWatcherResponse(watcher_id=watcher_id)

    def _watcher(self, watcher_id: str) -> Watcher:
        watcher = self._watchers.get(watcher_id)
        if watcher is None:
            raise ConnectError(Code.NOT_FOUND, f"watcher '{watcher_id}' not found")
        return watcher

    async def get_watcher_events(
        self, request: pb.GetWatcherEventsRequest, ctx: RequestContext
    ) -> pb.GetWatcherEventsResponse:
        return pb.GetWatcherEventsResponse(events=self._watcher(request.watcher_id).drain())

    async def remove_watcher(
        self, request: pb.RemoveWatcherRequest, ctx: RequestContext
    ) -> pb.RemoveWatcherResponse:
        watcher = self._watcher(request.watcher_id)
        del self._watchers[request.watcher_id]
        watcher.task.cancel()
        return pb.RemoveWatcherResponse()
