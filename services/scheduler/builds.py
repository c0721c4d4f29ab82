"""The scheduler's template handlers: which node builds a template (a gVisor node that
holds the base template, the one with the most free slots), starting the build there, and
deleting a template from every node that holds it."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from corral_libs.contracts import subjects
from corral_libs.contracts.messages import (
    BuildReply,
    DeleteTemplateRequest,
    KillReply,
    NodeBuildRequest,
    NodeDeleteTemplateRequest,
    PlaceBuildRequest,
    StartBuildRequest,
)
from corral_libs.contracts.records import NODE_READY, NodeRecord

from .refused import Refused

if TYPE_CHECKING:
    from .worker import Scheduler

log = logging.getLogger(__name__)


class BuildHandlers:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._store = scheduler.store

    def _builders(self, nodes: list[NodeRecord]) -> list[NodeRecord]:
        now = time.time()
        timeout = self._scheduler.settings.node_timeout_s
        return [
            node
            for node in nodes
            if node.builds_templates and node.status == NODE_READY and now - node.heartbeat_at <= timeout
        ]

    async def place(self, request: PlaceBuildRequest) -> BuildReply:
        builders = self._builders(await self._store.nodes())
        if not builders:
            return BuildReply(error=Refused(503, "no node that builds templates is available").failure)
        node = max(builders, key=lambda n: n.free_slots)
        return BuildReply(node_id=node.node_id)

    async def start(self, request: StartBuildRequest) -> BuildReply:
        try:
            return await self._start(request)
        except Refused as exc:
            return BuildReply(error=exc.failure)

    async def _start(self, request: StartBuildRequest) -> BuildReply:
        build = await self._store.build(request.build_id)
        if build is None or build.template_id != request.template_id:
            raise Refused(404, f"build '{request.build_id}' of template '{request.template_id}' not found")
        node = await self._store.node(build.node_id)
        if node is None or node not in self._builders([node]):
            # The chosen node went away: the uploaded files are on it, so the build cannot move.
            raise Refused(503, f"node {build.node_id}, which holds the build's files, is not available")
        if request.spec.from_template and request.spec.from_template not in node.templates:
            raise Refused(409, f"template '{request.spec.from_template}' is not on node {node.node_id} yet")
        message = NodeBuildRequest(
            template_id=request.template_id, build_id=request.build_id, spec=request.spec
        )
        return await self._scheduler.ask_node(node.node_id, subjects.NODE_BUILD, message, BuildReply)

    async def delete(self, request: DeleteTemplateRequest) -> KillReply:
        """Every node that holds it lets it go, then its records go."""
        nodes = [n for n in await self._store.nodes() if request.template_id in n.templates]
        message = NodeDeleteTemplateRequest(template_id=request.template_id)
        for node in nodes:
            try:
                await self._scheduler.ask_node(
                    node.node_id, subjects.NODE_DELETE_TEMPLATE, message, KillReply
                )
            except Refused as exc:
                # Away: it lets the template go when it is back (the deleted-templates set).
                log.warning(
                    "template %s: node %s did not answer the delete: %s",
                    request.template_id,
                    node.node_id,
                    exc.failure.message,
                )
        record = await self._store.template(request.template_id)
        builds = await self._store.template_builds(request.template_id)
        names = {b.name for b in builds} | set(record.aliases if record else [])
        await self._store.delete_template(request.template_id, sorted(names))
        log.info("template %s deleted", request.template_id)
        return KillReply(killed=True)
