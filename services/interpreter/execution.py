"""One `POST /execute`: the code runs in its context's kernel and every Jupyter message it
causes becomes one NDJSON line, sent as it arrives (output never piles up here).

The context's lock is held from the start until the kernel is idle again. A client that
leaves mid-way (its timeout, or it gave up) gets the kernel interrupted; a kernel that dies
is reported as an error, and the next execution finds it restarted.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec

from .contexts import Context, Contexts
from .results import result_line

log = logging.getLogger(__name__)

# While the kernel is silent: a liveness check this often, a keepalive line every few.
POLL_S = 1.0
KEEPALIVE_EVERY = 5
# How long an interrupted execution may take to stop before its kernel is restarted.
INTERRUPT_GRACE_S = 10.0
SETUP_TIMEOUT_S = 30.0

_encoder = msgspec.json.Encoder()
SandboxEnv = Callable[[], Awaitable[dict[str, str]]]


def encode(line: dict[str, Any]) -> bytes:
    return _encoder.encode(line) + b"\n"


class Execution:
    def __init__(
        self,
        contexts: Contexts,
        context: Context,
        code: str,
        env_vars: dict[str, str],
        sandbox_env: SandboxEnv,
    ) -> None:
        self._contexts = contexts
        self._context = context
        self._code = code
        self._env_vars = env_vars
        self._sandbox_env = sandbox_env
        self._msg_id: str | None = None
        self._sandbox_values: dict[str, str] = {}

    async def lines(self) -> AsyncIterator[bytes]:
        context = self._context
        await context.lock.acquire()
        done = False
        try:
            try:
                await self._prepare()
            except Exception as exc:  # the kernel would not restart, set-up code hung...
                log.exception("preparing an execution in context %s failed", context.id)
                failure = {"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": ""}
                yield encode(failure)
                yield encode({"type": "end_of_execution"})
                done = True
                return
            async for line in self._run():
                yield encode(line)
            done = True
        finally:
            # The lock goes back only once the kernel is idle and per-run env vars are undone,
            # in a task of its own: this generator may be closing because it was cancelled.
            asyncio.get_running_loop().create_task(self._finish(interrupt=not done))

    async def _prepare(self) -> None:
        context = self._context
        if not await context.manager.is_alive():
            log.warning("kernel of context %s died: restarting it", context.id)
            await self._contexts.restart(context)
        snippets = context.language.snippets
        if not context.sandbox_env_applied:
            self._sandbox_values = await self._sandbox_env()
            if self._sandbox_values:
                await self._silent(snippets.set_env(self._sandbox_values))
            context.sandbox_env_applied = True
        if self._env_vars:
            await self._silent(snippets.set_env(self._env_vars))

    async def _silent(self, code: str) -> None:
        """Runs set-up code that prints nothing and is not counted, and waits for its reply."""
        client = self._context.client
        msg_id = client.execute(code, silent=True, store_history=False)
        await self._reply(msg_id, SETUP_TIMEOUT_S)
        await self._idle(msg_id, SETUP_TIMEOUT_S)

    async def _idle(self, msg_id: str, timeout_s: float) -> None:
        """Waits for the kernel to say it is idle after `msg_id`: Deno's kernel drops the
        output of the next request if it arrives before then."""

        def idle(msg: dict[str, Any]) -> bool:
            return msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"

        client = self._context.client
        await _wait_for(client.get_iopub_msg, msg_id, idle, timeout_s, "the kernel did not become idle")

    async def _reply(self, msg_id: str, timeout_s: float) -> dict[str, Any]:
        client = self._context.client
        return await _wait_for(
            client.get_shell_msg, msg_id, lambda _: True, timeout_s, "no reply from the kernel"
        )

    async def _run(self) -> AsyncIterator[dict[str, Any]]:
        context = self._context
        self._msg_id = context.client.execute(self._code, store_history=True, allow_stdin=False)
        silent_polls = 0
        flush_id: str | None = None
        while True:
            try:
                msg = await context.client.get_iopub_msg(timeout=POLL_S)
            except queue.Empty:
                if not await context.manager.is_alive():
                    yield _kernel_died()
                    yield {"type": "end_of_execution"}
                    return
                silent_polls += 1
                if silent_polls % KEEPALIVE_EVERY == 0:
                    yield {"type": "keepalive"}
                continue
            silent_polls = 0
            parent = msg["parent_header"].get("msg_id")
            kind, content = msg["msg_type"], msg["content"]
            idle = kind == "status" and content.get("execution_state") == "idle"
            if flush_id is not None and parent == flush_id and idle:
                yield {"type": "end_of_execution"}
                return
            if parent != self._msg_id:
                continue
            if idle:
                if not context.language.late_results:
                    yield {"type": "end_of_execution"}
                    return
                # Deno's kernel may publish a result after saying it is idle, but always
                # before it handles the next request: an empty one flushes it.
                flush_id = context.client.execute("", silent=True, store_history=False)
                continue
            line = _line(kind, content, msg["header"].get("date"))
            if line is not None:
                yield line

    async def _finish(self, *, interrupt: bool) -> None:
        context = self._context
        try:
            if self._msg_id is not None:
                if interrupt:
                    await self._stop()
                else:
                    await self._reply(self._msg_id, SETUP_TIMEOUT_S)
            if self._env_vars and await context.manager.is_alive():
                await self._restore_env()
        except Exception:
            log.exception("finishing an execution in context %s", context.id)
        finally:
            context.lock.release()

    async def _stop(self) -> None:
        """Interrupts the kernel and waits for this execution to end; a kernel that does not
        stop in time is restarted."""
        context = self._context
        log.info("interrupting context %s: its client left", context.id)
        await context.manager.interrupt_kernel()
        try:
            await self._reply(self._msg_id or "", INTERRUPT_GRACE_S)
        except (TimeoutError, queue.Empty):
            log.warning("context %s did not stop when interrupted: restarting it", context.id)
            await self._contexts.restart(context)

    async def _restore_env(self) -> None:
        snippets = self._context.language.snippets
        sandbox = await self._sandbox_env() if not self._sandbox_values else self._sandbox_values
        back = {name: sandbox[name] for name in self._env_vars if name in sandbox}
        gone = [name for name in self._env_vars if name not in sandbox]
        if back:
            await self._silent(snippets.set_env(back))
        if gone:
            await self._silent(snippets.unset_env(gone))


async def _wait_for(
    receive: Callable[..., Awaitable[dict[str, Any]]],
    msg_id: str,
    matches: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    failure: str,
) -> dict[str, Any]:
    """The first message on a channel that answers `msg_id` and `matches`."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{failure} within {timeout_s:.0f}s")
        msg = await receive(timeout=remaining)
        if msg["parent_header"].get("msg_id") == msg_id and matches(msg):
            return msg


def _timestamp(date: Any) -> str | None:
    return date.isoformat() if isinstance(date, datetime) else date


def _line(kind: str, content: dict[str, Any], date: Any) -> dict[str, Any] | None:
    if kind == "execute_input":
        return {"type": "number_of_executions", "execution_count": content["execution_count"]}
    if kind == "stream":
        name = content.get("name")
        if name in ("stdout", "stderr"):
            return {"type": name, "text": content["text"], "timestamp": _timestamp(date)}
        return None
    if kind in ("display_data", "execute_result"):
        return result_line(content.get("data", {}), is_main_result=kind == "execute_result")
    if kind == "error":
        return {
            "type": "error",
            "name": content.get("ename", ""),
            "value": content.get("evalue", ""),
            "traceback": "\n".join(content.get("traceback", [])),
        }
    return None


def _kernel_died() -> dict[str, Any]:
    return {
        "type": "error",
        "name": "DeadKernelError",
        "value": "The kernel died while running the code; it is restarted for the next run.",
        "traceback": "",
    }
