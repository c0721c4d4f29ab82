"""Code interpreter latency through the whole stack with the e2b-code-interpreter SDK, per
language: create -> first `run_code` result (from the warm pool, one create a second), and
the `run_code` round trip in a warm context.

    .venv/bin/python bench/interpreter.py [--creates 10] [--runs 100] [--languages python,r]

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


# What each language runs; its first call in a new sandbox pays a kernel start unless the
# template's snapshot holds that kernel warm (python and javascript, E2B's defaults).
LANGUAGE_CODE = {
    "python": "1+1",
    "javascript": "1+1",
    "typescript": "const n: number = 1; n + 1",
    "r": "1+1",
    "java": "1+1",
    "bash": "echo 2",
}


def first_and_warm(conn: dict, language: str, creates: int, runs: int) -> dict[str, dict[str, float]]:
    code = LANGUAGE_CODE[language]
    first: list[float] = []
    for _ in range(creates):
        start = time.perf_counter()
        sbx = Sandbox.create(**conn)
        execution = sbx.run_code(code, language=language)
        first.append((time.perf_counter() - start) * 1000)
        assert execution.error is None, (language, execution.error)
        sbx.kill()
        time.sleep(1)  # one create a second: the pool keeps up
    sbx = Sandbox.create(**conn)
    sbx.run_code(code, language=language)
    warm: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        sbx.run_code(code, language=language)
        warm.append((time.perf_counter() - start) * 1000)
    sbx.kill()
    return {"create_to_first_result": stats(first), "warm_run_code": stats(warm)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=10, help="per language")
    parser.add_argument("--runs", type=int, default=100, help="per language")
    parser.add_argument("--languages", default=",".join(LANGUAGE_CODE))
    add_runtime_options(parser)
    args = parser.parse_args()
    languages = args.languages.split(",")
    with bench_stack("interp", 28000, platform=args.platform, templates=("base", TEMPLATE)) as stack:
        key = asyncio.run(stack.create_api_key("bench"))
        conn = stack.sdk_options(key)
        asyncio.run(wait_offered(stack))
        results = {
            language: first_and_warm(conn, language, args.creates, args.runs) for language in languages
        }
        sbx = Sandbox.create(**conn)
        pandas_s = import_pandas_s(sbx)
        sbx.kill()
        native_s = native_import_pandas_s()
        runtime = runtime_of(stack)
    print(f"{'language':<12} {'first p50':>10} {'first p95':>10} {'warm p50':>9} {'warm p95':>9}  (ms)")
    for language, rows in results.items():
        first, warm = rows["create_to_first_result"], rows["warm_run_code"]
        cells = f"{first['p50_ms']:>10} {first['p95_ms']:>10} {warm['p50_ms']:>9} {warm['p95_ms']:>9}"
        print(f"{language:<12} {cells}")
    ratio = pandas_s / native_s
    print(f"import pandas: {pandas_s:.2f} s in a sandbox, {native_s:.2f} s native ({ratio:.1f}x)")
    pandas = {"sandbox_s": round(pandas_s, 2), "native_s": round(native_s, 2), "ratio": round(ratio, 1)}
    print(
        json.dumps(
            {"bench": "interpreter", "runtime": runtime, "languages": results, "import_pandas": pandas}
        )
    )


if __name__ == "__main__":
    main()
