"""Where the CLI finds the stack: the same CORRAL_* variables the services read."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from corral_libs.bus import Bus
from corral_libs.state import Store

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def redis_url() -> str:
    return os.environ.get("CORRAL_REDIS_URL", DEFAULT_REDIS_URL)


def nats_url() -> str:
    return os.environ.get("CORRAL_NATS_URL", DEFAULT_NATS_URL)


def with_store(action: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = Store.connect(redis_url())
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def with_bus(action: Callable[[Bus, Store], Awaitable[T]]) -> T:
    async def run() -> T:
        bus = await Bus.connect(nats_url(), name="corral-cli")
        store = Store.connect(redis_url())
        try:
            return await action(bus, store)
        finally:
            await bus.close()
            await store.close()

    return asyncio.run(run())
