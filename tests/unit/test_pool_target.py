from services.nodeagent.pool import CLONE_MEMORY_MB, WarmPool
from services.nodeagent.settings import NodeSettings


def _pool(**settings) -> WarmPool:
    return WarmPool(NodeSettings(**settings), None, None, None, None, None)  # type: ignore[arg-type]


async def test_target_follows_demand_within_bounds():
    pool = _pool(pool_min=1, pool_max=4, pool_memory_mb=4096)
    assert pool.target("base") == 1
    for _ in range(3):
        pool.claim("base")
    assert pool.target("base") == 3
    for _ in range(10):
        pool.claim("base")
    assert pool.target("base") == 4


def test_memory_budget_caps_the_pool():
    pool = _pool(pool_min=5, pool_max=10, pool_memory_mb=3 * CLONE_MEMORY_MB)
    assert pool.target("base") == 3


async def test_claim_from_an_empty_pool_is_a_miss():
    assert _pool().claim("base") is None
