"""MicroVM runtime: each sandbox is a QEMU `microvm` guest (KVM where the host has a usable
one, TCG otherwise) in its own network namespace.

Disks: the template build's root filesystem as a read-only ext4 image, then qcow2 layers:
the template snapshot's (what booting wrote), and the sandbox's own, the only one written.
Memory: a clone maps the template snapshot's RAM file privately, so it owns only the pages
it has written since (see qemu.py).

Images this runtime writes (`checkpoint.img` is always written last, by rename):
- template snapshot: `memory` (the template's RAM), `checkpoint.img` (devices only),
  `disk.qcow2` (the template layer), `vm.json`;
- pause or persistent snapshot: `checkpoint.img` (devices and all RAM), `disk.qcow2` (the
  sandbox's own layer), `vm.json` (the layers it sits on, relative to the template build).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from ... import network
from ...commands import CommandFailed, run
from .. import console
from ..base import CHECKPOINT_FILE, RestartFailed, RunningSandbox, SandboxSpec, SandboxStats
from . import process, qmp, shared_dirs, vm_network
from .guest import Guest, ensure_guest
from .qemu import CONSOLE_LOG, QMP_SOCKET, Memory, VmConfig, qemu_argv
from .root_image import ensure_root_image

log = logging.getLogger(__name__)

DISK_FILE = "disk.qcow2"
MEMORY_FILE = "memory"
VM_FILE = "vm.json"
PARTIAL_STATE = "checkpoint.partial"
# Bumped when the VM's devices or layout change (qemu.py): older template snapshots would
# not load into it.
VM_FORMAT_VERSION = 1


class VmRecord(msgspec.Struct):
    """What a sandbox's directory (and each image) says of its VM."""

    sandbox_id: str
    template_id: str
    build_id: str
    slot: int
    address: str
    memory_mb: int
    cpu_count: int
    guest: str  # the guest's directory: a restore loads into the kernel its image was taken on
    # Disk layers below the sandbox's own, relative to the template build's directory.
    base_layers: list[str] = []
    template_image: bool = False  # the image is a template snapshot (RAM in `memory`)

    def running(self) -> RunningSandbox:
        return RunningSandbox(self.sandbox_id, self.address, self.slot, self.template_id, self.build_id)


