"""Creates come from the node's warm pool (clones restored from the template snapshot) and
each clone is its own sandbox."""

from __future__ import annotations

import asyncio
import time

from e2b import Sandbox

from libs.state import Store


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
