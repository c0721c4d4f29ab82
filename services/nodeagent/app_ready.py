"""A template's ready command (E2B's `readyCmd`: `wait_for_port`, `wait_for_url`, …): run
in a booted sandbox of it until it succeeds, before the sandbox is snapshotted or handed out."""

from __future__ import annotations

import asyncio
import time

from .runtime.base import Runtime
from .templates.store import TemplateManifest

START_LOG = "/var/log/corral-start.log"
# Each try of the ready command, and the pause between tries.
TRY_TIMEOUT_S = 10.0
RETRY_S = 0.2


class AppNotReady(RuntimeError):
    pass


async def wait_app_ready(
    runtime: Runtime, sandbox_id: str, manifest: TemplateManifest, timeout_s: float
) -> None:
    if not manifest.ready_cmd:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        code, output = await runtime.exec(sandbox_id, ["/bin/sh", "-c", manifest.ready_cmd], TRY_TIMEOUT_S)
        if code == 0:
            return
        if time.monotonic() >= deadline:
            _, started = await runtime.exec(sandbox_id, ["tail", "-n", "20", START_LOG], TRY_TIMEOUT_S)
            raise AppNotReady(
                f"the ready command `{manifest.ready_cmd}` did not succeed within {timeout_s:.0f}s "
                f"(last exit status {code}: {output.strip()[-500:]}); "
                f"the start command's output:\n{started.strip()}"
            )
        await asyncio.sleep(RETRY_S)
