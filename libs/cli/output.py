"""Readable tables for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

console = Console()
if not console.is_terminal:
    # Piped output is not for an 80-column screen: never cut ids short.
    console = Console(width=200)


def emit(
    rows: Sequence[dict[str, object]], columns: Sequence[str], *, as_json: bool, title: str | None = None
) -> None:
    if as_json:
        print(json.dumps(list(rows), indent=2, default=str))
        return
    if not rows:
        console.print(f"[dim]no {title or 'rows'}[/dim]")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(row.get(column, "")) for column in columns))
    console.print(table)
