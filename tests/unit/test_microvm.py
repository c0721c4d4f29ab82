"""The microVM runtime's parts that need no VM: the accelerator probe, QEMU command lines,
the QMP conversations (against a recording QMP stand-in), and the guest's making."""

from __future__ import annotations

import asyncio
import base64
import gzip
import struct
from pathlib import Path
from typing import Any

import pytest

from corral_services.nodeagent import network
from corral_services.nodeagent.runtime import select
from corral_services.nodeagent.runtime.microvm import guest, probe, qmp, vm_network
from corral_services.nodeagent.runtime.microvm.guest import Guest
from corral_services.nodeagent.runtime.microvm.qemu import Memory, VmConfig, kernel_cmdline, qemu_argv
from corral_services.nodeagent.runtime.microvm.shared_dirs import shared_dirs
from corral_services.nodeagent.settings import NodeSettings

INIT = ("/usr/bin/tini", "-s", "--", "/opt/corral/venv/bin/python", "-m", "corral_services.envd")


def _config(tmp_path: Path, **changes: Any) -> VmConfig:
    values: dict[str, Any] = {
        "kernel": tmp_path / "vmlinux",
        "initramfs": tmp_path / "initramfs.img",
        "root_image": tmp_path / "rootfs.ext4",
        "layers": (tmp_path / "template.qcow2", tmp_path / "own.qcow2"),
        "memory_mb": 512,
        "cpu_count": 1,
        "init": INIT,
        "run_dir": tmp_path / "run",
        "tsc_khz": 2_600_000,
    }
    return VmConfig(**{**values, **changes})


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


# The probe


def _guest(tmp_path: Path) -> Guest:
    return Guest(tmp_path / "vmlinux", tmp_path / "initramfs.img")


def test_no_kvm_device_means_tcg_without_booting_anything(tmp_path):
    async def no_guest() -> Guest:
        raise AssertionError("the guest is not needed when there is no /dev/kvm")

    assert not probe.kvm_device_usable(tmp_path / "kvm")
    accel = asyncio.run(probe.choose_accelerator("auto", no_guest, tmp_path, device=tmp_path / "kvm"))
    assert accel == "tcg"


@pytest.mark.parametrize(("boots", "expected"), [(True, "kvm"), (False, "tcg")])
def test_kvm_is_chosen_only_when_a_guest_boots_under_it(tmp_path, monkeypatch, boots, expected):
    monkeypatch.setattr(probe, "kvm_device_usable", lambda device: True)
    tried: list[str] = []

    async def the_guest() -> Guest:
        return _guest(tmp_path)

    async def boot(found: Guest, accel: str, deadline_s: float) -> bool:
        tried.append(accel)
        return boots

    choose = probe.choose_accelerator
    assert asyncio.run(choose("auto", the_guest, tmp_path, boots=boot)) == expected
    # Remembered for this host kernel and guest: the next start boots nothing.
    assert asyncio.run(choose("auto", the_guest, tmp_path, boots=boot)) == expected
    assert tried == ["kvm"]


def test_a_forced_accelerator_is_used_as_it_is(tmp_path):
    async def no_guest() -> Guest:
        raise AssertionError("not probed")

    assert asyncio.run(probe.choose_accelerator("kvm", no_guest, tmp_path)) == "kvm"
    assert asyncio.run(probe.choose_accelerator("tcg", no_guest, tmp_path)) == "tcg"
    with pytest.raises(ValueError, match="unknown accelerator"):
        asyncio.run(probe.choose_accelerator("hvf", no_guest, tmp_path))


def test_probe_guest_only_says_it_booted(tmp_path):
    argv = probe.probe_argv(_guest(tmp_path), "kvm")
    assert _option(argv, "-accel") == ["kvm"]
    assert "corral.probe" in _option(argv, "-append")[0]
    assert "-daemonize" not in argv


# QEMU command lines


