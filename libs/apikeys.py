"""API keys: shown once when created (`e2b_` + 40 hex, the shape E2B SDKs accept), stored
only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
import time

from corral_libs.contracts.records import ApiKeyRecord

KEY_PREFIX = "e2b_"
DEFAULT_MAX_SANDBOXES = 100


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(name: str, max_sandboxes: int = DEFAULT_MAX_SANDBOXES) -> tuple[str, ApiKeyRecord]:
    key = KEY_PREFIX + secrets.token_hex(20)
    record = ApiKeyRecord(
        key_hash=hash_key(key),
        prefix=key[: len(KEY_PREFIX) + 6],
        name=name,
        created_at=time.time(),
        max_sandboxes=max_sandboxes,
    )
    return key, record
