"""One running process: its output fanned out to every attached stream, its input, and
its end event (kept for a while so a late `Connect` still learns how it ended)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..gen.process.process_pb import ProcessConfig
from .spawn import READ_CHUNK, Spawned, set_winsize

# Output chunks buffered per attached stream before the process is slowed down to the
# reader's pace: output streams, it never piles up in memory.
SUBSCRIBER_QUEUE = 16
# After the process exits, output still arriving within this window belongs to it (a
# background grandchild can hold the pipe open forever, so EOF is not awaited).
DRAIN_QUIET_S = 0.05


@dataclass(frozen=True, slots=True)
class Output:
    stream: str  # "stdout", "stderr" or "pty"
    data: bytes


@dataclass(frozen=True, slots=True)
class Exit:
    exit_code: int
    exited: bool
    status: str

    @property
    def error(self) -> str | None:
        return None if self.exit_code == 0 and self.exited else self.status

    @classmethod
    def from_returncode(cls, returncode: int) -> Exit:
        if returncode >= 0:
            return cls(returncode, True, f"exit status {returncode}")
        name = signal.strsignal(-returncode) or f"signal {-returncode}"
        return cls(-1, False, f"signal: {name.lower()}")


Event = Output | Exit


class Subscription:
    def __init__(self, handle: ProcessHandle) -> None:
        self._handle = handle
        self.queue: asyncio.Queue[Event] = asyncio.Queue(SUBSCRIBER_QUEUE)

    async def events(self, keepalive_s: float) -> AsyncIterator[Event | None]:
        """Output and then the Exit; None when `keepalive_s` passed without any."""
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self.queue.get(), keepalive_s)
                except TimeoutError:
                    yield None
                    continue
                yield event
                if isinstance(event, Exit):
                    return
        finally:
            self._handle.unsubscribe(self)


class ProcessHandle:
    def __init__(self, spawned: Spawned, config: ProcessConfig, tag: str | None) -> None:
        self._spawned = spawned
        self.config = config
        self.tag = tag
        self.pid: int = spawned.process.pid
        self._subscribers: set[Subscription] = set()
        self._input_lock = asyncio.Lock()
        self.exit: Exit | None = None
        self.done = asyncio.Event()
        self._bytes_read = 0
        self._lifetime: asyncio.TimerHandle | None = None
        self.outlived_deadline = False  # killed because its Start request's deadline passed

    @property
    def is_pty(self) -> bool:
        return self._spawned.pty_master is not None

    @property
    def has_stdin(self) -> bool:
        stdin = self._spawned.process.stdin
        return stdin is not None and not stdin.is_closing()

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        if self.exit is not None:
            subscription.queue.put_nowait(self.exit)
        else:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def run(self, lifetime_s: float | None) -> asyncio.Task[None]:
        """Starts pumping output; call after the first subscriber is attached."""
        if lifetime_s is not None:
            loop = asyncio.get_running_loop()
            self._lifetime = loop.call_later(lifetime_s, self._deadline_passed)
        return asyncio.create_task(self._supervise(), name=f"process-{self.pid}")

    def _deadline_passed(self) -> None:
        self.outlived_deadline = True
        self.signal(signal.SIGKILL)

    async def _supervise(self) -> None:
        spawned = self._spawned
        pumps = [asyncio.create_task(self._pump(spawned.stdout, "pty" if self.is_pty else "stdout"))]
        if spawned.stderr is not None:
            pumps.append(asyncio.create_task(self._pump(spawned.stderr, "stderr")))
        returncode = await spawned.process.wait()
        await self._drain(pumps)
        if self._lifetime is not None:
            self._lifetime.cancel()
        if spawned.pty_master is not None:
            os.close(spawned.pty_master)
        self.exit = Exit.from_returncode(returncode)
        for subscription in list(self._subscribers):
            await subscription.queue.put(self.exit)
        self._subscribers.clear()
        self.done.set()

    async def _drain(self, pumps: list[asyncio.Task[None]]) -> None:
        while True:
            before = self._bytes_read
            _, pending = await asyncio.wait(pumps, timeout=DRAIN_QUIET_S)
            if not pending:
                return
            if self._bytes_read == before:
                for pump in pending:
                    pump.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return

    async def _pump(self, reader: asyncio.StreamReader, stream: str) -> None:
        while True:
            try:
                chunk = await reader.read(READ_CHUNK)
            except OSError:  # EIO: the last holder of the PTY's other side closed it
                return
            if not chunk:
                return
            self._bytes_read += len(chunk)
            output = Output(stream, chunk)
            for subscription in list(self._subscribers):
                await subscription.queue.put(output)

    async def write_stdin(self, data: bytes) -> None:
        stdin = self._spawned.process.stdin
        if stdin is None or stdin.is_closing():
            raise BrokenPipeError("stdin is not open for this process")
        async with self._input_lock:
            stdin.write(data)
            await stdin.drain()

    async def write_pty(self, data: bytes) -> None:
        master = self._spawned.pty_master
        if master is None:
            raise BrokenPipeError("process has no pty")
        async with self._input_lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(master, view)
                except BlockingIOError:
                    await asyncio.sleep(0.005)
                    continue
                view = view[written:]

    async def close_stdin(self) -> None:
        stdin = self._spawned.process.stdin
        if stdin is None:
            raise BrokenPipeError("stdin is not open for this process")
        async with self._input_lock:
            stdin.close()
            with contextlib.suppress(ConnectionError):
                await stdin.wait_closed()

    def resize(self, cols: int, rows: int) -> None:
        master = self._spawned.pty_master
        if master is None:
            raise BrokenPipeError("process has no pty")
        set_winsize(master, cols, rows)

    def signal(self, signum: int) -> None:
        """Signals the whole process group: what the command started goes with it."""
        if self.exit is not None:
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return
        except PermissionError:
            self._spawned.process.send_signal(signum)
