"""Typed access to Redis: records in and out as msgspec Structs, and the few multi-key
changes that must happen together done in one MULTI/EXEC or Lua script."""

from __future__ import annotations

import secrets
from typing import TypeVar

import msgspec
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from corral_libs.contracts import keys
from corral_libs.contracts.records import (
    SNAPSHOT_DEFAULT_TAG,
    ApiKeyRecord,
    BuildLogEntry,
    EgressDenial,
    IdempotencyRecord,
    NodeRecord,
    SandboxRecord,
    SnapshotRecord,
    TemplateBuildRecord,
    TemplateRecord,
    VolumeRecord,
)

R = TypeVar("R", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()

# A build's log lines kept, and how long a finished build's record and log stay.
BUILD_LOG_KEPT = 20000
BUILD_TTL_S = 7 * 24 * 3600

# Denials kept per sandbox (newest first), and for how long after the last one.
DENIALS_KEPT = 1000
DENIALS_TTL_S = 7 * 24 * 3600

# Reserve a slot in an owner's concurrency budget: add the sandbox id unless the set is full.
_RENEW_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""

_RESERVE = """
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""


class Store:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._reserve = client.register_script(_RESERVE)
        self._renew_lock = client.register_script(_RENEW_LOCK)

    @classmethod
    def connect(cls, url: str) -> Store:
        # A Redis restart (a second or two) is ridden over by retrying; a Redis that does not
        # answer at all is an error within seconds, never a hang.
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=8)
        return cls(
            redis.Redis.from_url(
                url,
                decode_responses=False,
                socket_timeout=10,
                socket_connect_timeout=2,
                retry=retry,
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            )
        )

    async def close(self) -> None:
        await self.redis.aclose()

    async def _get(self, key: str, record_type: type[R]) -> R | None:
        raw = await self.redis.get(key)
        return None if raw is None else msgspec.json.decode(raw, type=record_type)

    async def _get_many(self, key_names: list[str], record_type: type[R]) -> list[R]:
        if not key_names:
            return []
        values = await self.redis.mget(key_names)
        return [msgspec.json.decode(raw, type=record_type) for raw in values if raw is not None]

    # Sandboxes

    async def sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        return await self._get(keys.sandbox(sandbox_id), SandboxRecord)

    async def sandboxes(self, sandbox_ids: list[str]) -> list[SandboxRecord]:
        return await self._get_many([keys.sandbox(i) for i in sandbox_ids], SandboxRecord)

    async def sandbox_ids_newest_first(self) -> list[str]:
        return [raw.decode() for raw in await self.redis.zrevrange(keys.SANDBOX_INDEX, 0, -1)]

    async def reserve_owner_slot(self, owner: str, sandbox_id: str, limit: int) -> bool:
        return bool(await self._reserve(keys=[keys.owner_sandboxes(owner)], args=[sandbox_id, limit]))

    async def release_owner_slot(self, owner: str, sandbox_id: str) -> None:
        await self.redis.srem(keys.owner_sandboxes(owner), sandbox_id)

    async def save_sandbox(self, record: SandboxRecord, reserved_as: str | None = None) -> None:
        """Records a sandbox, its lease and its place on its node, all at once. `reserved_as`
        is the id its owner's slot was reserved under, when the node gave it another."""
        async with self.redis.pipeline(transaction=True) as tx:
            if reserved_as is not None and reserved_as != record.sandbox_id:
                tx.srem(keys.owner_sandboxes(record.owner), reserved_as)
            tx.set(keys.sandbox(record.sandbox_id), _encoder.encode(record))
            tx.zadd(keys.SANDBOX_INDEX, {record.sandbox_id: record.started_at})
            tx.zadd(keys.LEASES, {record.sandbox_id: record.end_at})
            tx.sadd(keys.node_sandboxes(record.node_id), record.sandbox_id)
            tx.sadd(keys.owner_sandboxes(record.owner), record.sandbox_id)
            await tx.execute()

    async def save_paused(self, record: SandboxRecord) -> None:
        """A paused sandbox keeps its record and its place in every index but the leases:
        it runs nowhere, so nothing expires."""
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.sandbox(record.sandbox_id), _encoder.encode(record), xx=True)
            tx.zrem(keys.LEASES, record.sandbox_id)
            await tx.execute()

    async def set_end(self, record: SandboxRecord, end_at: float) -> SandboxRecord:
        """Moves the lease end; a sandbox deleted meanwhile stays deleted (XX updates only)."""
        updated = msgspec.structs.replace(record, end_at=end_at)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.sandbox(record.sandbox_id), _encoder.encode(updated), xx=True)
            tx.zadd(keys.LEASES, {record.sandbox_id: end_at}, xx=True)
            await tx.execute()
        return updated

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.delete(keys.sandbox(record.sandbox_id), keys.sandbox_denials(record.sandbox_id))
            tx.zrem(keys.SANDBOX_INDEX, record.sandbox_id)
            tx.zrem(keys.LEASES, record.sandbox_id)
            tx.srem(keys.node_sandboxes(record.node_id), record.sandbox_id)
            tx.srem(keys.owner_sandboxes(record.owner), record.sandbox_id)
            await tx.execute()

    async def set_egress(self, record: SandboxRecord) -> None:
        """Stores a sandbox's new egress policy; a sandbox deleted meanwhile stays deleted."""
        await self.redis.set(keys.sandbox(record.sandbox_id), _encoder.encode(record), xx=True)

    async def add_denials(self, sandbox_id: str, denials: list[EgressDenial]) -> None:
        """Adds denials, oldest first (each goes to the head of the list)."""
        key = keys.sandbox_denials(sandbox_id)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.lpush(key, *(_encoder.encode(d) for d in denials))
            tx.ltrim(key, 0, DENIALS_KEPT - 1)
            tx.expire(key, DENIALS_TTL_S)
            await tx.execute()

    async def denials(self, sandbox_id: str, limit: int) -> list[EgressDenial]:
        raw = await self.redis.lrange(keys.sandbox_denials(sandbox_id), 0, limit - 1)
        return [msgspec.json.decode(item, type=EgressDenial) for item in raw]

    async def claim_idempotency(
        self, owner: str, key: str, body_hash: str, ttl_s: int
    ) -> IdempotencyRecord | None:
        """Claims a create's idempotency key; None when this call claimed it, else the claim
        already there (another attempt's, maybe finished)."""
        name = keys.idempotency(owner, key)
        claim = _encoder.encode(IdempotencyRecord(body_hash=body_hash))
        if await self.redis.set(name, claim, nx=True, ex=ttl_s):
            return None
        return await self._get(name, IdempotencyRecord)

    async def finish_idempotency(
        self, owner: str, key: str, body_hash: str, response: bytes, ttl_s: int
    ) -> None:
        record = IdempotencyRecord(body_hash=body_hash, response=response)
        await self.redis.set(keys.idempotency(owner, key), _encoder.encode(record), ex=ttl_s)

    async def drop_idempotency(self, owner: str, key: str) -> None:
        await self.redis.delete(keys.idempotency(owner, key))

    async def idempotency_record(self, owner: str, key: str) -> IdempotencyRecord | None:
        return await self._get(keys.idempotency(owner, key), IdempotencyRecord)

    async def expired_leases(self, now: float, limit: int = 100) -> list[str]:
        raw = await self.redis.zrangebyscore(keys.LEASES, "-inf", now, start=0, num=limit)
        return [item.decode() for item in raw]

    async def node_sandbox_ids(self, node_id: str) -> list[str]:
        return [raw.decode() for raw in await self.redis.smembers(keys.node_sandboxes(node_id))]

    # Snapshots

    async def save_snapshot(self, record: SnapshotRecord, replaces: SnapshotRecord | None = None) -> None:
        """Records a snapshot; a named one may take over the name from an older one."""
        async with self.redis.pipeline(transaction=True) as tx:
            if replaces is not None:
                tx.srem(keys.node_snapshots(replaces.node_id), replaces.image_id)
            tx.set(keys.snapshot(record.snapshot_id), _encoder.encode(record))
            tx.zadd(keys.SNAPSHOT_INDEX, {record.snapshot_id: record.created_at})
            tx.sadd(keys.node_snapshots(record.node_id), record.image_id)
            await tx.execute()

    async def snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        return await self._get(keys.snapshot(snapshot_id), SnapshotRecord)

    async def find_snapshot(self, name: str) -> SnapshotRecord | None:
        """By its id, or by a name without a tag (the `default` tag)."""
        record = await self.snapshot(name)
        if record is None and ":" not in name:
            record = await self.snapshot(f"{name}:{SNAPSHOT_DEFAULT_TAG}")
        return record

    async def snapshots_newest_first(self) -> list[SnapshotRecord]:
        ids = [raw.decode() for raw in await self.redis.zrevrange(keys.SNAPSHOT_INDEX, 0, -1)]
        return await self._get_many([keys.snapshot(i) for i in ids], SnapshotRecord)

    async def delete_snapshot(self, record: SnapshotRecord) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.delete(keys.snapshot(record.snapshot_id))
            tx.zrem(keys.SNAPSHOT_INDEX, record.snapshot_id)
            tx.srem(keys.node_snapshots(record.node_id), record.image_id)
            await tx.execute()

    async def node_snapshot_images(self, node_id: str) -> set[str]:
        return {raw.decode() for raw in await self.redis.smembers(keys.node_snapshots(node_id))}

    # Volumes

    async def add_volume(self, record: VolumeRecord) -> bool:
        """Records a new volume; False when the owner already has one of that name."""
        if not await self.redis.hsetnx(keys.owner_volume_names(record.owner), record.name, record.volume_id):
            return False
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.volume(record.volume_id), _encoder.encode(record))
            tx.sadd(keys.VOLUMES, record.volume_id)
            await tx.execute()
        return True

    async def volume(self, volume_id: str) -> VolumeRecord | None:
        return await self._get(keys.volume(volume_id), VolumeRecord)

    async def owner_volume(self, owner: str, name: str) -> VolumeRecord | None:
        volume_id = await self.redis.hget(keys.owner_volume_names(owner), name)
        return None if volume_id is None else await self.volume(volume_id.decode())

    async def volumes(self) -> list[VolumeRecord]:
        ids = [raw.decode() for raw in await self.redis.smembers(keys.VOLUMES)]
        records = await self._get_many([keys.volume(i) for i in ids], VolumeRecord)
        return sorted(records, key=lambda v: v.created_at)

    async def delete_volume(self, record: VolumeRecord) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.delete(keys.volume(record.volume_id))
            tx.srem(keys.VOLUMES, record.volume_id)
            tx.hdel(keys.owner_volume_names(record.owner), record.name)
            await tx.execute()

    async def owner_sandbox_ids(self, key_hash: str) -> list[str]:
        return [raw.decode() for raw in await self.redis.smembers(keys.owner_sandboxes(key_hash))]

    # Nodes

    async def save_node(self, record: NodeRecord) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.node(record.node_id), _encoder.encode(record))
            tx.sadd(keys.NODES, record.node_id)
            await tx.execute()

    async def node(self, node_id: str) -> NodeRecord | None:
        return await self._get(keys.node(node_id), NodeRecord)

    async def nodes(self) -> list[NodeRecord]:
        ids = [raw.decode() for raw in await self.redis.smembers(keys.NODES)]
        return await self._get_many([keys.node(i) for i in ids], NodeRecord)

    # Templates

    async def save_template(self, record: TemplateRecord) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.template(record.template_id), _encoder.encode(record))
            tx.sadd(keys.TEMPLATES, record.template_id)
            for alias in record.aliases:
                tx.set(keys.template_alias(alias), record.template_id)
            await tx.execute()

    async def save_template_if_absent(self, record: TemplateRecord) -> None:
        """A template built through the API: its builder's record is the current build;
        another node holding an older one must not write over it."""
        if await self.redis.set(keys.template(record.template_id), _encoder.encode(record), nx=True):
            await self.save_template(record)

    async def deleted_templates(self) -> set[str]:
        return {raw.decode() for raw in await self.redis.smembers(keys.DELETED_TEMPLATES)}

    async def cluster_secret(self) -> str:
        await self.redis.set(keys.CLUSTER_SECRET, secrets.token_hex(32), nx=True)
        raw = await self.redis.get(keys.CLUSTER_SECRET)
        assert raw is not None
        return raw.decode()

    async def template(self, template_id_or_alias: str) -> TemplateRecord | None:
        record = await self._get(keys.template(template_id_or_alias), TemplateRecord)
        if record is not None:
            return record
        target = await self.redis.get(keys.template_alias(template_id_or_alias))
        return None if target is None else await self._get(keys.template(target.decode()), TemplateRecord)

    async def templates(self) -> list[TemplateRecord]:
        ids = [raw.decode() for raw in await self.redis.smembers(keys.TEMPLATES)]
        return sorted(
            await self._get_many([keys.template(i) for i in ids], TemplateRecord), key=lambda t: t.template_id
        )

    async def claim_template_name(self, name: str, template_id: str) -> str:
        """The template id `name` stands for: `template_id` if the name was free (it is
        now taken), else the id it already names."""
        key = keys.template_alias(name)
        if await self.redis.set(key, template_id, nx=True):
            return template_id
        existing = await self.redis.get(key)
        return template_id if existing is None else existing.decode()

    async def template_id_for(self, name: str) -> str | None:
        """The template id a name or id stands for, whether or not a build finished yet."""
        if await self.redis.exists(keys.template(name)) or await self.redis.exists(
            keys.template_builds(name)
        ):
            return name
        target = await self.redis.get(keys.template_alias(name))
        return None if target is None else target.decode()

    async def delete_template(self, template_id: str, names: list[str]) -> None:
        record = await self.template(template_id)
        build_ids = [
            raw.decode() for raw in await self.redis.zrange(keys.template_builds(template_id), 0, -1)
        ]
        async with self.redis.pipeline(transaction=True) as tx:
            tx.delete(keys.template(template_id), keys.template_builds(template_id))
            tx.srem(keys.TEMPLATES, template_id)
            # A node that was away while it went still holds it: it lets it go when it sees this.
            tx.sadd(keys.DELETED_TEMPLATES, template_id)
            for alias in {*names, *(record.aliases if record else [])}:
                tx.delete(keys.template_alias(alias))
            for build_id in build_ids:
                tx.delete(keys.template_build(build_id), keys.template_build_logs(build_id))
            await tx.execute()

    # Template builds

    async def save_build(self, record: TemplateBuildRecord) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.template_build(record.build_id), _encoder.encode(record))
            tx.zadd(keys.template_builds(record.template_id), {record.build_id: record.created_at})
            if record.finished_at is not None:
                tx.expire(keys.template_build(record.build_id), BUILD_TTL_S)
                tx.expire(keys.template_build_logs(record.build_id), BUILD_TTL_S)
            await tx.execute()

    async def build(self, build_id: str) -> TemplateBuildRecord | None:
        return await self._get(keys.template_build(build_id), TemplateBuildRecord)

    async def template_builds(self, template_id: str) -> list[TemplateBuildRecord]:
        """A template's builds, oldest first (those whose records have not expired)."""
        ids = [raw.decode() for raw in await self.redis.zrange(keys.template_builds(template_id), 0, -1)]
        found = await self._get_many([keys.template_build(i) for i in ids], TemplateBuildRecord)
        return sorted(found, key=lambda b: b.created_at)

    async def add_build_logs(self, build_id: str, entries: list[BuildLogEntry]) -> None:
        if not entries:
            return
        key = keys.template_build_logs(build_id)
        async with self.redis.pipeline(transaction=False) as tx:
            tx.rpush(key, *(_encoder.encode(e) for e in entries))
            tx.ltrim(key, -BUILD_LOG_KEPT, -1)
            tx.expire(key, BUILD_TTL_S)
            await tx.execute()

    async def build_logs(self, build_id: str, offset: int, limit: int) -> list[BuildLogEntry]:
        raw = await self.redis.lrange(keys.template_build_logs(build_id), offset, offset + limit - 1)
        return [msgspec.json.decode(item, type=BuildLogEntry) for item in raw]

    # API keys

    async def save_api_key(self, record: ApiKeyRecord) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.api_key(record.key_hash), _encoder.encode(record))
            tx.sadd(keys.API_KEYS, record.key_hash)
            await tx.execute()

    async def api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return await self._get(keys.api_key(key_hash), ApiKeyRecord)

    async def api_keys(self) -> list[ApiKeyRecord]:
        hashes = [raw.decode() for raw in await self.redis.smembers(keys.API_KEYS)]
        return sorted(
            await self._get_many([keys.api_key(h) for h in hashes], ApiKeyRecord), key=lambda k: k.created_at
        )

    async def owner_sandbox_count(self, key_hash: str) -> int:
        return int(await self.redis.scard(keys.owner_sandboxes(key_hash)))

    # Locks

    async def try_lock(self, name: str, holder: str, ttl_s: float) -> bool:
        """Takes or renews `name` for `holder`; False while someone else holds it."""
        return bool(await self._renew_lock(keys=[name], args=[holder, int(ttl_s * 1000)]))
