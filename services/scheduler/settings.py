"""Scheduler settings (CORRAL_* variables)."""

from __future__ import annotations

import msgspec


class SchedulerSettings(msgspec.Struct):
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A node that has not heart-beaten for this long is down.
    node_timeout_s: float = 15.0
    # How many candidate nodes placement samples before taking the freest (best-of-K).
    placement_k: int = 2
    node_create_timeout_s: float = 120.0
    # How long a create waits for a node whose agent is restarting (no responder, or
    # heart-beating as starting) when no other node can take it, before a 503.
    place_wait_s: float = 8.0
    reap_every_s: float = 0.25
    log_level: str = "INFO"
