"""The runtime interface the node agent drives: gVisor (runtime/gvisor.py) or microVMs
(runtime/microvm/)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    sandbox_id: str
    template_id: str
    build_id: str
    rootfs: Path
    init: list[str]
    cpu_count: int
    memory_mb: int
    slot: int
    disk_mb: int = 2048
    # Host directories bind-mounted into the sandbox: (host path, sandbox path).
    volumes: tuple[tuple[str, str], ...] = ()


RUNTIME_NAMES = ("gvisor", "microvm")

# The file every runtime's checkpoint image has once it is whole; a filesystem-only image
# (no memory, no processes) has this one instead.
CHECKPOINT_FILE = "checkpoint.img"
FILES_CHECKPOINT_FILE = "fscheckpoint.json"


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    sandbox_id: str
    address: str  # where the node reaches the sandbox's ports
    slot: int
    template_id: str
    build_id: str  # the template build its root filesystem is


@dataclass(frozen=True, slots=True)
class SandboxStats:
    memory_bytes: int
    cpu_seconds: float


class RestartFailed(RuntimeError):
    """A snapshot was saved but its sandbox did not start again: it is stopped, and its
    image is good."""


class Runtime(Protocol):
    name: str
    # Whether envd and the template's services must let go of their sockets before a
    # checkpoint (`/snapshot/prepare`) and be woken after a restore.
    releases_sockets: bool
    # Changes whenever what a template snapshot holds would no longer restore (a new OCI
    # spec, another accelerator or VM device set): template snapshots are taken again.
    image_format: str
    # Whether `SandboxSpec.volumes` are mounted (else a create with volumes is refused).
    supports_volumes: bool
    # Whether a sandbox that mounts volumes can be paused and snapshotted.
    saves_volumes: bool
    # Whether `checkpoint_files` works (filesystem-only pauses and snapshots).
    saves_files_only: bool
    # What runs sandboxes, for people (heart-beats, `corral up`): e.g. "runsc 0.0~20240729.0 (ptrace)".
    version: str

    async def create(self, spec: SandboxSpec, files_from: Path | None = None) -> RunningSandbox:
        """Boots the sandbox (with `files_from`: on the files of a filesystem-only image);
        on failure nothing of it is left behind."""
        ...

    async def checkpoint_files(self, sandbox_id: str, image_dir: Path, *, keep_running: bool) -> None:
        """Saves only the sandbox's files into `image_dir` (`saves_files_only`); the sandbox
        stops unless `keep_running`."""
        ...

    async def snapshot_template(
        self, spec: SandboxSpec, image_dir: Path, until_ready: Callable[[RunningSandbox], Awaitable[None]]
    ) -> None:
        """Boots the template, waits for `until_ready`, and saves it into `image_dir` as the
        image its sandboxes are restored from; nothing of the booted sandbox is left."""
        ...

    async def checkpoint(self, sandbox_id: str, image_dir: Path) -> None:
        """Saves memory, processes and files into `image_dir`; the sandbox stops."""
        ...

    async def snapshot(self, sandbox_id: str, image_dir: Path) -> None:
        """Saves as `checkpoint` does, and the sandbox goes on running (after the briefest
        stop); `RestartFailed` when it was saved but could not go on."""
        ...

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> RunningSandbox:
        """Starts a new sandbox from a checkpoint (as `create`, nothing left on failure)."""
        ...

    async def settle(self, timeout_s: float) -> None:
        """Waits for checkpoints and restores that a previous node agent started and left
        running (it was killed): what they leave is what a restarted agent reconciles."""
        ...

    async def wake_envd(self, sandbox_id: str) -> None:
        """Makes envd listen again after it let go of its sockets for a snapshot."""
        ...

    async def stop(self, sandbox_id: str) -> None:
        """Its processes die now (nothing answers from it any more); `kill` removes the rest."""
        ...

    async def kill(self, sandbox_id: str) -> bool:
        """Stops it and removes everything it had; False if it did not exist."""
        ...

    async def list(self) -> list[RunningSandbox]:
        """The sandboxes this runtime has on the host (after a restart too)."""
        ...

    async def leftovers(self) -> list[str]:
        """Sandbox ids that left traces on the host but do not run (a crash mid-create)."""
        ...

    async def stats(self, sandbox_id: str) -> SandboxStats | None: ...

    async def exec(self, sandbox_id: str, argv: list[str], timeout_s: float) -> tuple[int, str]:
        """Runs `argv` as root in the running sandbox: its exit status and output. (The
        node's own checks, such as a template's ready command; users go through envd.)"""
        ...

    async def logs(self, sandbox_id: str, limit: int) -> list[str]: ...
