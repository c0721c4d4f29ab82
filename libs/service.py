"""What every service's `main` does: settings, logging, telemetry, uvloop, the bus and the
store opened and closed, and a stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec
import uvicorn
import uvloop
from starlette.types import ASGIApp

from corral_libs.bus import Bus
from corral_libs.config import load_settings
from corral_libs.logging import setup_logging
from corral_libs.state import Store
from corral_libs.telemetry import setup_telemetry


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


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A second port that serves the same app over HTTPS."""

    port: int
    certfile: str
    keyfile: str


async def serve_http(
    app: ASGIApp, host: str, port: int, tls: TlsListener | None = None, **options: object
) -> None:
    """uvicorn with our logging (none of its own) and no access log; with `tls`, the same app
    on a second, HTTPS port too."""

    def server(bind_port: int, **more: object) -> uvicorn.Server:
        config = uvicorn.Config(
            app,
            host=host,
            port=bind_port,
            log_config=None,
            access_log=False,
            http="httptools",
            **options,
            **more,
        )  # type: ignore[arg-type]
        return uvicorn.Server(config)

    servers = [server(port)]
    if tls is not None:
        servers.append(server(tls.port, ssl_certfile=tls.certfile, ssl_keyfile=tls.keyfile))
    await asyncio.gather(*(s.serve() for s in servers))
