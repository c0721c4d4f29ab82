import random
import time

from corral_libs.contracts.records import NODE_DOWN, NodeRecord
from corral_services.scheduler.placement import candidates, pick


def _node(node_id: str, **changes) -> NodeRecord:
    values = dict(
        node_id=node_id,
        runtimes=["gvisor"],
        templates=["base"],
        cpu_count=2,
        memory_mb=4096,
        max_sandboxes=10,
        sandboxes=0,
        heartbeat_at=time.time(),
        started_at=time.time(),
    )
    values.update(changes)
    return NodeRecord(**values)


def test_candidates_need_life_template_and_room():
    nodes = [
        _node("ok"),
        _node("stale", heartbeat_at=time.time() - 60),
        _node("down", status=NODE_DOWN),
        _node("other-template", templates=["code-interpreter"]),
        _node("full", sandboxes=10),
        _node("excluded"),
    ]
    chosen = candidates(nodes, "base", node_timeout_s=6, exclude={"excluded"})
    assert [n.node_id for n in chosen] == ["ok"]


def test_best_of_k_takes_the_freest_of_the_sample():
    nodes = [_node("busy", sandboxes=9), _node("idle", sandboxes=0), _node("mid", sandboxes=5)]
    assert pick(nodes, k=3).node_id == "idle"
    rng = random.Random(7)
    picks = {pick(nodes, k=2, rng=rng).node_id for _ in range(50)}
    assert "busy" not in picks  # with two sampled, the busiest never wins
    assert pick([], k=2) is None


def test_nodes_with_a_warm_clone_go_first():
    nodes = [_node("cold", sandboxes=0), _node("warm", sandboxes=8, warm={"base": 2})]
    assert pick(nodes, k=2, template_id="base").node_id == "warm"
    assert pick(nodes, k=2, template_id="other").node_id == "cold"
