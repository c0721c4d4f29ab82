"""Older and non-Python clients: e2b==2.31.0 (v1 endpoints, own virtualenv) and the npm
e2b SDK through node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]
OLD_SDK_PYTHON = REPO / ".venv-e2b-2.31" / "bin" / "python"
NODE_DIR = HERE / "node"


def _run(argv: list[str], stack, cwd: Path) -> dict:
    env = {**os.environ, **stack.client_env()}
    env.pop("E2B_DEBUG", None)
    completed = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_python_sdk_2_31(stack):
    if not OLD_SDK_PYTHON.exists():
        pytest.skip("run scripts/install.sh: it makes .venv-e2b-2.31")
    seen = _run([str(OLD_SDK_PYTHON), str(HERE / "old_sdk_smoke.py")], stack, HERE)
    assert seen["version"] == "2.31.0"
    assert seen["stdout"] == "old\n"
    assert seen["read"] == "old sdk"
    assert seen["stat_type"].endswith("DIR")
    assert seen["moved"] == "/home/user/workspace/b.txt"
    assert seen["listing"] == ["b.txt", "sub"]
    assert seen["after_remove"] == ["b.txt"]
    assert seen["big_read_ok"] is True
    assert seen["listed"] == [seen["sandbox_id"]]
    assert seen["killed"] is True
    assert seen["running"] is False


def test_npm_sdk(stack):
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "e2b").exists():
        pytest.skip("run scripts/install.sh: it installs node and the npm e2b SDK")
    seen = _run(["node", "smoke.mjs"], stack, NODE_DIR)
    assert seen["stdout"] == "node\nuser\n"
    assert seen["read"] == "written by node"
    assert "node.txt" in seen["entries"]
    assert seen["listed"] == [seen["sandboxId"]]
    assert seen["metadata"] == {"client": "node"}
    assert seen["host"] == f"8000-{seen['sandboxId']}.{stack.config.domain}"
    assert seen["running"] is False


def _e2b_cli(stack, *args: str) -> list[dict]:
    """What the e2b CLI prints with `--format json`, one object a line."""
    cli = NODE_DIR / "node_modules" / ".bin" / "e2b"
    if not cli.exists():
        pytest.skip("run scripts/install.sh: it installs the e2b CLI under tests/e2e/node")
    env = {**os.environ, **stack.client_env()}
    done = subprocess.run(
        [str(cli), *args, "--format", "json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_e2b_cli_sandbox_logs(stack, conn):
    """`e2b sandbox logs` parses each log line as JSON (level, logger); the v2 endpoint
    pages structured entries."""
    from e2b import Sandbox

    sbx = Sandbox.create(**conn)
    try:
        printed = _e2b_cli(stack, "sandbox", "logs", sbx.sandbox_id)
        assert printed and all({"timestamp", "level", "logger", "message"} <= e.keys() for e in printed)
        assert any("Uvicorn running" in e["message"] or "listening again" in e["message"] for e in printed)

        api = httpx.Client(base_url=stack.config.api_url, headers={"X-API-Key": stack.api_key})
        newest = api.get(f"/v2/sandboxes/{sbx.sandbox_id}/logs", params={"direction": "backward", "limit": 1})
        assert newest.status_code == 200
        (entry,) = newest.json()["logs"]
        assert {"timestamp", "level", "message", "fields"} <= entry.keys()
        assert api.get(f"/v2/sandboxes/{sbx.sandbox_id}/logs", params={"level": "loud"}).status_code == 400
    finally:
        sbx.kill()


def test_e2b_cli_sandbox_metrics(stack, conn):
    from e2b import Sandbox

    sbx = Sandbox.create(**conn)
    try:
        deadline = time.monotonic() + 30
        while not sbx.get_metrics():
            assert time.monotonic() < deadline, "no metrics"
            time.sleep(1)
        printed = _e2b_cli(stack, "sandbox", "metrics", sbx.sandbox_id)
        assert printed and {"cpuCount", "cpuUsedPct", "memUsed", "memTotal"} <= printed[-1].keys()
    finally:
        sbx.kill()
