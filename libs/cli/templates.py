"""`corral template ls|build`."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from corral_services.nodeagent.templates.build import BuildError, build_template
from corral_services.nodeagent.templates.recipe import UnknownRecipe, load_recipe
from corral_services.nodeagent.templates.store import TemplateStore

from .output import console, emit

app = typer.Typer(help="Templates in this node's store.", no_args_is_help=True)


def template_dir() -> Path:
    explicit = os.environ.get("CORRAL_TEMPLATE_DIR")
    return (
        Path(explicit)
        if explicit
        else Path(os.environ.get("CORRAL_DATA_DIR", "/var/lib/corral")) / "templates"
    )


def build_with_progress(name: str, store: TemplateStore) -> None:
    """A live spinner with the latest line on a terminal; one line per step in a log."""
    recipe = load_recipe(name)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"building {name}", total=None)

        def report(message: str, *, detail: bool = False) -> None:
            progress.update(task, description=f"building {name}: {message[:100]}")
            if not detail and not console.is_terminal:
                console.print(f"building {name}: {message}")

        asyncio.run(build_template(recipe, store, report))
    console.print(f"template [bold]{name}[/bold] is ready in {store.root / name}")


@app.command()
def build(name: str = typer.Argument(..., help="A recipe in templates/ (e.g. base).")) -> None:
    """Build a template into this node's store (node agents pick it up within seconds)."""
    try:
        build_with_progress(name, TemplateStore(template_dir()))
    except (UnknownRecipe, BuildError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@app.command("ls")
def list_templates(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the templates in this node's store."""
    rows = [
        {
            "id": m.template_id,
            "aliases": ", ".join(m.aliases),
            "envd": m.envd_version,
            "cpu": m.cpu_count,
            "memory_mb": m.memory_mb,
            "built": datetime.fromtimestamp(m.built_at, UTC).strftime("%Y-%m-%d %H:%M"),
        }
        for m in TemplateStore(template_dir()).list()
    ]
    emit(rows, ["id", "aliases", "envd", "cpu", "memory_mb", "built"], as_json=as_json, title="templates")
