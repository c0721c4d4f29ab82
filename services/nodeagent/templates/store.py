"""The node-local template store: `<data_dir>/templates/<id>/{rootfs,template.json}`."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import msgspec

from ..runtime.base import SandboxSpec

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

    def to_dict(self) -> dict[str, object]:
        return msgspec.to_builtins(self)


class TemplateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def rootfs(self, template_id: str) -> Path:
        return self.root / template_id / "rootfs"

    def sandbox_spec(self, manifest: TemplateManifest, sandbox_id: str, slot: int) -> SandboxSpec:
        """What the runtime needs to start (or restore) a sandbox of this template."""
        return SandboxSpec(
            sandbox_id=sandbox_id,
            template_id=manifest.template_id,
            rootfs=self.rootfs(manifest.template_id),
            init=manifest.init,
            cpu_count=manifest.cpu_count,
            memory_mb=manifest.memory_mb,
            slot=slot,
        )

    def get(self, template_id: str) -> TemplateManifest | None:
        path = self.root / template_id / "template.json"
        try:
            return msgspec.convert(json.loads(path.read_text()), TemplateManifest)
        except (OSError, ValueError, msgspec.ValidationError):
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

    def collect_old_builds(self, older_than_s: float) -> None:
        """Deletes replaced builds once no sandbox can still be running on them."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - older_than_s
        for entry in self.root.iterdir():
            if entry.name.startswith(OLD_PREFIX) and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)


def is_current(manifest: TemplateManifest | None, fingerprint: str) -> bool:
    return manifest is not None and manifest.source_hash == fingerprint
