"""Creates come from the node's warm pool (clones restored from the template snapshot) and
each clone is its own sandbox."""

from __future__ import annotations

import asyncio
import time

from e2b import Sandbox

from corral_libs.state import Store


def _node(stack):
    async def load():
        store = Store.connect(stack.config.redis_url)
        try:
            return await store.node(stack.config.node_id)
        finally:
            await store.close()

    return asyncio.run(load())


def test_pool_fills_and_reports_depth(stack):
    deadline = time.time() + 120
    while _node(stack).warm.get("base", 0) < 1:
        assert time.time() < deadline, "the warm pool never filled"
        time.sleep(0.5)


def test_clones_are_personal_and_isolated(stack, conn):
    first = Sandbox.create(envs={"WHO": "first"}, **conn)
    second = Sandbox.create(envs={"WHO": "second"}, **conn)
    try:
        assert first.sandbox_id != second.sandbox_id
        assert first._envd_access_token != second._envd_access_token
        assert first.commands.run("echo $WHO").stdout == "first\n"
        assert second.commands.run("echo $WHO").stdout == "second\n"
        first.files.write("/home/user/secret.txt", "only in first")
        first.commands.run("echo tmp > /tmp/t.txt")
        assert not second.files.exists("/home/user/secret.txt")
        assert not second.files.exists("/tmp/t.txt")
        # Fresh entropy per clone.
        draws = {s.commands.run("head -c 16 /dev/urandom | od -An -tx1").stdout for s in (first, second)}
        assert len(draws) == 2
    finally:
        first.kill()
        second.kill()


def test_coreutils_stat_works_in_the_sandbox(conn):
    sbx = Sandbox.create(**conn)
    try:
        listing = sbx.commands.run("ls -ld /tmp /home/user && stat -c '%U %a' /home/user").stdout
        assert "drwxrwxrwt" in listing
        assert listing.strip().endswith("user 755")
    finally:
        sbx.kill()


def test_pool_deepens_for_a_burst_and_shrinks_when_idle(stack, conn):
    """The stack's pool remembers peaks for POOL_PEAK_HORIZON_S and holds POOL_BUDGET_CLONES
    clones at most (conftest): a burst of creates raises its target and depth, within the
    budget; once the burst is past the horizon the pool is back at its minimum."""
    from concurrent.futures import ThreadPoolExecutor

    from .conftest import POOL_BUDGET_CLONES

    with ThreadPoolExecutor(8) as burst:
        sandboxes = list(burst.map(lambda _: Sandbox.create(**conn), range(8)))
    try:
        deadline = time.time() + 120
        node = _node(stack)
        while node.warm.get("base", 0) < 3:
            assert time.time() < deadline, f"the pool did not deepen: {node.warm} of {node.warm_targets}"
            time.sleep(0.5)
            node = _node(stack)
        assert 3 <= node.warm_targets["base"] <= POOL_BUDGET_CLONES
        assert node.warm["base"] <= POOL_BUDGET_CLONES
    finally:
        with ThreadPoolExecutor(8) as kill:
            list(kill.map(lambda s: s.kill(), sandboxes))
    deadline = time.time() + 180
    while (node := _node(stack)).warm.get("base", 0) > 1 or node.warm_targets.get("base") != 1:
        assert time.time() < deadline, f"the pool did not shrink: {node.warm} of {node.warm_targets}"
        time.sleep(1)
