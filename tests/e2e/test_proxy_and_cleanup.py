"""What the proxy enforces and carries, and what a kill leaves behind (nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from e2b import Sandbox
from websockets.sync.client import connect as ws_connect

HERE = Path(__file__).parent


def test_traffic_token_guards_user_ports_not_envd(stack, conn):
    api = httpx.Client(base_url=stack.config.api_url, headers={"X-API-Key": conn["api_key"]}, timeout=120)
    body = {"templateID": "base", "network": {"allowPublicTraffic": False}}
    created = api.post("/v2/sandboxes", json=body).json()
    sandbox_id, token = created["sandboxID"], created["trafficAccessToken"]
    try:
        assert token
        route = {"E2b-Sandbox-Id": sandbox_id}
        proxy = stack.config.sandbox_url
        refused = httpx.get(f"{proxy}/", headers={**route, "E2b-Sandbox-Port": "8000"})
        assert refused.status_code == 403
        allowed = httpx.get(
            f"{proxy}/", headers={**route, "E2b-Sandbox-Port": "8000", "E2B-Traffic-Access-Token": token}
        )
        assert allowed.status_code == 502 and "port is not open" in allowed.text
        envd = httpx.get(f"{proxy}/health", headers={**route, "E2b-Sandbox-Port": "49983"})
        assert envd.status_code == 204
    finally:
        api.delete(f"/sandboxes/{sandbox_id}")


def test_websocket_through_the_proxy(stack, conn):
    sbx = Sandbox.create(**conn)
    try:
        sbx.files.write("/tmp/ws_echo.py", (HERE / "ws_echo_server.py").read_text())
        sbx.commands.run("python3 /tmp/ws_echo.py 8765", background=True)
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8765"}
        url = stack.config.sandbox_url.replace("http://", "ws://") + "/echo"
        deadline = time.time() + 30
        while True:
            try:
                with ws_connect(url, additional_headers=headers, open_timeout=5) as ws:
                    ws.send("hello sandbox")
                    assert ws.recv(timeout=10) == "echo: hello sandbox"
                    break
            except (OSError, Exception):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        sbx.kill()


def leftovers(data_dir: Path, sandbox_id: str) -> list[str]:
    """What of a sandbox is still on the host."""
    found = []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if f"corral-{sandbox_id}" in namespaces:
        found.append("netns")
    if (data_dir / "sandboxes" / sandbox_id).exists():
        found.append("files")
    runsc = subprocess.run(
        ["runsc", f"--root={data_dir / 'runsc'}", "list", "--format=json"], capture_output=True, text=True
    )
    if sandbox_id in runsc.stdout:
        found.append("runsc")
    if any(Path(f"/sys/fs/cgroup/{c}/corral/{sandbox_id}").exists() for c in ("memory", "cpu", "pids")):
        found.append("cgroup")
    if sandbox_id in Path("/proc/self/mountinfo").read_text():
        found.append("mounts")
    return found


def test_kill_answers_at_once_and_leaves_nothing_behind(stack, conn):
    """The kill answers once the sandbox is fenced off (gone from the API and the proxy);
    its container, namespace, cgroups, mounts and files go a moment later."""
    sbx = Sandbox.create(**conn)
    sandbox_id = sbx.sandbox_id
    data_dir = stack.config.data_dir
    assert {"netns", "files", "runsc"} <= set(leftovers(data_dir, sandbox_id))
    assert sbx.kill()
    assert sbx.is_running() is False
    assert sandbox_id not in [s.sandbox_id for s in Sandbox.list(**conn).next_items()]
    deadline = time.time() + 30
    while leftovers(data_dir, sandbox_id) and time.time() < deadline:
        time.sleep(0.2)
    assert leftovers(data_dir, sandbox_id) == []


def test_cli_lists_and_kills(stack, conn):
    sbx = Sandbox.create(metadata={"via": "cli"}, **conn)
    env = {**os.environ, "CORRAL_REDIS_URL": stack.config.redis_url, "CORRAL_NATS_URL": stack.config.nats_url}
    cli = [sys.executable, "-m", "corral_libs.cli"]
    listed = subprocess.run(
        [*cli, "sandbox", "ls", "--json"], env=env, capture_output=True, text=True, check=True
    )
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows[sbx.sandbox_id]["metadata"] == {"via": "cli"}
    table = subprocess.run([*cli, "sandbox", "ls"], env=env, capture_output=True, text=True, check=True)
    assert sbx.sandbox_id in table.stdout
    logs = subprocess.run([*cli, "sandbox", "logs", sbx.sandbox_id], env=env, capture_output=True, text=True)
    # A boot logs uvicorn's start; a clone restored from the template snapshot its listener's.
    assert "Uvicorn running" in logs.stdout or "listening again" in logs.stdout
    subprocess.run(
        [*cli, "sandbox", "kill", sbx.sandbox_id], env=env, capture_output=True, text=True, check=True
    )
    assert sbx.is_running() is False
    missing = subprocess.run(
        [*cli, "sandbox", "kill", sbx.sandbox_id], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 1 and "not found" in missing.stdout
