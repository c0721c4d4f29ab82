"""NATS subjects. Request/reply unless noted."""

from __future__ import annotations

SCHEDULER_QUEUE = "scheduler"

PLACE = "corral.scheduler.place"  # PlaceRequest -> SandboxReply
KILL = "corral.scheduler.kill"  # KillRequest -> KillReply
SET_TIMEOUT = "corral.scheduler.timeout"  # TimeoutRequest -> SandboxReply
PAUSE = "corral.scheduler.pause"  # PauseRequest -> SandboxReply
RESUME = "corral.scheduler.resume"  # ResumeRequest -> SandboxReply
SNAPSHOT = "corral.scheduler.snapshot"  # SnapshotRequest -> SnapshotReply
DELETE_SNAPSHOT = "corral.scheduler.snapshot-delete"  # DeleteSnapshotRequest -> KillReply
FORK = "corral.scheduler.fork"  # ForkRequest -> ForkReply
NETWORK = "corral.scheduler.network"  # NetworkUpdateRequest -> SandboxReply
CREATE_VOLUME = "corral.scheduler.volume-create"  # CreateVolumeRequest -> VolumeReply
DELETE_VOLUME = "corral.scheduler.volume-delete"  # DeleteVolumeRequest -> KillReply
PLACE_BUILD = "corral.scheduler.build-place"  # PlaceBuildRequest -> BuildReply
START_BUILD = "corral.scheduler.build-start"  # StartBuildRequest -> BuildReply
DELETE_TEMPLATE = "corral.scheduler.template-delete"  # DeleteTemplateRequest -> KillReply

# Published (no reply): a sandbox stopped being reachable; proxies drop their routes.
SANDBOX_GONE = "corral.events.sandbox.gone"  # SandboxGone
# Published: a node found a sandbox it runs stopped in a save and kept it as paused.
SANDBOX_PAUSED = "corral.events.sandbox.paused"  # SandboxPaused


def node_subject(node_id: str, verb: str) -> str:
    """`corral.node.<id>.<verb>` with verb one of the NODE_* names below."""
    return f"corral.node.{node_id}.{verb}"


NODE_CREATE = "create"  # NodeCreateRequest -> NodeCreateReply
NODE_KILL = "kill"  # NodeKillRequest -> KillReply
NODE_LIST = "list"  # NodeListRequest -> NodeListReply
NODE_LOGS = "logs"  # NodeLogsRequest -> NodeLogsReply
NODE_PAUSE = "pause"  # NodePauseRequest -> NodePauseReply
NODE_RESUME = "resume"  # NodeResumeRequest -> NodeCreateReply
NODE_SNAPSHOT = "snapshot"  # NodeSnapshotRequest -> NodeSnapshotReply
NODE_DELETE_SNAPSHOT = "snapshot-delete"  # NodeDeleteSnapshotRequest -> KillReply
NODE_EGRESS = "egress"  # NodeEgressRequest -> NodeEgressReply
NODE_METRICS = "metrics"  # NodeMetricsRequest -> NodeMetricsReply
NODE_CREATE_VOLUME = "volume-create"  # NodeVolumeRequest -> KillReply (killed: created)
NODE_DELETE_VOLUME = "volume-delete"  # NodeVolumeRequest -> KillReply
NODE_BUILD = "build"  # NodeBuildRequest -> BuildReply (accepted; it runs on)
NODE_DELETE_TEMPLATE = "template-delete"  # NodeDeleteTemplateRequest -> KillReply
