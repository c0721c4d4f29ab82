"""Recovery time of `corral up` per process: SIGKILL it, then create sandboxes until one
succeeds (what a client retrying every 0.2 s sees). Target: 3 s or less for each.

    .venv/bin/python bench/recovery.py [--rounds 3] [--only nodeagent ...]

Starts `corral up` as a user does (its own process, random ports, the shared templates).
Each kill comes when the stack is steady and the process has run normally for a while (a
process that keeps dying quickly is restarted with growing backoff, by design).
Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2b import Sandbox

from corral_libs.contracts.records import NODE_READY
from corral_libs.state import Store
from corral_libs.supervisor import STABLE_RUN_S
from tests.harness.corral_up import PROCESSES, CorralUp

TARGET_S = 3.0


def recover(up: CorralUp, conn: dict[str, str], name: str) -> float:
    status = up.status()
    assert status is not None
    os.kill(status[name]["pid"], signal.SIGKILL)
    killed = time.monotonic()
    while True:
        try:
            Sandbox.create(request_timeout=30, **conn).kill()
            return time.monotonic() - killed
        except Exception:
            if time.monotonic() - killed > 120:
                raise
            time.sleep(0.2)


def settle(up: CorralUp) -> None:
    """Until the stack is steady again (its node ready with a warm clone, every process up
    longer than the supervisor's stable run) before the next kill, as it is when a crash comes
    out of the blue."""
    time.sleep(STABLE_RUN_S)

    async def steady() -> bool:
        store = Store.connect(f"redis://127.0.0.1:{up.ports['redis']}/0")
        try:
            nodes = await store.nodes()
            return any(n.status == NODE_READY and n.warm.get("base", 0) > 0 for n in nodes)
        finally:
            await store.close()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if asyncio.run(steady()):
                return
        except Exception:
            pass
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=PROCESSES, action="append", help="these processes (default: all)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="corral-recovery-"))
    up = CorralUp(data_dir, slot_base=29000)
    results: dict[str, dict[str, float]] = {}
    try:
        up.start()
        conn = up.conn()
        Sandbox.create(**conn).kill()  # warm: the template snapshot exists
        for name in args.only or PROCESSES:
            times = []
            for _ in range(args.rounds):
                times.append(recover(up, conn, name))
                settle(up)
            p50, worst = round(statistics.median(times), 2), round(max(times), 2)
            print(f"{name}: {[round(t, 2) for t in times]}", flush=True)
            results[name] = {"p50_s": p50, "max_s": worst}
            verdict = "met" if worst <= TARGET_S else "NOT met"
            print(f"{name:<10} p50 {p50:>5} s  max {worst:>5} s  ({verdict})", flush=True)
    finally:
        up.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps({"bench": "recovery", "target_s": TARGET_S, "rounds": args.rounds, **results}))


if __name__ == "__main__":
    main()
