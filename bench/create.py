"""Create latency through the whole stack, measured the way Cube Sandbox's cube-bench does:
`POST /sandboxes` until 201: paced (one a second, the pool keeping up), at several
concurrencies, the warm pool's refill after a burst of 50, and time to first command.

    .venv/bin/python bench/create.py [--quick]

Starts its own stack (real NATS, Redis, runsc) on random ports; every created sandbox is
killed again in the background, so the node never fills up. Prints a table and, last, one
JSON line.
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
from e2b import AsyncSandbox

from bench.bench_stack import add_runtime_options, bench_stack, runtime_of
from corral_libs.stack import LocalStack
from corral_libs.state import Store


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def summary(samples: list[float], wall_s: float) -> dict[str, float]:
    return {
        "n": len(samples),
        "avg_ms": round(statistics.fmean(samples), 1),
        "p50_ms": round(percentile(samples, 50), 1),
        "p95_ms": round(percentile(samples, 95), 1),
        "p99_ms": round(percentile(samples, 99), 1),
        "creates_per_s": round(len(samples) / wall_s, 2),
    }


async def bench_concurrency(api: httpx.AsyncClient, concurrency: int, total: int) -> dict[str, float]:
    samples: list[float] = []
    kills: set[asyncio.Task[httpx.Response]] = set()
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            start = time.perf_counter()
            response = await api.post("/sandboxes", json={"templateID": "base", "timeout": 300})
            if response.status_code != 201:
                raise RuntimeError(f"create failed: {response.status_code} {response.text}")
            samples.append((time.perf_counter() - start) * 1000)
            sandbox_id = response.json()["sandboxID"]
            task = asyncio.create_task(api.delete(f"/sandboxes/{sandbox_id}"))
            kills.add(task)
            task.add_done_callback(kills.discard)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    await asyncio.gather(*list(kills))
    return summary(samples, wall)


async def bench_paced(api: httpx.AsyncClient, total: int, interval_s: float) -> dict[str, float]:
    """One create at a time with a pause between them: what a create costs while the pool
    keeps up (every create claims a warm clone)."""
    samples: list[float] = []
    start_all = time.perf_counter()
    for _ in range(total):
        start = time.perf_counter()
        response = await api.post("/sandboxes", json={"templateID": "base", "timeout": 300})
        if response.status_code != 201:
            raise RuntimeError(f"create failed: {response.status_code} {response.text}")
        samples.append((time.perf_counter() - start) * 1000)
        await api.delete(f"/sandboxes/{response.json()['sandboxID']}")
        await asyncio.sleep(interval_s)
    return summary(samples, time.perf_counter() - start_all)


async def warm_depth(store: Store, node_id: str) -> int:
    node = await store.node(node_id)
    return node.warm.get("base", 0) if node else 0


async def bench_refill(api: httpx.AsyncClient, stack: LocalStack, burst: int) -> dict[str, object]:
    """A burst of `burst` concurrent creates (kept until the end), and the warm pool's depth
    every second from the node's heart-beats, during the burst and for 15 s after it. The
    pool's target follows the creates of the last 10 s, bounded by pool_max."""
    store = Store.connect(stack.config.redis_url)
    depths: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            depths.append(await warm_depth(store, stack.config.node_id))
            await asyncio.sleep(1)

    async def create() -> tuple[float, str]:
        start = time.perf_counter()
        response = await api.post("/sandboxes", json={"templateID": "base", "timeout": 300})
        if response.status_code != 201:
            raise RuntimeError(f"create failed: {response.status_code} {response.text}")
        return (time.perf_counter() - start) * 1000, response.json()["sandboxID"]

    try:
        await asyncio.sleep(10)  # a quiet pool
        before = await warm_depth(store, stack.config.node_id)
        sampler = asyncio.create_task(sample())
        start = time.perf_counter()
        created = await asyncio.gather(*(create() for _ in range(burst)))
        wall = time.perf_counter() - start
        during = len(depths)
        await asyncio.sleep(15)
        stop.set()
        await sampler
        await asyncio.gather(*(api.delete(f"/sandboxes/{sandbox_id}") for _, sandbox_id in created))
        return {
            "burst": summary([ms for ms, _ in created], wall),
            "depth_before": before,
            "depth_during_burst": depths[:during],
            "depth_after_burst": depths[during:],
        }
    finally:
        await store.close()


