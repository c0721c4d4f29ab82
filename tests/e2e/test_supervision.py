"""`corral up`, as the CLI starts it, heals itself: each of its processes SIGKILLed in turn
is restarted, creates succeed again within seconds, an existing sandbox keeps its files and
processes, and `corral status` counts the restart. A node agent killed during a burst of
creates leaves every create done or cleanly refused, and no sandbox without an owner."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from corral_libs.state import Store
from tests.harness.corral_up import PROCESSES, CorralUp

from .conftest import stack_available


@pytest.fixture(scope="module")
def up() -> Iterator[CorralUp]:
    if not stack_available():
        pytest.skip("needs root, runsc, redis-server, debootstrap and iproute2 (scripts/install.sh)")
    data_dir = Path(tempfile.mkdtemp(prefix="corral-up-"))
    corral = CorralUp(data_dir)
    try:
        corral.start()
        yield corral
    finally:
        corral.stop()
        # The logs outlive the run, for a failure's post-mortem.
        shutil.copytree(
            data_dir / "logs", Path(tempfile.gettempdir()) / "corral-up-test-logs", dirs_exist_ok=True
        )
        shutil.rmtree(data_dir, ignore_errors=True)


def create_soon(conn: dict[str, str], timeout_s: float = 30) -> tuple[Sandbox, float]:
    """A create, retried while the stack recovers; and how long that took."""
    started = time.monotonic()
    while True:
        try:
            return Sandbox.create(**conn), time.monotonic() - started
        except Exception:
            if time.monotonic() - started > timeout_s:
                raise
            time.sleep(0.2)


def running_containers(up: CorralUp) -> set[str]:
    listing = subprocess.run(
        ["runsc", f"--root={up.data_dir / 'runsc'}", "list", "--format=json"], capture_output=True, text=True
    )
    return {c["id"] for c in json.loads(listing.stdout or "[]") if c.get("status") == "running"}


def listed_ids(conn: dict[str, str]) -> set[str]:
    return {s.sandbox_id for s in Sandbox.list(**conn).next_items()}


def warm_clones(up: CorralUp) -> int:
    async def node() -> int:
        store = Store.connect(f"redis://127.0.0.1:{up.ports['redis']}/0")
        try:
            return sum(sum(node.warm.values()) for node in await store.nodes())
        finally:
            await store.close()

    return asyncio.run(node())


def test_every_process_killed_in_turn_comes_back(up):
    conn = up.conn()
    keeper = Sandbox.create(timeout=600, **conn)
    keeper.files.write("/home/user/kept.txt", "through every crash")
    sleeper = keeper.commands.run("sleep 3600", background=True)
    try:
        for name in PROCESSES:
            before = up.status()
            assert before is not None and before[name]["state"] == "running", before
            os.kill(before[name]["pid"], signal.SIGKILL)
            sbx, took = create_soon(conn)
            sbx.kill()
            after = up.status()
            assert after is not None
            assert after[name]["restarts"] == before[name]["restarts"] + 1, (name, after[name])
            assert after[name]["last_exit"] == -signal.SIGKILL
            assert keeper.files.read("/home/user/kept.txt") == "through every crash", name
            assert sleeper.pid in {p.pid for p in keeper.commands.list()}, name
            print(f"{name}: creates again {took:.1f}s after its kill")
        assert all(row["restarts"] == 1 for row in up.status().values() if row["process"] in PROCESSES)
    finally:
        keeper.kill()


def test_node_agent_killed_during_a_burst(up):
    conn = up.conn()
    outcomes: list[object] = []

    def create() -> None:
        try:
            outcomes.append(Sandbox.create(**conn))
        except SandboxException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    os.kill(up.status()["nodeagent"]["pid"], signal.SIGKILL)
    for thread in threads:
        thread.join(180)
    made = [o for o in outcomes if isinstance(o, Sandbox)]
    refused = [o for o in outcomes if not isinstance(o, Sandbox)]
    assert len(outcomes) == 8
    assert all("503" in str(e) or "500" in str(e) for e in refused), refused
    create_soon(conn)[0].kill()  # the agent is back
    listed = {s.sandbox_id for s in Sandbox.list(**conn).next_items()}
    assert {s.sandbox_id for s in made} <= listed
    for sbx in made:
        assert sbx.commands.run("echo alive").stdout == "alive\n"
    # Every runsc container of this node is a listed sandbox or one of its warm clones: what
    # the burst had under way when the agent died is gone.
    deadline = time.time() + 60
    while (unowned := len(running_containers(up) - listed_ids(conn))) != warm_clones(up):
        assert time.time() < deadline, f"{unowned} sandboxes nobody owns, {warm_clones(up)} warm"
        time.sleep(1)
    for sbx in made:
        sbx.kill()
