"""gVisor (runsc) runtime: each sandbox is a runsc container with its own network
namespace, its template's root filesystem behind a copy-on-write overlay held in the
sandbox's memory, and CPU/memory limits in host cgroups.

runsc from Debian (2022-12, and the 2024-07 backport) needs two things on current kernels
(see runtime notes): the `/proc/sys/net` trick below, and the namespace's addresses put back
before each start. Builds that have `--net-disconnect-ok` save sandboxes with open or closing
TCP connections (an outbound request a moment ago) by dropping them; older ones refuse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .. import network
from ..commands import CommandFailed, run, run_status
from . import console
from .base import RestartFailed, RunningSandbox, SandboxSpec, SandboxStats
from .oci import SPEC_VERSION, build_step_spec, sandbox_spec

log = logging.getLogger(__name__)

# runsc 2022 thinks it is in the root network namespace whenever /proc/sys/net/core/
# rmem_default exists, which on kernel 6.x is everywhere; hiding /proc/sys/net in a private
# mount namespace for the runsc process gets past that check.
_HIDE_PROC_SYS_NET = 'mount -t tmpfs none /proc/sys/net && exec "$@"'


def _in_private_mounts(argv: list[str]) -> list[str]:
    """`argv` (a runsc that starts a sandbox) with /proc/sys/net hidden from it."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", _HIDE_PROC_SYS_NET, "sh", *argv]


@dataclass(frozen=True, slots=True)
class Runsc:
    """The installed runsc: its version and the optional features this runtime uses."""

    version: str
    disconnect_on_save: bool  # `--net-disconnect-ok`: saves drop open TCP connections
    allow_suid: bool = False  # `--allow-suid`: setuid binaries (sudo) work
    sized_overlay: bool = False  # `--overlay2=root:dir=…,size=…`: a disk-backed, capped layer
    background_restore: bool = False  # `restore --background`: pages load after it returns
    files_checkpoint: bool = False  # `fscheckpoint`: filesystem-only saves

    @classmethod
    def probe(cls, binary: str = "runsc") -> Runsc:
        try:
            version, flags, restore, commands = (
                subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)
                for args in (["--version"], ["flags"], ["restore", "--help"], ["help"])
            )
        except (OSError, subprocess.TimeoutExpired):
            return cls(version="unknown", disconnect_on_save=False)
        first = (version.stdout.splitlines() or ["runsc version unknown"])[0]
        known = flags.stdout + flags.stderr
        return cls(
            version=first.removeprefix("runsc version ").strip(),
            disconnect_on_save="-net-disconnect-ok" in known,
            allow_suid="-allow-suid" in known,
            sized_overlay="'size' optional parameter" in known,
            background_restore="-background" in restore.stdout + restore.stderr,
            files_checkpoint="fscheckpoint" in commands.stdout + commands.stderr,
        )


@dataclass(frozen=True, slots=True)
class OneShot:
    """A process run to its end in a sandbox of its own whose root is a host directory that
    takes its writes (a template build step on an overlay mount)."""

    container_id: str
    rootfs: Path
    slot: int
    argv: list[str]
    env: dict[str, str]
    cpu_count: int
    memory_mb: int
    # Host files bound read-only into it: (host path, path inside).
    files: tuple[tuple[str, str], ...] = ()
    tmpfs: tuple[str, ...] = ()  # tmpfs mounts inside it


class OneShotTimeout(RuntimeError):
    pass


class SandboxState(msgspec.Struct):
    sandbox_id: str
    template_id: str
    slot: int
    address: str
    build_id: str = ""
    disk_mb: int = 2048

    def running(self) -> RunningSandbox:
        return RunningSandbox(self.sandbox_id, self.address, self.slot, self.template_id, self.build_id)


