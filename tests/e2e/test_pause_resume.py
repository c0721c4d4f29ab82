"""Pause and resume with the e2b SDK: the sandbox comes back with its files, env vars,
running processes (same PIDs) and access token."""

from __future__ import annotations

import time

import httpx
import pytest
from e2b import Sandbox, SandboxException, SandboxQuery, SandboxState


def test_pause_then_connect_keeps_everything(conn, stack):
    sbx = Sandbox.create(envs={"KEPT": "yes"}, **conn)
    try:
        sbx.files.write("/home/user/before.txt", "written before the pause")
        sleeper = sbx.commands.run("sleep 3600", background=True)
        counter = sbx.commands.run(
            # Renamed into place: a reader never sees the file truncated and not yet written.
            "for i in $(seq 1 1000); do echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; "
            "done",
            background=True,
        )
        token = sbx._envd_access_token

        for cycle in range(2):
            assert sbx.pause() is True
            assert sbx.is_running() is False
            assert Sandbox.get_info(sbx.sandbox_id, **conn).state == SandboxState.PAUSED
            paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED]), **conn).next_items()
            assert sbx.sandbox_id in {s.sandbox_id for s in paused}
            assert sbx.pause() is False  # already paused: 409

            resumed = Sandbox.connect(sbx.sandbox_id, **conn)
            assert resumed.sandbox_id == sbx.sandbox_id
            assert resumed._envd_access_token == token
            assert resumed.files.read("/home/user/before.txt") == "written before the pause"
            assert resumed.commands.run("echo $KEPT").stdout == "yes\n"
            pids = {p.pid for p in resumed.commands.list()}
            assert {sleeper.pid, counter.pid} <= pids, f"cycle {cycle}: {pids}"
            # The pre-pause handle still works: same sandbox, same token.
            assert sbx.commands.run("cat /tmp/count").stdout.strip().isdigit()
    finally:
        sbx.kill()


def test_kill_of_a_paused_sandbox_frees_its_snapshot(conn, stack):
    sbx = Sandbox.create(**conn)
    assert sbx.pause()
    snapshot = stack.config.data_dir / "paused" / sbx.sandbox_id
    assert snapshot.is_dir()
    assert sbx.kill() is True
    assert not snapshot.exists()
    with pytest.raises(Exception, match="not found"):
        Sandbox.connect(sbx.sandbox_id, **conn)


def test_pause_and_resume_status_codes(conn, stack):
    api = httpx.Client(base_url=stack.config.api_url, headers={"X-API-Key": conn["api_key"]}, timeout=150)
    assert api.post("/sandboxes/nosuchsandbox0000000/pause", json={}).status_code == 404
    created = api.post("/v2/sandboxes", json={"templateID": "base"}).json()
    sandbox_id = created["sandboxID"]
    try:
        assert api.post(f"/sandboxes/{sandbox_id}/resume", json={}).status_code == 409
        assert api.post(f"/sandboxes/{sandbox_id}/connect", json={"timeout": 60}).status_code == 200
        assert api.post(f"/sandboxes/{sandbox_id}/pause", json={}).status_code == 204
        assert api.post(f"/sandboxes/{sandbox_id}/pause", json={}).status_code == 409
        detail = api.get(f"/sandboxes/{sandbox_id}").json()
        assert detail["state"] == "paused" and detail["pauseMode"] == "full"
        started = time.time()
        resumed = api.post(f"/v2/sandboxes/{sandbox_id}/connect", json={"timeout": 60})
        assert resumed.status_code == 201
        assert resumed.json()["envdAccessToken"] == created["envdAccessToken"]
        assert api.get(f"/sandboxes/{sandbox_id}").json()["state"] == "running"
        assert time.time() - started < 60
    finally:
        api.delete(f"/sandboxes/{sandbox_id}")


def test_auto_pause_on_timeout_then_auto_resume_by_traffic(conn):
    sbx = Sandbox.create(lifecycle={"on_timeout": "pause", "auto_resume": True}, **conn)
    try:
        sbx.files.write("/home/user/state.txt", "survives the auto-pause")
        info = sbx.get_info()
        assert info.lifecycle == {"on_timeout": "pause", "auto_resume": True}
        sbx.set_timeout(2)
        deadline = time.time() + 60
        while Sandbox.get_info(sbx.sandbox_id, **conn).state != SandboxState.PAUSED:
            assert time.time() < deadline, "never auto-paused"
            time.sleep(0.5)
        # Traffic through the proxy wakes it: the SDK call just works.
        assert sbx.files.read("/home/user/state.txt") == "survives the auto-pause"
        assert Sandbox.get_info(sbx.sandbox_id, **conn).state == SandboxState.RUNNING
    finally:
        sbx.kill()


def test_auto_pause_without_auto_resume_stays_paused_until_connect(conn):
    sbx = Sandbox.create(lifecycle={"on_timeout": "pause", "auto_resume": False}, timeout=3, **conn)
    try:
        sbx.files.write("/home/user/state.txt", "kept")
        deadline = time.time() + 60
        while Sandbox.get_info(sbx.sandbox_id, **conn).state != SandboxState.PAUSED:
            assert time.time() < deadline, "never auto-paused"
            time.sleep(0.5)
        assert sbx.is_running() is False
        # Traffic does not wake it: the proxy answers that the sandbox is not there.
        with pytest.raises(SandboxException):
            sbx.files.read("/home/user/state.txt")
        assert Sandbox.get_info(sbx.sandbox_id, **conn).state == SandboxState.PAUSED
        back = Sandbox.connect(sbx.sandbox_id, **conn)
        assert back.files.read("/home/user/state.txt") == "kept"
    finally:
        sbx.kill()
