"""What a new sandbox starts from (a template, or a snapshot image on one node), and the
snapshot ids that names give."""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral_libs.contracts.records import SNAPSHOT_DEFAULT_TAG, SnapshotRecord
from corral_libs.ids import new_sandbox_id

from .refused import Refused

# Snapshot names: `name`, `namespace/name`, either with `:tag`.
_SNAPSHOT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?(:[a-z0-9][a-z0-9._-]*)?")


def snapshot_name(name: str | None) -> str:
    """The snapshot id a requested name gives: the name with its tag (`default` if none);
    an unnamed snapshot gets a generated name."""
    if not name:
        return f"{new_sandbox_id()}:{SNAPSHOT_DEFAULT_TAG}"
    if len(name) > 128 or not _SNAPSHOT_NAME.fullmatch(name):
        raise Refused(
            400,
            f"invalid snapshot name '{name}': use lowercase letters, digits, '.', '_' and '-', "
            "optionally as namespace/name and with :tag",
        )
    return name if ":" in name else f"{name}:{SNAPSHOT_DEFAULT_TAG}"


@dataclass(frozen=True, slots=True)
class Source:
    """What a new sandbox starts from: a template, or a snapshot image on one node."""

    template_id: str
    alias: str | None
    cpu_count: int
    memory_mb: int
    disk_mb: int
    snapshot: SnapshotRecord | None = None
    snapshot_id: str | None = None  # recorded on the sandbox: persistent snapshots only

    @classmethod
    def of_snapshot(cls, snapshot: SnapshotRecord, persistent: bool = True) -> Source:
        return cls(
            template_id=snapshot.template_id,
            alias=snapshot.alias,
            cpu_count=snapshot.cpu_count,
            memory_mb=snapshot.memory_mb,
            disk_mb=snapshot.disk_mb,
            snapshot=snapshot,
            snapshot_id=snapshot.snapshot_id if persistent else None,
        )