async def bench_first_command(conn: dict[str, str], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        sandbox = await AsyncSandbox.create(**conn)
        await sandbox.commands.run("true")
        samples.append((time.perf_counter() - start) * 1000)
        await sandbox.kill()
    return {
        "n": runs,
        "p50_ms": round(percentile(samples, 50), 1),
        "p95_ms": round(percentile(samples, 95), 1),
    }


async def run(
    stack: LocalStack, plan: list[tuple[int, int]], paced: int, ttfc_runs: int
) -> dict[str, object]:
    key = await stack.create_api_key("bench", max_sandboxes=500)
    conn = stack.sdk_options(key)
    results: dict[str, object] = {}
    async with httpx.AsyncClient(
        base_url=stack.config.api_url,
        headers={"X-API-Key": key},
        timeout=600,
        limits=httpx.Limits(max_connections=200),
    ) as api:
        await asyncio.sleep(5)  # the first template snapshot and warm clones
        results["paced"] = await bench_paced(api, paced, interval_s=1.0)
        print(f"paced {results['paced']}", flush=True)
        for concurrency, total in plan:
            results[f"c{concurrency}"] = await bench_concurrency(api, concurrency, total)
            print(f"c={concurrency:<3} {results[f'c{concurrency}']}", flush=True)
        results["refill_after_burst"] = await bench_refill(api, stack, burst=50)
        print(f"refill {results['refill_after_burst']}", flush=True)
    results["time_to_first_command"] = await bench_first_command(conn, ttfc_runs)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs (c=1 n=20, c=10 n=40, c=50 n=50)")
    parser.add_argument("--plan", help="concurrency:count pairs, e.g. 1:100,10:200")
    parser.add_argument("--logs", type=Path, help="keep the services' logs in this directory")
    add_runtime_options(parser)
    args = parser.parse_args()
    plan = [(1, 20), (10, 40), (50, 50)] if args.quick else [(1, 100), (10, 200), (50, 200)]
    if args.plan:
        plan = [(int(c), int(n)) for c, n in (pair.split(":") for pair in args.plan.split(","))]

    with bench_stack("benchnode", 24000, platform=args.platform, log_dir=args.logs) as stack:
        results = asyncio.run(run(stack, plan, paced=20 if args.quick else 50, ttfc_runs=10))
        results["runtime"] = runtime_of(stack)

    print("\nPOST /sandboxes -> 201 (ms)")
    print(f"{'conc':>5} {'n':>5} {'avg':>9} {'p50':>9} {'p95':>9} {'p99':>9} {'creates/s':>10}")
    columns = ("avg_ms", "p50_ms", "p95_ms", "p99_ms")
    for name, row in results.items():
        if name.startswith("c") or name == "paced":
            r: dict = row  # type: ignore[assignment]
            times = "".join(f" {r[c]:>9}" for c in columns)
            label = "paced" if name == "paced" else name[1:]
            print(f"{label:>5} {r['n']:>5}{times} {r['creates_per_s']:>10}")
    refill: dict = results["refill_after_burst"]  # type: ignore[assignment]
    print(
        f"burst of 50: p50 {refill['burst']['p50_ms']} ms, {refill['burst']['creates_per_s']} creates/s; "
        f"pool depth {refill['depth_before']} before, each second during: {refill['depth_during_burst']}, "
        f"after: {refill['depth_after_burst']}"
    )
    ttfc = results["time_to_first_command"]
    print(f"create -> commands.run('true'): p50 {ttfc['p50_ms']} ms, p95 {ttfc['p95_ms']} ms (n={ttfc['n']})")  # type: ignore[index]
    print(json.dumps({"bench": "create", **results}))


if __name__ == "__main__":
    main()
