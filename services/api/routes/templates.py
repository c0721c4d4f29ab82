"""Template queries: list, and alias lookup (what `Template.exists` asks)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral_libs.contracts.records import TemplateRecord
from corral_libs.state import Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import rfc3339


def _template_body(record: TemplateRecord) -> dict[str, object]:
    return {
        "templateID": record.template_id,
        "buildID": record.build_id,
        "aliases": record.aliases,
        "names": record.aliases,
        "cpuCount": record.cpu_count,
        "memoryMB": record.memory_mb,
        "diskSizeMB": record.disk_mb,
        "public": record.public,
        "envdVersion": record.envd_version,
        "createdAt": rfc3339(record.created_at),
        "updatedAt": rfc3339(record.created_at),
        "buildStatus": "ready",
        "buildCount": 1,
        "spawnCount": 0,
    }


class TemplateRoutes:
    def __init__(self, store: Store, auth: Authenticator) -> None:
        self._store = store
        self._auth = auth

    async def list(self, request: Request) -> Response:
        await self._auth(request)
        return JSONResponse([_template_body(t) for t in await self._store.templates()])

    async def by_alias(self, request: Request) -> Response:
        await self._auth(request)
        alias = request.path_params["alias"]
        record = await self._store.template(alias)
        if record is None:
            raise ApiError(404, f"template alias '{alias}' not found")
        return JSONResponse({"templateID": record.template_id, "public": record.public})