def test_template_boot_keeps_its_ram_in_a_shared_file(tmp_path):
    argv = qemu_argv(_config(tmp_path, memory=Memory.SHARED_FILE, memory_file=tmp_path / "memory"))
    (backend,) = _option(argv, "-object")[:1]
    assert backend == f"memory-backend-file,id=mem,size=512M,mem-path={tmp_path / 'memory'},share=on"
    assert "memory-backend=mem" in _option(argv, "-machine")[0]
    assert "-incoming" not in argv


def test_clone_maps_the_template_ram_privately_and_waits_for_its_state(tmp_path):
    config = _config(tmp_path, memory=Memory.PRIVATE_FILE, memory_file=tmp_path / "memory", incoming=True)
    argv = qemu_argv(config)
    assert _option(argv, "-object")[0].endswith("share=off")
    assert _option(argv, "-incoming") == ["defer"]
    assert _option(argv, "-qmp") == [f"unix:{config.qmp_socket},server=on,wait=off"]
    assert _option(argv, "-pidfile") == [str(config.pidfile)]


def test_full_restore_uses_anonymous_ram(tmp_path):
    argv = qemu_argv(_config(tmp_path, incoming=True))
    assert _option(argv, "-object")[0] == "memory-backend-ram,id=mem,size=512M"


def test_disk_is_an_explicit_chain_with_only_the_top_layer_writable(tmp_path):
    blockdevs = _option(qemu_argv(_config(tmp_path)), "-blockdev")
    assert blockdevs == [
        f"driver=file,node-name=root-file,filename={tmp_path / 'rootfs.ext4'},read-only=on",
        "driver=raw,node-name=root,file=root-file,read-only=on",
        f"driver=file,node-name=layer0-file,filename={tmp_path / 'template.qcow2'},read-only=on",
        "driver=qcow2,node-name=layer0,file=layer0-file,backing=root,read-only=on",
        f"driver=file,node-name=layer1-file,filename={tmp_path / 'own.qcow2'},read-only=off",
        "driver=qcow2,node-name=layer1,file=layer1-file,backing=layer0,read-only=off",
    ]
    assert "virtio-blk-device,drive=layer1" in _option(qemu_argv(_config(tmp_path)), "-device")


def test_accelerator_options(tmp_path):
    tcg = qemu_argv(_config(tmp_path))
    assert _option(tcg, "-accel") == ["tcg,tb-size=128"]  # a boot: room for the code it runs
    restored = qemu_argv(_config(tmp_path, incoming=True))
    assert _option(restored, "-accel") == ["tcg,tb-size=8"]  # a clone: its cache is its own memory
    assert _option(tcg, "-cpu") == ["max"]
    kvm = qemu_argv(_config(tmp_path, accel="kvm", tsc_khz=None))
    assert _option(kvm, "-accel") == ["kvm"]
    assert _option(kvm, "-cpu") == ["host"]
    assert "tsc_early_khz" not in kernel_cmdline(_config(tmp_path, accel="kvm", tsc_khz=None))


def test_kernel_command_line_carries_the_init_and_the_guest_network(tmp_path):
    cmdline = kernel_cmdline(_config(tmp_path))
    assert f"corral.init={','.join(INIT)}" in cmdline.split()
    assert f"corral.ip={vm_network.GUEST_ADDRESS}/{vm_network.PREFIX}" in cmdline.split()
    assert "tsc_early_khz=2600000" in cmdline.split()
    with pytest.raises(ValueError, match="kernel command line"):
        kernel_cmdline(_config(tmp_path, init=("/bin/sh", "-c", "echo two words")))


