"""Runs envd: one uvicorn server on the envd port (49983 in a sandbox)."""

from __future__ import annotations

import msgspec
import uvloop

from corral_libs.config import load_settings
from corral_libs.contracts.envd import ENVD_PORT
from corral_libs.logging import setup_logging
from corral_libs.snapshot_listener import Listener
from corral_libs.telemetry import setup_telemetry

from .app import create_app
from .state import Identity


class EnvdSettings(msgspec.Struct):
    host: str = "0.0.0.0"
    port: int = ENVD_PORT
    default_user: str = "user"
    default_workdir: str | None = None
    # Only inside a sandbox: the orchestrator's /init timestamp sets the guest clock.
    sync_clock: bool = False
    log_level: str = "INFO"


async def serve(settings: EnvdSettings) -> None:
    identity = Identity(default_user=settings.default_user, default_workdir=settings.default_workdir)
    listener = Listener(settings.host, settings.port)
    await listener.serve(
        create_app(identity, sync_clock=settings.sync_clock, prepare_snapshot=listener.close)
    )


def run(**overrides: object) -> None:
    settings = load_settings(EnvdSettings, **overrides)
    setup_logging(settings.log_level)
    setup_telemetry("envd")
    uvloop.run(serve(settings))
