"""What Redis holds, one msgspec Struct per record kind (stored as JSON)."""

from __future__ import annotations

import msgspec

SANDBOX_RUNNING = "running"
SANDBOX_PAUSED = "paused"

SNAPSHOT_DEFAULT_TAG = "default"  # the tag of a snapshot named without one

NODE_STARTING = "starting"  # heart-beating, still adopting what its predecessor ran
NODE_READY = "ready"
NODE_DOWN = "down"
# Its agent stopped cleanly (its sandboxes run on, for the next agent): nothing is placed there.
NODE_STOPPED = "stopped"


class EgressPolicy(msgspec.Struct, kw_only=True, frozen=True):
    """Where a sandbox may connect (E2B's `allow_internet_access` and `network.allowOut` /
    `denyOut`), normalised by `libs.egress_policy.parse`. Allow beats deny beats the default,
    which is allow; the always-denied ranges hold whatever this says."""

    allow_out: list[str] = []  # IPs and CIDRs, `domain` and `*.domain`
    deny_out: list[str] = []  # IPs and CIDRs
    allow_internet_access: bool = True  # False: `0.0.0.0/0` is denied
    # Networks reachable although always-denied ranges hold them: set by nodes only, for
    # template builds (the operator's mirrors and registries); never from a user's request.
    reach_reserved: list[str] = []


class EgressDenial(msgspec.Struct, kw_only=True, frozen=True):
    """One connection a sandbox's policy refused."""

    at: float
    protocol: str  # tcp, udp, icmp, ...
    destination: str  # the address the sandbox asked for
    port: int = 0
    name: str | None = None  # the HTTP Host or TLS SNI it named, when known
    rule: str  # always-deny, deny-out, not-allowed


class VolumeMount(msgspec.Struct, kw_only=True, frozen=True):
    """A volume mounted into a sandbox at `path` (E2B's `volumeMounts`: by name)."""

    volume_id: str
    name: str
    path: str


class VolumeRecord(msgspec.Struct, kw_only=True):
    """A persistent volume: a filesystem of its own (its size a hard quota, set per node) on
    the node that holds it, mounted into sandboxes placed there and reached by its token
    through the content API."""

    volume_id: str
    name: str  # unique per owner; sandboxes mount it by name
    owner: str
    token: str  # `Authorization: Bearer` of the volume content API
    node_id: str
    created_at: float


class SandboxRecord(msgspec.Struct, kw_only=True):
    sandbox_id: str
    template_id: str
    alias: str | None = None
    node_id: str
    # Where the node reaches the sandbox's ports (its network namespace's address).
    host: str
    envd_version: str
    envd_access_token: str | None = None
    traffic_access_token: str | None = None
    metadata: dict[str, str] = {}
    env_vars: dict[str, str] = {}
    cpu_count: int
    memory_mb: int
    disk_mb: int
    started_at: float
    end_at: float
    state: str = SANDBOX_RUNNING
    owner: str  # hash of the API key that created it
    egress: EgressPolicy = EgressPolicy()
    # What the sandbox sees as the Host of proxied requests (`${PORT}` is the port).
    mask_request_host: str | None = None
    timeout_s: int = 300  # the lease a resume grants
    auto_pause: bool = False  # pause instead of kill when the lease ends
    auto_pause_memory: bool = True  # False: that pause keeps the files only
    pause_memory: bool = True  # while paused: whether its memory was kept (E2B's pauseMode)
    auto_resume: bool = False  # traffic through the proxy resumes it
    snapshot_id: str | None = None  # the persistent snapshot it was created from
    volume_mounts: list[VolumeMount] = []


class SnapshotRecord(msgspec.Struct, kw_only=True):
    """A persistent snapshot: a running sandbox's memory, processes and files, kept on the
    node that took it, from which new sandboxes are created (`templateID` = its id)."""

    snapshot_id: str  # `<name>:<tag>`; unnamed snapshots get a generated name
    names: list[str]
    image_id: str  # the node's directory for it
    node_id: str
    template_id: str  # the template the source sandbox ran
    alias: str | None = None
    source_sandbox_id: str
    owner: str
    envd_version: str
    envd_access_token: str | None = None  # the token its envd holds (personalising needs it)
    env_vars: dict[str, str] = {}
    metadata: dict[str, str] = {}
    egress: EgressPolicy = EgressPolicy()  # what sandboxes created from it get by default
    cpu_count: int
    memory_mb: int
    disk_mb: int
    size_bytes: int = 0
    created_at: float
    volume_mounts: list[VolumeMount] = []  # what sandboxes created from it mount again


class NodeRecord(msgspec.Struct, kw_only=True):
    node_id: str
    runtimes: list[str]
    runtime_version: str = ""  # e.g. "runsc 0.0~20240729.0 (ptrace)"
    templates: list[str]
    cpu_count: int
    memory_mb: int
    memory_used_mb: int = 0
    sandboxes: int = 0
    max_sandboxes: int
    warm: dict[str, int] = {}  # template id -> ready clones in the warm pool
    warm_targets: dict[str, int] = {}  # template id -> the depth the pool aims for
    warm_refills_per_min: float = 0.0
    heartbeat_at: float
    started_at: float
    status: str = NODE_READY
    # Its content server (volume files, template build files and template archives).
    content_url: str = ""
    holds_volumes: bool = False
    builds_templates: bool = False  # template builds run in sandboxes of its runtime
    templates_pending: list[str] = []  # Corral's own templates it is still building

    @property
    def free_slots(self) -> int:
        return self.max_sandboxes - self.sandboxes


class TemplateRecord(msgspec.Struct, kw_only=True):
    template_id: str
    aliases: list[str]
    build_id: str
    envd_version: str
    cpu_count: int
    memory_mb: int
    disk_mb: int
    created_at: float
    public: bool = True
    owner: str = ""  # the API key hash that built it through the API; empty: Corral's own
    names: list[str] = []  # the names it was built under (E2B's `name`, without tag)
    runtimes: list[str] = []  # the runtimes that can run it (empty: any)


BUILD_WAITING = "waiting"
BUILD_BUILDING = "building"
BUILD_READY = "ready"
BUILD_ERROR = "error"
BUILD_FINISHED = (BUILD_READY, BUILD_ERROR)


class BuildLogEntry(msgspec.Struct, kw_only=True, frozen=True):
    """One line of a template build's log (E2B's BuildLogEntry)."""

    timestamp: float
    level: str  # debug, info, warn, error
    message: str
    step: str | None = None  # "base", the 1-based step number, or "finalize"


class TemplateBuildRecord(msgspec.Struct, kw_only=True):
    """One build of a template through the API, from `POST /v3/templates` to ready or error."""

    template_id: str
    build_id: str
    owner: str
    name: str  # the template name (E2B `name` without the tag)
    tags: list[str]
    cpu_count: int
    memory_mb: int
    created_at: float
    node_id: str = ""  # the node that builds it (chosen when the build is requested)
    upload_token: str = ""  # what the build's file uploads carry (the SDK sends no API key)
    status: str = BUILD_WAITING
    updated_at: float = 0.0
    finished_at: float | None = None
    reason: str | None = None  # why it failed
    reason_step: str | None = None


class ApiKeyRecord(msgspec.Struct, kw_only=True):
    key_hash: str
    prefix: str  # the first characters, to recognise a key in listings
    name: str
    created_at: float
    max_sandboxes: int
    revoked: bool = False


class IdempotencyRecord(msgspec.Struct, kw_only=True):
    """A create made with an `Idempotency-Key`: the hash of its body, and once it is done the
    response a retry with the same key and body gets again."""

    body_hash: str
    response: bytes | None = None
