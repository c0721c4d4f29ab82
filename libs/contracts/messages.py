"""Messages on the bus. Every reply carries `error` when the request failed; `status` is
the HTTP status the API answers with. (A handler that fails outright is answered with only
`error` set, which decodes as any reply type: `Bus.serve`.)"""

from __future__ import annotations

import msgspec

from .records import EgressPolicy, SandboxRecord, SnapshotRecord, VolumeMount, VolumeRecord


class Failure(msgspec.Struct, kw_only=True):
    status: int
    message: str
    trace_id: str | None = None  # the trace of the request that failed, to find it in the logs


class PlaceRequest(msgspec.Struct, kw_only=True):
    template_id: str
    owner: str
    owner_limit: int
    timeout_s: int
    metadata: dict[str, str] = {}
    env_vars: dict[str, str] = {}
    secure: bool = True
    allow_public_traffic: bool = True
    mask_request_host: str | None = None
    # None: the source's (a snapshot's policy, else the default: internet allowed).
    egress: EgressPolicy | None = None
    auto_pause: bool = False
    auto_pause_memory: bool = True
    auto_resume: bool = False
    volume_mounts: list[VolumeMount] = []  # resolved by the API from the owner's volume names


class SandboxReply(msgspec.Struct, kw_only=True):
    sandbox: SandboxRecord | None = None
    error: Failure | None = None


class KillRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    reason: str = "killed"


class KillReply(msgspec.Struct, kw_only=True):
    killed: bool = False
    error: Failure | None = None


class TimeoutRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    timeout_s: int
    # connect: only ever extend; set_timeout: set exactly (may shorten).
    extend_only: bool = False


class NodeCreateRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    template_id: str
    env_vars: dict[str, str] = {}
    envd_access_token: str | None = None
    cpu_count: int
    memory_mb: int
    egress: EgressPolicy = EgressPolicy()
    # Restore this node's snapshot image instead of a template clone; its envd holds the
    # token it was taken with.
    snapshot_image_id: str = ""
    snapshot_access_token: str | None = None
    volume_mounts: list[VolumeMount] = []


class NodeCreateReply(msgspec.Struct, kw_only=True):
    # The node may answer with a sandbox it had ready (a warm clone) under that one's id.
    sandbox_id: str = ""
    host: str = ""
    envd_version: str = ""
    error: Failure | None = None


class NodeKillRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str


class NodeListRequest(msgspec.Struct, kw_only=True):
    pass


class NodeListReply(msgspec.Struct, kw_only=True):
    sandbox_ids: list[str] = []


class NodeLogsRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    limit: int = 1000


class LogEntry(msgspec.Struct, kw_only=True, frozen=True):
    """One record of a sandbox's log (envd's console output, read by its node)."""

    timestamp: float  # unix seconds
    level: str  # debug, info, warn or error
    logger: str
    message: str


class NodeLogsReply(msgspec.Struct, kw_only=True):
    entries: list[LogEntry] = []  # oldest first
    error: Failure | None = None


class SandboxGone(msgspec.Struct, kw_only=True):
    sandbox_id: str
    reason: str


class SandboxPaused(msgspec.Struct, kw_only=True):
    sandbox_id: str


class PauseRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    memory: bool = True  # False: keep the files only; the resume boots fresh on them


class ResumeRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    timeout_s: int  # 0: the timeout the sandbox was created with


class NodePauseRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    envd_access_token: str | None = None
    memory: bool = True


class NodePauseReply(msgspec.Struct, kw_only=True):
    paused: bool = False
    error: Failure | None = None


class NodeResumeRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    template_id: str
    env_vars: dict[str, str] = {}
    envd_access_token: str | None = None
    egress: EgressPolicy = EgressPolicy()
    volume_mounts: list[VolumeMount] = []  # what it mounted when paused: a restore needs the same


class SandboxMetric(msgspec.Struct, kw_only=True, frozen=True):
    """One sample of a sandbox's use, as its envd sees it (E2B's SandboxMetric)."""

    timestamp: float  # unix seconds
    cpu_count: int
    cpu_used_pct: float
    mem_used: int  # bytes
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int


