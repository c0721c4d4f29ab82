"""Code interpreter latency through the whole stack with the e2b-code-interpreter SDK:
create -> first `run_code("1+1")` result (from the warm pool, one create a second), and the
`run_code` round trip in a warm context.

    .venv/bin/python bench/interpreter.py [--creates 20] [--runs 200]

Starts its own stack (real NATS, Redis, runsc); builds the code-interpreter template first
if this machine lacks it. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2b_code_interpreter import Sandbox

from bench.bench_stack import add_runtime_options, bench_stack, runtime_of
from bench.create import percentile
from corral_libs.stack import LocalStack
from corral_libs.state import Store
from tests.e2e.conftest import TEMPLATE_DIR

TEMPLATE = "code-interpreter"
PYTHON = "/opt/corral/venv/bin/python3"  # the template's, with the data stack


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50), 1),
        "p95_ms": round(percentile(samples, 95), 1),
    }


async def wait_offered(stack: LocalStack, timeout_s: float = 120) -> None:
    """Until the node offers the template and has a warm clone of it."""
    store = Store.connect(stack.config.redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            node = await store.node(stack.config.node_id)
            if node is not None and node.warm.get(TEMPLATE, 0) > 0:
                return
            await asyncio.sleep(0.5)
    finally:
        await store.close()
    raise RuntimeError(f"no warm {TEMPLATE} clone within {timeout_s:.0f}s")


def import_pandas_s(sbx: Sandbox, runs: int = 3) -> float:
    """`python3 -c 'import pandas'` in the sandbox, best of `runs` (the page cache warm)."""
    command = (
        "python3 -c 'import time; t = time.perf_counter(); import pandas; print(time.perf_counter() - t)'"
    )
    return min(float(sbx.commands.run(f"/opt/corral/venv/bin/{command}").stdout) for _ in range(runs))


def native_import_pandas_s(runs: int = 3) -> float:
    """The same interpreter and files without the sandbox: the template's root under
    bubblewrap, on the host kernel."""
    rootfs = TEMPLATE_DIR / TEMPLATE / "rootfs"
    argv = ["bwrap", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    code = "import time; t = time.perf_counter(); import pandas; print(time.perf_counter() - t)"
    return min(
        float(subprocess.run([*argv, PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    add_runtime_options(parser)
    args = parser.parse_args()
    with bench_stack("interp", 28000, platform=args.platform, templates=("base", TEMPLATE)) as stack:
        key = asyncio.run(stack.create_api_key("bench"))
        conn = stack.sdk_options(key)
        asyncio.run(wait_offered(stack))
        first_result: list[float] = []
        for _ in range(args.creates):
            start = time.perf_counter()
            sbx = Sandbox.create(**conn)
            assert sbx.run_code("1+1").text == "2"
            first_result.append((time.perf_counter() - start) * 1000)
            sbx.kill()
            time.sleep(1)  # one create a second: the pool keeps up
        sbx = Sandbox.create(**conn)
        sbx.run_code("1+1")
        round_trips: list[float] = []
        for _ in range(args.runs):
            start = time.perf_counter()
            sbx.run_code("1+1")
            round_trips.append((time.perf_counter() - start) * 1000)
        pandas_s = import_pandas_s(sbx)
        native_s = native_import_pandas_s()
        sbx.kill()
        runtime = runtime_of(stack)
    results = {"create_to_first_result": stats(first_result), "warm_run_code": stats(round_trips)}
    print(f"{'':<26} {'n':>5} {'p50':>9} {'p95':>9}")
    for name, row in results.items():
        print(f"{name:<26} {row['n']:>5} {row['p50_ms']:>9} {row['p95_ms']:>9}")
    ratio = pandas_s / native_s
    print(f"import pandas: {pandas_s:.2f} s in a sandbox, {native_s:.2f} s native ({ratio:.1f}x)")
    pandas = {"sandbox_s": round(pandas_s, 2), "native_s": round(native_s, 2), "ratio": round(ratio, 1)}
    print(json.dumps({"bench": "interpreter", "runtime": runtime, **results, "import_pandas": pandas}))


if __name__ == "__main__":
    main()
