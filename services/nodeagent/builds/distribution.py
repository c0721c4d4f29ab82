"""Templates built through the API reach every node that can run them: each node serves the
builds it holds as tar archives on its content server, and fetches from a node that holds
it any such template whose current build (the record the builder wrote) it lacks. Nodes
authenticate each other with the cluster's secret (kept in Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from corral_libs.contracts.records import NODE_READY, TemplateRecord
from corral_libs.state import Store

from ..templates.store import TemplateManifest, TemplateStore

log = logging.getLogger(__name__)

NODE_SECRET_HEADER = "x-corral-node-secret"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
PULLS_AT_ONCE = 2
CHUNK = 1 << 20


class TemplateDistribution:
    def __init__(self, node_id: str, runtime_name: str, templates: TemplateStore, store: Store) -> None:
        self._node_id = node_id
        self._runtime_name = runtime_name
        self._templates = templates
        self._store = store
        self._secret = ""
        self._pulling: dict[str, asyncio.Task[None]] = {}
        self._turns = asyncio.Semaphore(PULLS_AT_ONCE)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30, read=600))

    async def start(self) -> None:
        self._secret = await self._store.cluster_secret()

    async def stop(self) -> None:
        for task in self._pulling.values():
            task.cancel()
        await asyncio.gather(*self._pulling.values(), return_exceptions=True)
        await self._http.aclose()

    def routes(self) -> list[BaseRoute]:
        return [Route("/templatearchive/{template_id}/{build_id}", self.archive, methods=["GET"])]

    async def archive(self, request: Request) -> Response:
        """A build of a template this node holds, as a tar of its root and manifest."""
        given = request.headers.get(NODE_SECRET_HEADER, "")
        if not self._secret or not hmac.compare_digest(given.encode(), self._secret.encode()):
            return JSONResponse({"code": 401, "message": "nodes only"}, status_code=401)
        template_id, build_id = request.path_params["template_id"], request.path_params["build_id"]
        if not (_ID.fullmatch(template_id) and _ID.fullmatch(build_id)):
            return JSONResponse({"code": 400, "message": "invalid template or build id"}, status_code=400)
        found = await asyncio.to_thread(self._templates.find_build, template_id, build_id)
        if found is None:
            return JSONResponse({"code": 404, "message": "no such build here"}, status_code=404)
        process = await asyncio.create_subprocess_exec(
            "tar", "-C", str(found[1]), "-c", "template.json", "rootfs",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return StreamingResponse(_read_all(process), media_type="application/x-tar")

    async def sync(self) -> None:
        """Starts fetching every template built through the API whose current build this
        node lacks (and can run)."""
        for record in await self._store.templates():
            if not record.owner or (record.runtimes and self._runtime_name not in record.runtimes):
                continue
            have = await asyncio.to_thread(self._templates.get, record.template_id)
            if have is not None and (have.build_id == record.build_id or have.built_at >= record.created_at):
                continue
            if record.template_id in self._pulling:
                continue
            task = asyncio.create_task(self._pull(record))
            self._pulling[record.template_id] = task
            task.add_done_callback(lambda _, t=record.template_id: self._pulling.pop(t, None))

    async def _pull(self, record: TemplateRecord) -> None:
        async with self._turns:
            for url in await self._sources(record.template_id):
                try:
                    await self._fetch(record, url)
                    return
                except Exception as exc:
                    log.warning("fetching template %s from %s failed: %s", record.template_id, url, exc)

    async def _sources(self, template_id: str) -> list[str]:
        now = time.time()
        return [
            node.content_url
            for node in await self._store.nodes()
            if node.node_id != self._node_id
            and node.content_url
            and node.status == NODE_READY
            and now - node.heartbeat_at <= 15
            and template_id in node.templates
        ]

    async def _fetch(self, record: TemplateRecord, url: str) -> None:
        started = time.monotonic()
        root = self._templates.root
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, f"-{record.build_id}", ".fetch-", root))
        try:
            unpack = await asyncio.create_subprocess_exec(
                "tar", "-C", str(work), "-x", "--numeric-owner", "-p",
                stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert unpack.stdin is not None
            headers = {NODE_SECRET_HEADER: self._secret}
            archive = f"{url}/templatearchive/{record.template_id}/{record.build_id}"
            try:
                async with self._http.stream("GET", archive, headers=headers) as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"{response.status_code} {(await response.aread())[:200]!r}")
                    async for chunk in response.aiter_bytes(CHUNK):
                        unpack.stdin.write(chunk)
                        await unpack.stdin.drain()
            finally:
                unpack.stdin.close()
                _, err = await unpack.communicate()
            if unpack.returncode != 0:
                raise RuntimeError(f"unpacking failed: {err.decode(errors='replace')[-500:]}")
            manifest = msgspec.json.decode((work / "template.json").read_bytes(), type=TemplateManifest)
            if (manifest.template_id, manifest.build_id) != (record.template_id, record.build_id):
                raise RuntimeError("the archive holds another build")
            await asyncio.to_thread(self._templates.install, record.template_id, work)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        log.info(
            "template %s (build %s) fetched from %s in %.1fs",
            record.template_id,
            record.build_id,
            url,
            time.monotonic() - started,
        )


async def _read_all(process: asyncio.subprocess.Process) -> AsyncIterator[bytes]:
    assert process.stdout is not None
    try:
        while chunk := await process.stdout.read(CHUNK):
            yield chunk
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
