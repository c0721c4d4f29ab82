"""The processes envd started, found by pid or tag; ended ones linger so a late `Connect`
or `List` still sees how they ended."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from ..gen.process.process_pb import ProcessConfig
from ..users import User
from .handle import ProcessHandle, Subscription
from .spawn import spawn

EXITED_RETENTION_S = 30.0


class ProcessNotFound(LookupError):
    pass


class ProcessManager:
    def __init__(self) -> None:
        self._by_pid: dict[int, ProcessHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def running(self) -> list[ProcessHandle]:
        return [handle for handle in self._by_pid.values() if handle.exit is None]

    def find(self, pid: int | None = None, tag: str | None = None) -> ProcessHandle:
        if pid is not None:
            handle = self._by_pid.get(pid)
            if handle is not None:
                return handle
            raise ProcessNotFound(f"process with pid {pid} not found")
        for handle in self._by_pid.values():
            if handle.tag == tag:
                return handle
        raise ProcessNotFound(f"process with tag {tag} not found")

    async def start(
        self,
        config: ProcessConfig,
        *,
        args: Sequence[str],
        tag: str | None,
        user: User,
        env: Mapping[str, str],
        cwd: str,
        stdin: bool,
        pty_size: tuple[int, int] | None,
        lifetime_s: float | None,
    ) -> tuple[ProcessHandle, Subscription]:
        spawned = await spawn(config.cmd, args, user=user, env=env, cwd=cwd, stdin=stdin, pty_size=pty_size)
        handle = ProcessHandle(spawned, config, tag)
        subscription = handle.subscribe()
        self._by_pid[handle.pid] = handle
        task = handle.run(lifetime_s)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._retire(t, handle))
        return handle, subscription

    def _retire(self, task: asyncio.Task[None], handle: ProcessHandle) -> None:
        self._tasks.discard(task)
        loop = asyncio.get_running_loop()
        loop.call_later(EXITED_RETENTION_S, self._forget, handle)

    def _forget(self, handle: ProcessHandle) -> None:
        if self._by_pid.get(handle.pid) is handle:
            del self._by_pid[handle.pid]

    def kill_all(self) -> None:
        for handle in self.running():
            handle.signal(9)
