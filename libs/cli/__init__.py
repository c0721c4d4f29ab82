"""The `corral` command line."""

from __future__ import annotations

import os
import sys

import typer

from . import keys, sandboxes, templates
from .up import status, up

app = typer.Typer(help="Corral: self-hosted, E2B-compatible sandboxes for AI agents.", no_args_is_help=True)
app.add_typer(keys.app, name="keys")
app.add_typer(sandboxes.app, name="sandbox")
app.add_typer(templates.app, name="template")
app.command()(up)
app.command()(status)


@app.command()
def envd(
    port: int = typer.Option(None, help="Port to serve on (default 49983, CORRAL_PORT)."),
    host: str = typer.Option(None, help="Address to bind (default 0.0.0.0, CORRAL_HOST)."),
    user: str = typer.Option(None, "--user", help="Default user for commands and files (default 'user')."),
    workdir: str = typer.Option(
        None, "--workdir", help="Default working directory (default: the user's home)."
    ),
    sync_clock: bool = typer.Option(
        None, "--sync-clock/--no-sync-clock", help="Set the clock from /init timestamps (inside sandboxes)."
    ),
) -> None:
    """Run envd, the in-sandbox daemon that serves E2B's data plane."""
    given = {
        "PORT": port,
        "HOST": host,
        "DEFAULT_USER": user,
        "DEFAULT_WORKDIR": workdir,
        "SYNC_CLOCK": sync_clock,
    }
    env = {
        **os.environ,
        **{
            f"CORRAL_{name}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in given.items()
            if value is not None
        },
    }
    os.execve(sys.executable, [sys.executable, "-P", "-m", "corral_services.envd"], env)


def main() -> None:
    app()
