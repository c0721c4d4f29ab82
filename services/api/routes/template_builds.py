"""E2B's template builder API (what `Template.build()` calls): a build is requested
(`POST /v3/templates`) on a node the scheduler picks, the COPY steps' files are uploaded
to that node through this API, the build is started with its steps and polled for status and
logs; the node runs it (services/nodeagent/builds/)."""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral_libs.build_steps import InvalidStep, validate
from corral_libs.bus import Bus
from corral_libs.contracts import subjects
from corral_libs.contracts.messages import (
    BuildReply,
    BuildSpec,
    BuildStep,
    PlaceBuildRequest,
    RegistryAuth,
    StartBuildRequest,
)
from corral_libs.contracts.records import (
    BUILD_WAITING,
    ApiKeyRecord,
    BuildLogEntry,
    TemplateBuildRecord,
)
from corral_libs.contracts.uploads import UPLOAD_TOKEN_HEADER
from corral_libs.ids import new_sandbox_id, new_token
from corral_libs.state import BUILD_LOG_KEPT, Store

from ..auth import Authenticator
from ..errors import ApiError
from ..models import rfc3339
from .common import ask, read_json

# Template names: E2B's (letters, digits, '-', '_', '.', optionally namespace/name), with :tag.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}(/[a-z0-9][a-z0-9._-]{0,62})?")
_TAG = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_HASH = re.compile(r"[0-9a-f]{64}")
DEFAULT_TAG = "default"
DEFAULT_CPU_COUNT = 2
DEFAULT_MEMORY_MB = 1024
MAX_CPU_COUNT = 16
MAX_MEMORY_MB = 65536
# E2B's base image is its base template: a build from it is a build from Corral's `base`.
BASE_IMAGES = {"e2bdev/base", "e2bdev/base:latest", "docker.io/e2bdev/base", "docker.io/e2bdev/base:latest"}
LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
REQUEST_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 3600.0


