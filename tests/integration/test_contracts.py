"""The bus and the store against real NATS and Redis."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from corral_libs.bus import Bus, BusError
from corral_libs.contracts import keys, subjects
from corral_libs.contracts.messages import Failure, KillReply, KillRequest, PlaceRequest, SandboxReply
from corral_libs.contracts.records import NodeRecord, SandboxRecord, TemplateRecord


def _sandbox(sandbox_id: str = "abc123", **changes: object) -> SandboxRecord:
    record = SandboxRecord(
        sandbox_id=sandbox_id,
        template_id="base",
        node_id="n1",
        host="198.18.0.2",
        envd_version="0.6.4",
        cpu_count=2,
        memory_mb=512,
        disk_mb=1024,
        started_at=time.time(),
        end_at=time.time() + 60,
        owner="o1",
    )
    return msgspec.structs.replace(record, **changes)


async def test_request_reply_round_trip_carries_trace_context(bus: Bus):
    trace.set_tracer_provider(TracerProvider())
    seen_parent: list[int] = []

    async def handle(request: PlaceRequest) -> SandboxReply:
        seen_parent.append(trace.get_current_span().get_span_context().trace_id)
        return SandboxReply(sandbox=_sandbox(metadata=request.metadata))

    await bus.serve("test.place", PlaceRequest, handle, queue="q")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("caller") as span:
        request = PlaceRequest(template_id="base", owner="o", owner_limit=1, timeout_s=5, metadata={"k": "v"})
        reply = await bus.request("test.place", request, SandboxReply, timeout_s=5)
    assert reply.sandbox is not None and reply.sandbox.metadata == {"k": "v"}
    assert seen_parent == [span.get_span_context().trace_id]


async def test_request_without_responder_fails_fast(bus: Bus):
    with pytest.raises(BusError, match="no service answers"):
        await bus.request("test.nobody", KillRequest(sandbox_id="x"), KillReply, timeout_s=5)


async def test_failures_round_trip(bus: Bus):
    async def handle(request: KillRequest) -> KillReply:
        return KillReply(error=Failure(status=404, message=f"sandbox '{request.sandbox_id}' not found"))

    await bus.serve(subjects.KILL + ".test", KillRequest, handle)
    reply = await bus.request(subjects.KILL + ".test", KillRequest(sandbox_id="zz"), KillReply, timeout_s=5)
    assert reply.error == Failure(status=404, message="sandbox 'zz' not found")


async def test_a_failing_handler_is_answered_with_an_error(bus: Bus):
    """Not left to time out: the caller hears at once what failed, with a trace to follow."""
    trace.set_tracer_provider(TracerProvider())

    async def broken(request: KillRequest) -> KillReply:
        raise RuntimeError(f"cannot kill {request.sandbox_id}")

    await bus.serve("test.broken", KillRequest, broken)
    reply = await bus.request("test.broken", KillRequest(sandbox_id="s1"), KillReply, timeout_s=5)
    assert reply.killed is False and reply.error is not None
    assert reply.error.status == 500
    assert "cannot kill s1" in reply.error.message
    assert reply.error.trace_id and len(reply.error.trace_id) == 32
    # A message the handler's type cannot read is the caller's fault: 400.
    raw = await bus.client.request("test.broken", b'{"sandbox_id": 7}', timeout=5)
    assert msgspec.json.decode(raw.data, type=SandboxReply).error.status == 400


async def test_sandbox_records_are_saved_and_deleted_together(store):
    record = _sandbox()
    await store.save_sandbox(record)
    assert await store.sandbox("abc123") == record
    assert await store.sandbox_ids_newest_first() == ["abc123"]
    assert await store.node_sandbox_ids("n1") == ["abc123"]
    assert await store.owner_sandbox_count("o1") == 1
    assert await store.expired_leases(time.time() + 120) == ["abc123"]
    await store.delete_sandbox(record)
    assert await store.sandbox("abc123") is None
    for key in (keys.SANDBOX_INDEX, keys.LEASES, keys.node_sandboxes("n1"), keys.owner_sandboxes("o1")):
        assert not await store.redis.exists(key)


async def test_set_end_does_not_resurrect_a_deleted_sandbox(store):
    record = _sandbox()
    await store.save_sandbox(record)
    await store.delete_sandbox(record)
    await store.set_end(record, time.time() + 999)
    assert await store.sandbox(record.sandbox_id) is None
    assert await store.expired_leases(time.time() + 10_000) == []


async def test_owner_slots_are_reserved_atomically(store):
    results = await asyncio.gather(*(store.reserve_owner_slot("o2", f"s{i}", 3) for i in range(10)))
    assert sum(results) == 3
    assert not await store.reserve_owner_slot("o2", "late", 3)
    await store.release_owner_slot("o2", f"s{results.index(True)}")
    assert await store.reserve_owner_slot("o2", "late", 3)


async def test_templates_resolve_by_alias(store):
    record = TemplateRecord(
        template_id="base",
        aliases=["base", "default"],
        build_id="1",
        envd_version="0.6.4",
        cpu_count=2,
        memory_mb=512,
        disk_mb=1024,
        created_at=time.time(),
    )
    await store.save_template(record)
    assert await store.template("default") == record
    assert await store.template("nope") is None


async def test_lock_has_one_holder_and_passes_on_after_expiry(store):
    assert await store.try_lock(keys.REAPER_LOCK, "a", 0.3)
    assert not await store.try_lock(keys.REAPER_LOCK, "b", 0.3)
    assert await store.try_lock(keys.REAPER_LOCK, "a", 0.3)  # renewal
    await asyncio.sleep(0.4)
    assert await store.try_lock(keys.REAPER_LOCK, "b", 0.3)
    assert not await store.try_lock(keys.REAPER_LOCK, "a", 0.3)


async def test_nodes_round_trip(store):
    node = NodeRecord(
        node_id="n1",
        runtimes=["gvisor"],
        templates=["base"],
        cpu_count=2,
        memory_mb=1024,
        max_sandboxes=10,
        sandboxes=3,
        heartbeat_at=time.time(),
        started_at=time.time(),
    )
    await store.save_node(node)
    assert await store.nodes() == [node]
    assert node.free_slots == 7
