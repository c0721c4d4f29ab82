"""The node-local template store: `<data_dir>/templates/<id>/{rootfs,template.json}`."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import msgspec

from ..runtime.base import RUNTIME_NAMES, SandboxSpec

OLD_PREFIX = ".old-"


class TemplateManifest(msgspec.Struct, frozen=True):
    template_id: str
    aliases: list[str]
    build_id: str
    envd_version: str
    cpu_count: int
    memory_mb: int
    disk_mb: int
    user: str
    init: list[str]
    built_at: float
    source_hash: str = ""
    # Ports of the template's services besides envd (the code interpreter's): a sandbox is
    # ready when each answers /health, and each lets go of its sockets before a checkpoint.
    services: list[int] = []
    runtimes: list[str] = msgspec.field(default_factory=lambda: list(RUNTIME_NAMES))
    # Templates built through the API: who built it and under which names; the working
    # directory and environment of its last WORKDIR and ENV steps (envd's defaults in every
    # sandbox); its start command (in `init`) and the command that says the start is done.
    owner: str = ""
    names: list[str] = []
    workdir: str | None = None
    env_vars: dict[str, str] = {}
    start_cmd: str | None = None
    ready_cmd: str | None = None
    # What runs envd and the template's services, without the start command.
    base_init: list[str] = []

    @property
    def services_init(self) -> list[str]:
        return self.base_init or self.init

    def to_dict(self) -> dict[str, object]:
        return msgspec.to_builtins(self)


class TemplateStore:
    """The templates under `root`; with `runtime`, only those that runtime may run."""

    def __init__(self, root: Path, runtime: str | None = None) -> None:
        self.root = root
        self._runtime = runtime

    def sandbox_spec(
        self,
        manifest: TemplateManifest,
        sandbox_id: str,
        slot: int,
        build_dir: Path | None = None,
        volumes: list[tuple[Path, str]] | None = None,
    ) -> SandboxSpec:
        """What the runtime needs to start (or restore) a sandbox of this template; an
        older build's sandboxes (restored from their images) name that build's directory."""
        return SandboxSpec(
            sandbox_id=sandbox_id,
            template_id=manifest.template_id,
            build_id=manifest.build_id,
            rootfs=(build_dir or self.root / manifest.template_id) / "rootfs",
            init=manifest.init,
            cpu_count=manifest.cpu_count,
            memory_mb=manifest.memory_mb,
            slot=slot,
            disk_mb=manifest.disk_mb,
            volumes=tuple((str(host), path) for host, path in volumes or ()),
        )

    def get(self, template_id: str) -> TemplateManifest | None:
        manifest = self._read(self.root / template_id)
        if manifest is None or (self._runtime and self._runtime not in manifest.runtimes):
            return None
        return manifest

    @staticmethod
    def _read(build_dir: Path) -> TemplateManifest | None:
        path = build_dir / "template.json"
        try:
            return msgspec.convert(json.loads(path.read_text()), TemplateManifest)
        except (OSError, ValueError, msgspec.ValidationError):
            return None

    def find_build(self, template_id: str, build_id: str) -> tuple[TemplateManifest, Path] | None:
        """The manifest and directory of one build: the current one or one moved aside."""
        current = self.get(template_id)
        if current is not None and current.build_id == build_id:
            return current, self.root / template_id
        for entry in self.root.glob(f"{OLD_PREFIX}{template_id}-*"):
            manifest = self._read(entry)
            if manifest is not None and manifest.build_id == build_id:
                return manifest, entry
        return None

    def list(self) -> list[TemplateManifest]:
        if not self.root.is_dir():
            return []
        found = (self.get(entry.name) for entry in self.root.iterdir() if not entry.name.startswith("."))
        return sorted((m for m in found if m is not None), key=lambda m: m.template_id)

    def install(self, template_id: str, built: Path) -> None:
        """Swaps a finished build in for the template. The old build is moved aside, not
        deleted: running sandboxes still use it (see `collect_old_builds`)."""
        target = self.root / template_id
        if target.exists():
            os.rename(target, self.root / f"{OLD_PREFIX}{template_id}-{time.time_ns()}")
        os.rename(built, target)

    def retire(self, template_id: str) -> bool:
        """Takes the template out of the store; its build is put aside as a replaced one
        (`collect_old_builds` deletes it once nothing needs it). False if it was not here."""
        target = self.root / template_id
        if not target.is_dir():
            return False
        os.rename(target, self.root / f"{OLD_PREFIX}{template_id}-{time.time_ns()}")
        return True

    def roll_back(self, template_id: str, build_id: str) -> None:
        """Takes out build `build_id` (installed, then found not to work) and puts the build
        it replaced back."""
        current = self.get(template_id)
        if current is None or current.build_id != build_id:
            return
        shutil.rmtree(self.root / template_id, ignore_errors=True)
        replaced = sorted(self.root.glob(f"{OLD_PREFIX}{template_id}-*"), key=lambda p: p.name)
        if replaced:
            os.rename(replaced[-1], self.root / template_id)

    def collect_old_builds(self, older_than_s: float, in_use: set[str]) -> None:
        """Deletes replaced builds once no sandbox can still be running on them and no
        image (a paused sandbox, a snapshot) needs them (`in_use`: their build ids)."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - older_than_s
        for entry in self.root.iterdir():
            if not entry.name.startswith(OLD_PREFIX) or entry.stat().st_mtime >= cutoff:
                continue
            manifest = self._read(entry)
            if manifest is None or manifest.build_id not in in_use:
                shutil.rmtree(entry, ignore_errors=True)


def is_current(manifest: TemplateManifest | None, fingerprint: str) -> bool:
    return manifest is not None and manifest.source_hash == fingerprint
