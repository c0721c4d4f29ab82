"""A sandbox's console log, as the runtimes keep it (one file per sandbox)."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path


async def tail(path: Path, limit: int) -> list[str]:
    """The last `limit` lines (none if the sandbox left no log)."""

    def read() -> list[str]:
        with path.open(errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=limit)]

    try:
        return await asyncio.to_thread(read)
    except FileNotFoundError:
        return []