def test_volumes_are_virtio_fs_devices_over_shared_guest_ram(tmp_path):
    shared = shared_dirs((("/var/lib/corral/volumes/v1/data", "/mnt/my data"), ("/srv/v2", "/work")))
    config = _config(tmp_path, layers=(tmp_path / "own.qcow2",), shared_dirs=shared)
    argv = qemu_argv(config)
    # virtiofsd reads and writes guest RAM itself: it must be shared memory.
    assert _option(argv, "-object")[0] == "memory-backend-memfd,id=mem,size=512M,share=on"
    assert _option(argv, "-chardev")[1:] == [
        f"socket,id=fs0,path={tmp_path / 'run' / 'fs0.sock'}",
        f"socket,id=fs1,path={tmp_path / 'run' / 'fs1.sock'}",
    ]
    devices = _option(argv, "-device")
    assert "vhost-user-fs-device,chardev=fs0,tag=corral0" in devices
    assert "vhost-user-fs-device,chardev=fs1,tag=corral1" in devices
    # Paths with spaces reach the guest's init intact.
    (encoded,) = [a.removeprefix("corral.volumes=") for a in kernel_cmdline(config).split() if "volumes" in a]
    assert base64.b64decode(encoded).decode() == "corral0 /mnt/my data\ncorral1 /work\n"
    assert "corral.volumes" not in kernel_cmdline(_config(tmp_path))
    with pytest.raises(ValueError, match="line break"):
        kernel_cmdline(_config(tmp_path, shared_dirs=shared_dirs((("/srv", "/a\nb"),))))


def test_each_namespace_forwards_its_sandbox_address_to_the_same_guest_address():
    rules = vm_network.nat_rules(network.SandboxNetwork(7, "sbx"))
    assert f"-d {network.SandboxNetwork(7, 'sbx').address}/32 -j DNAT --to-destination 192.168.127.2" in rules


# QMP conversations


class RecordingQmp:
    """Answers QMP commands from scripted replies and records what was asked."""

    def __init__(self, replies: dict[str, list[dict[str, Any]]]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, dict[str, Any] | None]] = []

    async def execute(self, cmd: str, arguments: dict[str, Any] | None = None) -> Any:
        self.calls.append((cmd, arguments))
        answers = self.replies.get(cmd)
        if not answers:
            return {}
        return answers.pop(0) if len(answers) > 1 else answers[0]


def test_save_stops_the_guest_then_migrates_to_the_file(tmp_path):
    client = RecordingQmp({"query-migrate": [{"status": "active"}, {"status": "completed"}]})
    state = tmp_path / "a dir" / "checkpoint.partial"
    asyncio.run(qmp.save(client, state, ignore_shared=True))
    commands = [cmd for cmd, _ in client.calls]
    assert commands == [
        "stop",
        "migrate-set-capabilities",
        "migrate-set-parameters",
        "migrate",
        "query-migrate",
        "query-migrate",
    ]
    capabilities = client.calls[1][1]
    assert capabilities == {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}
    assert client.calls[3][1] == {"uri": f"exec:cat > '{state}'"}


def test_failed_save_says_why(tmp_path):
    client = RecordingQmp({"query-migrate": [{"status": "failed", "error-desc": "disk full"}]})
    with pytest.raises(qmp.QmpError, match="disk full"):
        asyncio.run(qmp.save(client, tmp_path / "state", ignore_shared=False))


def test_load_feeds_the_state_then_runs_the_guest(tmp_path):
    statuses = [{"status": "inmigrate"}, {"status": "paused"}, {"status": "paused"}]
    client = RecordingQmp({"query-status": statuses})
    asyncio.run(qmp.load(client, tmp_path / "checkpoint.img", ignore_shared=False))
    commands = [cmd for cmd, _ in client.calls]
    assert commands[:2] == ["migrate-set-capabilities", "migrate-incoming"]
    assert client.calls[0][1] == {"capabilities": [{"capability": "x-ignore-shared", "state": False}]}
    assert client.calls[1][1] == {"uri": f"exec:cat {tmp_path / 'checkpoint.img'}"}
    assert commands[-1] == "cont"


