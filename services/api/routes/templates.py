"""Template queries: list, one with its builds, alias lookup (what `Template.exists` asks),
and deletion of templates built through the API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import DeleteTemplateRequest, KillReply
from corral_libs.contracts.records import (
    BUILD_READY,
    ApiKeyRecord,
    TemplateBuildRecord,
    TemplateRecord,
)
from corral_libs.state import Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import rfc3339
from .common import ask

DELETE_TIMEOUT_S = 60.0


def _build_body(build: TemplateBuildRecord, record: TemplateRecord | None) -> dict[str, object]:
    body: dict[str, object] = {
        "buildID": build.build_id,
        "status": build.status,
        "createdAt": rfc3339(build.created_at),
        "updatedAt": rfc3339(build.updated_at or build.created_at),
        "cpuCount": build.cpu_count,
        "memoryMB": build.memory_mb,
    }
    if build.finished_at is not None:
        body["finishedAt"] = rfc3339(build.finished_at)
    if record is not None and record.build_id == build.build_id:
        body["diskSizeMB"] = record.disk_mb
        body["envdVersion"] = record.envd_version
    return body


def _template_body(record: TemplateRecord, builds: list[TemplateBuildRecord]) -> dict[str, object]:
    latest = builds[-1] if builds else None
    return {
        "templateID": record.template_id,
        "buildID": record.build_id,
        "aliases": record.aliases,
        "names": record.names or record.aliases,
        "cpuCount": record.cpu_count,
        "memoryMB": record.memory_mb,
        "diskSizeMB": record.disk_mb,
        "public": record.public,
        "envdVersion": record.envd_version,
        "createdAt": rfc3339(builds[0].created_at if builds else record.created_at),
        "updatedAt": rfc3339(record.created_at),
        "createdBy": None,
        "lastSpawnedAt": None,
        "buildStatus": latest.status if latest else BUILD_READY,
        "buildCount": max(1, len(builds)),
        "spawnCount": 0,
    }


def _unbuilt_body(builds: list[TemplateBuildRecord]) -> dict[str, object]:
    """A template with no finished build yet: what its latest build asked for."""
    latest = builds[-1]
    return {
        "templateID": latest.template_id,
        "buildID": latest.build_id,
        "aliases": [latest.name],
        "names": [latest.name],
        "cpuCount": latest.cpu_count,
        "memoryMB": latest.memory_mb,
        "diskSizeMB": 0,
        "public": False,
        "envdVersion": "",
        "createdAt": rfc3339(builds[0].created_at),
        "updatedAt": rfc3339(latest.updated_at or latest.created_at),
        "createdBy": None,
        "lastSpawnedAt": None,
        "buildStatus": latest.status,
        "buildCount": len(builds),
        "spawnCount": 0,
    }


def visible(record: TemplateRecord, key: ApiKeyRecord) -> bool:
    return record.public or record.owner == key.key_hash


class TemplateRoutes:
    def __init__(self, bus: Bus, store: Store, auth: Authenticator) -> None:
        self._bus = bus
        self._store = store
        self._auth = auth

    async def list(self, request: Request) -> Response:
        key = await self._auth(request)
        records = [t for t in await self._store.templates() if visible(t, key)]
        bodies = [_template_body(t, await self._store.template_builds(t.template_id)) for t in records]
        return JSONResponse(bodies)

    async def get(self, request: Request) -> Response:
        """`GET /templates/{id}`: the template and its builds (E2B's TemplateWithBuilds); a
        template of this key's whose builds all failed so far is there too."""
        key = await self._auth(request)
        name = request.path_params["template_id"]
        record = await self._store.template(name)
        if record is None:
            template_id = await self._store.template_id_for(name)
            builds = await self._store.template_builds(template_id) if template_id else []
            mine = [b for b in builds if b.owner == key.key_hash]
            if not mine:
                raise ApiError(404, f"template '{name}' not found")
            body = _unbuilt_body(mine)
        elif not visible(record, key):
            raise ApiError(404, f"template '{name}' not found")
        else:
            builds = await self._store.template_builds(record.template_id)
            mine = [b for b in builds if b.owner == key.key_hash]
            body = _template_body(record, builds)
        body["builds"] = [_build_body(b, record) for b in mine]
        return JSONResponse(body)

    async def by_alias(self, request: Request) -> Response:
        """200: it exists and is yours (or Corral's); 403: it exists and is someone else's;
        404: no such name (what `Template.exists` tells apart)."""
        key = await self._auth(request)
        alias = request.path_params["alias"]
        record = await self._store.template(alias)
        if record is None:
            raise ApiError(404, f"template alias '{alias}' not found")
        if not visible(record, key):
            raise ApiError(403, f"template alias '{alias}' belongs to another team")
        return JSONResponse({"templateID": record.template_id, "public": record.public})

    async def delete(self, name: str, key: ApiKeyRecord) -> Response | None:
        """Deletes a template this key built; None if `name` is no template of its."""
        template_id = await self._store.template_id_for(name)
        if template_id is None:
            return None
        record = await self._store.template(template_id)
        builds = await self._store.template_builds(template_id)
        owner = record.owner if record is not None else (builds[-1].owner if builds else None)
        if owner == "":
            own = f"template '{name}' is one of Corral's own (node agents build it from its recipe)"
            raise ApiError(403, own)
        if owner != key.key_hash:
            return None
        message = DeleteTemplateRequest(template_id=template_id, owner=key.key_hash)
        await ask(self._bus, subjects.DELETE_TEMPLATE, message, KillReply, DELETE_TIMEOUT_S)
        return Response(status_code=204)
