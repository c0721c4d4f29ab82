"""Runs envd: one uvicorn server on the envd port (49983 in a sandbox)."""

from __future__ import annotations

import msgspec
import uvicorn
import uvloop

from libs.config import load_settings
from libs.logging import setup_logging
from libs.snapshot_listener import Listener
from libs.telemetry import setup_telemetry

from .app import create_app
from .state import Identity

ENVD_PORT = 49983


class EnvdSettings(msgspec.Struct):
    host: str = "0.0.0.0"
    port: int = ENVD_PORT
    default_user: str = "user"
    default_workdir: str | None = None
    # Only inside a sandbox: the orchestrator's /init timestamp sets the guest clock.
    sync_clock: bool = False
    log_level: str = "INFO"


def build_server(settings: EnvdSettings, listener: Listener) -> uvicorn.Server:
    identity = Identity(default_user=settings.default_user, default_workdir=settings.default_workdir)
    config = uvicorn.Config(
        create_app(identity, sync_clock=settings.sync_clock, prepare_snapshot=listener.close),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        http="httptools",
        # Streams (commands, watches) live for hours; keepalive messages keep them busy.
        timeout_keep_alive=620,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    listener.attach(server)
    return server


async def serve(settings: EnvdSettings) -> None:
    listener = Listener(settings.host, settings.port)
    server = build_server(settings, listener)
    listener.install_signal_handler()
    await server.serve(sockets=[listener.bind()])


def run(**overrides: object) -> None:
    settings = load_settings(EnvdSettings, **overrides)
    setup_logging(settings.log_level)
    setup_telemetry("envd")
    uvloop.run(serve(settings))
