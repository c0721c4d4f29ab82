"""What the current runsc gives a sandbox (runtime issue): `sudo` for the sandbox user, a
boot id of its own, a disk with a size limit, and pauses and snapshots of a sandbox whose
server has a client connected."""

from __future__ import annotations

import uuid

import httpx
import pytest
from e2b import Sandbox, Volume

from corral_services.nodeagent.runtime.gvisor import Runsc

CURRENT_RUNSC = Runsc.probe()
needs_current_runsc = pytest.mark.skipif(
    not (CURRENT_RUNSC.allow_suid and CURRENT_RUNSC.sized_overlay),
    reason="needs the runsc scripts/install.sh builds (Go 1.26): Debian's cannot",
)

BASE_DISK_MB = 2048  # templates/base.toml

# Answers every request with how many it answered, over a connection kept open.
COUNTER_SERVER = """
import http.server, itertools
count = itertools.count(1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = str(next(count)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
"""

# A client inside the sandbox holding one keep-alive connection to the server.
KEEP_ALIVE_CLIENT = """
import http.client, time
conn = http.client.HTTPConnection("127.0.0.1", 8000)
conn.request("GET", "/"); conn.getresponse().read()
open("/tmp/client-connected", "w").close()
time.sleep(3600)
"""


def start_server_with_client(sbx: Sandbox) -> None:
    sbx.files.write("/tmp/server.py", COUNTER_SERVER)
    sbx.files.write("/tmp/client.py", KEEP_ALIVE_CLIENT)
    sbx.commands.run("python3 /tmp/server.py", background=True)
    sbx.commands.run("for i in $(seq 100); do curl -s localhost:8000/ >/dev/null && break; sleep 0.1; done")
    sbx.commands.run("python3 /tmp/client.py", background=True)
    sbx.commands.run("for i in $(seq 100); do [ -e /tmp/client-connected ] && break; sleep 0.1; done")
    assert sbx.files.exists("/tmp/client-connected")


def served(sbx: Sandbox) -> int:
    return int(sbx.commands.run("curl -s --max-time 10 localhost:8000/").stdout)


@needs_current_runsc
def test_sudo_as_the_sandbox_user(conn):
    sbx = Sandbox.create(**conn)
    try:
        assert sbx.commands.run("whoami").stdout == "user\n"
        assert sbx.commands.run("sudo -n id -u").stdout == "0\n"
        assert sbx.commands.run("sudo -n touch /etc/made-by-sudo && ls /etc/made-by-sudo").exit_code == 0
    finally:
        sbx.kill()


def test_boot_id_is_there_and_a_boot_makes_a_new_one(conn):
    """Clones of one template snapshot share the boot they were saved in (as snapshot clones
    do on any VMM); a sandbox that boots gets its own id (here: one mounting a volume, which
    boots instead of cloning)."""
    clone = Sandbox.create(**conn)
    volume = Volume.create(f"boot-{uuid.uuid4().hex[:8]}", **conn)
    booted = Sandbox.create(volume_mounts={"/mnt/v": volume}, **conn)
    try:
        ids = [s.files.read("/proc/sys/kernel/random/boot_id").strip() for s in (clone, booted)]
        assert all(len(i) == 36 and i.count("-") == 4 for i in ids)
        assert ids[0] != ids[1]
    finally:
        clone.kill()
        booted.kill()
        Volume.destroy(volume.volume_id, **conn)


@needs_current_runsc
def test_disk_limit_is_enospc_and_hurts_nobody_else(conn):
    """The writable layer is capped at the template's disk size (`diskSizeMB`)."""
    sbx, neighbour = Sandbox.create(**conn), Sandbox.create(**conn)
    try:
        filled = sbx.commands.run(
            "dd if=/dev/zero of=/home/user/fill bs=1M count=100000 2>&1 | grep -c 'No space left'; true",
            timeout=300,
        )
        assert filled.stdout.strip() == "1"
        size_mb = int(sbx.commands.run("df -m / | tail -1 | awk '{print $2}'").stdout)
        assert size_mb <= BASE_DISK_MB
        sbx.commands.run("rm /home/user/fill")
        assert sbx.commands.run("echo fine > /home/user/after && cat /home/user/after").stdout == "fine\n"
        assert neighbour.commands.run("echo unaffected > /tmp/n && cat /tmp/n").stdout == "unaffected\n"
    finally:
        sbx.kill()
        neighbour.kill()


def test_pause_with_a_connected_client_then_the_server_answers(conn):
    sbx = Sandbox.create(**conn)
    try:
        start_server_with_client(sbx)
        before = served(sbx)
        sbx.pause()
        sbx = Sandbox.connect(sbx.sandbox_id, **conn)
        assert served(sbx) == before + 1  # the same server, its state kept
    finally:
        sbx.kill()


def test_snapshot_and_fork_with_a_connected_client(conn):
    sbx = Sandbox.create(**conn)
    snapshot = None
    try:
        start_server_with_client(sbx)
        before = served(sbx)
        snapshot = sbx.create_snapshot()
        assert served(sbx) == before + 1  # the source goes on
        clone = Sandbox.create(snapshot.snapshot_id, **conn)
        try:
            assert served(clone) == before + 1  # the clone has the server as it was saved
        finally:
            clone.kill()
    finally:
        sbx.kill()
        if snapshot is not None:
            Sandbox.delete_snapshot(snapshot.snapshot_id, **conn)


@needs_current_runsc
def test_filesystem_only_pause_keeps_files_and_reboots(stack, conn):
    sbx = Sandbox.create(**conn)
    try:
        sbx.files.write("/home/user/notes.txt", "kept on disk")
        sbx.commands.run("sudo -n sh -c 'echo system > /etc/system-change'")
        boot_before = sbx.files.read("/proc/sys/kernel/random/boot_id")
        sbx.commands.run("sleep 3600", background=True)
        sbx.pause(mode="filesystem")
        detail = httpx.get(
            f"{stack.config.api_url}/sandboxes/{sbx.sandbox_id}", headers={"X-API-Key": conn["api_key"]}
        ).json()
        assert (detail["state"], detail["pauseMode"]) == ("paused", "filesystem")
        sbx = Sandbox.connect(sbx.sandbox_id, **conn)
        assert sbx.files.read("/home/user/notes.txt") == "kept on disk"
        assert sbx.files.read("/etc/system-change") == "system\n"
        assert sbx.files.read("/proc/sys/kernel/random/boot_id") != boot_before
        assert not any("sleep 3600" in " ".join([p.cmd, *p.args]) for p in sbx.commands.list())
    finally:
        sbx.kill()


@needs_current_runsc
def test_filesystem_only_snapshot_boots_new_sandboxes_on_its_files(conn):
    sbx = Sandbox.create(**conn)
    snapshot = None
    try:
        sbx.files.write("/home/user/dataset.csv", "a,b\n1,2\n")
        snapshot = sbx.create_snapshot(mode="filesystem")
        sbx.files.write("/home/user/after.txt", "not in the snapshot")
        clone = Sandbox.create(snapshot.snapshot_id, **conn)
        try:
            assert clone.files.read("/home/user/dataset.csv") == "a,b\n1,2\n"
            assert not clone.files.exists("/home/user/after.txt")
            assert clone.commands.run("whoami").stdout == "user\n"
        finally:
            clone.kill()
        assert sbx.files.read("/home/user/after.txt") == "not in the snapshot"  # the source goes on
    finally:
        sbx.kill()
        if snapshot is not None:
            Sandbox.delete_snapshot(snapshot.snapshot_id, **conn)
