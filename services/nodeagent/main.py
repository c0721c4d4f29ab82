"""Runs the node agent: `python -m services.nodeagent`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import uvloop

from libs.bus import Bus
from libs.config import load_settings
from libs.logging import setup_logging
from libs.state import Store
from libs.telemetry import setup_telemetry

from .agent import NodeAgent
from .runtime.gvisor import GVisorRuntime
from .settings import NodeSettings


async def serve(settings: NodeSettings) -> None:
    bus = await Bus.connect(settings.nats_url, name=f"nodeagent-{settings.node_id}")
    store = Store.connect(settings.redis_url)
    runtime = GVisorRuntime(Path(settings.data_dir), platform=settings.gvisor_platform)
    agent = NodeAgent(settings, runtime, bus, store)
    await agent.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await agent.stop()
    with contextlib.suppress(Exception):
        await bus.close()
    await store.close()


def main() -> None:
    settings = load_settings(NodeSettings)
    setup_logging(settings.log_level)
    setup_telemetry("nodeagent")
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
