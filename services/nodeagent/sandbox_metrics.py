"""Samples of each running sandbox's use, taken from its envd's `/metrics` (the guest's own
view of CPU, memory and disk, as E2B's orchestrator reads it) every few seconds and kept in
memory for the last hour: `GET /sandboxes/{id}/metrics` reads them from here over the bus.
A restarted agent starts over (the history is a convenience, not a record)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import httpx
import msgspec

from corral_libs.contracts.envd import ENVD_PORT
from corral_libs.contracts.messages import NodeMetricsReply, NodeMetricsRequest, SandboxMetric

from .running import RunningSandboxes

log = logging.getLogger(__name__)

EVERY_S = 5.0
KEPT = 720  # an hour of samples
AT_ONCE = 8
REQUEST_TIMEOUT_S = 3.0


class _EnvdMetrics(msgspec.Struct):
    ts: float
    cpu_count: int
    cpu_used_pct: float
    mem_total: int
    mem_used: int
    mem_cache: int = 0
    disk_used: int = 0
    disk_total: int = 0


class MetricsSampler:
    def __init__(
        self, running: RunningSandboxes, http: httpx.AsyncClient, busy: Callable[[str], bool]
    ) -> None:
        self._running = running
        self._http = http
        self._busy = busy  # being paused or snapshotted: its envd is letting go of connections
        self._samples: dict[str, collections.deque[SandboxMetric]] = {}
        self._gate = asyncio.Semaphore(AT_ONCE)

    async def sample_all(self) -> None:
        sandboxes = self._running.all()
        for gone in set(self._samples) - {s.sandbox_id for s in sandboxes}:
            del self._samples[gone]
        await asyncio.gather(
            *(self._sample(s.sandbox_id, s.address) for s in sandboxes if not self._busy(s.sandbox_id))
        )

    async def _sample(self, sandbox_id: str, address: str) -> None:
        token = self._running.access_token(sandbox_id)
        headers = {"X-Access-Token": token} if token else {}
        async with self._gate:
            try:
                answer = await self._http.get(
                    f"http://{address}:{ENVD_PORT}/metrics", headers=headers, timeout=REQUEST_TIMEOUT_S
                )
                answer.raise_for_status()
                raw = msgspec.json.decode(answer.content, type=_EnvdMetrics)
            except (httpx.HTTPError, msgspec.DecodeError) as exc:
                log.debug("metrics of %s: %s", sandbox_id, exc)  # paused, being killed, busy
                return
        if self._running.get(sandbox_id) is None:  # killed or paused meanwhile
            return
        sample = SandboxMetric(
            timestamp=time.time(),
            cpu_count=raw.cpu_count,
            cpu_used_pct=round(raw.cpu_used_pct, 2),
            mem_used=raw.mem_used,
            mem_total=raw.mem_total,
            mem_cache=raw.mem_cache,
            disk_used=raw.disk_used,
            disk_total=raw.disk_total,
        )
        self._samples.setdefault(sandbox_id, collections.deque(maxlen=KEPT)).append(sample)

    async def query(self, request: NodeMetricsRequest) -> NodeMetricsReply:
        end = request.end or time.time()
        found: dict[str, list[SandboxMetric]] = {}
        for sandbox_id in request.sandbox_ids:
            kept = self._samples.get(sandbox_id)
            if not kept:
                continue
            if request.latest:
                found[sandbox_id] = [kept[-1]]
            else:
                found[sandbox_id] = [m for m in kept if request.start <= m.timestamp <= end]
        return NodeMetricsReply(samples=found)
