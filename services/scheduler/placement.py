"""Choosing a node: alive, holding the template, with room; among K sampled candidates
the one with the most free slots (best-of-K keeps many schedulers from piling onto one)."""

from __future__ import annotations

import random
import time

from corral_libs.contracts.records import NODE_READY, NodeRecord


def candidates(
    nodes: list[NodeRecord], template_id: str, node_timeout_s: float, exclude: set[str]
) -> list[NodeRecord]:
    now = time.time()
    return [
        node
        for node in nodes
        if node.status == NODE_READY
        and now - node.heartbeat_at <= node_timeout_s
        and template_id in node.templates
        and node.free_slots > 0
        and node.node_id not in exclude
    ]


def pick(
    nodes: list[NodeRecord], k: int, rng: random.Random | None = None, template_id: str | None = None
) -> NodeRecord | None:
    """Nodes with a warm clone of the template go first: a create there costs a claim."""
    if not nodes:
        return None
    warm = [node for node in nodes if template_id and node.warm.get(template_id, 0) > 0]
    pool = warm or nodes
    sample = (rng or random).sample(pool, min(k, len(pool)))
    return max(sample, key=lambda node: node.free_slots)
