"""`corral template ls|build|rm|logs`: templates through the API, as an E2B client sees
them (E2B_API_URL and E2B_API_KEY, or what `corral up` keeps in its data directory)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import typer

from .output import console, emit

app = typer.Typer(help="Templates, through the API.", no_args_is_help=True)

DEFAULT_API_URL = "http://127.0.0.1:3000"
DATA_DIR = typer.Option(Path("/var/lib/corral"), help="Where `corral up` keeps its dev API key.")


def connection(data_dir: Path) -> tuple[str, str]:
    """The API's URL and a key: E2B_API_URL / E2B_API_KEY, else `corral up`'s defaults."""
    url = os.environ.get("E2B_API_URL", DEFAULT_API_URL).rstrip("/")
    key = os.environ.get("E2B_API_KEY")
    if key is None:
        path = data_dir / "dev-api-key"
        if not path.is_file():
            console.print("[red]set E2B_API_KEY (and E2B_API_URL), or run `corral up` first[/red]")
            raise typer.Exit(1)
        key = path.read_text().strip()
    return url, key


def _call(method: str, path: str, data_dir: Path, **kwargs: Any) -> httpx.Response:
    url, key = connection(data_dir)
    try:
        response = httpx.request(method, f"{url}{path}", headers={"X-API-Key": key}, timeout=60, **kwargs)
    except httpx.HTTPError as exc:
        console.print(f"[red]the API at {url} is not answering: {exc}[/red]")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        console.print(f"[red]{response.status_code}: {message}[/red]")
        raise typer.Exit(1)
    return response


@app.command("ls")
def list_templates(as_json: bool = typer.Option(False, "--json"), data_dir: Path = DATA_DIR) -> None:
    """The templates your key sees: Corral's own and those you built."""
    rows = [
        {
            "id": t["templateID"],
            "names": ", ".join(t["aliases"]),
            "status": t["buildStatus"],
            "cpu": t["cpuCount"],
            "memory_mb": t["memoryMB"],
            "disk_mb": t["diskSizeMB"],
            "envd": t["envdVersion"],
            "public": t["public"],
        }
        for t in _call("GET", "/templates", data_dir).json()
    ]
    emit(
        rows,
        ["id", "names", "status", "cpu", "memory_mb", "disk_mb", "envd", "public"],
        as_json=as_json,
        title="templates",
    )


@app.command("rm")
def remove(
    name: str = typer.Argument(..., help="A template you built (id or name)."), data_dir: Path = DATA_DIR
) -> None:
    """Delete a template you built (its running sandboxes run on)."""
    _call("DELETE", f"/templates/{name}", data_dir)
    console.print(f"template [bold]{name}[/bold] deleted")


@app.command()
def logs(
    name: str = typer.Argument(..., help="A template you built (id or name)."),
    build: str | None = typer.Option(None, help="A build id (default: the latest)."),
    data_dir: Path = DATA_DIR,
) -> None:
    """A build's log (the latest build's by default)."""
    if build is None:
        builds = _call("GET", f"/templates/{name}", data_dir).json().get("builds", [])
        if not builds:
            console.print(f"[red]template {name} has no build of yours[/red]")
            raise typer.Exit(1)
        build = builds[-1]["buildID"]
    offset = 0
    while True:
        status = _call(
            "GET",
            f"/templates/{name}/builds/{build}/status",
            data_dir,
            params={"logsOffset": offset, "limit": 1000},
        ).json()
        for entry in status["logEntries"]:
            console.print(
                f"{entry['timestamp']} {entry['level']:<5} {entry['message']}", highlight=False, markup=False
            )
        offset += len(status["logEntries"])
        if not status["logEntries"]:
            break
    console.print(
        f"status: {status['status']}" + (f" ({status['reason']['message']})" if status.get("reason") else "")
    )


@app.command()
def build(
    definition: Path = typer.Argument(
        ..., help="A Python file whose `template` is an E2B `Template` (or makes one)."
    ),
    name: str = typer.Option(..., "--name", help="The template's name (name or name:tag)."),
    cpu: int | None = typer.Option(None, help="vCPUs of its sandboxes."),
    memory_mb: int | None = typer.Option(None, help="Memory of its sandboxes in MiB."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step again."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Build a template from an E2B builder definition, showing its log."""
    try:
        from e2b import Template
    except ImportError:
        console.print("[red]building needs the E2B SDK: pip install e2b[/red]")
        raise typer.Exit(1) from None

    url, key = connection(data_dir)
    template = _load(definition)
    try:
        info = Template.build(
            template,
            name,
            cpu_count=cpu,
            memory_mb=memory_mb,
            skip_cache=no_cache,
            on_build_logs=lambda e: console.print(f"{e.level:<5} {e.message}", highlight=False, markup=False),
            api_url=url,
            api_key=key,
        )
    except Exception as exc:  # the SDK's BuildException and friends, said plainly
        console.print(f"[red]build failed: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"template [bold]{name}[/bold] built: {info.template_id} (build {info.build_id})")


def _load(definition: Path) -> Any:
    if not definition.is_file():
        console.print(f"[red]{definition} does not exist[/red]")
        raise typer.Exit(1)
    spec = importlib.util.spec_from_file_location("corral_template_definition", definition)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(definition.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(definition.parent))
    template = getattr(module, "template", None)
    if callable(template):
        template = template()
    if template is None:
        console.print(f"[red]{definition} defines no `template`[/red]")
        raise typer.Exit(1)
    return template
