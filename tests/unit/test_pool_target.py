from corral_services.nodeagent.pool import CLONE_MEMORY_MB, WarmPool
from corral_services.nodeagent.pool_demand import Demand
from corral_services.nodeagent.settings import NodeSettings
from corral_services.nodeagent.templates.store import TemplateManifest

BASE = TemplateManifest(
    template_id="base",
    aliases=["base"],
    build_id="1",
    envd_version="0.4.0",
    cpu_count=1,
    memory_mb=512,
    disk_mb=2048,
    user="user",
    init=["/sbin/init"],
    built_at=0.0,
)


def _pool(**settings) -> WarmPool:
    return WarmPool(NodeSettings(**settings), None, None, None)  # type: ignore[arg-type]


async def test_target_follows_demand_within_bounds():
    pool = _pool(pool_min=1, pool_max=4, pool_memory_mb=4096)
    assert pool.target("base") == 1
    for _ in range(3):
        await pool.claim(BASE)
    assert pool.target("base") == 3
    for _ in range(10):
        await pool.claim(BASE)
    assert pool.target("base") == 4


def test_memory_budget_caps_the_pool():
    pool = _pool(pool_min=5, pool_max=10, pool_memory_mb=3 * CLONE_MEMORY_MB)
    assert pool.target("base") == 3


def test_a_template_can_have_its_own_minimum():
    pool = _pool(pool_min=1, pool_min_templates="code-interpreter=3, base=0", pool_memory_mb=4096)
    assert (pool.target("code-interpreter"), pool.target("base"), pool.target("other")) == (3, 0, 1)


def test_bad_minimums_are_refused_at_start():
    try:
        NodeSettings(pool_min_templates="base=lots")
    except ValueError as exc:
        assert "base=lots" in str(exc)
    else:
        raise AssertionError("accepted")


def test_demand_keeps_its_peak_for_the_horizon_then_forgets():
    demand = Demand(window_s=10, horizon_s=60)
    for second in (100, 100, 101, 105, 109):  # five claims within ten seconds
        demand.claim(now=second)
    demand.claim(now=130)
    assert demand.peak(now=131) == 5
    assert demand.peak(now=150) == 5  # a burst is remembered...
    assert demand.peak(now=165) == 1  # ...for the horizon, then only what came after
    assert demand.peak(now=200) == 0


async def test_claim_from_an_empty_pool_is_a_miss():
    assert await _pool().claim(BASE) is None
