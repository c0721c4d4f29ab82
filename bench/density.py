"""Density: idle sandboxes started one after another until they hold a memory budget, and
what each costs the host.

    .venv/bin/python bench/density.py [--budget-mb 8192] [--max 400]

Per idle sandbox: PSS (proportional set size: shared pages split among their users) summed
over the sandbox's host processes (runsc sandbox, gofer), and the drop of MemAvailable.
Starts its own stack (real NATS, Redis, runsc) with the warm pool off, so that only the
sandboxes asked for exist. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.bench_stack import add_runtime_options, bench_stack, runtime_of
from bench.host_memory import mem_available_mb

SETTLE_S = 10  # lets the sandboxes finish starting up before memory is read


def sandbox_pss_mb(runsc_root: Path) -> float:
    """PSS of every host process of this stack's sandboxes (they carry its runsc root)."""
    marker = f"--root={runsc_root}".encode()
    total_kb = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker not in (proc / "cmdline").read_bytes():
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mb", type=int, default=8192, help="stop once sandboxes hold this much")
    parser.add_argument("--max", type=int, default=400, help="stop after this many sandboxes")
    add_runtime_options(parser)
    args = parser.parse_args()
    env = {"CORRAL_POOL_MIN": "0", "CORRAL_POOL_MAX": "0", "CORRAL_MAX_SANDBOXES": str(args.max + 10)}
    with bench_stack("density", 27000, platform=args.platform, env=env) as stack:
        data_dir = stack.config.data_dir
        key = asyncio.run(stack.create_api_key("bench", max_sandboxes=args.max + 10))
        api = httpx.Client(base_url=stack.config.api_url, headers={"X-API-Key": key}, timeout=300)
        # One sandbox first: the template's snapshot is taken on the first create.
        warmup = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 3600}).json()
        api.delete(f"/sandboxes/{warmup['sandboxID']}")
        time.sleep(SETTLE_S)
        baseline = mem_available_mb()
        count, started = 0, time.monotonic()
        while count < args.max and baseline - mem_available_mb() < args.budget_mb:
            response = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 3600})
            if response.status_code != 201:
                print(f"create {count + 1} failed: {response.status_code} {response.text}", flush=True)
                break
            count += 1
            if count % 25 == 0:
                used = baseline - mem_available_mb()
                print(f"{count:>5} sandboxes  {used:8.0f} MB used  {used / count:6.1f} MB each", flush=True)
        fill_s = time.monotonic() - started
        time.sleep(SETTLE_S)
        available_drop = baseline - mem_available_mb()
        pss = sandbox_pss_mb(data_dir / "runsc")
        runtime = runtime_of(stack)
    result = {
        "bench": "density",
        "runtime": runtime,
        "sandboxes": count,
        "budget_mb": args.budget_mb,
        "fill_s": round(fill_s, 1),
        "pss_per_sandbox_mb": round(pss / max(count, 1), 1),
        "mem_available_drop_per_sandbox_mb": round(available_drop / max(count, 1), 1),
        "fit_in_budget": int(args.budget_mb / (available_drop / max(count, 1))) if count else 0,
    }
    print(f"{count} idle sandboxes in {fill_s:.0f}s")
    print(f"PSS per sandbox:          {result['pss_per_sandbox_mb']} MB")
    print(f"MemAvailable drop each:   {result['mem_available_drop_per_sandbox_mb']} MB")
    print(f"fit in {args.budget_mb} MB:           {result['fit_in_budget']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
