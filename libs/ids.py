"""Sandbox ids and tokens."""

from __future__ import annotations

import secrets
import string

_ID_ALPHABET = string.ascii_lowercase + string.digits
SANDBOX_ID_LENGTH = 20  # fixed length: runsc matches container ids by prefix


def new_sandbox_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(SANDBOX_ID_LENGTH))


def new_token() -> str:
    return secrets.token_hex(24)