class GVisorRuntime:
    name = "gvisor"
    # runsc cannot save envd's own connections (runtime notes): envd lets go of them first.
    releases_sockets = True
    supports_volumes = True  # host directories through the gofer
    saves_volumes = True  # a checkpoint restores with the same bind mounts

    def __init__(self, state_dir: Path, platform: str = "ptrace", runsc: Runsc | None = None) -> None:
        self._state_dir = state_dir
        self._runsc_root = state_dir / "runsc"
        self._platform = platform
        self._info = runsc or Runsc.probe()
        # A checkpoint restores only under the runsc that took it.
        self.image_format = f"spec{SPEC_VERSION}-runsc{self._info.version}"
        self.version = f"runsc {self._info.version} ({platform})"

    def _dir(self, sandbox_id: str) -> Path:
        return self._state_dir / "sandboxes" / sandbox_id

    def _runsc(self, *args: str, overlay: str = "root:memory", root: Path | None = None) -> list[str]:
        return [
            "runsc",
            f"--root={root or self._runsc_root}",
            f"--platform={self._platform}",
            "--network=sandbox",
            f"--overlay2={overlay}",
            *(["--net-disconnect-ok"] if self._info.disconnect_on_save else []),
            *(["--allow-suid"] if self._info.allow_suid else []),
            *args,
        ]

    def _overlay(self, bundle: Path, disk_mb: int) -> str:
        """The writable layer over the template's root: a file in the sandbox's directory on
        the host's disk, capped at the template's disk size (a full disk is ENOSPC inside);
        runsc builds without the cap keep it in the sandbox's memory."""
        if not self._info.sized_overlay:
            return "root:memory"
        return f"root:dir={bundle},size={disk_mb}m"

    @property
    def saves_files_only(self) -> bool:
        return self._info.files_checkpoint

    async def create(self, spec: SandboxSpec, files_from: Path | None = None) -> RunningSandbox:
        net = network.SandboxNetwork(spec.slot, spec.sandbox_id)
        bundle = self._dir(spec.sandbox_id)
        verb = ["run", f"--fs-restore-image-path={files_from}"] if files_from is not None else []
        try:
            await asyncio.to_thread(self._write_bundle, bundle, spec, net)
            await network.create(net)
            await self._start(bundle, spec.sandbox_id, *verb, overlay=self._overlay(bundle, spec.disk_mb))
        except BaseException:
            await self._remove(spec.sandbox_id, net)
            raise
        return _running(spec, net)

    def _write_bundle(self, bundle: Path, spec: SandboxSpec, net: network.SandboxNetwork) -> None:
        bundle.mkdir(parents=True, exist_ok=False)
        self._runsc_root.mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(sandbox_spec(spec, net.netns_path)))
        state = SandboxState(
            spec.sandbox_id, spec.template_id, spec.slot, net.address, spec.build_id, spec.disk_mb
        )
        (bundle / "sandbox.json").write_bytes(msgspec.json.encode(state))

    async def _start(self, bundle: Path, sandbox_id: str, *runsc_args: str, overlay: str) -> None:
        """`runsc run` (or `restore`) detached. Its output goes to the console log: the
        sandbox inherits these descriptors and keeps them open for its whole life."""
        console = await asyncio.to_thread((bundle / "console.log").open, "ab")
        verb = runsc_args or ("run",)
        try:
            argv = _in_private_mounts(
                self._runsc(*verb, "--detach", f"--bundle={bundle}", sandbox_id, overlay=overlay)
            )
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console
            )
            if await process.wait() != 0:
                tail = (await asyncio.to_thread((bundle / "console.log").read_text, errors="replace"))[-2000:]
                raise CommandFailed(f"runsc {verb[0]} failed for {sandbox_id}: {tail}")
        finally:
            console.close()

    async def run_once(self, job: OneShot, on_line: Callable[[str], None], timeout_s: float) -> int:
        """Runs `job` to its end, passing each line it prints to `on_line`; its exit status.
        Its network namespace is the slot's (the caller's egress rules hold there first);
        nothing of it is left afterwards."""
        net = network.SandboxNetwork(job.slot, job.container_id)
        bundle = self._state_dir / "oneshot" / job.container_id
        root = self._state_dir / "oneshot-runsc"
        try:
            await asyncio.to_thread(bundle.mkdir, parents=True, exist_ok=False)
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
            spec = build_step_spec(job, net.netns_path)
            await asyncio.to_thread((bundle / "config.json").write_text, json.dumps(spec))
            await network.create(net)
            argv = _in_private_mounts(
                self._runsc("run", f"--bundle={bundle}", job.container_id, overlay="none", root=root)
            )
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert process.stdout is not None

            async def pump() -> int:
                assert process.stdout is not None
                async for raw in process.stdout:
                    on_line(raw.decode(errors="replace").rstrip("\n"))
                return await process.wait()

            try:
                return await asyncio.wait_for(pump(), timeout_s)
            except TimeoutError:
                raise OneShotTimeout(f"did not finish within {timeout_s:.0f}s") from None
            finally:
                if process.returncode is None:
                    await run(*self._runsc("kill", job.container_id, "KILL", root=root), check=False)
                    process.kill()
                    await process.wait()
        finally:
            await run(*self._runsc("delete", "--force", job.container_id, root=root), check=False)
            await network.destroy(net)
            await asyncio.to_thread(shutil.rmtree, bundle, True)

    async def clean_one_shots(self) -> None:
        """Removes what one-shot runs of a crashed agent left."""
        root = self._state_dir / "oneshot-runsc"
        if root.exists():
            out = await run(*self._runsc("list", "--format=json", root=root), check=False)
            try:
                entries = json.loads(out) or []
            except ValueError:
                entries = []
            for entry in entries:
                await run(*self._runsc("delete", "--force", str(entry.get("id")), root=root), check=False)
        await asyncio.to_thread(shutil.rmtree, self._state_dir / "oneshot", True)

    async def snapshot_template(
        self, spec: SandboxSpec, image_dir: Path, until_ready: Callable[[RunningSandbox], Awaitable[None]]
    ) -> None:
        try:
            sandbox = await self.create(spec)
            await until_ready(sandbox)
            await self.checkpoint(spec.sandbox_id, image_dir)
        finally:
            await self.kill(spec.sandbox_id)

    async def checkpoint(self, sandbox_id: str, image_dir: Path) -> None:
        """Saves the sandbox (stopping it) into `image_dir`. Its envd must have let go of
        its sockets first (`POST /snapshot/prepare`).

        runsc runs in a session of its own with its output in the sandbox's runsc.log: a
        save must outlive this agent (a restarted one waits for it, `settle`), and writing to
        a pipe whose reader died would kill it with SIGPIPE halfway through."""
        await asyncio.to_thread(image_dir.mkdir, parents=True, exist_ok=True)
        log_path = self._dir(sandbox_id) / "runsc.log"
        out = await asyncio.to_thread(log_path.open, "ab")
        try:
            process = await asyncio.create_subprocess_exec(
                *self._runsc("checkpoint", f"--image-path={image_dir}", *self._save_flags, sandbox_id),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        finally:
            out.close()
        if await process.wait() != 0:
            tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
            raise CommandFailed(f"runsc checkpoint failed for {sandbox_id}: {tail}")

    async def checkpoint_files(self, sandbox_id: str, image_dir: Path, *, keep_running: bool) -> None:
        """`runsc fscheckpoint`: the root's writable layer and nothing else, in milliseconds."""
        await asyncio.to_thread(image_dir.mkdir, parents=True, exist_ok=True)
        leave = ["--leave-running"] if keep_running else []
        await run(*self._runsc("fscheckpoint", f"--image-path={image_dir}", *leave, sandbox_id))

    async def snapshot(self, sandbox_id: str, image_dir: Path) -> None:
        """Saves the sandbox into `image_dir` and starts it again from that image in place:
        same id, address, processes and files. (`runsc checkpoint --leave-running` cannot
        be used: its restart misses the network setup `_start` does.)"""
        await self.checkpoint(sandbox_id, image_dir)
        try:
            state = await asyncio.to_thread(_read_state, self._dir(sandbox_id))
            if state is None:
                raise CommandFailed(f"sandbox {sandbox_id} has no state left to restart from")
            await run(*self._runsc("delete", "--force", sandbox_id))
            await network.address_sandbox(network.SandboxNetwork(state.slot, sandbox_id))
            bundle = self._dir(sandbox_id)
            overlay = self._overlay(bundle, state.disk_mb)
            await self._start(bundle, sandbox_id, *self._restore_verb(image_dir), overlay=overlay)
            await self.wake_envd(sandbox_id)
        except Exception as exc:
            raise RestartFailed(f"sandbox {sandbox_id} was saved but did not start again: {exc}") from exc

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> RunningSandbox:
        """A new sandbox from a checkpoint, in its own network namespace, listening again."""
        net = network.SandboxNetwork(spec.slot, spec.sandbox_id)
        bundle = self._dir(spec.sandbox_id)
        try:
            await asyncio.to_thread(self._write_bundle, bundle, spec, net)
            await network.create(net)
            overlay = self._overlay(bundle, spec.disk_mb)
            await self._start(bundle, spec.sandbox_id, *self._restore_verb(image_dir), overlay=overlay)
            await self.wake_envd(spec.sandbox_id)
        except BaseException:
            await self._remove(spec.sandbox_id, net)
            raise
        return _running(spec, net)

    @property
    def _save_flags(self) -> list[str]:
        # Lazy restores read pages straight from the image: it must be uncompressed.
        return ["--compression=none"] if self._info.background_restore else []

    def _restore_verb(self, image_dir: Path) -> list[str]:
        """`restore` from `image_dir`; in the background where runsc can: the sandbox runs
        as soon as its kernel state is back, and memory pages follow as they are touched or
        streamed in."""
        background = ["--background"] if self._info.background_restore else []
        return ["restore", f"--image-path={image_dir}", *background]

    async def settle(self, timeout_s: float) -> None:
        """Waits while `runsc checkpoint` or `restore` runs on this runtime's sandboxes: a
        node agent killed mid-pause leaves them running on their own."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(self._lifecycle_commands_running):
                return
            await asyncio.sleep(0.2)

    def _lifecycle_commands_running(self) -> bool:
        root_flag = f"--root={self._runsc_root}"
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            args = {arg.decode(errors="replace") for arg in argv}
            if root_flag in args and args & {"checkpoint", "restore"}:
                return True
        return False

    async def wake_envd(self, sandbox_id: str) -> None:
        """tini passes SIGUSR1 on to envd, which listens again (libs/snapshot_listener.py)."""
        await run(*self._runsc("kill", sandbox_id, "USR1"))

    async def stop(self, sandbox_id: str) -> None:
        await run(*self._runsc("kill", sandbox_id, "KILL"), check=False)

    async def kill(self, sandbox_id: str) -> bool:
        bundle = self._dir(sandbox_id)
        state = await asyncio.to_thread(_read_state, bundle)
        if state is None and not await self._known_to_runsc(sandbox_id):
            return False
        net = network.SandboxNetwork(state.slot, sandbox_id) if state else None
        await self._remove(sandbox_id, net)
        return True

    async def _remove(self, sandbox_id: str, net: network.SandboxNetwork | None) -> None:
        await run(*self._runsc("kill", sandbox_id, "KILL"), check=False)
        await run(*self._runsc("delete", "--force", sandbox_id), check=False)
        if net is not None:
            await network.destroy(net)
        await asyncio.to_thread(shutil.rmtree, self._dir(sandbox_id), True)

    async def _known_to_runsc(self, sandbox_id: str) -> bool:
        return any(entry.get("id") == sandbox_id for entry in await self._runsc_list())

    async def _runsc_list(self) -> list[dict[str, object]]:
        if not self._runsc_root.exists():
            return []
        out = await run(*self._runsc("list", "--format=json"), check=False)
        try:
            return json.loads(out) or []
        except ValueError:
            return []

    async def list(self) -> list[RunningSandbox]:
        running = {str(entry.get("id")) for entry in await self._runsc_list() if _alive(entry)}
        sandboxes = []
        root = self._state_dir / "sandboxes"
        entries = await asyncio.to_thread(lambda: list(root.iterdir()) if root.exists() else [])
        for bundle in entries:
            state = await asyncio.to_thread(_read_state, bundle)
            if state is not None and state.sandbox_id in running:
                sandboxes.append(state.running())
        return sandboxes

    async def leftovers(self) -> list[str]:
        """Sandbox ids with some trace on the host (bundle, runsc state) but not running."""
        running = {s.sandbox_id for s in await self.list()}
        root = self._state_dir / "sandboxes"
        names = await asyncio.to_thread(lambda: [p.name for p in root.iterdir()] if root.exists() else [])
        known = set(names) | {str(entry.get("id")) for entry in await self._runsc_list()}
        return sorted(known - running)

    async def stats(self, sandbox_id: str) -> SandboxStats | None:
        memory = Path(f"/sys/fs/cgroup/memory/corral/{sandbox_id}/memory.usage_in_bytes")
        cpu = Path(f"/sys/fs/cgroup/cpuacct/corral/{sandbox_id}/cpuacct.usage")
        try:
            used = int(await asyncio.to_thread(memory.read_text))
            cpu_ns = int(await asyncio.to_thread(cpu.read_text))
        except (OSError, ValueError):
            return None
        return SandboxStats(memory_bytes=used, cpu_seconds=cpu_ns / 1e9)

    async def logs(self, sandbox_id: str, limit: int) -> list[str]:
        return await console.tail(self._dir(sandbox_id) / "console.log", limit)

    async def exec(self, sandbox_id: str, argv: list[str], timeout_s: float) -> tuple[int, str]:
        try:
            code, out, err = await run_status(*self._runsc("exec", sandbox_id, *argv), timeout_s=timeout_s)
        except CommandFailed as exc:
            return 124, str(exc)
        return code, out + err


def _alive(entry: dict[str, object]) -> bool:
    """runsc says running and its sandbox process is there (runsc's state can lag a
    checkpoint that just stopped it)."""
    pid = entry.get("pid")
    return (
        entry.get("status") == "running"
        and isinstance(pid, int)
        and pid > 0
        and Path(f"/proc/{pid}").exists()
    )


def _running(spec: SandboxSpec, net: network.SandboxNetwork) -> RunningSandbox:
    return RunningSandbox(spec.sandbox_id, net.address, spec.slot, spec.template_id, spec.build_id)


def _read_state(bundle: Path) -> SandboxState | None:
    try:
        return msgspec.json.decode((bundle / "sandbox.json").read_bytes(), type=SandboxState)
    except (OSError, msgspec.DecodeError):
        return None