class MicroVMRuntime:
    name = "microvm"
    # A VM's snapshot keeps its guest's sockets as they are: envd need not let go of them.
    releases_sockets = False
    # QEMU 7.2 (bookworm's) cannot migrate a vhost-user-fs device: a VM that mounts
    # volumes cannot be paused or snapshotted (docs/guide/volumes.md).
    saves_volumes = False
    # A disk layer saved without the guest's page cache could lose writes: not offered yet.
    saves_files_only = False

    def __init__(self, state_dir: Path, guest_dir: Path, accel: str, guest: Guest | None = None) -> None:
        self._sandboxes = state_dir / "microvm"
        self._guest_dir = guest_dir
        self.accel = accel
        self.image_format = f"{accel}-v{VM_FORMAT_VERSION}"
        self.version = f"QEMU microvm ({accel})"
        self._guest = guest  # made on first use when not given
        self._guest_lock = asyncio.Lock()
        self._tsc_khz = process.host_tsc_khz() if accel == "tcg" else None
        # Volumes reach the guest through virtio-fs, served by virtiofsd.
        self.supports_volumes = shared_dirs.virtiofsd() is not None
        self._daemons = shared_dirs.Daemons()

    def _dir(self, sandbox_id: str) -> Path:
        return self._sandboxes / sandbox_id

    async def guest(self) -> Guest:
        """The current guest (made on first use)."""
        async with self._guest_lock:
            if self._guest is None:
                self._guest = await asyncio.to_thread(ensure_guest, self._guest_dir)
            return self._guest

    def _guest_named(self, name: str) -> Guest:
        directory = self._guest_dir / name
        return Guest(directory / "vmlinux", directory / "initramfs.img")

    def _config(
        self,
        spec: SandboxSpec,
        guest: Guest,
        root: Path,
        layers: tuple[Path, ...],
        memory: Memory,
        memory_file: Path | None,
        incoming: bool,
    ) -> VmConfig:
        return VmConfig(
            kernel=guest.kernel,
            initramfs=guest.initramfs,
            root_image=root,
            layers=layers,
            memory_mb=spec.memory_mb,
            cpu_count=spec.cpu_count,
            init=tuple(spec.init),
            run_dir=self._dir(spec.sandbox_id),
            accel=self.accel,
            memory=memory,
            memory_file=memory_file,
            incoming=incoming,
            tsc_khz=self._tsc_khz,
            shared_dirs=shared_dirs.shared_dirs(spec.volumes),
        )

    def _record(
        self, spec: SandboxSpec, net: network.SandboxNetwork, guest: Guest, base_layers: list[str]
    ) -> VmRecord:
        return VmRecord(
            sandbox_id=spec.sandbox_id,
            template_id=spec.template_id,
            build_id=spec.build_id,
            slot=spec.slot,
            address=net.address,
            memory_mb=spec.memory_mb,
            cpu_count=spec.cpu_count,
            guest=guest.kernel.parent.name,
            base_layers=base_layers,
        )

    # Starting

    async def create(self, spec: SandboxSpec, files_from: Path | None = None) -> RunningSandbox:
        """Boots the template's guest: a few seconds under KVM, tens under TCG."""
        if files_from is not None:
            raise CommandFailed("microVMs keep no filesystem-only images")
        return await self._launch(spec, await self.guest(), base_layers=[], own_layer_from=None, state=None)

    async def checkpoint_files(self, sandbox_id: str, image_dir: Path, *, keep_running: bool) -> None:
        raise CommandFailed("microVMs keep no filesystem-only images")

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> RunningSandbox:
        """A clone of a template snapshot (its RAM shared copy-on-write), or a sandbox back
        from its pause or persistent snapshot (all its RAM loaded)."""
        if spec.volumes:  # never saved with them (`saves_volumes`): they would not load
            raise CommandFailed("a microVM image cannot be restored with volumes")
        image = await asyncio.to_thread(_read_record, image_dir)
        if image is None:
            raise CommandFailed(f"{image_dir} is not a microVM image")
        # The machine must be the one the image was taken of, whatever the template says now.
        spec = dataclasses.replace(spec, memory_mb=image.memory_mb, cpu_count=image.cpu_count)
        build_dir = spec.rootfs.parent
        guest = self._guest_named(image.guest)
        if image.template_image:
            layer = (image_dir / DISK_FILE).relative_to(build_dir)
            return await self._launch(
                spec,
                guest,
                base_layers=[str(layer)],
                own_layer_from=None,
                state=image_dir,
                clone_of=image_dir,
            )
        return await self._launch(
            spec, guest, base_layers=image.base_layers, own_layer_from=image_dir / DISK_FILE, state=image_dir
        )

    async def _launch(
        self,
        spec: SandboxSpec,
        guest: Guest,
        *,
        base_layers: list[str],
        own_layer_from: Path | None,
        state: Path | None,
        clone_of: Path | None = None,
        memory_file: Path | None = None,
    ) -> RunningSandbox:
        """Starts the VM in a new namespace: booting, or loading `state`'s checkpoint. The
        sandbox's own layer is new over `base_layers`, or a copy of `own_layer_from`."""
        net = network.SandboxNetwork(spec.slot, spec.sandbox_id)
        run_dir = self._dir(spec.sandbox_id)
        build_dir = spec.rootfs.parent
        try:
            root = await ensure_root_image(build_dir, spec.rootfs, spec.disk_mb)
            layers = tuple(build_dir / layer for layer in base_layers)
            await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=False)
            own = run_dir / DISK_FILE
            if own_layer_from is not None:
                await run("cp", "--sparse=always", str(own_layer_from), str(own))
            else:
                below = layers[-1] if layers else root
                await run(
                    "qemu-img", "create", "-q", "-f", "qcow2", "-F",
                    "qcow2" if layers else "raw", "-b", str(below), str(own),
                )  # fmt: skip
            record = self._record(spec, net, guest, base_layers)
            await asyncio.to_thread((run_dir / VM_FILE).write_bytes, msgspec.json.encode(record))
            if clone_of is not None:
                memory, memory_file = Memory.PRIVATE_FILE, clone_of / MEMORY_FILE
            else:
                memory = Memory.ANONYMOUS if memory_file is None else Memory.SHARED_FILE
            config = self._config(spec, guest, root, (*layers, own), memory, memory_file, state is not None)
            for shared in config.shared_dirs:
                await self._daemons.start(run_dir, shared)
            await vm_network.create(net)
            await process.start_qemu(
                ["ip", "netns", "exec", net.netns, *qemu_argv(config)], run_dir / "qemu.log"
            )
            if state is not None:
                async with qmp.connected(config.qmp_socket) as client:
                    await qmp.load(client, state / CHECKPOINT_FILE, ignore_shared=clone_of is not None)
        except BaseException:
            await self._remove(spec.sandbox_id, net)
            raise
        return record.running()

    # Saving

    async def snapshot_template(
        self, spec: SandboxSpec, image_dir: Path, until_ready: Callable[[RunningSandbox], Awaitable[None]]
    ) -> None:
        """Boots the template with its RAM in `image_dir/memory` (mapped shared), waits for
        `until_ready`, and saves its devices beside it. The template VM is gone afterwards."""
        await asyncio.to_thread(image_dir.mkdir, parents=True, exist_ok=True)
        try:
            sandbox = await self._launch(
                spec,
                await self.guest(),
                base_layers=[],
                own_layer_from=None,
                state=None,
                memory_file=image_dir / MEMORY_FILE,
            )
            await until_ready(sandbox)
            # Whatever the guest still does after envd answers (deferred kernel and start-up
            # work) would be done again by every clone, each writing its own copies of the
            # pages involved: it is snapshotted once idle.
            pid = await asyncio.to_thread(process.qemu_pid, self._dir(spec.sandbox_id))
            if pid is not None:
                await process.wait_until_idle(pid)
            await self._save(spec.sandbox_id, image_dir, ignore_shared=True)
            record = msgspec.structs.replace(
                await self._read(spec.sandbox_id), template_image=True, base_layers=[]
            )
            await asyncio.to_thread((image_dir / VM_FILE).write_bytes, msgspec.json.encode(record))
            await asyncio.to_thread(os.rename, image_dir / PARTIAL_STATE, image_dir / CHECKPOINT_FILE)
        finally:
            await self.kill(spec.sandbox_id)

    async def _read(self, sandbox_id: str) -> VmRecord:
        record = await asyncio.to_thread(_read_record, self._dir(sandbox_id))
        if record is None:
            raise CommandFailed(f"no microVM {sandbox_id} on this node")
        return record

    async def _save(self, sandbox_id: str, image_dir: Path, *, ignore_shared: bool) -> None:
        """Stops the VM and writes its state and its own disk layer into `image_dir` (the
        state as `PARTIAL_STATE`: the caller renames it when the image is whole)."""
        await asyncio.to_thread(image_dir.mkdir, parents=True, exist_ok=True)
        async with qmp.connected(self._dir(sandbox_id) / QMP_SOCKET) as client:
            await qmp.save(client, image_dir / PARTIAL_STATE, ignore_shared=ignore_shared)
        # The migration flushed and released the disk: its file is complete now.
        await run("cp", "--sparse=always", str(self._dir(sandbox_id) / DISK_FILE), str(image_dir / DISK_FILE))

    async def _save_full(self, sandbox_id: str, image_dir: Path) -> None:
        record = await self._read(sandbox_id)
        await self._save(sandbox_id, image_dir, ignore_shared=False)
        await asyncio.to_thread((image_dir / VM_FILE).write_bytes, msgspec.json.encode(record))
        await asyncio.to_thread(os.rename, image_dir / PARTIAL_STATE, image_dir / CHECKPOINT_FILE)

    async def checkpoint(self, sandbox_id: str, image_dir: Path) -> None:
        """Saves the whole VM (RAM, devices, its disk layer); the VM stays stopped."""
        await self._save_full(sandbox_id, image_dir)

    async def snapshot(self, sandbox_id: str, image_dir: Path) -> None:
        """Saves as `checkpoint` does, then lets the guest run on (it was stopped while
        its state was written)."""
        await self._save_full(sandbox_id, image_dir)
        try:
            await self.wake_envd(sandbox_id)
        except Exception as exc:
            raise RestartFailed(f"sandbox {sandbox_id} was saved but did not run again: {exc}") from exc

    async def wake_envd(self, sandbox_id: str) -> None:
        """Runs the guest again if a save (or a crash during one) left it stopped; envd
        kept its sockets through the save."""
        async with qmp.connected(self._dir(sandbox_id) / QMP_SOCKET) as client:
            await qmp.resume(client)

    async def settle(self, timeout_s: float) -> None:
        """Waits while a save that a killed node agent started is still being written
        (QEMU goes on with it on its own)."""
        deadline = time.monotonic() + timeout_s
        for sandbox in await self.list():
            while time.monotonic() < deadline:
                try:
                    async with qmp.connected(self._dir(sandbox.sandbox_id) / QMP_SOCKET, 2) as client:
                        status = (await client.execute("query-migrate")).get("status")
                except Exception:
                    break
                if status not in ("setup", "active", "device", "pre-switchover"):
                    break
                await asyncio.sleep(0.2)

    # Stopping and looking

    async def stop(self, sandbox_id: str) -> None:
        pid = await asyncio.to_thread(process.qemu_pid, self._dir(sandbox_id))
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def kill(self, sandbox_id: str) -> bool:
        run_dir = self._dir(sandbox_id)
        if not await asyncio.to_thread(run_dir.exists):
            return False
        record = await asyncio.to_thread(_read_record, run_dir)
        net = network.SandboxNetwork(record.slot, sandbox_id) if record else None
        await self._remove(sandbox_id, net)
        return True

    async def _remove(self, sandbox_id: str, net: network.SandboxNetwork | None) -> None:
        run_dir = self._dir(sandbox_id)
        pid = await asyncio.to_thread(process.qemu_pid, run_dir)
        if pid is not None:
            await process.kill_and_wait(pid)
        await self._daemons.stop_all(run_dir)
        if net is not None:
            await network.destroy(net)
        await asyncio.to_thread(shutil.rmtree, run_dir, True)

    async def list(self) -> list[RunningSandbox]:
        def scan() -> list[RunningSandbox]:
            if not self._sandboxes.is_dir():
                return []
            found = []
            for run_dir in self._sandboxes.iterdir():
                record = _read_record(run_dir)
                if record is not None and process.qemu_pid(run_dir) is not None:
                    found.append(record.running())
            return found

        return await asyncio.to_thread(scan)

    async def leftovers(self) -> list[str]:
        running = {s.sandbox_id for s in await self.list()}
        names = await asyncio.to_thread(
            lambda: [p.name for p in self._sandboxes.iterdir()] if self._sandboxes.is_dir() else []
        )
        return sorted(set(names) - running)

    async def stats(self, sandbox_id: str) -> SandboxStats | None:
        pid = await asyncio.to_thread(process.qemu_pid, self._dir(sandbox_id))
        if pid is None:
            return None
        try:
            return await asyncio.to_thread(process.process_stats, pid)
        except (OSError, ValueError):
            return None

    async def exec(self, sandbox_id: str, argv: list[str], timeout_s: float) -> tuple[int, str]:
        """The guest has no agent besides envd: templates with a ready command (built through
        the API) are built for gVisor and never placed here."""
        return 127, "commands run in microVMs only through envd"

    async def logs(self, sandbox_id: str, limit: int) -> list[str]:
        return await console.tail(self._dir(sandbox_id) / CONSOLE_LOG, limit)


def _read_record(directory: Path) -> VmRecord | None:
    try:
        return msgspec.json.decode((directory / VM_FILE).read_bytes(), type=VmRecord)
    except (OSError, msgspec.DecodeError):
        return None
