"""The QMP conversations the runtime has with a VM's QEMU: save its state to a file, load
a state file into a VM waiting for it, and the small ones around them. The client is
`qemu.qmp`'s; `Commands` is what these sequences need of it."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from qemu.qmp import QMPClient

POLL_S = 0.005
# Migration is throttled to 32 MiB/s unless told otherwise; a save is local and the guest
# is stopped for all of it.
UNLIMITED_BANDWIDTH = 1 << 40


class Commands(Protocol):
    async def execute(self, cmd: str, arguments: dict[str, Any] | None = None) -> Any: ...


class QmpError(RuntimeError):
    pass


@contextlib.asynccontextmanager
async def connected(socket: Path, timeout_s: float = 10.0) -> AsyncIterator[QMPClient]:
    """A QMP session with the VM behind `socket` (retried while QEMU is starting)."""
    client = QMPClient(socket.parent.name)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await client.connect(str(socket))
            break
        except Exception as exc:  # the socket is not there yet, or QEMU is still starting
            if time.monotonic() > deadline:
                raise QmpError(f"no QMP at {socket}: {exc}") from exc
            await asyncio.sleep(0.01)
    try:
        yield client
    finally:
        await client.disconnect()


async def _set_ignore_shared(qmp: Commands, ignore_shared: bool) -> None:
    capability = {"capability": "x-ignore-shared", "state": ignore_shared}
    await qmp.execute("migrate-set-capabilities", {"capabilities": [capability]})


async def save(qmp: Commands, state_file: Path, *, ignore_shared: bool, timeout_s: float = 300) -> None:
    """Stops the guest and writes its state to `state_file`. The VM stays stopped (and
    its disks flushed and handed over, as after any migration) until `resume`."""
    await qmp.execute("stop")
    await _set_ignore_shared(qmp, ignore_shared)
    await qmp.execute("migrate-set-parameters", {"max-bandwidth": UNLIMITED_BANDWIDTH})
    await qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(state_file))}"})
    deadline = time.monotonic() + timeout_s
    while True:
        info = await qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise QmpError(f"saving the VM failed: {info.get('error-desc', status)}")
        if time.monotonic() > deadline:
            await qmp.execute("migrate_cancel")
            raise QmpError(f"saving the VM took more than {timeout_s:.0f}s")
        await asyncio.sleep(POLL_S)


async def load(qmp: Commands, state_file: Path, *, ignore_shared: bool, timeout_s: float = 120) -> None:
    """Loads `state_file` into a VM started with `-incoming defer`, then runs it."""
    await _set_ignore_shared(qmp, ignore_shared)
    await qmp.execute("migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(state_file))}"})
    deadline = time.monotonic() + timeout_s
    while True:
        status = (await qmp.execute("query-status")).get("status")
        if status != "inmigrate":
            break
        if time.monotonic() > deadline:
            raise QmpError(f"loading the VM took more than {timeout_s:.0f}s")
        await asyncio.sleep(POLL_S)
    if status not in ("paused", "running", "postmigrate", "prelaunch"):
        info = await qmp.execute("query-migrate")
        raise QmpError(f"loading the VM failed ({status}): {info.get('error-desc', '')}")
    await resume(qmp)


async def resume(qmp: Commands) -> None:
    """Runs the guest if it is stopped (a no-op when it runs)."""
    if (await qmp.execute("query-status")).get("status") != "running":
        await qmp.execute("cont")


async def status(qmp: Commands) -> str:
    return str((await qmp.execute("query-status")).get("status"))
