"""Persistent snapshots and forks with the e2b SDK, sync and async: the source goes on
running, snapshots outlive it, and sandboxes made from one start with its files and
processes and then go their own ways."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox
from e2b.exceptions import SandboxNotFoundException


def _images(stack) -> set[str]:
    root = stack.config.data_dir / "snapshots"
    return {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.exists() else set()


def test_snapshot_outlives_its_sandbox_and_clones_diverge(conn, stack):
    source = Sandbox.create(envs={"FROM_SOURCE": "yes"}, **conn)
    clones: list[Sandbox] = []
    try:
        source.files.write("/home/user/shared.txt", "before the snapshot")
        sleeper = source.commands.run("sleep 3600", background=True)

        snapshot = source.create_snapshot()
        assert snapshot.snapshot_id and snapshot.names

        # The source went on: same processes, same files, still writable.
        assert source.is_running()
        assert sleeper.pid in {p.pid for p in source.commands.list()}
        assert source.files.read("/home/user/shared.txt") == "before the snapshot"
        source.files.write("/home/user/shared.txt", "changed in the source after the snapshot")

        listed = Sandbox.list_snapshots(**conn).next_items()
        assert snapshot.snapshot_id in {s.snapshot_id for s in listed}
        by_source = Sandbox.list_snapshots(sandbox_id=source.sandbox_id, **conn).next_items()
        assert [s.snapshot_id for s in by_source] == [snapshot.snapshot_id]

        source.kill()  # a snapshot survives its sandbox
        clones = [Sandbox.create(snapshot.snapshot_id, **conn) for _ in range(2)]
        first, second = clones
        assert first.sandbox_id != second.sandbox_id
        for clone in clones:
            assert clone.files.read("/home/user/shared.txt") == "before the snapshot"
            assert sleeper.pid in {p.pid for p in clone.commands.list()}
            assert clone.commands.run("echo $FROM_SOURCE").stdout == "yes\n"
        info = Sandbox.get_info(first.sandbox_id, **conn)
        assert info.template_id == snapshot.snapshot_id

        first.files.write("/home/user/shared.txt", "written by the first clone")
        assert second.files.read("/home/user/shared.txt") == "before the snapshot"
        assert first.files.read("/home/user/shared.txt") == "written by the first clone"
        # Fresh identity: the clones never share a token or random state.
        assert first._envd_access_token != second._envd_access_token
        seeds = {c.commands.run("head -c 16 /dev/urandom | od -An -tx1").stdout for c in clones}
        assert len(seeds) == 2
    finally:
        for sandbox in (source, *clones):
            sandbox.kill()

    assert Sandbox.delete_snapshot(snapshot.snapshot_id, **conn) is True
    assert Sandbox.delete_snapshot(snapshot.snapshot_id, **conn) is False
    assert not _images(stack)
    with pytest.raises(Exception, match="not found"):
        Sandbox.create(snapshot.snapshot_id, **conn)


async def test_named_snapshots_async(conn, stack):
    name = f"snap-{uuid.uuid4().hex[:8]}"
    sandbox = await AsyncSandbox.create(**conn)
    try:
        await sandbox.files.write("/home/user/version.txt", "one")
        first = await sandbox.create_snapshot(name=name)
        assert first.snapshot_id == f"{name}:default"
        assert any(name in n for n in first.names)

        found = await AsyncSandbox.list_snapshots(name=name, **conn).next_items()
        assert [s.snapshot_id for s in found] == [first.snapshot_id]
        missing = await AsyncSandbox.list_snapshots(name=f"{name}-does-not-exist", **conn).next_items()
        assert missing == []

        # The same name again: a new build of it replaces the old one (and its image).
        await sandbox.files.write("/home/user/version.txt", "two")
        images_before = _images(stack)
        second = await sandbox.create_snapshot(name=name)
        assert second.snapshot_id == first.snapshot_id
        assert len(_images(stack)) == len(images_before)

        clone = await AsyncSandbox.create(name, **conn)  # by name, without the tag
        try:
            assert await clone.files.read("/home/user/version.txt") == "two"
        finally:
            await clone.kill()
        assert await AsyncSandbox.delete_snapshot(second.snapshot_id, **conn) is True
    finally:
        await sandbox.kill()


async def test_fork_async(conn):
    sandbox = await AsyncSandbox.create(**conn)
    forks: list[AsyncSandbox] = []
    try:
        await sandbox.files.write("/home/user/state.txt", "state before the fork")
        results = await sandbox.fork(count=2, timeout=60)
        forks = [f for f in results if isinstance(f, AsyncSandbox)]
        assert len(forks) == 2, results
        assert len({f.sandbox_id for f in forks} | {sandbox.sandbox_id}) == 3
        assert await sandbox.is_running()
        for fork in forks:
            assert await fork.is_running()
            assert await fork.files.read("/home/user/state.txt") == "state before the fork"
        await forks[0].files.write("/home/user/state.txt", "changed in a fork")
        assert await sandbox.files.read("/home/user/state.txt") == "state before the fork"
        assert await forks[1].files.read("/home/user/state.txt") == "state before the fork"
        # A fork's snapshot is not kept.
        assert await AsyncSandbox.list_snapshots(sandbox_id=sandbox.sandbox_id, **conn).next_items() == []
    finally:
        await asyncio.gather(*(s.kill() for s in (sandbox, *forks)))

    with pytest.raises(SandboxNotFoundException):
        await sandbox.fork()


def test_snapshot_status_codes(conn, stack):
    api = httpx.Client(base_url=stack.config.api_url, headers={"X-API-Key": conn["api_key"]}, timeout=150)
    other_key = asyncio.run(stack.create_api_key("other", max_sandboxes=2, default=False))
    other = httpx.Client(base_url=stack.config.api_url, headers={"X-API-Key": other_key}, timeout=150)
    assert api.post("/sandboxes/nosuchsandbox0000000/snapshots", json={}).status_code == 404
    assert api.post("/sandboxes/nosuchsandbox0000000/fork", json={}).status_code == 404
    assert api.delete("/templates/nosuchsnapshot").status_code == 404
    assert api.delete("/templates/base").status_code == 403
    created = api.post("/v2/sandboxes", json={"templateID": "base"}).json()
    sandbox_id = created["sandboxID"]
    try:
        assert api.post(f"/sandboxes/{sandbox_id}/snapshots", json={"memory": "no"}).status_code == 400
        assert api.post(f"/sandboxes/{sandbox_id}/snapshots", json={"name": "Bad Name!"}).status_code == 400
        assert api.post(f"/sandboxes/{sandbox_id}/fork", json={"count": 0}).status_code == 400
        assert other.post(f"/sandboxes/{sandbox_id}/snapshots", json={}).status_code == 404

        taken = api.post(f"/sandboxes/{sandbox_id}/snapshots", json={})
        assert taken.status_code == 201
        snapshot_id = taken.json()["snapshotID"]
        # Someone else's snapshot is not a template they can use, see or delete.
        assert other.post("/v2/sandboxes", json={"templateID": snapshot_id}).status_code == 404
        assert other.get("/snapshots").json() == []
        assert other.delete(f"/templates/{snapshot_id}").status_code == 404

        assert api.post(f"/sandboxes/{sandbox_id}/pause", json={}).status_code == 204
        assert api.post(f"/sandboxes/{sandbox_id}/snapshots", json={}).status_code == 409
        assert api.delete(f"/templates/{snapshot_id}").status_code == 204
    finally:
        api.delete(f"/sandboxes/{sandbox_id}")
