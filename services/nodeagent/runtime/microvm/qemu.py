"""The QEMU `microvm` command line of one sandbox VM.

The VM is the same machine whether it boots, is the template being snapshotted, is a clone
of that template or is restored from a full snapshot: a migration stream only loads into
the same devices in the same order. What differs is where guest RAM lives and whether the
VM waits for an incoming stream:

- template: RAM is a file mapped shared (`share=on`); saved with `x-ignore-shared`, the
  file holds the RAM and the stream only the devices;
- clone: the template's RAM file mapped private (`share=off`): pages are shared with the
  template and every other clone until the guest writes them;
- boot and full restore: anonymous RAM; a memfd mapped shared when the VM mounts host
  directories, since their virtiofsd reads and writes guest RAM itself.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .shared_dirs import SharedDir
from .vm_network import GUEST_ADDRESS, GUEST_MAC, PREFIX, TAP, TAP_ADDRESS

QEMU = "qemu-system-x86_64"
# In each VM's run directory:
QMP_SOCKET = "qmp.sock"
PIDFILE = "qemu.pid"
CONSOLE_LOG = "console.log"
# TCG keeps translated code in a cache (1 GiB by default) that fills as code runs: in a
# clone it is private memory, so clones get a small one. A VM that boots (a template) runs
# far more distinct code, and a small cache would retranslate it over and over.
TCG_CACHE_MB = 8
TCG_BOOT_CACHE_MB = 128


class Memory(Enum):
    ANONYMOUS = "anonymous"
    SHARED_FILE = "shared-file"  # a template: its RAM is the file
    PRIVATE_FILE = "private-file"  # a clone: copy-on-write over the template's file


@dataclass(frozen=True, slots=True)
class VmConfig:
    kernel: Path
    initramfs: Path
    root_image: Path  # the template's ext4 image, read-only
    layers: tuple[Path, ...]  # qcow2 layers over it, bottom first; the last one is written
    memory_mb: int
    cpu_count: int
    init: tuple[str, ...]
    run_dir: Path  # QMP socket, pid file and console log
    accel: str = "tcg"
    memory: Memory = Memory.ANONYMOUS
    memory_file: Path | None = None
    incoming: bool = False
    tsc_khz: int | None = None
    extra_append: tuple[str, ...] = field(default=())
    shared_dirs: tuple[SharedDir, ...] = field(default=())  # volumes

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / QMP_SOCKET

    @property
    def pidfile(self) -> Path:
        return self.run_dir / PIDFILE

    @property
    def console_log(self) -> Path:
        return self.run_dir / CONSOLE_LOG


def kernel_cmdline(config: VmConfig) -> str:
    for arg in config.init:
        if not arg or any(ch in arg for ch in ", \t\n\"'"):
            raise ValueError(f"init argument {arg!r} cannot be passed on the kernel command line")
    # Any path (spaces included) survives the command line as base64 of "tag path" lines.
    lines = "".join(f"{shared.tag} {shared.guest_path}\n" for shared in config.shared_dirs)
    if lines.count("\n") != len(config.shared_dirs):
        raise ValueError("a volume's mount path cannot hold a line break")
    mounts = base64.b64encode(lines.encode()).decode()
    args = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        # Without it, TCG guests sometimes hang calibrating the TSC (runtime notes).
        *([f"tsc_early_khz={config.tsc_khz}"] if config.tsc_khz else []),
        f"corral.ip={GUEST_ADDRESS}/{PREFIX}",
        f"corral.gw={TAP_ADDRESS}",
        f"corral.init={','.join(config.init)}",
        *([f"corral.volumes={mounts}"] if mounts else []),
        *config.extra_append,
    ]
    return " ".join(args)


def memory_backend(config: VmConfig) -> str:
    size = f"size={config.memory_mb}M"
    if config.memory is Memory.ANONYMOUS:
        if config.shared_dirs:
            return f"memory-backend-memfd,id=mem,{size},share=on"
        return f"memory-backend-ram,id=mem,{size}"
    if config.memory_file is None:
        raise ValueError("a file-backed VM needs its memory file")
    share = "on" if config.memory is Memory.SHARED_FILE else "off"
    return f"memory-backend-file,id=mem,{size},mem-path={config.memory_file},share={share}"


def block_devices(config: VmConfig) -> list[str]:
    """The disk as an explicit chain of nodes: the paths come from here, never from what
    a qcow2 file remembers of its backing file (templates move when they are rebuilt)."""
    argv = [
        "-blockdev",
        f"driver=file,node-name=root-file,filename={config.root_image},read-only=on",
        "-blockdev",
        "driver=raw,node-name=root,file=root-file,read-only=on",
    ]
    below = "root"
    for index, layer in enumerate(config.layers):
        top = index == len(config.layers) - 1
        read_only = "off" if top else "on"
        argv += [
            "-blockdev",
            f"driver=file,node-name=layer{index}-file,filename={layer},read-only={read_only}",
            "-blockdev",
            f"driver=qcow2,node-name=layer{index},file=layer{index}-file,backing={below},read-only={read_only}",
        ]
        below = f"layer{index}"
    return [*argv, "-device", f"virtio-blk-device,drive={below}"]


def filesystem_devices(config: VmConfig) -> list[str]:
    argv: list[str] = []
    for shared in config.shared_dirs:
        chardev = f"fs{shared.index}"
        argv += [
            "-chardev",
            f"socket,id={chardev},path={shared.socket(config.run_dir)}",
            "-device",
            f"vhost-user-fs-device,chardev={chardev},tag={shared.tag}",
        ]
    return argv


def qemu_argv(config: VmConfig) -> list[str]:
    cache_mb = TCG_CACHE_MB if config.incoming else TCG_BOOT_CACHE_MB
    accel = f"tcg,tb-size={cache_mb}" if config.accel == "tcg" else config.accel
    argv = [
        QEMU,
        "-machine",
        "microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=mem",
        "-accel",
        accel,
        "-cpu",
        "max" if config.accel == "tcg" else "host",
        "-smp",
        str(config.cpu_count),
        "-m",
        f"{config.memory_mb}M",
        "-object",
        memory_backend(config),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(config.kernel),
        "-initrd",
        str(config.initramfs),
        "-append",
        kernel_cmdline(config),
        "-chardev",
        f"file,id=console,path={config.console_log},append=on",
        "-serial",
        "chardev:console",
        *block_devices(config),
        *filesystem_devices(config),
        "-netdev",
        f"tap,id=net0,ifname={TAP},script=no,downscript=no",
        "-device",
        f"virtio-net-device,netdev=net0,mac={GUEST_MAC}",
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-device,rng=rng0",
        "-qmp",
        f"unix:{config.qmp_socket},server=on,wait=off",
        "-pidfile",
        str(config.pidfile),
        "-daemonize",
    ]
    if config.incoming:
        argv += ["-incoming", "defer"]
    return argv
