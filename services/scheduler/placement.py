"""Choosing a node: alive, holding the template, with room; among K sampled candidates
the one with the most free slots (best-of-K keeps many schedulers from piling onto one)."""

from __future__ import annotations

import random
import time

from libs.contracts.records import NODE_READY, NodeRecord


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


def pick(nodes: list[NodeRecord], k: int, rng: random.Random | None = None) -> NodeRecord | None:
    if not nodes:
        return None
    sample = (rng or random).sample(nodes, min(k, len(nodes)))
    return max(sample, key=lambda node: node.free_slots)
