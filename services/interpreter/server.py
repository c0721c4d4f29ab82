"""Runs the interpreter: uvicorn on port 49999, the default contexts (E2B's Python and
JavaScript, and unlisted until used those of the other warm languages) started before the
port opens (a sandbox is only ready once its kernels answer, and a template's snapshot holds
them warm)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import httpx
import msgspec
import uvloop

from corral_libs.config import load_settings
from corral_libs.logging import setup_logging
from corral_libs.snapshot_listener import Listener
from corral_libs.telemetry import setup_telemetry

from .app import create_app, envd_env_fetcher
from .contexts import Contexts
from .languages import DEFAULT_LANGUAGES, LANGUAGES

log = logging.getLogger(__name__)

INTERPRETER_PORT = 49999


class InterpreterSettings(msgspec.Struct):
    host: str = "0.0.0.0"
    port: int = INTERPRETER_PORT
    default_cwd: str = "/home/user"
    # Languages whose default context starts with the interpreter, so a template's snapshot
    # holds their kernels warm and no first run pays a kernel start (about 60-150 MiB of
    # sandbox memory each; python and javascript, E2B's defaults, always start).
    warm_languages: str = "python,javascript,typescript,r,java,bash"
    envd_url: str = "http://127.0.0.1:49983"
    # Where kernels' ipc sockets and connection files live (a fresh temporary directory if unset).
    runtime_dir: str | None = None
    log_level: str = "INFO"


async def serve(settings: InterpreterSettings) -> None:
    runtime_dir = Path(settings.runtime_dir) if settings.runtime_dir else None
    contexts = Contexts(runtime_dir)
    async with httpx.AsyncClient() as envd:
        warm = [name for name in settings.warm_languages.split(",") if name in LANGUAGES]
        for name in [*DEFAULT_LANGUAGES, *(name for name in warm if name not in DEFAULT_LANGUAGES)]:
            try:
                await contexts.default(
                    LANGUAGES[name], settings.default_cwd, listed=name in DEFAULT_LANGUAGES
                )
            except Exception:
                if name == "python":
                    raise
                # Its first run starts it (and says what failed) instead.
                log.exception("the default %s context did not start", name)
        listener = Listener(settings.host, settings.port)
        fetch_env = envd_env_fetcher(envd, settings.envd_url)
        app = create_app(contexts, settings.default_cwd, fetch_env, prepare_snapshot=listener.close)
        try:
            await listener.serve(app)
        finally:
            with contextlib.suppress(Exception):
                await contexts.shutdown()


def run(**overrides: object) -> None:
    settings = load_settings(InterpreterSettings, **overrides)
    setup_logging(settings.log_level)
    setup_telemetry("interpreter")
    uvloop.run(serve(settings))
