"""Proxy settings (CORRAL_* variables)."""

from __future__ import annotations

import msgspec


class ProxySettings(msgspec.Struct):
    host: str = "127.0.0.1"
    port: int = 3001
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    connect_timeout_s: float = 5.0
    # HTTPS beside plain HTTP, for clients that route by `Host: <port>-<id>.<domain>` over TLS:
    # a port (0: none) and a certificate for `*.<domain>` (`corral up --tls` makes one).
    tls_port: int = 0
    tls_cert: str = ""
    tls_key: str = ""
    log_level: str = "INFO"