class NodeMetricsRequest(msgspec.Struct, kw_only=True):
    sandbox_ids: list[str]
    start: float = 0.0  # unix seconds; 0: from the first sample kept
    end: float = 0.0  # 0: until now
    latest: bool = False  # only the newest sample of each


class NodeMetricsReply(msgspec.Struct, kw_only=True):
    samples: dict[str, list[SandboxMetric]] = {}  # oldest first; sandboxes not here have none
    error: Failure | None = None


class NetworkUpdateRequest(msgspec.Struct, kw_only=True):
    """Replaces a sandbox's egress policy (running: live on its node; paused: on resume)."""

    sandbox_id: str
    egress: EgressPolicy


class NodeEgressRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    egress: EgressPolicy


class NodeEgressReply(msgspec.Struct, kw_only=True):
    applied: bool = False
    error: Failure | None = None


class SnapshotRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    name: str | None = None
    memory: bool = True  # False: the files only; sandboxes from it boot on them


class SnapshotReply(msgspec.Struct, kw_only=True):
    snapshot: SnapshotRecord | None = None
    error: Failure | None = None


class DeleteSnapshotRequest(msgspec.Struct, kw_only=True):
    snapshot_id: str


class ForkRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    count: int
    timeout_s: int
    owner_limit: int


class ForkReply(msgspec.Struct, kw_only=True):
    forks: list[SandboxReply] = []  # one per requested fork: its sandbox or why it failed
    error: Failure | None = None


class NodeSnapshotRequest(msgspec.Struct, kw_only=True):
    sandbox_id: str
    image_id: str
    envd_access_token: str | None = None
    memory: bool = True


class NodeSnapshotReply(msgspec.Struct, kw_only=True):
    size_bytes: int = 0
    # The snapshot was taken but the sandbox could not be started again: it is paused.
    source_paused: bool = False
    error: Failure | None = None


class NodeDeleteSnapshotRequest(msgspec.Struct, kw_only=True):
    image_id: str


class CreateVolumeRequest(msgspec.Struct, kw_only=True):
    name: str
    owner: str


class VolumeReply(msgspec.Struct, kw_only=True):
    volume: VolumeRecord | None = None
    error: Failure | None = None


class DeleteVolumeRequest(msgspec.Struct, kw_only=True):
    volume_id: str
    owner: str


class NodeVolumeRequest(msgspec.Struct, kw_only=True):
    volume_id: str


# Template builds


class BuildStep(msgspec.Struct, kw_only=True, frozen=True):
    """One instruction of E2B's template builder (TemplateBuildStartV2 `steps`)."""

    type: str  # COPY, ENV, RUN, WORKDIR, USER
    args: list[str] = []
    files_hash: str | None = None  # COPY: the uploaded file set
    force: bool = False  # run it (and everything after it) even if cached


class RegistryAuth(msgspec.Struct, kw_only=True, frozen=True):
    """Credentials for a private registry (E2B's `fromImageRegistry` of type `registry`)."""

    username: str
    password: str


class BuildSpec(msgspec.Struct, kw_only=True, frozen=True):
    """What to build: a base (a Corral template, or an image from a registry) and the steps
    on top of it."""

    from_template: str = ""  # the base template's id (resolved by the API)
    from_image: str = ""  # an image reference (`registry/name:tag` or `@sha256:...`)
    registry_auth: RegistryAuth | None = None
    steps: list[BuildStep] = []
    force: bool = False
    start_cmd: str | None = None
    ready_cmd: str | None = None


class PlaceBuildRequest(msgspec.Struct, kw_only=True):
    template_id: str
    build_id: str


class StartBuildRequest(msgspec.Struct, kw_only=True):
    template_id: str
    build_id: str
    spec: BuildSpec


class BuildReply(msgspec.Struct, kw_only=True):
    node_id: str = ""
    error: Failure | None = None


class NodeBuildRequest(msgspec.Struct, kw_only=True):
    template_id: str
    build_id: str
    spec: BuildSpec


class DeleteTemplateRequest(msgspec.Struct, kw_only=True):
    template_id: str
    owner: str


class NodeDeleteTemplateRequest(msgspec.Struct, kw_only=True):
    template_id: str
