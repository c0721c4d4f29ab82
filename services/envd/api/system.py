"""`/health`, `/init`, `/envs` and `/metrics`."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..auth import UNAUTHORIZED_MESSAGE, token_matches
from ..errors import error_response
from ..state import EnvdState
from ..users import UnknownUserError, lookup_user

log = logging.getLogger(__name__)


class InitRequest(msgspec.Struct, rename="camel", omit_defaults=True):
    env_vars: dict[str, str] | None = None
    access_token: str | None = None
    timestamp: datetime | None = None
    default_user: str | None = None
    default_workdir: str | None = None


class SystemEndpoints:
    """`/health`, `/init`, `/envs` and `/metrics` over one EnvdState."""

    def __init__(
        self,
        state: EnvdState,
        *,
        sync_clock: bool,
        prepare_snapshot: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._state = state
        self._sync_clock = sync_clock
        self._prepare_snapshot = prepare_snapshot
        self._cpu = _CpuSampler()

    async def health(self, request: Request) -> Response:
        return Response(status_code=204)

    async def init(self, request: Request) -> Response:
        current = self._state.identity.access_token
        if current is not None and not token_matches(current, request.headers.get("x-access-token")):
            return error_response(401, UNAUTHORIZED_MESSAGE)
        try:
            payload = msgspec.json.decode(await request.body() or b"{}", type=InitRequest)
        except msgspec.DecodeError as exc:
            return error_response(400, f"invalid init request: {exc}")
        if payload.default_user is not None:
            try:
                lookup_user(payload.default_user)
            except UnknownUserError as exc:
                return error_response(400, str(exc))
        changes: dict[str, object] = {}
        if payload.env_vars is not None:
            changes["env_vars"] = dict(payload.env_vars)
        if payload.access_token is not None:
            changes["access_token"] = payload.access_token or None
        if payload.default_user is not None:
            changes["default_user"] = payload.default_user
        if payload.default_workdir is not None:
            changes["default_workdir"] = payload.default_workdir or None
        self._state.apply(**changes)
        if self._sync_clock:
            if payload.timestamp is not None:
                await asyncio.to_thread(_set_clock, payload.timestamp)
            await asyncio.to_thread(_reseed_random, (payload.access_token or "").encode())
        return Response(status_code=204)

    async def prepare_snapshot(self, request: Request) -> Response:
        """Orchestrator-only: answers, then lets go of every socket (see listener.py). The
        node checkpoints next and sends SIGUSR1 after the restore."""
        if self._prepare_snapshot is None:
            return error_response(501, "this envd cannot prepare for snapshots")
        return Response(status_code=204, background=BackgroundTask(self._prepare_snapshot))

    async def envs(self, request: Request) -> Response:
        return JSONResponse(self._state.identity.env_vars)

    async def metrics(self, request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(_collect_metrics, self._cpu))


def _set_clock(timestamp: datetime) -> None:
    """A restored snapshot wakes with the clock it was frozen with; the orchestrator's
    timestamp puts it right (only when off by more than a second)."""
    wanted = timestamp.timestamp()
    if abs(time.time() - wanted) <= 1:
        return
    try:
        time.clock_settime(time.CLOCK_REALTIME, wanted)
    except OSError as exc:
        log.warning("cannot set the clock: %s", exc)


RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
HOST_RNG = "/dev/hwrng"  # virtio-rng in a microVM: the host's randomness


def _reseed_random(secret: bytes) -> None:
    """Clones of one VM snapshot wake with the same kernel random state and would draw the
    same numbers: mix in fresh host randomness and this sandbox's own token, then make the
    kernel reseed at once rather than at its next periodic reseed."""
    material = secret + time.time_ns().to_bytes(8, "little")
    with contextlib.suppress(OSError), open(HOST_RNG, "rb", buffering=0) as hwrng:
        material += hwrng.read(32)
    try:
        with open("/dev/urandom", "wb", buffering=0) as pool:
            pool.write(material)
            fcntl.ioctl(pool.fileno(), RNDRESEEDCRNG)
    except OSError as exc:
        log.warning("cannot reseed the kernel's random numbers: %s", exc)


class _CpuSampler:
    """CPU use since the previous sample (since boot for the first one)."""

    def __init__(self) -> None:
        self._last = (0, 0)

    def sample(self) -> float:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        total = sum(fields)
        last_total, last_idle = self._last
        self._last = (total, idle)
        spent = total - last_total
        return 0.0 if spent <= 0 else round(100 * (1 - (idle - last_idle) / spent), 2)


def _meminfo() -> dict[str, int]:
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            values[name] = int(rest.split()[0]) * 1024
    return values


def _collect_metrics(cpu: _CpuSampler) -> dict[str, object]:
    mem = _meminfo()
    total = mem.get("MemTotal", 0)
    available = mem.get("MemAvailable", mem.get("MemFree", 0))
    cache = mem.get("Cached", 0) + mem.get("Buffers", 0)
    disk = os.statvfs("/")
    return {
        "ts": int(time.time()),
        "cpu_count": os.cpu_count() or 1,
        "cpu_used_pct": cpu.sample(),
        "mem_total": total,
        "mem_used": total - available,
        "mem_cache": cache,
        "mem_total_mib": total // (1 << 20),
        "mem_used_mib": (total - available) // (1 << 20),
        "disk_used": (disk.f_blocks - disk.f_bfree) * disk.f_frsize,
        "disk_total": disk.f_blocks * disk.f_frsize,
    }
