"""Host directories in a guest: one virtiofsd (the vhost-user virtio-fs back-end) per
directory and VM, its socket in the VM's run directory, QEMU's `vhost-user-fs-device` on
the other end. Each daemon is started in its own session so that VMs outlive a restarted
node agent, and ends by itself when its QEMU goes (it serves exactly one connection)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from ...commands import CommandFailed

VIRTIOFSD_PATHS = ("/usr/local/bin/virtiofsd", "/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
SOCKET_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class SharedDir:
    """One host directory as the guest mounts it: `tag` names the device."""

    index: int
    host_dir: str
    guest_path: str

    @property
    def tag(self) -> str:
        return f"corral{self.index}"

    def socket(self, run_dir: Path) -> Path:
        return run_dir / f"fs{self.index}.sock"

    def pidfile(self, run_dir: Path) -> Path:
        return run_dir / f"fs{self.index}.pid"


def virtiofsd() -> str | None:
    """The installed virtiofsd (scripts/install.sh builds it from crates.io), if any."""
    for path in VIRTIOFSD_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("virtiofsd")


def shared_dirs(volumes: tuple[tuple[str, str], ...]) -> tuple[SharedDir, ...]:
    return tuple(SharedDir(index, host, guest) for index, (host, guest) in enumerate(volumes))


class Daemons:
    """The virtiofsd processes this node agent started; ones an earlier agent started are
    found again from their pid files."""

    def __init__(self) -> None:
        self._reapers: set[asyncio.Task[int]] = set()

    async def start(self, run_dir: Path, shared: SharedDir) -> None:
        """Starts the daemon for `shared` and waits until its socket listens."""
        binary = virtiofsd()
        if binary is None:
            raise CommandFailed("virtiofsd is not installed (scripts/install.sh builds it)")
        socket = shared.socket(run_dir)
        log_path = run_dir / f"fs{shared.index}.log"
        log_file = await asyncio.to_thread(log_path.open, "ab")
        try:
            process = await asyncio.create_subprocess_exec(
                binary,
                f"--socket-path={socket}",
                f"--shared-dir={shared.host_dir}",
                "--sandbox=namespace",
                "--cache=auto",
                "--log-level=warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        finally:
            log_file.close()
        reaper = asyncio.ensure_future(process.wait())
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        await asyncio.to_thread(shared.pidfile(run_dir).write_text, str(process.pid))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SOCKET_WAIT_S
        while not await asyncio.to_thread(socket.exists):
            if reaper.done() or loop.time() > deadline:
                tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-1000:]
                raise CommandFailed(f"virtiofsd for {shared.host_dir} did not start: {tail}")
            await asyncio.sleep(0.01)

    async def stop_all(self, run_dir: Path) -> None:
        """Ends the VM's daemons (after its QEMU: they would end then anyway)."""

        def signal_all() -> None:
            for pidfile in run_dir.glob("fs*.pid"):
                pid = _daemon_pid(pidfile, run_dir)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

        await asyncio.to_thread(signal_all)


def _daemon_pid(pidfile: Path, run_dir: Path) -> int | None:
    """The pid in `pidfile` if it is still that VM's virtiofsd (not a reused pid)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(run_dir).encode() in cmdline else None
