"""Pause, resume, snapshot and create-from-snapshot latency through the whole stack (API ->
scheduler -> node -> runsc), for an idle sandbox and for one holding 100 MB of written memory.

    .venv/bin/python bench/lifecycle.py [--cycles 5]

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from libs.cli.up import ensure_template, kill_all_sandboxes
from libs.stack import LocalStack, StackConfig
from services.nodeagent.templates.store import TemplateStore
from tests.e2e.conftest import TEMPLATE_DIR

# 100 MB of random bytes held by a process: every page resident and incompressible.
BALLAST = "python3 -c 'import os, time; b = os.urandom(100 << 20); time.sleep(86400)'"


def measure(api: httpx.Client, sandbox_id: str, cycles: int) -> dict[str, float]:
    pauses, resumes = [], []
    for _ in range(cycles):
        start = time.perf_counter()
        assert api.post(f"/sandboxes/{sandbox_id}/pause", json={}).status_code == 204
        pauses.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        assert api.post(f"/v2/sandboxes/{sandbox_id}/connect", json={"timeout": 300}).status_code == 201
        resumes.append((time.perf_counter() - start) * 1000)
    snapshots, clones = [], []
    for _ in range(cycles):
        start = time.perf_counter()
        taken = api.post(f"/sandboxes/{sandbox_id}/snapshots", json={})
        assert taken.status_code == 201, taken.text
        snapshots.append((time.perf_counter() - start) * 1000)
        snapshot_id = taken.json()["snapshotID"]
        start = time.perf_counter()
        clone = api.post("/v2/sandboxes", json={"templateID": snapshot_id})
        assert clone.status_code == 201, clone.text
        clones.append((time.perf_counter() - start) * 1000)
        api.delete(f"/sandboxes/{clone.json()['sandboxID']}")
        api.delete(f"/templates/{snapshot_id}")
    return {
        "pause_p50_ms": round(statistics.median(pauses), 1),
        "resume_p50_ms": round(statistics.median(resumes), 1),
        "snapshot_p50_ms": round(statistics.median(snapshots), 1),
        "create_from_snapshot_p50_ms": round(statistics.median(clones), 1),
        "cycles": cycles,
    }


def run_command(stack: LocalStack, key: str, sandbox_id: str, command: str) -> None:
    from e2b import Sandbox

    sbx = Sandbox.connect(sandbox_id, **stack.sdk_options(key))
    sbx.commands.run(command, background=True)
    time.sleep(3)  # let it write its memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    ensure_template(TemplateStore(TEMPLATE_DIR))
    data_dir = Path(tempfile.mkdtemp(prefix="corral-lifecycle-"))
    config = StackConfig.random_ports(
        data_dir, template_dir=TEMPLATE_DIR, node_id="lifecycle", extra_env={"CORRAL_SLOT_BASE": "26000"}
    )
    stack = LocalStack(config)
    results: dict[str, object] = {}
    try:
        stack.start_infrastructure()
        stack.start_services()
        key = asyncio.run(stack.create_api_key("bench"))
        api = httpx.Client(base_url=config.api_url, headers={"X-API-Key": key}, timeout=300)
        for label, command in (("idle", None), ("ballast_100mb", BALLAST)):
            sandbox_id = api.post("/v2/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
            if command:
                run_command(stack, key, sandbox_id, command)
            results[label] = measure(api, sandbox_id, args.cycles)
            api.delete(f"/sandboxes/{sandbox_id}")
            print(f"{label:<14} {results[label]}", flush=True)
    finally:
        stack.stop(kill_sandboxes=lambda: kill_all_sandboxes(data_dir, config.redis_url))
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps({"bench": "lifecycle", **results}))


if __name__ == "__main__":
    main()
