"""Runs a scheduler replica: `python -m services.scheduler`."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvloop

from libs.bus import Bus
from libs.config import load_settings
from libs.logging import setup_logging
from libs.state import Store
from libs.telemetry import setup_telemetry

from .reaper import Reaper
from .settings import SchedulerSettings
from .worker import Scheduler


async def serve(settings: SchedulerSettings) -> None:
    bus = await Bus.connect(settings.nats_url, name="scheduler")
    store = Store.connect(settings.redis_url)
    scheduler = Scheduler(settings, bus, store)
    await scheduler.start()
    reaper = asyncio.create_task(Reaper(scheduler).run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    reaper.cancel()
    with contextlib.suppress(Exception):
        await bus.close()
    await store.close()


def main() -> None:
    settings = load_settings(SchedulerSettings)
    setup_logging(settings.log_level)
    setup_telemetry("scheduler")
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
