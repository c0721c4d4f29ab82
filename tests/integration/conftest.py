"""Real nats-server and redis-server on random loopback ports."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral_libs.bus import Bus
from corral_libs.stack import LocalStack, StackConfig
from corral_libs.state import Store


@pytest.fixture(scope="session")
def infra() -> Iterator[LocalStack]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (scripts/install.sh)")
    data_dir = Path(tempfile.mkdtemp(prefix="corral-int-"))
    stack = LocalStack(StackConfig.random_ports(data_dir))
    try:
        stack.start_infrastructure()
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def store(infra: LocalStack) -> AsyncIterator[Store]:
    store = Store.connect(infra.config.redis_url)
    await store.redis.flushdb()
    yield store
    await store.close()


@pytest.fixture
async def bus(infra: LocalStack) -> AsyncIterator[Bus]:
    bus = await Bus.connect(infra.config.nats_url, name="test")
    yield bus
    await bus.close()
