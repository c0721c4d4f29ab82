"""The microVM runtime under QEMU's software emulation (TCG), through the whole stack and
the real e2b SDK: the base template is booted once and snapshotted with its RAM in a file,
and every sandbox is a clone that maps that file copy-on-write.

A stack of its own (node agent with `CORRAL_RUNTIME=microvm`), on network slots apart from
the gVisor stack's."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox

from corral_libs.stack import LocalStack
from corral_services.nodeagent.runtime.microvm.process import vm_memory_kb
from tests.harness.testnet import OTHER, WEB, TestNet

from .conftest import TEMPLATE_DIR, running_stack, stack_available

MICROVM_SLOT_BASE = "21000"


@pytest.fixture(scope="module")
def vm_stack(testnet: TestNet) -> Iterator[LocalStack]:
    if not stack_available() or not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs root, the gVisor stack's tools and qemu-system-x86 (scripts/install.sh)")
    env = {
        "CORRAL_SLOT_BASE": MICROVM_SLOT_BASE,
        "CORRAL_RUNTIME": "microvm",
        "CORRAL_MICROVM_ACCEL": "tcg",
        "CORRAL_POOL_MAX": "2",
        # Under TCG a template boot takes a core for a minute: only the one tested is warmed.
        "CORRAL_POOL_TEMPLATES": "base",
        **testnet.node_env(),
    }
    with running_stack("vmnode", env, max_sandboxes=10) as local:
        yield local


@pytest.fixture(scope="module")
def vm_conn(vm_stack: LocalStack) -> dict[str, object]:
    # The first create waits for the template's boot and snapshot: tens of seconds under TCG.
    return {**vm_stack.sdk_options(), "request_timeout": 300}


def _run_dir(stack: LocalStack, sandbox_id: str) -> Path:
    return stack.config.data_dir / "microvm" / sandbox_id


def _gone(pid: int) -> bool:
    """Exited: no process, or a zombie its new parent (PID 1: QEMU daemonizes) has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _template_ram_kb() -> int:
    """What the template's guest had in RAM when it was snapshotted (the memory file is
    sparse: its allocated blocks)."""
    (memory,) = (TEMPLATE_DIR / "base").glob("snapshot-microvm-*/memory")
    return memory.stat().st_blocks // 2


def test_clones_answer_through_the_proxy_share_memory_and_keep_their_writes(vm_stack, vm_conn):
    clones = [Sandbox.create(**vm_conn) for _ in range(3)]
    try:
        for index, clone in enumerate(clones):
            # A guest kernel of its own (Debian's cloud kernel), not the host's.
            assert "cloud-amd64" in clone.commands.run("uname -r").stdout
            assert clone.commands.run("whoami").stdout == "user\n"
            clone.files.write("/home/user/mine.txt", f"clone {index}")
        for index, clone in enumerate(clones):
            assert clone.files.read("/home/user/mine.txt") == f"clone {index}"
            listing = clone.commands.run("ls /home/user").stdout.split()
            assert listing.count("mine.txt") == 1
        # The guest clock was set by /init: the template snapshot may be hours old.
        for clone in clones:
            assert abs(int(clone.commands.run("date +%s").stdout) - time.time()) < 60
        # Distinct identity after the restore: tokens and the guest's random numbers.
        assert len({c._envd_access_token for c in clones}) == 3
        seeds = {c.commands.run("head -c 16 /dev/urandom | od -An -tx1").stdout for c in clones}
        assert len(seeds) == 3

        template_kb = _template_ram_kb()
        for clone in clones:
            memory = vm_memory_kb(_run_dir(vm_stack, clone.sandbox_id))
            # Guest RAM the clone only read is the template's file pages; what it owns
            # (QEMU itself, TCG's code cache, pages it wrote) is a fraction of it.
            assert memory["Pss_File"] > 0
            assert memory["Pss_Anon"] < template_kb / 2, (memory, template_kb)
    finally:
        for clone in clones:
            clone.kill()


def test_pause_and_resume_keep_files_and_processes(vm_stack, vm_conn):
    sbx = Sandbox.create(**vm_conn)
    try:
        sbx.files.write("/home/user/before.txt", "written before the pause")
        sleeper = sbx.commands.run("sleep 3600", background=True)
        assert sbx.pause() is True
        deadline = time.time() + 30  # the stopped VM's leftovers go behind the answer
        while _run_dir(vm_stack, sbx.sandbox_id).exists() and time.time() < deadline:
            time.sleep(0.2)
        assert not _run_dir(vm_stack, sbx.sandbox_id).exists()
        assert (vm_stack.config.data_dir / "paused" / sbx.sandbox_id / "checkpoint.img").is_file()

        resumed = Sandbox.connect(sbx.sandbox_id, **vm_conn)
        assert resumed.files.read("/home/user/before.txt") == "written before the pause"
        assert sleeper.pid in {p.pid for p in resumed.commands.list()}
        assert resumed.commands.run(f"kill -0 {sleeper.pid} && echo alive").stdout == "alive\n"
    finally:
        sbx.kill()


