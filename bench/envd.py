"""envd benchmark: `commands.run("true")` round trips and file throughput, driven by the
real e2b SDK against envd running in a bubblewrap root on this machine.

    .venv/bin/python bench/envd.py [--runs 300]

Prints a table and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2b import Sandbox

from tests.harness.envd import EnvdInSandbox

MB = 1 << 20


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


def bench_run(sbx: Sandbox, runs: int) -> dict[str, float]:
    for _ in range(10):  # warm the connection pool and the page cache
        sbx.commands.run("true")
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        sbx.commands.run("true")
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": round(percentile(samples, 50), 2),
        "p95_ms": round(percentile(samples, 95), 2),
        "p99_ms": round(percentile(samples, 99), 2),
        "mean_ms": round(statistics.fmean(samples), 2),
        "runs": runs,
    }


def bench_files(sbx: Sandbox, size: int, repeats: int) -> dict[str, float]:
    payload = os.urandom(size)
    path = f"/tmp/bench-{size}.bin"
    up, down, down_stream = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        sbx.files.write(path, payload)
        up.append(time.perf_counter() - start)
        start = time.perf_counter()
        data = sbx.files.read(path, format="bytes")
        down.append(time.perf_counter() - start)
        assert len(data) == size
        start = time.perf_counter()
        received = sum(len(chunk) for chunk in sbx.files.read(path, format="stream"))
        down_stream.append(time.perf_counter() - start)
        assert received == size
    sbx.files.remove(path)
    mb = size / MB
    # format="bytes" measures the SDK's own joining of the body as much as envd; the
    # stream form shows what envd delivers.
    return {
        "upload_mb_s": round(mb / statistics.median(up), 1),
        "download_mb_s": round(mb / statistics.median(down), 1),
        "download_stream_mb_s": round(mb / statistics.median(down_stream), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    server = EnvdInSandbox().start()
    try:
        sbx = Sandbox.create(debug=True, sandbox_url=server.url)
        run = bench_run(sbx, args.runs)
        files_1mb = bench_files(sbx, 1 * MB, 20)
        files_100mb = bench_files(sbx, 100 * MB, 3)
    finally:
        server.stop()

    print(f"commands.run('true') over {run['runs']} runs:")
    print(f"  p50 {run['p50_ms']} ms   p95 {run['p95_ms']} ms   p99 {run['p99_ms']} ms")
    print("files (median):")
    for label, numbers in (("1 MB", files_1mb), ("100 MB", files_100mb)):
        print(
            f"  {label:<7} upload {numbers['upload_mb_s']} MB/s   download {numbers['download_mb_s']} MB/s"
            f" (bytes), {numbers['download_stream_mb_s']} MB/s (stream)"
        )
    result = {"bench": "envd", "run_true": run, "files_1mb": files_1mb, "files_100mb": files_100mb}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
