"""Connect RPC `process.Process`: start, attach to, feed, resize, signal and list processes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof

from ..gen.process import process_pb as pb
from ..rpc_context import deadline_s, keepalive_interval, rpc_user
from ..state import EnvdState
from ..users import resolve_path
from .handle import Exit, Output, ProcessHandle, Subscription
from .manager import ProcessManager, ProcessNotFound
from .spawn import process_env

_SIGNALS = {pb.Signal.SIGTERM: signal.SIGTERM, pb.Signal.SIGKILL: signal.SIGKILL}


def _event(field: str, value: object) -> pb.ProcessEvent:
    return pb.ProcessEvent(event=Oneof(field=field, value=value))


def _to_event(item: Output | Exit | None) -> pb.ProcessEvent:
    if item is None:
        return _event("keepalive", pb.ProcessEvent.KeepAlive())
    if isinstance(item, Output):
        data = pb.ProcessEvent.DataEvent(output=Oneof(field=item.stream, value=item.data))
        return _event("data", data)
    end = pb.ProcessEvent.EndEvent(exit_code=item.exit_code, exited=item.exited, status=item.status)
    if item.error is not None:
        end.error = item.error
    return _event("end", end)


class ProcessService:
    def __init__(self, state: EnvdState, manager: ProcessManager) -> None:
        self._state = state
        self._manager = manager

    def _find(self, selector: pb.ProcessSelector | None) -> ProcessHandle:
        choice = selector.selector if selector is not None else None
        if choice is None:
            raise ConnectError(Code.INVALID_ARGUMENT, "process selector is required")
        try:
            if choice.field == "pid":
                return self._manager.find(pid=choice.value)
            return self._manager.find(tag=choice.value)
        except ProcessNotFound as exc:
            raise ConnectError(Code.NOT_FOUND, str(exc)) from None

    async def _stream(
        self, handle: ProcessHandle, subscription: Subscription, keepalive_s: float, *, started: bool
    ) -> AsyncIterator[pb.ProcessEvent]:
        """The process's events. The stream that started it ends in `deadline_exceeded`, as
        E2B's does, when the process was killed for outliving that request's deadline (the
        SDKs raise their timeout error on it)."""
        yield _event("start", pb.ProcessEvent.StartEvent(pid=handle.pid))
        async for item in subscription.events(keepalive_s):
            if started and isinstance(item, Exit) and handle.outlived_deadline:
                raise ConnectError(Code.DEADLINE_EXCEEDED, f"process {handle.pid} was killed at its deadline")
            yield _to_event(item)

    async def list(self, request: pb.ListRequest, ctx: RequestContext) -> pb.ListResponse:
        processes = []
        for handle in self._manager.running():
            info = pb.ProcessInfo(config=handle.config, pid=handle.pid)
            if handle.tag is not None:
                info.tag = handle.tag
            processes.append(info)
        return pb.ListResponse(processes=processes)

    async def start(self, request: pb.StartRequest, ctx: RequestContext) -> AsyncIterator[pb.StartResponse]:
        identity = self._state.identity
        user = rpc_user(ctx, identity)
        config = request.process or pb.ProcessConfig()
        if not config.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process cmd is required")
        cwd = resolve_path(config.cwd if config.has_field("cwd") else "", user, identity.default_workdir)
        if not await asyncio.to_thread(os.path.isdir, cwd):
            raise ConnectError(Code.INVALID_ARGUMENT, f"cwd '{cwd}' does not exist")
        pty_size = None
        if request.has_field("pty"):
            size = request.pty.size if request.pty is not None else None
            pty_size = (size.cols or 80, size.rows or 24) if size is not None else (80, 24)
        # An absent `stdin` keeps stdin open, as envd did before the field existed.
        stdin = request.stdin if request.has_field("stdin") else True
        try:
            handle, subscription = await self._manager.start(
                config,
                args=list(config.args),
                tag=request.tag if request.has_field("tag") else None,
                user=user,
                env=process_env(user, identity.env_vars, dict(config.envs)),
                cwd=cwd,
                stdin=stdin and pty_size is None,
                pty_size=pty_size,
                lifetime_s=deadline_s(ctx),
            )
        except OSError as exc:
            raise ConnectError(
                Code.INVALID_ARGUMENT, f"error starting process '{config.cmd}': {exc.strerror or exc}"
            ) from None
        async for event in self._stream(handle, subscription, keepalive_interval(ctx), started=True):
            yield pb.StartResponse(event=event)

    async def connect(
        self, request: pb.ConnectRequest, ctx: RequestContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        handle = self._find(request.process)
        subscription = handle.subscribe()
        async for event in self._stream(handle, subscription, keepalive_interval(ctx), started=False):
            yield pb.ConnectResponse(event=event)

    async def update(self, request: pb.UpdateRequest, ctx: RequestContext) -> pb.UpdateResponse:
        handle = self._find(request.process)
        size = request.pty.size if request.pty is not None else None
        if size is not None:
            try:
                handle.resize(size.cols, size.rows)
            except BrokenPipeError as exc:
                raise ConnectError(Code.FAILED_PRECONDITION, str(exc)) from None
        return pb.UpdateResponse()

    async def _send(self, selector: pb.ProcessSelector | None, data: pb.ProcessInput | None) -> None:
        handle = self._find(selector)
        choice = data.input if data is not None else None
        if choice is None:
            return
        try:
            if choice.field == "pty":
                await handle.write_pty(choice.value)
            else:
                if handle.is_pty:
                    raise BrokenPipeError("process uses a pty: send pty input instead of stdin")
                await handle.write_stdin(choice.value)
        except (BrokenPipeError, ConnectionError) as exc:
            raise ConnectError(Code.FAILED_PRECONDITION, str(exc) or "stdin is closed") from None

    async def send_input(self, request: pb.SendInputRequest, ctx: RequestContext) -> pb.SendInputResponse:
        await self._send(request.process, request.input)
        return pb.SendInputResponse()

    async def stream_input(
        self, request: AsyncIterator[pb.StreamInputRequest], ctx: RequestContext
    ) -> pb.StreamInputResponse:
        selector: pb.ProcessSelector | None = None
        async for message in request:
            event = message.event
            if event is None:
                continue
            if event.field == "start":
                selector = event.value.process
                self._find(selector)
            elif event.field == "data":
                if selector is None:
                    raise ConnectError(Code.FAILED_PRECONDITION, "input stream must begin with a start event")
                await self._send(selector, event.value.input)
        return pb.StreamInputResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: RequestContext) -> pb.SendSignalResponse:
        handle = self._find(request.process)
        signum = _SIGNALS.get(request.signal)
        if signum is None:
            raise ConnectError(Code.UNIMPLEMENTED, f"signal {request.signal} is not supported")
        handle.signal(signum)
        return pb.SendSignalResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: RequestContext) -> pb.CloseStdinResponse:
        handle = self._find(request.process)
        if handle.is_pty:
            raise ConnectError(Code.FAILED_PRECONDITION, "process uses a pty: send Ctrl-D (0x04) instead")
        try:
            await handle.close_stdin()
        except BrokenPipeError as exc:
            raise ConnectError(Code.FAILED_PRECONDITION, str(exc)) from None
        return pb.CloseStdinResponse()
