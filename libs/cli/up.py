"""`corral up`: the whole stack on this machine until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from pathlib import Path

import typer

from corral_libs.stack import LocalStack, StackConfig, StackError, clear_sandbox_records
from corral_libs.supervisor import CRASH_LOOPING, Supervisor, read_status
from corral_services.nodeagent.egress.table import EgressTable
from corral_services.nodeagent.runtime.base import Runtime
from corral_services.nodeagent.runtime.gvisor import GVisorRuntime
from corral_services.nodeagent.runtime.microvm.runtime import MicroVMRuntime
from corral_services.nodeagent.templates.build import BuildError
from corral_services.nodeagent.templates.fingerprint import source_fingerprint
from corral_services.nodeagent.templates.recipe import UnknownRecipe, load_recipe, recipe_path
from corral_services.nodeagent.templates.store import TemplateStore, is_current
from corral_services.nodeagent.volumes.disks import VolumeDisks

from .output import console, emit
from .templates import build_with_progress

DEFAULT_TEMPLATE = "base"
# What the E2B SDKs ask for by default: `base` (e2b) and `code-interpreter-v1` (e2b_code_interpreter).
DEFAULT_TEMPLATES = "base,code-interpreter"


def ensure_template(store: TemplateStore, name: str = DEFAULT_TEMPLATE) -> None:
    load_recipe(name)  # UnknownRecipe for a name no recipe has
    if is_current(store.get(name), source_fingerprint(recipe_path(name))):
        return
    console.print(f"template [bold]{name}[/bold] is missing or older than this checkout: building it")
    build_with_progress(name, store)


def kill_all_sandboxes(data_dir: Path, redis_url: str) -> None:
    async def run() -> None:
        # Killing needs no guest or accelerator: either runtime's sandboxes go.
        runtimes: list[Runtime] = [GVisorRuntime(data_dir), MicroVMRuntime(data_dir, data_dir, accel="tcg")]
        egress = EgressTable()
        for runtime in runtimes:
            for sandbox in await runtime.list():
                await runtime.kill(sandbox.sandbox_id)
                await egress.remove(sandbox.slot)
            for sandbox_id in await runtime.leftovers():
                await runtime.kill(sandbox_id)
        # Volumes stay (their images), unmounted: the next node agent mounts them again.
        await VolumeDisks(data_dir / "volumes").unmount_all()
        await clear_sandbox_records(redis_url)

    asyncio.run(run())


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
    config = StackConfig(
        data_dir=data_dir,
        api_port=api_port,
        proxy_port=proxy_port,
        nats_port=nats_port,
        redis_port=redis_port,
        domain=domain,
        tls_port=tls_port if tls else None,
        template_dir=template_dir,
    )
    try:
        store = TemplateStore(template_dir or data_dir / "templates")
        for name in dict.fromkeys(
            [DEFAULT_TEMPLATE, *(t.strip() for t in templates.split(",") if t.strip())]
        ):
            ensure_template(store, name)
    except (BuildError, UnknownRecipe) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    stack = LocalStack(config)
    supervisor = Supervisor(stack, status_path(data_dir), report=_report)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with console.status("starting nats, redis and the services"):
            stack.start_infrastructure()
            stack.start_services()
            # A second scheduler: they share the work (a NATS queue group, one reaper at a
            # time), so losing one costs nothing.
            stack.start_service("scheduler", label="scheduler-2")
            asyncio.run(stack.dev_api_key())
        supervisor.start()
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
