"""The control-plane API: E2B's REST surface over the bus (changes) and Redis (queries)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral_libs.bus import UNAVAILABLE, Bus
from corral_libs.state import Store

from .auth import Authenticator
from .errors import ApiError, error_response
from .routes.logs import LogRoutes
from .routes.metrics import MetricRoutes
from .routes.network import NetworkRoutes
from .routes.sandboxes import SandboxRoutes
from .routes.snapshots import SnapshotRoutes
from .routes.template_builds import TemplateBuildRoutes
from .routes.templates import TemplateRoutes
from .routes.volumes import VolumeRoutes


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail)


async def _on_unavailable(request: Request, exc: Exception) -> Response:
    return error_response(503, f"a part of Corral is restarting ({exc}); retry shortly")


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(bus: Bus, store: Store, *, domain: str, place_timeout_s: float) -> Starlette:
    auth = Authenticator(store)
    sandboxes = SandboxRoutes(bus, store, auth, domain, place_timeout_s)
    templates = TemplateRoutes(bus, store, auth)
    builds = TemplateBuildRoutes(bus, store, auth)
    snapshots = SnapshotRoutes(bus, store, auth, domain, templates)
    network = NetworkRoutes(bus, store, auth)
    logs = LogRoutes(bus, store, auth)
    metrics = MetricRoutes(bus, store, auth)
    volumes = VolumeRoutes(bus, store, auth)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/sandboxes", sandboxes.create_v1, methods=["POST"]),
        Route("/v2/sandboxes", sandboxes.create_v2, methods=["POST"]),
        Route("/sandboxes", sandboxes.list_v1, methods=["GET"]),
        Route("/v2/sandboxes", sandboxes.list_v2, methods=["GET"]),
        Route("/sandboxes/metrics", metrics.many, methods=["GET"]),  # before /sandboxes/{sandbox_id}
        Route("/sandboxes/{sandbox_id}", sandboxes.get, methods=["GET"]),
        Route("/sandboxes/{sandbox_id}/metrics", metrics.one, methods=["GET"]),
        Route("/sandboxes/{sandbox_id}", sandboxes.kill, methods=["DELETE"]),
        Route("/sandboxes/{sandbox_id}/timeout", sandboxes.set_timeout, methods=["POST"]),
        Route("/sandboxes/{sandbox_id}/refreshes", sandboxes.refresh, methods=["POST"]),
        Route("/sandboxes/{sandbox_id}/connect", sandboxes.connect, methods=["POST"]),
        Route("/v2/sandboxes/{sandbox_id}/connect", sandboxes.connect, methods=["POST"]),
        Route("/sandboxes/{sandbox_id}/logs", logs.v1, methods=["GET"]),
        Route("/v2/sandboxes/{sandbox_id}/logs", logs.v2, methods=["GET"]),
        Route("/sandboxes/{sandbox_id}/pause", sandboxes.pause, methods=["POST"]),
        Route("/sandboxes/{sandbox_id}/resume", sandboxes.resume, methods=["POST"]),
        Route("/sandboxes/{sandbox_id}/network", network.update, methods=["PUT"]),
        Route("/sandboxes/{sandbox_id}/network/denials", network.denials, methods=["GET"]),
        Route("/sandboxes/{sandbox_id}/snapshots", snapshots.create, methods=["POST"]),
        Route("/sandboxes/{sandbox_id}/fork", snapshots.fork, methods=["POST"]),
        Route("/snapshots", snapshots.list, methods=["GET"]),
        Route("/templates", templates.list, methods=["GET"]),
        Route("/v2/templates", templates.list, methods=["GET"]),
        Route("/templates/aliases/{alias}", templates.by_alias, methods=["GET"]),
        Route("/v3/templates", builds.request_build, methods=["POST"]),
        Route("/templates/{template_id}/files/{hash}", builds.files, methods=["GET"]),
        Route(
            "/templatefiles/{template_id}/{hash}",
            builds.upload,
            methods=["PUT"],
            name="template_files_upload",
        ),
        Route("/v2/templates/{template_id}/builds/{build_id}", builds.start, methods=["POST"]),
        Route("/templates/{template_id}/builds/{build_id}/status", builds.status, methods=["GET"]),
        Route("/templates/{template_id}/builds/{build_id}/logs", builds.logs, methods=["GET"]),
        Route("/templates/{template_id:path}", templates.get, methods=["GET"]),
        Route("/templates/{template_id:path}", snapshots.delete, methods=["DELETE"]),
        Route("/volumes", volumes.list, methods=["GET"]),
        Route("/volumes", volumes.create, methods=["POST"]),
        Route("/volumes/{volume_id}", volumes.get, methods=["GET"]),
        Route("/volumes/{volume_id}", volumes.delete, methods=["DELETE"]),
        Route(
            "/volumecontent/{volume_id}/{operation}",
            volumes.content,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        ),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _on_api_error,
            HTTPException: _on_http_exception,
            **dict.fromkeys(UNAVAILABLE, _on_unavailable),
        },
    )
