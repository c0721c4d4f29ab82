"""The latest e2b Python SDK (sync and async) against the whole stack."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from e2b import AsyncSandbox, AuthenticationException, Sandbox, SandboxException, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException


@pytest.fixture(scope="module")
def sbx(conn):
    sandbox = Sandbox.create(metadata={"suite": "e2e", "kind": "shared"}, envs={"GREETING": "hi"}, **conn)
    yield sandbox
    sandbox.kill()


def test_create_runs_commands_with_env_vars(sbx):
    result = sbx.commands.run("echo $GREETING from $(whoami) in $(pwd)")
    assert result.stdout == "hi from user in /home/user\n"
    assert sbx.commands.run("whoami", user="root").stdout == "root\n"


def test_files_round_trip(sbx):
    sbx.files.write("/home/user/data/note.txt", "through the proxy")
    assert sbx.files.read("data/note.txt") == "through the proxy"
    assert [e.name for e in sbx.files.list("/home/user/data")] == ["note.txt"]
    blob = bytes(range(256)) * 4096
    sbx.files.write("/tmp/blob.bin", blob)
    assert sbx.files.read("/tmp/blob.bin", format="bytes") == blob


def test_get_info_and_connect(sbx, conn):
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.template_id == "base"
    assert info.metadata == {"suite": "e2e", "kind": "shared"}
    assert info.state == SandboxState.RUNNING
    again = Sandbox.connect(sbx.sandbox_id, **conn)
    assert again.commands.run("echo connected").stdout == "connected\n"
    assert again.get_info().end_at >= info.end_at


def test_host_routing_to_a_user_port(sbx, stack):
    sbx.commands.run("python3 -m http.server 8000 --directory /home/user", background=True)
    sbx.files.write("/home/user/index.html", "<h1>served from the sandbox</h1>")
    host = sbx.get_host(8000)
    assert host == f"8000-{sbx.sandbox_id}.{stack.config.domain}"
    deadline = time.time() + 30
    while True:
        response = httpx.get(f"{stack.config.sandbox_url}/index.html", headers={"Host": host})
        if response.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert response.text == "<h1>served from the sandbox</h1>"
    closed = httpx.get(f"{stack.config.sandbox_url}/", headers={"Host": sbx.get_host(8999)})
    assert closed.status_code == 502 and "port is not open" in closed.text


def test_list_filters_and_pagination(conn):
    created = [
        Sandbox.create(metadata={"suite": "e2e", "page": "yes", "n": str(i)}, **conn) for i in range(3)
    ]
    try:
        query = SandboxQuery(metadata={"page": "yes"})
        everything = Sandbox.list(query=query, **conn).next_items()
        assert {s.sandbox_id for s in everything} == {s.sandbox_id for s in created}
        assert [s.metadata["n"] for s in everything] == ["2", "1", "0"]  # newest first

        paginator = Sandbox.list(query=query, limit=2, **conn)
        first = paginator.next_items()
        assert len(first) == 2 and paginator.has_next
        second = paginator.next_items()
        assert len(second) == 1 and not paginator.has_next
        assert {s.sandbox_id for s in first + second} == {s.sandbox_id for s in created}

        running = Sandbox.list(
            query=SandboxQuery(metadata={"page": "yes"}, state=[SandboxState.RUNNING]), **conn
        )
        assert len(running.next_items()) == 3
        paused = Sandbox.list(
            query=SandboxQuery(metadata={"page": "yes"}, state=[SandboxState.PAUSED]), **conn
        )
        assert paused.next_items() == []

        oldest_first = Sandbox.list(query=query, limit=2, order="asc", **conn)
        assert [s.metadata["n"] for s in oldest_first.next_items()] == ["0", "1"]
        assert [s.metadata["n"] for s in oldest_first.next_items()] == ["2"]
        since = SandboxQuery(metadata={"page": "yes"}, started_after=everything[1].started_at)
        assert [s.metadata["n"] for s in Sandbox.list(query=since, **conn).next_items()] == ["2", "1"]
        api = httpx.Client(base_url=conn["api_url"], headers={"X-API-Key": conn["api_key"]})
        before = everything[1].started_at.isoformat()
        for path in ("/v2/sandboxes", "/sandboxes"):
            listed = api.get(path, params={"metadata": "page=yes", "startedBefore": before, "order": "asc"})
            assert [s["metadata"]["n"] for s in listed.json()] == ["0"]
        assert api.get("/v2/sandboxes", params={"order": "sideways"}).status_code == 400
        assert api.get("/v2/sandboxes", params={"startedAfter": "yesterday"}).status_code == 400
    finally:
        for sandbox in created:
            sandbox.kill()


def test_timeout_expiry_kills(conn):
    sandbox = Sandbox.create(**conn)
    sandbox.set_timeout(5)
    time.sleep(6)
    assert sandbox.is_running() is False
    with pytest.raises(NotFoundException):
        sandbox.get_info()


def test_kill_then_everything_is_gone(conn, stack):
    sandbox = Sandbox.create(**conn)
    assert sandbox.is_running()
    assert sandbox.kill() is True
    assert sandbox.is_running() is False
    assert Sandbox.kill(sandbox.sandbox_id, **conn) is False
    gone = httpx.get(
        f"{stack.config.sandbox_url}/health",
        headers={"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49983"},
    )
    assert gone.status_code == 502 and "was not found" in gone.text


def test_bad_key_and_unknown_sandbox(conn):
    bad = {**conn, "api_key": "e2b_" + "0" * 40}
    with pytest.raises(AuthenticationException):
        Sandbox.create(**bad)
    with pytest.raises(NotFoundException):
        Sandbox.connect("doesnotexist00000000", **conn)
    with pytest.raises(NotFoundException):
        Sandbox.get_info("doesnotexist00000000", **conn)


async def test_async_client(conn):
    sandbox = await AsyncSandbox.create(envs={"MODE": "async"}, **conn)
    try:
        result = await sandbox.commands.run("echo $MODE")
        assert result.stdout == "async\n"
        await sandbox.files.write("/tmp/a.txt", "async file")
        assert await sandbox.files.read("/tmp/a.txt") == "async file"
        listed = await AsyncSandbox.list(**conn).next_items()
        assert sandbox.sandbox_id in {s.sandbox_id for s in listed}
    finally:
        assert await sandbox.kill() is True


def test_idempotency_key_gives_one_sandbox(conn):
    key = f"corral-idem-{time.time_ns()}"
    metadata = {"idem": key}
    with ThreadPoolExecutor(2) as pool:  # a retry racing the first attempt waits for it
        first, second = pool.map(
            lambda _: Sandbox.create(idempotency_key=key, metadata=metadata, **conn), range(2)
        )
    try:
        assert first.sandbox_id == second.sandbox_id
        again = Sandbox.create(idempotency_key=key, metadata=metadata, **conn)
        assert again.sandbox_id == first.sandbox_id
        assert len(Sandbox.list(query=SandboxQuery(metadata=metadata), **conn).next_items()) == 1
        with pytest.raises(SandboxException, match="different request body"):
            Sandbox.create(idempotency_key=key, metadata={"idem": "other"}, **conn)
    finally:
        first.kill()


def test_metrics(sbx, conn, stack):
    deadline = time.time() + 30  # the node samples every few seconds
    while not (samples := sbx.get_metrics()):
        assert time.time() < deadline, "no metrics"
        time.sleep(1)
    latest = samples[-1]
    assert latest.cpu_count >= 1 and 0 <= latest.cpu_used_pct <= 100 * latest.cpu_count
    assert 0 < latest.mem_used <= latest.mem_total
    # The guest's view of its root: under gVisor's in-memory overlay, no size limit yet.
    assert 0 <= latest.disk_used <= latest.disk_total
    api = httpx.Client(base_url=conn["api_url"], headers={"X-API-Key": conn["api_key"]})
    many = api.get("/sandboxes/metrics", params={"sandbox_ids": f"{sbx.sandbox_id},nosuchsandbox"}).json()
    assert list(many["sandboxes"]) == [sbx.sandbox_id]
    assert many["sandboxes"][sbx.sandbox_id]["memTotal"] == latest.mem_total
    assert api.get(f"/sandboxes/{sbx.sandbox_id}/metrics", params={"start": "soon"}).status_code == 400
    assert api.get("/sandboxes/nosuchsandbox/metrics").status_code == 404
