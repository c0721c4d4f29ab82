"""What every service's `main` does: settings, logging, telemetry, uvloop, the bus and the
store opened and closed, and a stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import msgspec
import uvicorn
import uvloop
from starlette.types import ASGIApp

from libs.bus import Bus
from libs.config import load_settings
from libs.logging import setup_logging
from libs.state import Store
from libs.telemetry import setup_telemetry


class ServiceSettings(Protocol):
    nats_url: str
    redis_url: str
    log_level: str


S = TypeVar("S", bound=msgspec.Struct)


def run_service(name: str, settings_type: type[S], serve: Callable[[S], Awaitable[None]]) -> None:
    settings = load_settings(settings_type)
    setup_logging(settings.log_level)  # type: ignore[attr-defined]
    setup_telemetry(name)
    uvloop.run(serve(settings))


@contextlib.asynccontextmanager
async def connected(settings: ServiceSettings, name: str) -> AsyncIterator[tuple[Bus, Store]]:
    bus = await Bus.connect(settings.nats_url, name=name)
    store = Store.connect(settings.redis_url)
    try:
        yield bus, store
    finally:
        with contextlib.suppress(Exception):
            await bus.close()
        await store.close()


async def until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_http(app: ASGIApp, host: str, port: int, **options: object) -> None:
    """uvicorn with our logging (none of its own) and no access log."""
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, http="httptools", **options
    )  # type: ignore[arg-type]
    await uvicorn.Server(config).serve()
