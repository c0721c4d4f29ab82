"""Removes every sandbox a node's data directory holds, of either runtime, with their
egress rules and records (volumes stay, unmounted): what `corral up` runs when it stops.
`python -m corral_services.nodeagent.cleanup <data dir> <redis url>`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from corral_libs.stack import clear_sandbox_records

from .egress.table import EgressTable
from .runtime.base import Runtime
from .runtime.gvisor import GVisorRuntime
from .runtime.microvm.runtime import MicroVMRuntime
from .volumes.disks import VolumeDisks


def kill_all_sandboxes(data_dir: Path, redis_url: str) -> None:
    asyncio.run(_kill_all(data_dir, redis_url))


async def _kill_all(data_dir: Path, redis_url: str) -> None:
    # Killing needs no guest or accelerator: either runtime's sandboxes go.
    runtimes: list[Runtime] = [GVisorRuntime(data_dir), MicroVMRuntime(data_dir, data_dir, accel="tcg")]
    egress = EgressTable()
    for runtime in runtimes:
        for sandbox in await runtime.list():
            await runtime.kill(sandbox.sandbox_id)
            await egress.remove(sandbox.slot)
        for sandbox_id in await runtime.leftovers():
            await runtime.kill(sandbox_id)
    gvisor = runtimes[0]
    assert isinstance(gvisor, GVisorRuntime)
    await gvisor.clean_one_shots()  # template build steps
    # Volumes stay (their images), unmounted: the next node agent mounts them again.
    await VolumeDisks(data_dir / "volumes").unmount_all()
    await clear_sandbox_records(redis_url)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m corral_services.nodeagent.cleanup <data dir> <redis url>")
    kill_all_sandboxes(Path(sys.argv[1]), sys.argv[2])


if __name__ == "__main__":
    main()
