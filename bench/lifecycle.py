"""Pause, resume, snapshot, create-from-snapshot and kill latency through the whole stack
(API -> scheduler -> node -> runsc), for an idle sandbox and for one holding 50 MB of
written memory; filesystem-only pauses too.

    .venv/bin/python bench/lifecycle.py [--cycles 5] [--platform ptrace|systrap]

Resume is measured to the first command answered (connect, then `true` through envd), as a
user sees it. Prints a table and, last, one JSON line with the runsc version and platform.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from e2b import Sandbox

from bench.bench_stack import add_runtime_options, bench_stack, runtime_of

# 50 MB of random bytes held by a process: every page resident and incompressible.
BALLAST = "python3 -c 'import os, time; b = os.urandom(50 << 20); time.sleep(86400)'"


def p50(samples: list[float]) -> float:
    return round(statistics.median(samples), 1)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def measure(api: httpx.Client, conn: dict, sandbox_id: str, cycles: int, memory: bool) -> dict[str, float]:
    pauses, resumes = [], []
    for _ in range(cycles):
        start = time.perf_counter()
        paused = api.post(f"/sandboxes/{sandbox_id}/pause", json={} if memory else {"memory": False})
        assert paused.status_code == 204, paused.text
        pauses.append(ms_since(start))
        start = time.perf_counter()
        sbx = Sandbox.connect(sandbox_id, **conn)
        sbx.commands.run("true")
        resumes.append(ms_since(start))
    result = {"pause_p50_ms": p50(pauses), "resume_to_command_p50_ms": p50(resumes)}
    if not memory:
        return result
    snapshots, clones = [], []
    for _ in range(cycles):
        start = time.perf_counter()
        taken = api.post(f"/sandboxes/{sandbox_id}/snapshots", json={})
        assert taken.status_code == 201, taken.text
        snapshots.append(ms_since(start))
        snapshot_id = taken.json()["snapshotID"]
        start = time.perf_counter()
        clone = api.post("/v2/sandboxes", json={"templateID": snapshot_id})
        assert clone.status_code == 201, clone.text
        clones.append(ms_since(start))
        api.delete(f"/sandboxes/{clone.json()['sandboxID']}")
        api.delete(f"/templates/{snapshot_id}")
    return {**result, "snapshot_p50_ms": p50(snapshots), "create_from_snapshot_p50_ms": p50(clones)}


def measure_kills(api: httpx.Client, count: int) -> dict[str, float]:
    kills = []
    for _ in range(count):
        sandbox_id = api.post("/v2/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        start = time.perf_counter()
        assert api.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        kills.append(ms_since(start))
        time.sleep(0.5)  # the pool refills
    return {"kill_p50_ms": p50(kills), "kill_max_ms": round(max(kills), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    add_runtime_options(parser)
    args = parser.parse_args()
    results: dict[str, object] = {}
    with bench_stack("lifecycle", 26000, platform=args.platform) as stack:
        key = asyncio.run(stack.create_api_key("bench"))
        conn = stack.sdk_options(key)
        api = httpx.Client(base_url=stack.config.api_url, headers={"X-API-Key": key}, timeout=300)
        cases = (("idle", None, True), ("dirty_50mb", BALLAST, True), ("files_only", None, False))
        for label, command, memory in cases:
            sbx = Sandbox.create(**conn)
            if command:
                sbx.commands.run(command, background=True)
                time.sleep(3)  # let it write its memory
            results[label] = measure(api, conn, sbx.sandbox_id, args.cycles, memory)
            sbx.kill()
            print(f"{label:<12} {results[label]}", flush=True)
        results["kill"] = measure_kills(api, args.cycles * 2)
        print(f"{'kill':<12} {results['kill']}", flush=True)
        runtime = runtime_of(stack)
    print(json.dumps({"bench": "lifecycle", "runtime": runtime, **results}))


if __name__ == "__main__":
    main()