def test_snapshot_then_create_from_it(vm_stack, vm_conn):
    source = Sandbox.create(**vm_conn)
    try:
        source.files.write("/home/user/state.txt", "from the source")
        snapshot = source.create_snapshot()
        assert source.commands.run("echo still running").stdout == "still running\n"
        restored = Sandbox.create(snapshot.snapshot_id, **vm_conn)
        try:
            assert restored.files.read("/home/user/state.txt") == "from the source"
            restored.files.write("/home/user/state.txt", "changed in the copy")
            assert source.files.read("/home/user/state.txt") == "from the source"
        finally:
            restored.kill()
    finally:
        source.kill()
        Sandbox.delete_snapshot(snapshot.snapshot_id, **vm_conn)


def test_kill_removes_the_vm_its_disk_layer_and_its_network(vm_stack, vm_conn):
    sbx = Sandbox.create(**vm_conn)
    run_dir = _run_dir(vm_stack, sbx.sandbox_id)
    pid = int((run_dir / "qemu.pid").read_text())
    assert (run_dir / "disk.qcow2").is_file()
    assert sbx.kill() is True
    deadline = time.time() + 30  # the teardown follows the kill's answer
    while (run_dir.exists() or not _gone(pid)) and time.time() < deadline:
        time.sleep(0.2)
    assert not run_dir.exists()
    assert _gone(pid)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"corral-{sbx.sandbox_id}" not in namespaces


def test_a_restarted_node_agent_keeps_the_running_vms(vm_stack, vm_conn):
    sbx = Sandbox.create(**vm_conn)
    try:
        sbx.files.write("/home/user/kept.txt", "through the restart")
        pid = (_run_dir(vm_stack, sbx.sandbox_id) / "qemu.pid").read_text()
        vm_stack.stop_service("nodeagent", signal.SIGKILL)
        vm_stack.start_service("nodeagent")
        asyncio.run(vm_stack.wait_node(vm_stack.config.node_id))
        # The same VM, adopted: not restarted, its files and its QEMU as they were.
        assert (_run_dir(vm_stack, sbx.sandbox_id) / "qemu.pid").read_text() == pid
        assert sbx.files.read("/home/user/kept.txt") == "through the restart"
        assert sbx.is_running()
    finally:
        assert sbx.kill() is True
    deadline = time.time() + 30
    while _run_dir(vm_stack, sbx.sandbox_id).exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not _run_dir(vm_stack, sbx.sandbox_id).exists()


def test_egress_policies_hold_for_a_guest(vm_stack, vm_conn, testnet):
    """The guest's traffic leaves through its namespace as the sandbox address, so the
    node's rules hold as for gVisor: the default internet, names, denials, live updates."""
    from .test_network import DENY_ALL, answered_by, http

    sbx = Sandbox.create(**vm_conn)
    try:
        assert answered_by(http(sbx, "http://web.test.example/"), WEB)
        sbx.update_network({"allow_out": ["web.test.example"], "deny_out": DENY_ALL})
        sbx.files.write("/tmp/test-ca.pem", testnet.ca_pem)
        assert answered_by(http(sbx, "https://web.test.example/", "--cacert /tmp/test-ca.pem"), WEB)
        assert http(sbx, f"http://{OTHER}/") == ""
        assert http(sbx, "http://10.0.0.1/") == ""
    finally:
        sbx.kill()


def test_volumes_reach_the_guest_through_virtio_fs(vm_stack, vm_conn, monkeypatch):
    """A volume is a virtio-fs mount in the guest (virtiofsd on the node): what the sandbox
    writes, the content API reads, and the other way round. QEMU 7.2 cannot save such a VM:
    a pause is refused and says why, and the sandbox runs on."""
    from e2b import Volume

    monkeypatch.setenv("E2B_VOLUME_API_URL", vm_stack.config.api_url)
    vol = Volume.create(f"vm-volume-{uuid.uuid4().hex[:8]}", **vm_conn)
    try:
        vol.write_file("/seed/from host.txt", "from the content API")
        sbx = Sandbox.create(volume_mounts={"/mnt/my data": vol}, **vm_conn)
        try:
            run_dir = _run_dir(vm_stack, sbx.sandbox_id)
            daemon = int((run_dir / "fs0.pid").read_text())
            assert sbx.files.read("/mnt/my data/seed/from host.txt") == "from the content API"
            sbx.commands.run("echo 'from the guest' > '/mnt/my data/guest.txt'")
            assert sbx.commands.run("stat -c %U '/mnt/my data/guest.txt'").stdout.strip() == "user"
            assert vol.read_file("/guest.txt") == "from the guest\n"
            with pytest.raises(Exception, match="mounts volumes"):
                sbx.pause()
            with pytest.raises(Exception, match="mounts volumes"):
                sbx.create_snapshot()
            assert sbx.commands.run("cat '/mnt/my data/guest.txt'").stdout == "from the guest\n"
        finally:
            sbx.kill()
        deadline = time.time() + 30
        while not _gone(daemon) and time.time() < deadline:
            time.sleep(0.2)
        assert _gone(daemon), "the VM's virtiofsd outlived it"
        assert vol.read_file("/guest.txt") == "from the guest\n"
    finally:
        Volume.destroy(vol.volume_id, **vm_conn)