class BuildRequestBody(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str | None = None
    alias: str | None = None  # deprecated: the name
    tags: list[str] | None = None
    team_id: str | None = msgspec.field(default=None, name="teamID")
    cpu_count: int | None = None
    memory_mb: int | None = msgspec.field(default=None, name="memoryMB")
    min_free_disk_mb: int | None = msgspec.field(default=None, name="minFreeDiskMb")


class StepBody(msgspec.Struct, rename="camel"):
    type: str
    args: list[str] = []
    force: bool | None = None
    files_hash: str | None = None
    force_upload: bool | None = None


class BuildStartBody(msgspec.Struct, rename="camel"):
    from_image: str | None = None
    from_template: str | None = None
    from_image_registry: dict[str, object] | None = None
    force: bool | None = None
    steps: list[StepBody] = []
    start_cmd: str | None = None
    ready_cmd: str | None = None


def split_name(name: str) -> tuple[str, str | None]:
    base, _, tag = name.partition(":")
    if len(name) > 128 or not _NAME.fullmatch(base) or (tag and not _TAG.fullmatch(tag)):
        raise ApiError(
            400,
            f"invalid template name '{name}': use lowercase letters, digits, '.', '_' and '-' "
            "(optionally namespace/name), with an optional :tag",
        )
    return base, tag or None


def log_entry_body(entry: BuildLogEntry) -> dict[str, object]:
    body: dict[str, object] = {
        "timestamp": rfc3339(entry.timestamp),
        "level": entry.level,
        "message": entry.message,
    }
    if entry.step is not None:
        body["step"] = entry.step
    return body


class TemplateBuildRoutes:
    def __init__(self, bus: Bus, store: Store, auth: Authenticator) -> None:
        self._bus = bus
        self._store = store
        self._auth = auth
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S, read=UPLOAD_TIMEOUT_S, write=None)
        )

    async def request_build(self, request: Request) -> Response:
        """`POST /v3/templates`: a new build of the named template (a new template if the
        name is free), on a node chosen now: the files its COPY steps need go there."""
        key = await self._auth(request)
        body = await read_json(request, BuildRequestBody)
        assert isinstance(body, BuildRequestBody)
        raw_name = body.name or body.alias
        if not raw_name:
            raise ApiError(400, "name is required")
        name, tag = split_name(raw_name)
        tags = sorted({*(body.tags or []), *([tag] if tag else [])}) or [DEFAULT_TAG]
        for each in tags:
            if not _TAG.fullmatch(each):
                raise ApiError(400, f"invalid tag '{each}': use lowercase letters, digits, '.', '_' and '-'")
        cpu_count = DEFAULT_CPU_COUNT if body.cpu_count is None else body.cpu_count
        memory_mb = DEFAULT_MEMORY_MB if body.memory_mb is None else body.memory_mb
        if not 1 <= cpu_count <= MAX_CPU_COUNT:
            raise ApiError(400, f"cpuCount must be between 1 and {MAX_CPU_COUNT}")
        if not 128 <= memory_mb <= MAX_MEMORY_MB:
            raise ApiError(400, f"memoryMB must be between 128 and {MAX_MEMORY_MB}")
        template_id = await self._template_for_name(name, key)
        build_id = str(uuid.uuid4())
        reply = await ask(
            self._bus,
            subjects.PLACE_BUILD,
            PlaceBuildRequest(template_id=template_id, build_id=build_id),
            BuildReply,
            REQUEST_TIMEOUT_S,
        )
        now = time.time()
        record = TemplateBuildRecord(
            template_id=template_id,
            build_id=build_id,
            owner=key.key_hash,
            name=name,
            tags=tags,
            cpu_count=cpu_count,
            memory_mb=memory_mb,
            created_at=now,
            updated_at=now,
            node_id=reply.node_id,
            upload_token=new_token(),
        )
        await self._store.save_build(record)
        body_out = {
            "templateID": template_id,
            "buildID": build_id,
            "public": False,
            "names": [name],
            "tags": tags,
            "aliases": [name],
        }
        return JSONResponse(body_out, status_code=202)

    async def _template_for_name(self, name: str, key: ApiKeyRecord) -> str:
        """The template a name stands for, if it is this key's; a new one if it is free."""
        existing = await self._store.template_id_for(name)
        if existing is None:
            existing = await self._store.claim_template_name(name, new_sandbox_id())
        owner = await self._owner_of(existing)
        if owner is not None and owner != key.key_hash:
            if owner == "":
                raise ApiError(409, f"'{name}' is a template Corral provides: build under another name")
            raise ApiError(409, f"the template name '{name}' is taken")
        return existing

    async def _owner_of(self, template_id: str) -> str | None:
        """Who owns a template: "" for Corral's own, None if nobody has built it yet."""
        record = await self._store.template(template_id)
        if record is not None:
            return record.owner
        builds = await self._store.template_builds(template_id)
        return builds[-1].owner if builds else None

    async def _build_of(self, request: Request, key: ApiKeyRecord) -> TemplateBuildRecord:
        template_id = request.path_params["template_id"]
        build_id = request.path_params["build_id"]
        build = await self._store.build(build_id)
        if build is None or build.owner != key.key_hash or template_id not in (build.template_id, build.name):
            raise ApiError(404, f"build '{build_id}' of template '{template_id}' not found")
        return build

    async def _latest_build(self, template_id: str, key: ApiKeyRecord) -> TemplateBuildRecord:
        resolved = await self._store.template_id_for(template_id) or template_id
        builds = [b for b in await self._store.template_builds(resolved) if b.owner == key.key_hash]
        if not builds:
            raise ApiError(404, f"template '{template_id}' has no build of yours")
        return builds[-1]

    async def files(self, request: Request) -> Response:
        """`GET /templates/{id}/files/{hash}`: whether the build's node has that file set,
        and where to upload it if not."""
        key = await self._auth(request)
        files_hash = request.path_params["hash"]
        if not _HASH.fullmatch(files_hash):
            raise ApiError(400, f"invalid files hash '{files_hash}' (sha256, hex)")
        build = await self._latest_build(request.path_params["template_id"], key)
        response = await self._to_node(build, "GET", files_hash)
        if response.status_code not in (200, 404):
            raise ApiError(502, f"the build's node answered {response.status_code}: {response.text}")
        present = response.status_code == 200
        upload_url = str(
            request.url_for("template_files_upload", template_id=build.template_id, hash=files_hash)
        )
        body = {"present": present, "url": upload_url, "headers": {UPLOAD_TOKEN_HEADER: build.upload_token}}
        return JSONResponse(body, status_code=201)

    async def upload(self, request: Request) -> Response:
        """`PUT` of a COPY step's files (a tar, gzipped or not), forwarded to the build's
        node. The SDK sends no API key here: the build's upload token stands for it."""
        template_id = request.path_params["template_id"]
        files_hash = request.path_params["hash"]
        if not _HASH.fullmatch(files_hash):
            raise ApiError(400, f"invalid files hash '{files_hash}' (sha256, hex)")
        token = request.headers.get(UPLOAD_TOKEN_HEADER, "")
        builds = await self._store.template_builds(template_id)
        given = token.encode()
        build = next(
            (b for b in reversed(builds) if hmac.compare_digest(b.upload_token.encode(), given)), None
        )
        if build is None:
            raise ApiError(401, "a valid upload token is required (from GET /templates/{id}/files/{hash})")
        response = await self._to_node(build, "PUT", files_hash, content=_body(request))
        if response.status_code != 201:
            raise ApiError(
                502, f"the build's node did not take the files: {response.status_code} {response.text}"
            )
        return Response(status_code=201)

    async def _to_node(
        self,
        build: TemplateBuildRecord,
        method: str,
        files_hash: str,
        content: AsyncIterator[bytes] | None = None,
    ) -> httpx.Response:
        node = await self._store.node(build.node_id)
        if node is None or not node.content_url:
            raise ApiError(
                503,
                f"node {build.node_id}, which builds the template, is not available",
                {"Retry-After": "1"},
            )
        try:
            return await self._http.request(
                method,
                f"{node.content_url}/buildfiles/{build.template_id}/{files_hash}",
                headers={UPLOAD_TOKEN_HEADER: build.upload_token},
                content=content,
            )
        except httpx.HTTPError as exc:
            raise ApiError(
                503,
                f"node {build.node_id}, which builds the template, is not answering: {exc}",
                {"Retry-After": "1"},
            ) from None

    async def start(self, request: Request) -> Response:
        """`POST /v2/templates/{id}/builds/{buildID}`: the steps, built on the build's node."""
        key = await self._auth(request)
        build = await self._build_of(request, key)
        body = await read_json(request, BuildStartBody)
        assert isinstance(body, BuildStartBody)
        if build.status != BUILD_WAITING:
            raise ApiError(409, f"build '{build.build_id}' was started already ({build.status})")
        from_template, from_image, registry_auth = await self._base(body, key)
        spec = BuildSpec(
            from_template=from_template,
            from_image=from_image,
            registry_auth=registry_auth,
            steps=[
                BuildStep(type=s.type, args=s.args, files_hash=s.files_hash, force=bool(s.force))
                for s in body.steps
            ],
            force=bool(body.force),
            start_cmd=body.start_cmd or None,
            ready_cmd=body.ready_cmd or None,
        )
        try:
            validate(spec.steps)
        except InvalidStep as exc:
            raise ApiError(400, str(exc)) from None
        message = StartBuildRequest(template_id=build.template_id, build_id=build.build_id, spec=spec)
        await ask(self._bus, subjects.START_BUILD, message, BuildReply, REQUEST_TIMEOUT_S)
        return Response(status_code=202)

    async def _base(self, body: BuildStartBody, key: ApiKeyRecord) -> tuple[str, str, RegistryAuth | None]:
        """(base template id, image reference, registry credentials): one of the first two."""
        if body.from_template and body.from_image:
            raise ApiError(400, "give fromTemplate or fromImage, not both")
        if not (body.from_template or body.from_image):
            raise ApiError(400, "fromTemplate or fromImage is required")
        if body.from_image and body.from_image not in BASE_IMAGES:
            return "", body.from_image, _registry_auth(body.from_image_registry)
        name = body.from_template or "base"  # E2B's base image is Corral's base template
        record = await self._store.template(name)
        if record is None or not (record.public or record.owner == key.key_hash):
            raise ApiError(400, f"base template '{name}' not found")
        return record.template_id, "", None

    async def status(self, request: Request) -> Response:
        """`GET /templates/{id}/builds/{buildID}/status`: the state and the log entries
        from `logsOffset` on (at most `limit`, at least `level`)."""
        key = await self._auth(request)
        build = await self._build_of(request, key)
        offset = _int_query(request, "logsOffset", 0, 0)
        limit = _int_query(request, "limit", 100, 1, 1000)
        level = request.query_params.get("level")
        if level is not None and level not in LEVELS:
            raise ApiError(400, f"level must be one of {', '.join(LEVELS)}")
        if level is None:
            entries = await self._store.build_logs(build.build_id, offset, limit)
        else:
            every = await self._store.build_logs(build.build_id, 0, BUILD_LOG_KEPT)
            entries = [e for e in every if LEVELS.get(e.level, 1) >= LEVELS[level]][offset : offset + limit]
        body: dict[str, object] = {
            "templateID": build.template_id,
            "buildID": build.build_id,
            "status": build.status,
            "logs": [e.message for e in entries],
            "logEntries": [log_entry_body(e) for e in entries],
        }
        if build.reason:
            body["reason"] = {
                "message": build.reason,
                **({"step": build.reason_step} if build.reason_step else {}),
            }
        return JSONResponse(body)

    async def logs(self, request: Request) -> Response:
        """`GET /templates/{id}/builds/{buildID}/logs`: entries by `cursor` (a timestamp in
        milliseconds), `limit`, `direction` and `level`."""
        key = await self._auth(request)
        build = await self._build_of(request, key)
        cursor = _int_query(request, "cursor", 0, 0)
        limit = _int_query(request, "limit", 100, 1, 1000)
        direction = request.query_params.get("direction", "forward")
        level = request.query_params.get("level")
        if direction not in ("forward", "backward"):
            raise ApiError(400, "direction must be forward or backward")
        if level is not None and level not in LEVELS:
            raise ApiError(400, f"level must be one of {', '.join(LEVELS)}")
        every = await self._store.build_logs(build.build_id, 0, BUILD_LOG_KEPT)
        chosen = [e for e in every if level is None or LEVELS.get(e.level, 1) >= LEVELS[level]]
        if direction == "forward":
            chosen = [e for e in chosen if e.timestamp * 1000 >= cursor][:limit]
        else:
            chosen = [e for e in chosen if not cursor or e.timestamp * 1000 <= cursor][-limit:][::-1]
        return JSONResponse({"logs": [log_entry_body(e) for e in chosen]})


def _registry_auth(given: dict[str, object] | None) -> RegistryAuth | None:
    """E2B's `fromImageRegistry`: user and password for a registry; cloud registries' own
    credentials (AWS, GCP) need their token exchanges, which Corral does not do."""
    if not given:
        return None
    kind = given.get("type")
    if kind != "registry":
        raise ApiError(
            400, f"fromImageRegistry type '{kind}' is not supported: give a registry user and password"
        )
    username, password = given.get("username"), given.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise ApiError(400, "fromImageRegistry needs username and password")
    return RegistryAuth(username=username, password=password)


def _int_query(request: Request, name: str, default: int, low: int, high: int = 2**31) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}")
    return value


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk
