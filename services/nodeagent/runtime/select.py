"""The node's runtime, from its settings: gVisor, microVMs, or (`auto`) microVMs where
KVM really works and gVisor elsewhere."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..settings import NodeSettings
from .base import Runtime
from .gvisor import GVisorRuntime, Runsc
from .microvm.guest import Guest, ensure_guest
from .microvm.probe import choose_accelerator
from .microvm.runtime import MicroVMRuntime

log = logging.getLogger(__name__)

RUNTIMES = ("gvisor", "microvm", "auto")
# A template boots under software emulation in one to several minutes, not seconds.
TCG_READY_TIMEOUT_S = 600.0


async def choose_runtime(settings: NodeSettings, template_dir: Path) -> Runtime:
    """The runtime for `settings`; under TCG it also gives envd longer to first answer."""
    if settings.runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {settings.runtime!r} (one of {', '.join(RUNTIMES)})")
    data_dir = Path(settings.data_dir)
    if settings.runtime == "gvisor":
        return await _gvisor(settings)
    guest_dir = template_dir / ".microvm-guest"
    made: list[Guest] = []

    async def guest() -> Guest:
        """Made only if the probe needs it; the runtime then starts with it."""
        if not made:
            made.append(await asyncio.to_thread(ensure_guest, guest_dir))
        return made[0]

    requested = settings.microvm_accel
    if settings.runtime == "auto" and requested == "tcg":
        requested = "auto"  # auto means: microVMs only with KVM
    accel = await choose_accelerator(requested, guest, guest_dir)
    if settings.runtime == "auto" and accel != "kvm":
        log.info("no usable KVM: sandboxes run on gVisor")
        return await _gvisor(settings)
    if accel == "tcg":
        settings.envd_ready_timeout_s = max(settings.envd_ready_timeout_s, TCG_READY_TIMEOUT_S)
    return MicroVMRuntime(data_dir, guest_dir, accel=accel, guest=made[0] if made else None)


async def _gvisor(settings: NodeSettings) -> GVisorRuntime:
    runsc = await asyncio.to_thread(Runsc.probe)
    log.info("gVisor: runsc %s, %s platform", runsc.version, settings.gvisor_platform)
    return GVisorRuntime(Path(settings.data_dir), platform=settings.gvisor_platform, runsc=runsc)
