"""`corral up`: the whole stack on this machine until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from corral_libs.contracts.records import BuildLogEntry
from corral_libs.stack import LocalStack, StackConfig, StackError
from corral_libs.supervisor import CRASH_LOOPING, Supervisor, read_status

from .output import console, emit
from .template_progress import wait_for_templates

DEFAULT_TEMPLATE = "base"
# Corral's own templates: the recipes node agents build (services/nodeagent/templates/).
RECIPES_DIR = Path(__file__).resolve().parents[2] / "templates"
# What the E2B SDKs ask for by default: `base` (e2b) and `code-interpreter-v1` (e2b_code_interpreter).
DEFAULT_TEMPLATES = "base,code-interpreter"


def kill_all_sandboxes(data_dir: Path, redis_url: str) -> None:
    """The node's own cleanup (services/nodeagent/cleanup.py), as a process of its own."""
    subprocess.run(
        [sys.executable, "-m", "corral_services.nodeagent.cleanup", str(data_dir), redis_url], check=False
    )


def follow_template_builds(stack: LocalStack, names: list[str], since: float) -> list[str]:
    """Shows the node agent's builds of Corral's templates until they end; what failed."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("checking templates", total=None)

        def show(name: str, entry: BuildLogEntry) -> None:
            progress.update(task, description=f"building {name}: {entry.message[:100]}")
            if entry.level != "debug" and not console.is_terminal:
                console.print(f"building {name}: {entry.message}", highlight=False)

        return asyncio.run(
            wait_for_templates(stack.config.redis_url, stack.config.node_id, names, since, show)
        )


def tls_banner(domain: str, port: int, ca: Path) -> str:
    """Where HTTPS clients reach sandboxes, and whether this machine resolves those names."""
    suffix = "" if port == 443 else f":{port}"
    lines = [f"\nSandboxes over HTTPS: https://<port>-<sandbox id>.{domain}{suffix} (CA: {ca})"]
    try:
        resolved = socket.gethostbyname(f"49983-check.{domain}")
    except OSError:
        resolved = ""
    if not resolved.startswith("127."):
        lines.append(
            f"[yellow]*.{domain} does not resolve to this machine: add a wildcard DNS record, or for "
            "*.localhost names enable nss-myhostname (scripts/install.sh does).[/yellow]"
        )
    return "\n".join(lines)


def status_path(data_dir: Path) -> Path:
    return data_dir / "supervisor.json"


def _report(message: str, loud: bool) -> None:
    console.print(f"[red]{message}[/red]" if loud else f"[yellow]{message}[/yellow]", highlight=False)


def exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {name}={value}" for name, value in env.items())


def up(
    data_dir: Path = typer.Option(
        Path("/var/lib/corral"), help="State: templates, sandboxes, Redis data, logs."
    ),
    api_port: int = typer.Option(3000, help="Control-plane API port (E2B_API_URL)."),
    proxy_port: int = typer.Option(3001, help="Sandbox proxy port (E2B_SANDBOX_URL)."),
    nats_port: int = typer.Option(4222),
    redis_port: int = typer.Option(6379),
    domain: str | None = typer.Option(
        None, help="Sandbox domain returned to SDKs (E2B_DOMAIN); localhost, or sandbox.localhost with --tls."
    ),
    tls: bool = typer.Option(
        False, "--tls", help="Serve sandboxes over HTTPS too (local CA, wildcard certificate for the domain)."
    ),
    tls_port: int = typer.Option(443, help="The proxy's HTTPS port (with --tls)."),
    env_file: Path | None = typer.Option(None, help="Also write the exports to this file (source it)."),
    template_dir: Path | None = typer.Option(
        None, help="Where templates are built and kept (default: <data dir>/templates)."
    ),
    templates: str = typer.Option(
        DEFAULT_TEMPLATES,
        help="Templates to build first if missing or stale (comma-separated; `base` always).",
    ),
) -> None:
    """Start NATS, Redis, the four services and the base template; print the E2B env vars."""
    # A wildcard directly under `localhost` is refused by TLS clients: one level more.
    domain = domain or ("sandbox.localhost" if tls else "localhost")
    names = list(dict.fromkeys([DEFAULT_TEMPLATE, *(t.strip() for t in templates.split(",") if t.strip())]))
    unknown = [name for name in names if not (RECIPES_DIR / f"{name}.toml").is_file()]
    if unknown:
        console.print(f"[red]no template recipe {', '.join(unknown)} in {RECIPES_DIR}[/red]")
        raise typer.Exit(1)
    config = StackConfig(
        data_dir=data_dir,
        api_port=api_port,
        proxy_port=proxy_port,
        nats_port=nats_port,
        redis_port=redis_port,
        domain=domain,
        tls_port=tls_port if tls else None,
        template_dir=template_dir,
        # The node agent builds Corral's own templates that are missing or stale.
        extra_env={"CORRAL_BUILTIN_TEMPLATES": ",".join(names)},
    )
    stack = LocalStack(config)
    supervisor = Supervisor(stack, status_path(data_dir), report=_report)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        started = time.time()
        with console.status("starting nats, redis and the services"):
            stack.start_infrastructure()
            stack.start_services()
            # A second scheduler: they share the work (a NATS queue group, one reaper at a
            # time), so losing one costs nothing.
            stack.start_service("scheduler", label="scheduler-2")
            asyncio.run(stack.dev_api_key())
        supervisor.start()
        failed = follow_template_builds(stack, names, started)
        if failed:
            console.print(
                f"[red]building {', '.join(failed)} failed: see {stack.log_dir}/nodeagent.log[/red]"
            )
            raise typer.Exit(1)
        text = exports(stack.client_env())
        if env_file is not None:
            env_file.write_text(text + "\n")
        runtime = f", sandboxes on {stack.node.runtime_version}" if stack.node else ""
        console.print(f"[green]Corral is up[/green] (logs in {stack.log_dir}{runtime}). For an E2B client:\n")
        print(text, flush=True)
        if config.tls_files is not None:
            console.print(tls_banner(config.domain, tls_port, config.tls_files.ca))
        console.print("\nEvery process is restarted if it dies (`corral status`). Ctrl-C stops everything.")
        stop.wait()
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        supervisor.stop()
        with console.status("stopping"):
            stack.stop(kill_sandboxes=lambda: kill_all_sandboxes(data_dir, config.redis_url))
        console.print("stopped")


def status(
    data_dir: Path = typer.Option(Path("/var/lib/corral"), help="The data directory `corral up` runs with."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
) -> None:
    """The processes `corral up` runs and supervises: state, pid, restarts, last exit."""
    current = read_status(status_path(data_dir))
    if current is None:
        console.print(f"[red]corral up is not running with data directory {data_dir}[/red]")
        raise typer.Exit(1)
    processes = current["processes"]
    assert isinstance(processes, dict)
    rows = [{"process": label, **state} for label, state in processes.items()]
    for row in rows:
        if not as_json and isinstance(row.get("last_exit_at"), float):
            row["last_exit_at"] = time.strftime("%H:%M:%S", time.localtime(row["last_exit_at"]))
    columns = ["process", "state", "pid", "restarts", "last_exit", "last_exit_at"]
    emit(rows, columns, as_json=as_json, title="processes")
    if any(row["state"] == CRASH_LOOPING for row in rows):
        raise typer.Exit(2)
