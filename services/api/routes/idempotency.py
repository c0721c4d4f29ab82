"""`Idempotency-Key` on create (sent by the e2b SDKs when asked): a retried create with the
same key and body gets the first one's answer instead of a second sandbox, for an hour; the
same key with another body is a 422. Keys are per API key."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from corral_libs.state import Store

from ..errors import ApiError

HEADER = "idempotency-key"
WINDOW_S = 3600
_KEY = re.compile(r"[A-Za-z0-9_-]{1,255}")


class Idempotency:
    def __init__(self, store: Store, in_flight_s: float) -> None:
        self._store = store
        # How long a claim without an answer holds (a create takes at most this): an API that
        # died mid-create leaves no key stuck for the whole window.
        self._in_flight_s = in_flight_s

    async def __call__(
        self, request: Request, owner: str, create: Callable[[], Awaitable[Response]]
    ) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return await create()
        if not _KEY.fullmatch(key):
            raise ApiError(400, "Idempotency-Key must be 1-255 letters, digits, '-' or '_'")
        digest = hashlib.sha256(await request.body()).hexdigest()
        deadline = time.monotonic() + self._in_flight_s
        claim_ttl = int(self._in_flight_s) + 10
        while (earlier := await self._store.claim_idempotency(owner, key, digest, claim_ttl)) is not None:
            if earlier.body_hash != digest:
                raise ApiError(422, f"Idempotency-Key '{key}' was already used with a different request body")
            if earlier.response is not None:
                return Response(earlier.response, status_code=201, media_type="application/json")
            if time.monotonic() > deadline:
                raise ApiError(409, f"a create with Idempotency-Key '{key}' is still in progress")
            await asyncio.sleep(0.1)  # the same create, in flight: its answer is ours
        try:
            response = await create()
        except BaseException:
            await self._store.drop_idempotency(owner, key)  # a failed create may be tried again
            raise
        await self._store.finish_idempotency(owner, key, digest, bytes(response.body), WINDOW_S)
        return response
