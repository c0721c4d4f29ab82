"""Runs the API: `python -m corral_services.api`."""

from __future__ import annotations

from corral_libs.service import connected, run_service, serve_http

from .app import create_app
from .settings import ApiSettings


async def serve(settings: ApiSettings) -> None:
    async with connected(settings, "api") as (bus, store):
        app = create_app(bus, store, domain=settings.domain, place_timeout_s=settings.place_timeout_s)
        await serve_http(app, settings.host, settings.port)


def main() -> None:
    run_service("api", ApiSettings, serve)


if __name__ == "__main__":
    main()
