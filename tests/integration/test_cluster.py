"""Scheduler, node agents and API together on real NATS, Redis and runsc: placement, the
per-key limit, lease expiry, two reapers, and a node that dies."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral_libs.contracts import keys
from corral_libs.contracts.records import NODE_DOWN
from corral_libs.stack import LocalStack, StackConfig
from corral_libs.state import Store
from corral_services.nodeagent.cleanup import kill_all_sandboxes
from corral_services.nodeagent.templates.builtin import ensure_template
from corral_services.nodeagent.templates.store import TemplateStore
from tests.e2e.conftest import TEMPLATE_DIR, stack_available
from tests.harness.testnet import EGRESS_SAFETY_NET

FAST = {
    "CORRAL_HEARTBEAT_S": "0.5",
    "CORRAL_NODE_TIMEOUT_S": "3",
    "CORRAL_RUNTIME": "gvisor",
    # These sandboxes reach nothing: no name resolves, no address but loopback's answers.
    "CORRAL_DNS_UPSTREAMS": "none",
    "CORRAL_EGRESS_ALWAYS_DENY": EGRESS_SAFETY_NET,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalStack]:
    if not stack_available():
        pytest.skip("needs root, runsc, redis-server, debootstrap and iproute2 (scripts/install.sh)")
    ensure_template(TemplateStore(TEMPLATE_DIR))
    root = Path(tempfile.mkdtemp(prefix="corral-cluster-"))
    (root / "empty-templates").mkdir()
    config = StackConfig.random_ports(root / "stack", extra_env=FAST)
    stack = LocalStack(config)
    nodes = {
        # Holds no template: placement must never pick it.
        "bare": {
            "CORRAL_DATA_DIR": str(root / "bare"),
            "CORRAL_TEMPLATE_DIR": str(root / "empty-templates"),
            "CORRAL_SLOT_BASE": "21000",
        },
        "full": {
            "CORRAL_DATA_DIR": str(root / "full"),
            "CORRAL_TEMPLATE_DIR": str(TEMPLATE_DIR),
            "CORRAL_SLOT_BASE": "22000",
        },
    }
    try:
        stack.start_infrastructure()
        stack.start_services(("api", "proxy"))
        stack.start_service("scheduler", label="scheduler-a")
        stack.start_service("scheduler", label="scheduler-b")
        for node_id, env in nodes.items():
            stack.start_service("nodeagent", {**env, "CORRAL_NODE_ID": node_id}, label=f"node-{node_id}")
            asyncio.run(stack.wait_node(node_id, label=f"node-{node_id}"))
        stack.nodes = nodes  # type: ignore[attr-defined]
        yield stack
    finally:
        stack.stop(kill_sandboxes=lambda: [kill_all_sandboxes(root / n, config.redis_url) for n in nodes])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def api_key(cluster: LocalStack) -> str:
    return asyncio.run(cluster.create_api_key("cluster", max_sandboxes=2))


def _api(cluster: LocalStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=cluster.config.api_url, headers={"X-API-Key": key}, timeout=180)


def _with_store(cluster: LocalStack, read):
    async def load():
        store = Store.connect(cluster.config.redis_url)
        try:
            return await read(store)
        finally:
            await store.close()

    return asyncio.run(load())


def _wait(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.time() + timeout_s
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_placement_picks_the_node_with_the_template(cluster, api_key):
    with _api(cluster, api_key) as api:
        created = api.post("/v2/sandboxes", json={"templateID": "base", "metadata": {}, "envVars": {}})
        assert created.status_code == 201, created.text
        sandbox_id = created.json()["sandboxID"]
        record = _with_store(cluster, lambda store: store.sandbox(sandbox_id))
        assert record.node_id == "full"
        assert api.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert api.get(f"/sandboxes/{sandbox_id}").status_code == 404


def test_bad_requests(cluster, api_key):
    with _api(cluster, api_key) as api:
        unknown = api.post("/v2/sandboxes", json={"templateID": "nope"})
        assert unknown.status_code == 404 and "nope" in unknown.json()["message"]
        assert api.post("/v2/sandboxes", content=b"{oops").status_code == 400
        assert api.post("/v2/sandboxes", json={"metadata": {}}).status_code == 400
        assert api.post("/v2/sandboxes", json={"templateID": "base", "timeout": -1}).status_code == 400
        assert api.get("/v2/sandboxes", params={"state": "sleeping"}).status_code == 400
    anonymous = httpx.post(f"{cluster.config.api_url}/v2/sandboxes", json={"templateID": "base"})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == 401


def test_per_key_concurrency_limit(cluster, api_key):
    with _api(cluster, api_key) as api:
        first = api.post("/v2/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        second = api.post("/v2/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        third = api.post("/v2/sandboxes", json={"templateID": "base"})
        assert third.status_code == 429
        api.delete(f"/sandboxes/{first}")
        fourth = api.post("/v2/sandboxes", json={"templateID": "base"})
        assert fourth.status_code == 201
        api.delete(f"/sandboxes/{second}")
        api.delete(f"/sandboxes/{fourth.json()['sandboxID']}")


def test_lease_expiry_with_two_reapers_and_one_stopped(cluster, api_key):
    with _api(cluster, api_key) as api:
        sandbox_id = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 1}).json()["sandboxID"]
        _wait(lambda: api.get(f"/sandboxes/{sandbox_id}").status_code == 404)
        # Whichever scheduler holds the reaper lock, stopping one leaves the other reaping.
        cluster.stop_service("scheduler-a")
        sandbox_id = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 1}).json()["sandboxID"]
        _wait(lambda: api.get(f"/sandboxes/{sandbox_id}").status_code == 404)
        proxied = httpx.get(
            f"{cluster.config.sandbox_url}/health",
            headers={"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983"},
        )
        assert proxied.status_code == 502 and "was not found" in proxied.text
    cluster.start_service("scheduler", label="scheduler-a")


def test_node_failure_then_restart_cleans_up(cluster, api_key):
    with _api(cluster, api_key) as api:
        sandbox_id = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 600}).json()[
            "sandboxID"
        ]
        node = cluster.process("node-full")
        node.send_signal(signal.SIGKILL)
        node.wait()
        _wait(lambda: api.get(f"/sandboxes/{sandbox_id}").status_code == 404)
        node_record = _with_store(cluster, lambda store: store.node("full"))
        assert node_record.status == NODE_DOWN

        # The sandbox itself outlived its agent; the restarted agent finds it unrecorded.
        assert (
            f"corral-{sandbox_id}"
            in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
        env = {**cluster.nodes["full"], "CORRAL_NODE_ID": "full"}  # type: ignore[attr-defined]
        cluster.start_service("nodeagent", env, label="node-full")
        asyncio.run(cluster.wait_node("full", label="node-full"))
        _wait(  # killed behind the agent's start-up
            lambda: (
                f"corral-{sandbox_id}"
                not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            )
        )
        data_dir = Path(cluster.nodes["full"]["CORRAL_DATA_DIR"])  # type: ignore[attr-defined]
        _wait(lambda: not (data_dir / "sandboxes" / sandbox_id).exists())

        assert _with_store(cluster, lambda store: store.redis.zscore(keys.LEASES, sandbox_id)) is None
        again = api.post("/v2/sandboxes", json={"templateID": "base"})
        assert again.status_code == 201
        api.delete(f"/sandboxes/{again.json()['sandboxID']}")
