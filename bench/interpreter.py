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
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2b_code_interpreter import Sandbox

from bench.create import percentile
from libs.cli.up import ensure_template, kill_all_sandboxes
from libs.stack import LocalStack, StackConfig
from libs.state import Store
from services.nodeagent.templates.store import TemplateStore
from tests.e2e.conftest import TEMPLATE_DIR

TEMPLATE = "code-interpreter"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    store = TemplateStore(TEMPLATE_DIR)
    ensure_template(store)
    ensure_template(store, TEMPLATE)
    data_dir = Path(tempfile.mkdtemp(prefix="corral-interpreter-bench-"))
    config = StackConfig.random_ports(
        data_dir, template_dir=TEMPLATE_DIR, node_id="interp", extra_env={"CORRAL_SLOT_BASE": "28000"}
    )
    stack = LocalStack(config)
    try:
        stack.start_infrastructure()
        stack.start_services()
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
        sbx.kill()
    finally:
        stack.stop(kill_sandboxes=lambda: kill_all_sandboxes(data_dir, config.redis_url))
        shutil.rmtree(data_dir, ignore_errors=True)
    results = {"create_to_first_result": stats(first_result), "warm_run_code": stats(round_trips)}
    print(f"{'':<26} {'n':>5} {'p50':>9} {'p95':>9}")
    for name, row in results.items():
        print(f"{name:<26} {row['n']:>5} {row['p50_ms']:>9} {row['p95_ms']:>9}")
    print(json.dumps({"bench": "interpreter", **results}))


if __name__ == "__main__":
    main()
