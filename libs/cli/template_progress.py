"""Following Corral's own templates while a node agent builds them (what `corral up` shows
on a first run): the node's pending list and the builds' logs, from Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from corral_libs.contracts.records import BuildLogEntry
from corral_libs.state import Store

POLL_S = 0.5


async def wait_for_templates(
    redis_url: str, node_id: str, names: list[str], since: float, show: Callable[[str, BuildLogEntry], None]
) -> list[str]:
    """Until the node (heart-beating after `since`) builds nothing more; the names it still
    lacks then (their builds failed: the log said why)."""
    store = Store.connect(redis_url)
    shown: dict[str, int] = {}
    try:
        while True:
            node = await store.node(node_id)
            for name in names:
                builds = [b for b in await store.template_builds(name) if b.created_at >= since]
                if builds:
                    build = builds[-1]
                    entries = await store.build_logs(build.build_id, shown.get(build.build_id, 0), 1000)
                    shown[build.build_id] = shown.get(build.build_id, 0) + len(entries)
                    for entry in entries:
                        show(name, entry)
            if node is not None and node.heartbeat_at >= since and not node.templates_pending:
                return [name for name in names if name not in node.templates]
            await asyncio.sleep(POLL_S)
    finally:
        await store.close()
