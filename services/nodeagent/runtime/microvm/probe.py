"""Which accelerator microVMs get: KVM when `/dev/kvm` answers the KVM API *and* a tiny
guest boots under it within a deadline, TCG (software emulation) otherwise.

The boot is what matters: a nested, paravirtual KVM (like these development machines')
opens and answers ioctls but cannot run a stock kernel (runtime notes). The answer is kept
per host kernel and guest, so only the first node agent start pays for the boot."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from .guest import Guest
from .qemu import QEMU

log = logging.getLogger(__name__)

KVM_DEVICE = Path("/dev/kvm")
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
PROBE_MARKER = b"CORRAL-PROBE-OK"
BOOT_DEADLINE_S = 15.0

BootCheck = Callable[[Guest, str, float], Awaitable[bool]]


def kvm_device_usable(device: Path = KVM_DEVICE) -> bool:
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def probe_argv(guest: Guest, accel: str) -> list[str]:
    """A guest that prints the marker from its initramfs and powers off."""
    return [
        QEMU,
        "-machine", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-m", "128M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(guest.kernel),
        "-initrd", str(guest.initramfs),
        "-append", "console=ttyS0 quiet panic=-1 corral.probe",
        "-serial", "stdio",
    ]  # fmt: skip


async def guest_boots(guest: Guest, accel: str, deadline_s: float) -> bool:
    process = await asyncio.create_subprocess_exec(
        *probe_argv(guest, accel),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None

    async def marker_seen() -> bool:
        assert process.stdout is not None
        async for line in process.stdout:
            if PROBE_MARKER in line:
                return True
        return False

    try:
        return await asyncio.wait_for(marker_seen(), deadline_s)
    except TimeoutError:
        return False
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def choose_accelerator(
    requested: str,
    guest: Callable[[], Awaitable[Guest]],
    cache_dir: Path,
    *,
    device: Path = KVM_DEVICE,
    boots: BootCheck = guest_boots,
    deadline_s: float = BOOT_DEADLINE_S,
) -> str:
    """`requested` if it is "kvm" or "tcg"; for "auto", what the probe finds."""
    if requested in ("kvm", "tcg"):
        return requested
    if requested != "auto":
        raise ValueError(f"unknown accelerator {requested!r} (kvm, tcg or auto)")
    if not await asyncio.to_thread(kvm_device_usable, device):
        return "tcg"
    the_guest = await guest()
    cache = cache_dir / f"probe-{os.uname().release}-{the_guest.kernel.parent.name}.json"
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads(await asyncio.to_thread(cache.read_text))["accel"])
    accel = "kvm" if await boots(the_guest, "kvm", deadline_s) else "tcg"
    log.info("microVM accelerator: %s (%s answers; a guest %s under KVM)", accel, device,
             "booted" if accel == "kvm" else "did not boot")  # fmt: skip
    with contextlib.suppress(OSError):
        await asyncio.to_thread(cache.write_text, json.dumps({"accel": accel}))
    return accel
