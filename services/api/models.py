"""Request and response bodies in E2B's JSON shapes (camelCase; `allow_internet_access`
is snake_case on the wire, as in E2B's API)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from corral_libs.contracts.records import SANDBOX_PAUSED, EgressDenial, SandboxRecord

# The reference API always returns this legacy value.
CLIENT_ID = "6532622b"


class NetworkConfig(msgspec.Struct, rename="camel", kw_only=True):
    """SandboxNetworkConfig (create)."""

    allow_public_traffic: bool = True
    allow_out: list[str] | None = None
    deny_out: list[str] | None = None
    dns_servers: list[str] | None = None
    mask_request_host: str | None = None
    egress_proxy: dict[str, object] | None = None
    https_ports: list[int] | None = None
    rules: dict[str, object] | None = None


class NetworkUpdate(msgspec.Struct, rename="camel", kw_only=True):
    """SandboxNetworkUpdateConfig (`PUT /sandboxes/{id}/network`): omitted fields are cleared."""

    allow_out: list[str] | None = None
    deny_out: list[str] | None = None
    dns_servers: list[str] | None = None
    egress_proxy: dict[str, object] | None = None
    rules: dict[str, object] | None = None
    allow_internet_access: bool | None = msgspec.field(default=None, name="allow_internet_access")


class AutoResume(msgspec.Struct, kw_only=True):
    enabled: bool = False


class VolumeMountBody(msgspec.Struct, kw_only=True):
    name: str
    path: str


class NewVolume(msgspec.Struct, kw_only=True):
    name: str


class NewSandbox(msgspec.Struct, rename="camel", kw_only=True):
    template_id: str = msgspec.field(name="templateID")
    timeout: int | None = None
    metadata: dict[str, str] | None = None
    env_vars: dict[str, str] | None = None
    secure: bool | None = None
    allow_internet_access: bool | None = msgspec.field(default=None, name="allow_internet_access")
    auto_pause: bool | None = None
    auto_pause_memory: bool | None = None
    auto_resume: AutoResume | None = None
    network: NetworkConfig | None = None
    volume_mounts: list[VolumeMountBody] | None = None


class PauseBody(msgspec.Struct, rename="camel", kw_only=True):
    memory: bool | None = None  # False: filesystem-only
    require_healthy_guest: bool | None = None


class TimeoutBody(msgspec.Struct, kw_only=True):
    timeout: int


class RefreshBody(msgspec.Struct, kw_only=True):
    duration: int | None = None


class ConnectBody(msgspec.Struct, kw_only=True):
    timeout: int | None = None


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def sandbox_body(record: SandboxRecord, domain: str) -> dict[str, object]:
    body: dict[str, object] = {
        "templateID": record.snapshot_id or record.template_id,
        "sandboxID": record.sandbox_id,
        "clientID": CLIENT_ID,
        "envdVersion": record.envd_version,
        "domain": domain,
        "trafficAccessToken": record.traffic_access_token,
    }
    if record.alias:
        body["alias"] = record.alias
    if record.envd_access_token:
        body["envdAccessToken"] = record.envd_access_token
    return body


def listed_body(record: SandboxRecord) -> dict[str, object]:
    body: dict[str, object] = {
        "templateID": record.snapshot_id or record.template_id,
        "sandboxID": record.sandbox_id,
        "clientID": CLIENT_ID,
        "startedAt": rfc3339(record.started_at),
        "endAt": rfc3339(record.end_at),
        "cpuCount": record.cpu_count,
        "memoryMB": record.memory_mb,
        "diskSizeMB": record.disk_mb,
        "state": record.state,
        "envdVersion": record.envd_version,
        "metadata": record.metadata,
    }
    if record.alias:
        body["alias"] = record.alias
    if record.volume_mounts:
        body["volumeMounts"] = [{"name": m.name, "path": m.path} for m in record.volume_mounts]
    return body


def network_body(record: SandboxRecord) -> dict[str, object]:
    body: dict[str, object] = {
        "allowPublicTraffic": record.traffic_access_token is None,
        "allowOut": record.egress.allow_out,
        "denyOut": record.egress.deny_out,
    }
    if record.mask_request_host is not None:
        body["maskRequestHost"] = record.mask_request_host
    return body


def denial_body(denial: EgressDenial) -> dict[str, object]:
    return {
        "timestamp": rfc3339(denial.at),
        "protocol": denial.protocol,
        "destination": denial.destination,
        "port": denial.port,
        "name": denial.name,
        "rule": denial.rule,
    }


def detail_body(record: SandboxRecord, domain: str) -> dict[str, object]:
    body = listed_body(record)
    body["domain"] = domain
    body["allowInternetAccess"] = record.egress.allow_internet_access
    body["network"] = network_body(record)
    body["lifecycle"] = {
        "autoResume": record.auto_resume,
        "onTimeout": "pause" if record.auto_pause else "kill",
    }
    if record.state == SANDBOX_PAUSED:
        body["pauseMode"] = "full" if record.pause_memory else "filesystem"
    if record.envd_access_token:
        body["envdAccessToken"] = record.envd_access_token
    return body
