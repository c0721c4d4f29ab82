"""API-key authentication: `X-API-Key`, or `Authorization: Bearer <key>`."""

from __future__ import annotations

import time

from starlette.requests import Request

from corral_libs.apikeys import hash_key
from corral_libs.contracts.records import ApiKeyRecord
from corral_libs.state import Store

from .errors import ApiError

# Known keys are remembered briefly so a request costs no Redis round trip for auth;
# a revocation takes effect within this time.
CACHE_S = 5.0


class Authenticator:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, ApiKeyRecord]] = {}

    async def __call__(self, request: Request) -> ApiKeyRecord:
        key = request.headers.get("x-api-key")
        if not key:
            authorization = request.headers.get("authorization", "")
            if authorization.lower().startswith("bearer "):
                key = authorization[7:].strip()
        if not key:
            raise ApiError(401, "missing API key: send it in the X-API-Key header")
        key_hash = hash_key(key)
        cached = self._cache.get(key_hash)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        record = await self._store.api_key(key_hash)
        if record is None or record.revoked:
            self._cache.pop(key_hash, None)
            raise ApiError(401, "invalid API key")
        self._cache[key_hash] = (now, record)
        return record
