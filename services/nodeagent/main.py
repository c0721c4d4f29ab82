"""Runs the node agent: `python -m corral_services.nodeagent`."""

from __future__ import annotations

from corral_libs.service import connected, run_service, until_stopped

from .agent import NodeAgent
from .runtime.select import choose_runtime
from .settings import NodeSettings


async def serve(settings: NodeSettings) -> None:
    async with connected(settings, f"nodeagent-{settings.node_id}") as (bus, store):
        runtime = await choose_runtime(settings, settings.template_root)
        agent = NodeAgent(settings, runtime, bus, store)
        await agent.start()
        await until_stopped()
        await agent.stop()


def main() -> None:
    run_service("nodeagent", NodeSettings, serve)


if __name__ == "__main__":
    main()