def test_load_that_fails_is_an_error(tmp_path):
    client = RecordingQmp({"query-status": [{"status": "inmigrate"}, {"status": "shutdown"}]})
    with pytest.raises(qmp.QmpError, match="shutdown"):
        asyncio.run(qmp.load(client, tmp_path / "checkpoint.img", ignore_shared=True))
    assert "cont" not in [cmd for cmd, _ in client.calls]


def test_resume_runs_only_a_stopped_guest():
    running = RecordingQmp({"query-status": [{"status": "running"}]})
    asyncio.run(qmp.resume(running))
    assert [cmd for cmd, _ in running.calls] == ["query-status"]
    stopped = RecordingQmp({"query-status": [{"status": "postmigrate"}]})
    asyncio.run(qmp.resume(stopped))
    assert [cmd for cmd, _ in stopped.calls] == ["query-status", "cont"]


# Making the guest


def test_vmlinux_comes_out_of_the_bzimage():
    elf = b"\x7fELF" + b"kernel" * 100
    payload = gzip.compress(elf)
    setup_sectors = 3
    bzimage = bytearray((setup_sectors + 1) * 512 + 64 + len(payload))
    bzimage[0x1F1] = setup_sectors
    bzimage[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", bzimage, 0x248, 64, len(payload))
    start = (setup_sectors + 1) * 512 + 64
    bzimage[start : start + len(payload)] = payload
    assert guest.extract_vmlinux(bytes(bzimage)) == elf
    with pytest.raises(ValueError, match="bzImage"):
        guest.extract_vmlinux(b"\0" * 1024)


def test_modules_load_after_what_they_depend_on(tmp_path):
    def module(path: str, depends: str) -> None:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\x7fELF\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=6.1\0")

    module("kernel/drivers/virtio/virtio_ring.ko", "")
    module("kernel/drivers/virtio/virtio.ko", "virtio_ring")
    module("kernel/drivers/virtio/virtio_mmio.ko", "virtio,virtio_ring")
    module("kernel/drivers/block/virtio_blk.ko", "virtio,virtio_ring")
    (tmp_path / "modules.builtin").write_text("kernel/drivers/net/virtio_net.ko\n")
    order = guest.module_load_order(tmp_path, ("virtio_mmio", "virtio_blk", "virtio_net"))
    assert order == [
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_mmio.ko",
        "kernel/drivers/block/virtio_blk.ko",
    ]
    with pytest.raises(ValueError, match="no module"):
        guest.module_load_order(tmp_path, ("virtio_scsi",))


# Which runtime a node gets


def _choose(tmp_path: Path, monkeypatch, probed: str, **settings: Any):
    async def accelerator(requested: str, the_guest: Any, cache_dir: Path) -> str:
        return requested if requested in ("kvm", "tcg") else probed

    monkeypatch.setattr(select, "choose_accelerator", accelerator)
    node = NodeSettings(data_dir=str(tmp_path), **settings)
    return node, asyncio.run(select.choose_runtime(node, tmp_path / "templates"))


def test_auto_runs_microvms_only_where_kvm_boots(tmp_path, monkeypatch):
    _, runtime = _choose(tmp_path, monkeypatch, probed="kvm")
    assert runtime.name == "microvm" and runtime.image_format.startswith("kvm-")
    _, runtime = _choose(tmp_path, monkeypatch, probed="tcg")
    assert runtime.name == "gvisor"


def test_microvms_under_tcg_when_asked_with_time_to_boot(tmp_path, monkeypatch):
    node, runtime = _choose(tmp_path, monkeypatch, probed="kvm", runtime="microvm", microvm_accel="tcg")
    assert runtime.name == "microvm" and runtime.image_format.startswith("tcg-")
    assert node.envd_ready_timeout_s >= select.TCG_READY_TIMEOUT_S
    _, runtime = _choose(tmp_path, monkeypatch, probed="kvm", runtime="gvisor")
    assert runtime.name == "gvisor"
    with pytest.raises(ValueError, match="unknown runtime"):
        _choose(tmp_path, monkeypatch, probed="kvm", runtime="firecracker")
