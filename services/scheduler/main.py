"""Runs a scheduler replica: `python -m corral_services.scheduler`."""

from __future__ import annotations

import asyncio

from corral_libs.service import connected, run_service, until_stopped

from .reaper import Reaper
from .settings import SchedulerSettings
from .worker import Scheduler


async def serve(settings: SchedulerSettings) -> None:
    async with connected(settings, "scheduler") as (bus, store):
        scheduler = Scheduler(settings, bus, store)
        await scheduler.start()
        reaper = asyncio.create_task(Reaper(scheduler).run())
        await until_stopped()
        reaper.cancel()


def main() -> None:
    run_service("scheduler", SchedulerSettings, serve)


if __name__ == "__main__":
    main()
