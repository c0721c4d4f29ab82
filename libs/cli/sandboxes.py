"""`corral sandbox ls|kill|logs`."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import KillReply, KillRequest, NodeLogsReply, NodeLogsRequest
from corral_libs.state import Store

from .common import with_bus, with_store
from .output import console, emit

app = typer.Typer(help="Sandboxes on this stack.", no_args_is_help=True)


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


@app.command("ls")
def list_sandboxes(as_json: bool = typer.Option(False, "--json")) -> None:
    """List every sandbox, newest first."""

    async def load(store: Store) -> list[dict[str, object]]:
        records = await store.sandboxes(await store.sandbox_ids_newest_first())
        return [
            {
                "id": r.sandbox_id,
                "template": r.template_id,
                "node": r.node_id,
                "state": r.state,
                "started": _time(r.started_at),
                "ends": _time(r.end_at),
                "address": r.host,
                "metadata": r.metadata,
            }
            for r in records
        ]

    emit(
        with_store(load),
        ["id", "template", "node", "state", "started", "ends", "address"],
        as_json=as_json,
        title="sandboxes",
    )


@app.command()
def kill(sandbox_id: str) -> None:
    """Kill a sandbox."""

    async def apply(bus: Bus, store: Store) -> KillReply:
        return await bus.request(subjects.KILL, KillRequest(sandbox_id=sandbox_id), KillReply, timeout_s=90)

    reply = with_bus(apply)
    if reply.error is not None:
        console.print(f"[red]{reply.error.message}[/red]")
        raise typer.Exit(1)
    console.print(f"killed {sandbox_id}")


@app.command()
def logs(sandbox_id: str, limit: int = typer.Option(200, help="Last lines to show.")) -> None:
    """Show a sandbox's console output (envd's log)."""

    async def load(bus: Bus, store: Store) -> NodeLogsReply | None:
        record = await store.sandbox(sandbox_id)
        if record is None:
            return None
        subject = subjects.node_subject(record.node_id, subjects.NODE_LOGS)
        return await bus.request(
            subject, NodeLogsRequest(sandbox_id=sandbox_id, limit=limit), NodeLogsReply, timeout_s=10
        )

    reply = with_bus(load)
    if reply is None:
        console.print(f"[red]sandbox '{sandbox_id}' not found[/red]")
        raise typer.Exit(1)
    for entry in reply.entries:
        when = datetime.fromtimestamp(entry.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        print(f"{when} {entry.level.upper():<5} {entry.logger}: {entry.message}")
