"""Sandbox metrics in E2B's shape: `GET /sandboxes/{id}/metrics?start=&end=` (what the SDKs'
`get_metrics()` and `e2b sandbox metrics` read) and `GET /sandboxes/metrics?sandbox_ids=`
(the newest sample of each). The samples are the node's (`services/nodeagent/sandbox_metrics.py`)."""

from __future__ import annotations

from collections import defaultdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import NodeMetricsReply, NodeMetricsRequest, SandboxMetric
from corral_libs.contracts.records import SANDBOX_RUNNING
from corral_libs.state import Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import rfc3339
from .common import ask, owned_sandbox

MAX_SANDBOXES = 100


def metric_body(metric: SandboxMetric) -> dict[str, object]:
    return {
        "timestamp": rfc3339(metric.timestamp),
        "timestampUnix": int(metric.timestamp),
        "cpuCount": metric.cpu_count,
        "cpuUsedPct": metric.cpu_used_pct,
        "memUsed": metric.mem_used,
        "memTotal": metric.mem_total,
        "memCache": metric.mem_cache,
        "diskUsed": metric.disk_used,
        "diskTotal": metric.disk_total,
    }


def _seconds(request: Request, name: str) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return 0.0
    try:
        return float(int(raw))
    except ValueError:
        raise ApiError(400, f"{name} must be unix seconds") from None


class MetricRoutes:
    def __init__(self, bus: Bus, store: Store, auth: Authenticator) -> None:
        self._bus = bus
        self._store = store
        self._auth = auth

    async def _ask(self, node_id: str, message: NodeMetricsRequest) -> NodeMetricsReply:
        subject = subjects.node_subject(node_id, subjects.NODE_METRICS)
        return await ask(self._bus, subject, message, NodeMetricsReply, 10)

    async def one(self, request: Request) -> Response:
        key = await self._auth(request)
        record = await owned_sandbox(self._store, request, key)
        start, end = _seconds(request, "start"), _seconds(request, "end")
        if end and start > end:
            raise ApiError(400, "start must not be after end")
        if record.state != SANDBOX_RUNNING:  # a paused sandbox uses nothing
            return JSONResponse([])
        message = NodeMetricsRequest(sandbox_ids=[record.sandbox_id], start=start, end=end)
        reply = await self._ask(record.node_id, message)
        return JSONResponse([metric_body(m) for m in reply.samples.get(record.sandbox_id, [])])

    async def many(self, request: Request) -> Response:
        key = await self._auth(request)
        raw = request.query_params.get("sandbox_ids", "")
        wanted = [i for i in (part.strip() for part in raw.split(",")) if i]
        if not wanted or len(wanted) > MAX_SANDBOXES:
            raise ApiError(400, f"sandbox_ids: give 1 to {MAX_SANDBOXES} comma-separated sandbox ids")
        by_node: dict[str, list[str]] = defaultdict(list)
        for record in await self._store.sandboxes(wanted):
            if record.owner == key.key_hash and record.state == SANDBOX_RUNNING:
                by_node[record.node_id].append(record.sandbox_id)
        latest: dict[str, object] = {}
        for node_id, sandbox_ids in by_node.items():
            reply = await self._ask(node_id, NodeMetricsRequest(sandbox_ids=sandbox_ids, latest=True))
            latest |= {i: metric_body(samples[-1]) for i, samples in reply.samples.items() if samples}
        return JSONResponse({"sandboxes": latest})
