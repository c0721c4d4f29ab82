"""The files COPY steps use: the tar archives the SDK uploads (through the API), kept per
template by their hash (E2B's `filesHash`) until the template is deleted."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from corral_libs.contracts.uploads import UPLOAD_TOKEN_HEADER
from corral_libs.state import Store

_HASH = re.compile(r"[0-9a-f]{64}")
_TEMPLATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class BuildFiles:
    def __init__(self, root: Path, node_id: str, store: Store) -> None:
        self.root = root
        self._node_id = node_id
        self._store = store

    def path(self, template_id: str, files_hash: str) -> Path:
        return self.root / template_id / files_hash

    def has(self, template_id: str, files_hash: str) -> bool:
        return self.path(template_id, files_hash).is_file()

    def remove_template(self, template_id: str) -> None:
        shutil.rmtree(self.root / template_id, ignore_errors=True)

    def collect(self, older_than_s: float) -> None:
        """Uploads older than `older_than_s` go (a build uses its files within minutes)."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - older_than_s
        for template in self.root.iterdir():
            for upload in template.iterdir():
                if upload.stat().st_mtime < cutoff:
                    upload.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                template.rmdir()  # only when empty

    def routes(self) -> list[BaseRoute]:
        return [Route("/buildfiles/{template_id}/{files_hash}", self.endpoint, methods=["GET", "PUT"])]

    async def endpoint(self, request: Request) -> Response:
        template_id = request.path_params["template_id"]
        files_hash = request.path_params["files_hash"]
        if not _TEMPLATE_ID.fullmatch(template_id) or not _HASH.fullmatch(files_hash):
            return JSONResponse(
                {"code": 400, "message": "invalid template id or files hash"}, status_code=400
            )
        if not await self._authorised(template_id, request.headers.get(UPLOAD_TOKEN_HEADER, "")):
            return JSONResponse({"code": 401, "message": "a valid upload token is required"}, status_code=401)
        target = self.path(template_id, files_hash)
        if request.method == "GET":
            present = await asyncio.to_thread(target.is_file)
            return JSONResponse({"present": present}, status_code=200 if present else 404)
        await self._receive(request, target)
        return Response(status_code=201)

    async def _authorised(self, template_id: str, token: str) -> bool:
        for build in reversed(await self._store.template_builds(template_id)):
            ours = build.node_id == self._node_id and build.upload_token
            if ours and hmac.compare_digest(build.upload_token.encode(), token.encode()):
                return True
        return False

    async def _receive(self, request: Request, target: Path) -> None:
        """Streams the body to a temporary file and renames it into place: a broken upload
        leaves nothing a build could take for the whole archive."""
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}.{uuid.uuid4().hex}"
        handle = await asyncio.to_thread(partial.open, "wb")
        try:
            async for chunk in request.stream():
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.rename, partial, target)
        except BaseException:
            handle.close()
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
