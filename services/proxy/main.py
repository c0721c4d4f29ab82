"""Runs the proxy: `python -m services.proxy`."""

from __future__ import annotations

import contextlib

import uvicorn
import uvloop

from libs.bus import Bus
from libs.config import load_settings
from libs.contracts import subjects
from libs.contracts.messages import SandboxGone
from libs.logging import setup_logging
from libs.state import Store
from libs.telemetry import setup_telemetry

from .app import SandboxProxy
from .routes import RouteCache
from .settings import ProxySettings


async def serve(settings: ProxySettings) -> None:
    bus = await Bus.connect(settings.nats_url, name="proxy")
    store = Store.connect(settings.redis_url)
    routes = RouteCache(store)
    await bus.listen(subjects.SANDBOX_GONE, SandboxGone, routes.on_gone)
    proxy = SandboxProxy(routes, settings.connect_timeout_s)
    config = uvicorn.Config(
        proxy,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        http="httptools",
        ws="websockets",
        timeout_keep_alive=620,
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await proxy.aclose()
        with contextlib.suppress(Exception):
            await bus.close()
        await store.close()


def main() -> None:
    settings = load_settings(ProxySettings)
    setup_logging(settings.log_level)
    setup_telemetry("proxy")
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
