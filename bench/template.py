"""Template build times: Corral's `base` from scratch (its recipe: debootstrap, envd), and a
template built through the API with the E2B SDK's builder from `base` (a copied directory,
a few RUN steps, a start command): cold (every step runs), warm (every step cached), and
after changing its last step.

    .venv/bin/python bench/template.py [--skip-base]

Starts its own stack (real NATS, Redis, runsc) on random ports. Prints a table and, last,
one JSON line.
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

import httpx
from e2b import Template, wait_for_port

from bench.bench_stack import bench_stack, runtime_of
from corral_services.nodeagent.templates.build import build_template
from corral_services.nodeagent.templates.recipe import load_recipe
from corral_services.nodeagent.templates.store import TemplateStore

CONTEXT_FILES = 200
CONTEXT_FILE_KB = 100


def base_from_scratch() -> float:
    root = Path(tempfile.mkdtemp(prefix="corral-bench-base-", dir="/var/lib/corral"))
    try:
        started = time.perf_counter()
        asyncio.run(build_template(load_recipe("base"), TemplateStore(root), lambda *_, **__: None))
        return time.perf_counter() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)


def definition(context: Path, last: str) -> Template:
    return (
        Template(file_context_path=context)
        .from_template("base")
        .copy("data", "/home/user/data")
        .run_cmd("python3 -m compileall -q /usr/lib/python3.11 > /dev/null || true", user="root")
        .run_cmd("dd if=/dev/urandom of=/home/user/blob bs=1M count=32 status=none")
        .set_workdir("/home/user/data")
        .run_cmd(f"echo {last} > last.txt")
        .set_start_cmd("python3 -m http.server 8000", wait_for_port(8000))
    )


def timed_build(template: Template, name: str, options: dict[str, str], skip_cache: bool = False) -> float:
    started = time.perf_counter()
    Template.build(template, name, skip_cache=skip_cache, **options)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-base", action="store_true", help="do not time base from scratch")
    args = parser.parse_args()
    results: dict[str, object] = {}
    if not args.skip_base:
        results["base_from_scratch_s"] = round(base_from_scratch(), 1)
    context = Path(tempfile.mkdtemp(prefix="corral-bench-ctx-"))
    (context / "data").mkdir()
    for index in range(CONTEXT_FILES):
        (context / "data" / f"f{index}.bin").write_bytes(bytes(CONTEXT_FILE_KB * 1024))
    name = f"bench-{int(time.time())}"
    try:
        with bench_stack("benchtpl", 24000) as stack:
            asyncio.run(stack.create_api_key("bench"))
            options = stack.sdk_options()
            results["runtime"] = runtime_of(stack)
            results["cold_s"] = round(
                timed_build(definition(context, "one"), name, options, skip_cache=True), 1
            )
            results["warm_s"] = round(timed_build(definition(context, "one"), name, options), 1)
            results["one_step_changed_s"] = round(timed_build(definition(context, "two"), name, options), 1)
            httpx.delete(f"{options['api_url']}/templates/{name}", headers={"X-API-Key": options["api_key"]})
    finally:
        shutil.rmtree(context, ignore_errors=True)
    labels = {
        "base_from_scratch_s": "base from scratch (recipe)",
        "cold_s": "SDK template, cold (5 steps + start)",
        "warm_s": "same, every step cached",
        "one_step_changed_s": "same, last step changed",
    }
    print(f"{'template build':<40} {'seconds':>8}")
    for key, label in labels.items():
        if key in results:
            print(f"{label:<40} {results[key]:>8}")
    print(f"context: {CONTEXT_FILES} files of {CONTEXT_FILE_KB} KiB; {results.get('runtime')}")
    print(json.dumps({"bench": "template", **results}))


if __name__ == "__main__":
    main()
