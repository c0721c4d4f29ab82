"""MicroVM runtime: template boot and snapshot, clone restore, and memory per idle clone.

    .venv/bin/python bench/microvm.py [--clones 10] [--accel auto|kvm|tcg]

Drives the node agent's microVM runtime directly (no control plane: these are the VM's own
numbers) on the `base` template:
- template boot-to-ready: QEMU start until envd answers /health;
- template snapshot: stop, save devices (RAM stays in its file), and the VM's exit;
- clone restore-to-ready: QEMU start, state load, until envd answers, each clone in its own
  network namespace (p50/p95 over --clones);
- per idle clone, with all of them running: PSS of its QEMU, the anonymous part of that
  (what only it holds), and the drop of the host's MemAvailable.
Prints a table and, last, one JSON line. `--accel auto` probes as the node agent does (KVM
when a guest boots under it); on a host with working KVM it measures KVM.
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

from bench.host_memory import mem_available_mb
from corral_libs.ids import new_sandbox_id
from corral_services.nodeagent import envd_client
from corral_services.nodeagent.runtime.base import RunningSandbox
from corral_services.nodeagent.runtime.microvm.guest import Guest, ensure_guest
from corral_services.nodeagent.runtime.microvm.probe import choose_accelerator
from corral_services.nodeagent.runtime.microvm.process import vm_memory_kb
from corral_services.nodeagent.runtime.microvm.runtime import MicroVMRuntime
from corral_services.nodeagent.templates.builtin import ensure_template
from corral_services.nodeagent.templates.store import TemplateStore
from tests.e2e.conftest import TEMPLATE_DIR

SLOT_BASE = 29000
SETTLE_S = 10  # idle clones finish what their restore started before memory is read
READY_TIMEOUT_S = 300


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench(clone_count: int, accel_wanted: str) -> dict[str, object]:
    store = TemplateStore(TEMPLATE_DIR)
    manifest = store.get("base")
    assert manifest is not None
    data_dir = Path(tempfile.mkdtemp(prefix="corral-bench-microvm-"))
    guest_dir = TEMPLATE_DIR / ".microvm-guest"
    guest = await asyncio.to_thread(ensure_guest, guest_dir)  # made before timing starts

    async def made() -> Guest:
        return guest

    accel = await choose_accelerator(accel_wanted, made, guest_dir)
    runtime = MicroVMRuntime(data_dir, guest_dir, accel=accel, guest=guest)
    image = TEMPLATE_DIR / "base" / f".bench-snapshot-{time.time_ns()}"
    http = httpx.AsyncClient()
    clones: list[RunningSandbox] = []
    try:
        spec = store.sandbox_spec(manifest, new_sandbox_id(), SLOT_BASE)
        marks: dict[str, float] = {"start": time.monotonic()}

        async def until_ready(sandbox: RunningSandbox) -> None:
            await envd_client.wait_ready(http, sandbox.address, READY_TIMEOUT_S, manifest.services)
            marks["ready"] = time.monotonic()

        await runtime.snapshot_template(spec, image, until_ready)
        marks["saved"] = time.monotonic()
        boot_s = marks["ready"] - marks["start"]
        snapshot_s = marks["saved"] - marks["ready"]
        print(
            f"accelerator {accel}: template boot-to-ready {boot_s:.2f} s, snapshot {snapshot_s * 1000:.0f} ms"
        )

        await asyncio.sleep(2)
        baseline = mem_available_mb()
        restore_ms: list[float] = []
        for index in range(clone_count):
            clone_spec = store.sandbox_spec(manifest, new_sandbox_id(), SLOT_BASE + 1 + index)
            started = time.monotonic()
            clone = await runtime.restore(clone_spec, image)
            clones.append(clone)
            await envd_client.wait_ready(http, clone.address, READY_TIMEOUT_S, manifest.services)
            restore_ms.append((time.monotonic() - started) * 1000)
            print(f"clone {index + 1:>3}: restore-to-ready {restore_ms[-1]:7.0f} ms", flush=True)
        await asyncio.sleep(SETTLE_S)
        available_drop = baseline - mem_available_mb()
        memory = [vm_memory_kb(data_dir / "microvm" / clone.sandbox_id) for clone in clones]
    finally:
        for clone in clones:
            await runtime.kill(clone.sandbox_id)
        await http.aclose()
        shutil.rmtree(image, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    count = len(clones)
    return {
        "bench": "microvm",
        "accel": accel,
        "template": "base",
        "guest_memory_mb": manifest.memory_mb,
        "template_boot_to_ready_s": round(boot_s, 2),
        "template_snapshot_ms": round(snapshot_s * 1000, 1),
        "clones": count,
        "restore_to_ready_p50_ms": round(statistics.median(restore_ms), 1),
        "restore_to_ready_p95_ms": round(percentile(restore_ms, 0.95), 1),
        "pss_per_clone_mb": round(sum(m["Pss"] for m in memory) / count / 1024, 1),
        "private_anon_per_clone_mb": round(sum(m["Pss_Anon"] for m in memory) / count / 1024, 1),
        "mem_available_drop_per_clone_mb": round(available_drop / count, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clones", type=int, default=10)
    parser.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    args = parser.parse_args()
    ensure_template(TemplateStore(TEMPLATE_DIR))
    result = asyncio.run(bench(args.clones, args.accel))
    r = result
    print(f"clone restore-to-ready p50 {r['restore_to_ready_p50_ms']} ms")
    print(f"clone restore-to-ready p95 {r['restore_to_ready_p95_ms']} ms")
    print(f"per idle clone: PSS {r['pss_per_clone_mb']} MB, anonymous {r['private_anon_per_clone_mb']} MB")
    print(f"per idle clone: MemAvailable drop {r['mem_available_drop_per_clone_mb']} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
