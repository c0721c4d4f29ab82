"""envd's ASGI application: plain HTTP routes and the two Connect RPC services on one port,
behind the access-token check."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .api.files_download import DownloadEndpoint
from .api.files_upload import UploadEndpoint
from .api.system import SystemEndpoints
from .auth import OPEN_PATHS, UNAUTHORIZED_MESSAGE, token_matches
from .codecs import envd_codecs
from .errors import HTTPFailure, error_response
from .filesystem.service import FilesystemService
from .gen.filesystem.filesystem_connect import FilesystemASGIApplication
from .gen.process.process_connect import ProcessASGIApplication
from .process.manager import ProcessManager
from .process.service import ProcessService
from .state import EnvdState, Identity

_CONNECT_EXPOSED_HEADERS = [
    "Connect-Protocol-Version",
    "Connect-Content-Encoding",
    "Connect-Accept-Encoding",
    "Grpc-Status",
    "Grpc-Message",
    "Content-Encoding",
]


class AccessTokenGuard:
    """Once a token is set, every request outside OPEN_PATHS must carry it."""

    def __init__(self, app: ASGIApp, state: EnvdState) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self._state.identity.access_token
        if (
            token is not None
            and scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and scope["path"] not in OPEN_PATHS
        ):
            given = None
            for name, value in scope["headers"]:
                if name == b"x-access-token":
                    given = value.decode("latin-1")
                    break
            if not token_matches(token, given):
                await error_response(401, UNAUTHORIZED_MESSAGE)(scope, receive, send)
                return
        await self._app(scope, receive, send)


class RpcRouter:
    """Sends `/<package>.<Service>/<Method>` paths to their Connect application."""

    def __init__(self, http: ASGIApp, rpc: dict[str, ASGIApp]) -> None:
        self._http = http
        self._rpc = rpc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            prefix = scope["path"].split("/", 2)[1] if scope["path"].count("/") >= 2 else ""
            app = self._rpc.get(prefix)
            if app is not None:
                await app(scope, receive, send)
                return
        await self._http(scope, receive, send)


async def _on_failure(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPFailure)
    return error_response(exc.status, exc.message)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail)


def create_app(
    identity: Identity,
    *,
    sync_clock: bool = False,
    prepare_snapshot: Callable[[], Awaitable[None]] | None = None,
) -> ASGIApp:
    """`prepare_snapshot` is what `POST /snapshot/prepare` runs once it has answered."""
    state = EnvdState(identity)
    processes = ProcessManager()
    system = SystemEndpoints(state, sync_clock=sync_clock, prepare_snapshot=prepare_snapshot)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        processes.kill_all()

    http = Starlette(
        routes=[
            Route("/health", system.health, methods=["GET"]),
            Route("/init", system.init, methods=["POST"]),
            Route("/envs", system.envs, methods=["GET"]),
            Route("/metrics", system.metrics, methods=["GET"]),
            Route("/snapshot/prepare", system.prepare_snapshot, methods=["POST"]),
            Route("/files", DownloadEndpoint(state).handle, methods=["GET"]),
            Route("/files", UploadEndpoint(state).handle, methods=["POST"]),
        ],
        exception_handlers={HTTPFailure: _on_failure, HTTPException: _on_http_exception},
        lifespan=lifespan,
    )
    rpc: dict[str, ASGIApp] = {
        "process.Process": ProcessASGIApplication(
            ProcessService(state, processes),  # type: ignore[arg-type]
            codecs=envd_codecs(),
        ),
        "filesystem.Filesystem": FilesystemASGIApplication(
            FilesystemService(state),  # type: ignore[arg-type]
            codecs=envd_codecs(),
        ),
    }
    app: ASGIApp = AccessTokenGuard(RpcRouter(http, rpc), state)
    return CORSMiddleware(
        app,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=_CONNECT_EXPOSED_HEADERS,
    )
