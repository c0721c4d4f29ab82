"""Runs the API: `python -m services.api`."""

from __future__ import annotations

import contextlib

import uvicorn
import uvloop

from libs.bus import Bus
from libs.config import load_settings
from libs.logging import setup_logging
from libs.state import Store
from libs.telemetry import setup_telemetry

from .app import create_app
from .settings import ApiSettings


async def serve(settings: ApiSettings) -> None:
    bus = await Bus.connect(settings.nats_url, name="api")
    store = Store.connect(settings.redis_url)
    app = create_app(bus, store, domain=settings.domain, place_timeout_s=settings.place_timeout_s)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False, http="httptools"
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        with contextlib.suppress(Exception):
            await bus.close()
        await store.close()


def main() -> None:
    settings = load_settings(ApiSettings)
    setup_logging(settings.log_level)
    setup_telemetry("api")
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
