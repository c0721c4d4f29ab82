"""Runs the proxy: `python -m corral_services.proxy`."""

from __future__ import annotations

import logging

from corral_libs.contracts import subjects
from corral_libs.contracts.messages import SandboxGone
from corral_libs.service import TlsListener, connected, run_service, serve_http

from .app import QuietUpstreamBroke, SandboxProxy
from .routes import RouteCache
from .settings import ProxySettings


async def serve(settings: ProxySettings) -> None:
    logging.getLogger("uvicorn.error").addFilter(QuietUpstreamBroke())
    async with connected(settings, "proxy") as (bus, store):
        routes = RouteCache(store, bus)
        proxy = SandboxProxy(routes, settings.connect_timeout_s)

        async def on_gone(event: SandboxGone) -> None:
            await routes.on_gone(event)
            proxy.cut(event.sandbox_id)

        await bus.listen(subjects.SANDBOX_GONE, SandboxGone, on_gone)
        tls = (
            TlsListener(settings.tls_port, settings.tls_cert, settings.tls_key) if settings.tls_port else None
        )
        try:
            # Streams (commands, watches) stay open for hours; envd keepalives keep them busy.
            await serve_http(
                proxy,
                settings.host,
                settings.port,
                tls,
                ws="websockets-sansio",
                timeout_keep_alive=620,
                # The sandbox's response already says which server and when: not twice.
                server_header=False,
                date_header=False,
            )
        finally:
            await proxy.aclose()


def main() -> None:
    run_service("proxy", ProxySettings, serve)


if __name__ == "__main__":
    main()
