"""API settings (CORRAL_* variables)."""

from __future__ import annotations

import msgspec


class ApiSettings(msgspec.Struct):
    host: str = "127.0.0.1"
    port: int = 3000
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Returned to SDKs as `domain`: sandbox hosts are <port>-<id>.<domain>. Never leave it
    # to the SDK's default, which is E2B's cloud.
    domain: str = "localhost"
    place_timeout_s: float = 150.0
    log_level: str = "INFO"
