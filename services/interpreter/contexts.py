"""Contexts: one Jupyter kernel each (the context id is the kernel id), with its language,
working directory and the lock that lets one execution at a time talk to it.

Kernels that can talk over ZeroMQ `ipc` (Unix sockets) do (see languages.py): nothing else
in the sandbox can reach them there.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from .languages import LANGUAGES, Language

log = logging.getLogger(__name__)

KERNEL_READY_TIMEOUT_S = 60.0


@dataclass
class Context:
    language: Language
    cwd: str
    manager: AsyncKernelManager
    client: AsyncKernelClient
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The sandbox's env vars are set in the kernel before its first execution.
    sandbox_env_applied: bool = False

    @property
    def id(self) -> str:
        assert self.manager.kernel_id is not None
        return self.manager.kernel_id

    def describe(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language.name, "cwd": self.cwd}


def _kernel_specs(directory: Path) -> KernelSpecManager:
    for language in LANGUAGES.values():
        spec_dir = directory / language.kernel
        spec_dir.mkdir(parents=True, exist_ok=True)
        (spec_dir / "kernel.json").write_text(json.dumps(language.kernel_spec()))
    return KernelSpecManager(kernel_dirs=[str(directory)])


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the kernel's process before it execs: killed when the interpreter goes.
    ipykernel's kernels watch their parent themselves; Deno's and R's do not, and would
    outlive an interpreter that died (and was started again) by the dozen."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class BadWorkingDirectory(ValueError):
    pass


def _check_cwd(cwd: str) -> None:
    if not os.path.isabs(cwd):
        raise BadWorkingDirectory(f"cwd '{cwd}' is not an absolute path")
    if not os.path.exists(cwd):
        raise BadWorkingDirectory(f"cwd '{cwd}' does not exist")
    if not os.path.isdir(cwd):
        raise BadWorkingDirectory(f"cwd '{cwd}' is not a directory")
    if not os.access(cwd, os.X_OK):
        raise BadWorkingDirectory(f"cwd '{cwd}' cannot be entered (permission denied)")


class UnknownContext(LookupError):
    pass


class Contexts:
    def __init__(self, runtime_dir: Path | None = None) -> None:
        self._runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix="corral-kernels-"))
        self._specs = _kernel_specs(self._runtime_dir / "kernelspecs")
        self._by_id: dict[str, Context] = {}
        self._defaults: dict[str, str] = {}  # language -> its default context's id
        self._default_locks: dict[str, asyncio.Lock] = {}
        # Default contexts started ahead of their first use (warm in a template's snapshot),
        # listed only once used: E2B lists a language's default context from its first run.
        self._unlisted: set[str] = set()

    def list(self) -> list[Context]:
        return [context for context in self._by_id.values() if context.id not in self._unlisted]

    def get(self, context_id: str) -> Context:
        context = self._by_id.get(context_id)
        if context is None:
            raise UnknownContext(context_id)
        return context

    async def create(self, language: Language, cwd: str) -> Context:
        """Starts a kernel in `cwd`; BadWorkingDirectory if it cannot run there."""
        await asyncio.to_thread(_check_cwd, cwd)
        manager = AsyncKernelManager(
            kernel_name=language.kernel, kernel_spec_manager=self._specs, transport=language.transport
        )
        if language.transport == "ipc":
            manager.ip = str(self._runtime_dir / f"kernel-{os.urandom(6).hex()}")
        env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1", **language.env}
        await manager.start_kernel(cwd=cwd, env=env, preexec_fn=_die_with_parent)
        client = manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=KERNEL_READY_TIMEOUT_S)
        except BaseException:
            client.stop_channels()
            await manager.shutdown_kernel(now=True)
            raise
        context = Context(language=language, cwd=cwd, manager=manager, client=client)
        self._by_id[context.id] = context
        log.info("context %s (%s) started in %s", context.id, language.name, cwd)
        return context

    async def default(self, language: Language, cwd: str, *, listed: bool = True) -> Context:
        """The language's shared context, started on first use (or ahead of it, unlisted)."""
        async with self._default_locks.setdefault(language.name, asyncio.Lock()):
            context_id = self._defaults.get(language.name)
            if context_id in self._by_id:
                if listed:
                    self._unlisted.discard(context_id)
                return self._by_id[context_id]
            context = await self.create(language, cwd)
            self._defaults[language.name] = context.id
            if not listed:
                self._unlisted.add(context.id)
            return context

    async def restart(self, context: Context) -> None:
        """A fresh kernel under the same id: every variable is gone."""
        await context.manager.restart_kernel(now=True)
        context.client.stop_channels()
        context.client = context.manager.client()
        context.client.start_channels()
        await context.client.wait_for_ready(timeout=KERNEL_READY_TIMEOUT_S)
        context.sandbox_env_applied = False

    async def delete(self, context: Context) -> None:
        self._by_id.pop(context.id, None)
        self._unlisted.discard(context.id)
        context.client.stop_channels()
        await context.manager.shutdown_kernel(now=True)

    async def shutdown(self) -> None:
        for context in self.list():
            await self.delete(context)
