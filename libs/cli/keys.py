"""`corral keys create|list|revoke`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import typer

from corral_libs.apikeys import DEFAULT_MAX_SANDBOXES, new_api_key
from corral_libs.state import Store

from .common import with_store
from .output import console, emit

app = typer.Typer(help="API keys (stored hashed in Redis).", no_args_is_help=True)


@app.command()
def create(
    name: str = typer.Option("default", help="A name to recognise the key by."),
    max_sandboxes: int = typer.Option(DEFAULT_MAX_SANDBOXES, help="Concurrent sandboxes allowed."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a key; it is shown only this once."""
    key, record = new_api_key(name, max_sandboxes)
    with_store(lambda store: store.save_api_key(record))
    if as_json:
        print(json.dumps({"key": key, "name": name, "prefix": record.prefix, "max_sandboxes": max_sandboxes}))
    else:
        console.print(f"created key [bold]{name}[/bold]: {key}")


@app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json")) -> None:
    """List keys (prefixes only)."""

    async def load(store: Store) -> list[dict[str, object]]:
        rows = []
        for record in await store.api_keys():
            row = msgspec.to_builtins(record)
            row["created"] = datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            row["sandboxes"] = await store.owner_sandbox_count(record.key_hash)
            rows.append(row)
        return rows

    emit(
        with_store(load),
        ["prefix", "name", "created", "sandboxes", "max_sandboxes", "revoked"],
        as_json=as_json,
        title="API keys",
    )


@app.command()
def revoke(
    prefix: str = typer.Argument(..., help="The key's prefix as `corral keys list` shows it."),
) -> None:
    """Revoke a key: requests with it get 401 from then on."""

    async def apply(store: Store) -> int:
        matches = [r for r in await store.api_keys() if r.prefix.startswith(prefix) and not r.revoked]
        for record in matches:
            await store.save_api_key(msgspec.structs.replace(record, revoked=True))
        return len(matches)

    count = with_store(apply)
    if count == 0:
        console.print(f"[red]no active key starts with '{prefix}'[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {count} key(s)")
