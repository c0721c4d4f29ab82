"""The whole stack (real NATS, Redis, runsc) on random loopback ports, driven by the real
E2B SDKs. The base template is built once per machine (about two minutes) and reused while
this checkout's envd is unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral_libs.stack import LocalStack, StackConfig, free_port
from corral_libs.state import Store
from corral_services.nodeagent.cleanup import kill_all_sandboxes
from corral_services.nodeagent.pool import CLONE_MEMORY_MB
from corral_services.nodeagent.templates.builtin import ensure_template
from corral_services.nodeagent.templates.store import TemplateStore
from tests.harness.corral_up import TEMPLATE_DIR
from tests.harness.registry import Registry, running_registry
from tests.harness.registry import available as registry_available
from tests.harness.testnet import TestNet, running_testnet

# Node agents on one host need disjoint network slots; tests stay clear of `corral up`'s.
TEST_SLOT_BASE = "20000"
POOL_PEAK_HORIZON_S = 30
POOL_BUDGET_CLONES = 5


def stack_available() -> bool:
    return os.geteuid() == 0 and all(
        shutil.which(tool) for tool in ("runsc", "redis-server", "debootstrap", "ip")
    )


@contextlib.contextmanager
def running_stack(
    node_id: str, env: dict[str, str], max_sandboxes: int, **options: object
) -> Iterator[LocalStack]:
    """A whole stack on random ports over the shared templates, with an API key; stopped,
    its sandboxes killed and its state removed afterwards (`options`: more StackConfig)."""
    ensure_template(TemplateStore(TEMPLATE_DIR))
    data_dir = Path(tempfile.mkdtemp(prefix=f"corral-{node_id}-"))
    config = StackConfig.random_ports(
        data_dir, template_dir=TEMPLATE_DIR, node_id=node_id, extra_env=env, **options
    )
    local = LocalStack(config)
    try:
        local.start_infrastructure()
        local.start_services()
        asyncio.run(local.create_api_key(node_id, max_sandboxes=max_sandboxes))
        yield local
    finally:
        local.stop(kill_sandboxes=lambda: kill_all_sandboxes(data_dir, config.redis_url))
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def testnet() -> Iterator[TestNet]:
    """The test hosts every e2e stack's sandboxes reach instead of the internet."""
    if not stack_available():
        pytest.skip("needs root, runsc, redis-server, debootstrap and iproute2 (scripts/install.sh)")
    with running_testnet() as net:
        yield net


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """An image registry on loopback holding a test image (test_template_builds.py)."""
    if not registry_available():
        pytest.skip("needs docker-registry, htpasswd, skopeo, umoci and busybox (scripts/install.sh)")
    with running_registry() as running:
        yield running


@pytest.fixture(scope="session")
def stack(testnet: TestNet, registry: Registry) -> Iterator[LocalStack]:
    # gVisor, named: on a host with working KVM `auto` would pick microVMs (test_microvm.py).
    env = {
        "CORRAL_SLOT_BASE": TEST_SLOT_BASE,
        "CORRAL_RUNTIME": "gvisor",
        # Small volumes, so that filling one to its quota is quick (test_volumes.py).
        "CORRAL_VOLUME_SIZE_MB": "64",
        # A pool that remembers bursts briefly, within a small budget (test_warm_pool.py).
        "CORRAL_POOL_PEAK_HORIZON_S": str(POOL_PEAK_HORIZON_S),
        "CORRAL_POOL_MEMORY_MB": str(POOL_BUDGET_CLONES * CLONE_MEMORY_MB),
        # Build steps get a small disk (filling it is quick: test_template_builds.py).
        "CORRAL_BUILD_DISK_MB": "512",
        # Template builds pull from the test registry, which speaks plain HTTP.
        "CORRAL_INSECURE_REGISTRIES": registry.address,
        **testnet.node_env(),
    }
    # HTTPS beside HTTP, under a domain that TLS clients accept a wildcard for.
    tls = {"domain": "sandbox.localhost", "tls_port": free_port()}
    with running_stack("e2enode", env, max_sandboxes=20, **tls) as local:
        yield local


@pytest.fixture(scope="session")
def conn(stack: LocalStack) -> dict[str, str]:
    """Connection options for the Python SDK (the same values `corral up` prints)."""
    return stack.sdk_options()


@pytest.fixture(scope="session")
def code_interpreter(stack) -> str:
    """Builds the template if this machine lacks it, then waits for the node to offer it."""
    ensure_template(TemplateStore(TEMPLATE_DIR), "code-interpreter")

    async def offered() -> bool:
        store = Store.connect(stack.config.redis_url)
        try:
            node = await store.node(stack.config.node_id)
            return node is not None and "code-interpreter" in node.templates
        finally:
            await store.close()

    deadline = time.monotonic() + 60
    while not asyncio.run(offered()):
        assert time.monotonic() < deadline, "the node did not pick up the code-interpreter template"
        time.sleep(0.5)
    return "code-interpreter-v1"
