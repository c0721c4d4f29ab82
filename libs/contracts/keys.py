"""Redis key names. Records are JSON (msgspec); indexes are sets and sorted sets."""

from __future__ import annotations

PREFIX = "corral"

SANDBOX_INDEX = f"{PREFIX}:sbx:index"  # ZSET sandbox id -> started_at
LEASES = f"{PREFIX}:leases"  # ZSET sandbox id -> end_at (unix seconds)
NODES = f"{PREFIX}:nodes"  # SET node ids
TEMPLATES = f"{PREFIX}:tpls"  # SET template ids
DELETED_TEMPLATES = f"{PREFIX}:tpls:deleted"  # SET ids of templates deleted through the API
API_KEYS = f"{PREFIX}:keys"  # SET key hashes
SNAPSHOT_INDEX = f"{PREFIX}:snap:index"  # ZSET snapshot id -> created_at
VOLUMES = f"{PREFIX}:vols"  # SET volume ids
REAPER_LOCK = f"{PREFIX}:reaper:lock"  # STRING holder id, with expiry
CLUSTER_SECRET = f"{PREFIX}:cluster:secret"  # STRING what nodes show each other (template archives)


def sandbox(sandbox_id: str) -> str:
    return f"{PREFIX}:sbx:{sandbox_id}"


def sandbox_denials(sandbox_id: str) -> str:
    """LIST of EgressDenial records of a sandbox, newest first (capped, expiring)."""
    return f"{PREFIX}:sbx:{sandbox_id}:denials"


def node(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


def node_sandboxes(node_id: str) -> str:
    """SET of the sandbox ids placed on a node."""
    return f"{PREFIX}:node:{node_id}:sbx"


def node_snapshots(node_id: str) -> str:
    """SET of the snapshot image ids a node holds."""
    return f"{PREFIX}:node:{node_id}:snap"


def snapshot(snapshot_id: str) -> str:
    return f"{PREFIX}:snap:{snapshot_id}"


def template(template_id: str) -> str:
    return f"{PREFIX}:tpl:{template_id}"


def template_alias(alias: str) -> str:
    """STRING: the template id an alias names."""
    return f"{PREFIX}:tpl-alias:{alias}"


def template_builds(template_id: str) -> str:
    """ZSET build id -> created_at of a template's API builds."""
    return f"{PREFIX}:tpl:{template_id}:builds"


def template_build(build_id: str) -> str:
    """STRING: a TemplateBuildRecord, with expiry once finished."""
    return f"{PREFIX}:build:{build_id}"


def template_build_logs(build_id: str) -> str:
    """LIST of a build's BuildLogEntry records, oldest first (capped, expiring)."""
    return f"{PREFIX}:build:{build_id}:logs"


def api_key(key_hash: str) -> str:
    return f"{PREFIX}:key:{key_hash}"


def idempotency(key_hash: str, idempotency_key: str) -> str:
    """STRING: an IdempotencyRecord of a create made with that `Idempotency-Key`, with expiry."""
    return f"{PREFIX}:key:{key_hash}:idem:{idempotency_key}"


def owner_sandboxes(key_hash: str) -> str:
    """SET of the sandbox ids an API key holds (its concurrency count)."""
    return f"{PREFIX}:key:{key_hash}:sbx"


def volume(volume_id: str) -> str:
    return f"{PREFIX}:vol:{volume_id}"


def owner_volume_names(key_hash: str) -> str:
    """HASH volume name -> volume id of an API key's volumes (names are unique per key)."""
    return f"{PREFIX}:key:{key_hash}:vols"
