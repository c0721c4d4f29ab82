"""A sandbox VM's QEMU as a host process: starting it until it daemonizes, finding it
again from its pid file, killing it, and reading what it uses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from ...commands import CommandFailed
from ..base import SandboxStats
from .qemu import PIDFILE

# Idle: under IDLE_CPU of a core for IDLE_WINDOWS windows in a row.
IDLE_WINDOW_S = 1.0
IDLE_WINDOWS = 3
IDLE_CPU = 0.15
IDLE_MAX_S = 90.0


async def start_qemu(argv: list[str], log_path: Path) -> None:
    """Runs QEMU until it daemonizes. Its output goes to a file, not a pipe: the daemon
    keeps the descriptors it started with, and a pipe would never reach its end."""
    log_file = await asyncio.to_thread(log_path.open, "ab")
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
        started = asyncio.ensure_future(process.wait())
        try:
            returncode = await asyncio.shield(started)
        except asyncio.CancelledError:
            # Let it finish daemonizing (a moment): the caller's clean-up then finds its
            # pid file, instead of leaving a VM nobody knows of.
            await started
            raise
        if returncode != 0:
            tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
            raise CommandFailed(f"QEMU did not start: {tail}")
    finally:
        log_file.close()


def qemu_pid(run_dir: Path) -> int | None:
    """The pid of the sandbox's QEMU if it still runs (and is that QEMU, not a reused pid)."""
    try:
        pid = int((run_dir / PIDFILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(run_dir).encode() in cmdline else None


async def kill_and_wait(pid: int, timeout_s: float = 10.0) -> None:
    """SIGKILLs a QEMU (not this process's child: it daemonized) and waits until it is
    gone, through a pidfd, so its files and tap are free afterwards."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited, timeout_s)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def memory_kb(pid: int) -> dict[str, int]:
    """A process's memory totals (kB) from smaps_rollup: `Pss`, `Pss_Anon` (what only this
    VM holds), `Pss_File` (its share of file pages: a clone's template RAM), ..."""
    totals = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        totals[name.rstrip(":")] = int(value)
    return totals


def vm_memory_kb(run_dir: Path) -> dict[str, int]:
    """`memory_kb` of the VM whose sandbox directory is `run_dir`."""
    pid = qemu_pid(run_dir)
    if pid is None:
        raise ProcessLookupError(f"no VM runs for {run_dir}")
    return memory_kb(pid)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_stats(pid: int) -> SandboxStats:
    return SandboxStats(memory_bytes=memory_kb(pid)["Pss"] * 1024, cpu_seconds=cpu_seconds(pid))


def host_tsc_khz() -> int | None:
    """The host's TSC rate, which a TCG guest's TSC runs at."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return None


async def wait_until_idle(pid: int) -> None:
    """Until the process has used under IDLE_CPU of a core for IDLE_WINDOWS windows in a
    row (at most IDLE_MAX_S)."""
    deadline = time.monotonic() + IDLE_MAX_S
    quiet = 0
    before = await asyncio.to_thread(cpu_seconds, pid)
    while quiet < IDLE_WINDOWS and time.monotonic() < deadline:
        await asyncio.sleep(IDLE_WINDOW_S)
        now = await asyncio.to_thread(cpu_seconds, pid)
        quiet = quiet + 1 if (now - before) / IDLE_WINDOW_S < IDLE_CPU else 0
        before = now
