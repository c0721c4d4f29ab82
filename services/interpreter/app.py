"""The interpreter's HTTP surface, as the e2b-code-interpreter SDKs call it: `/execute`
(streamed NDJSON), `/contexts` (create, list, restart, delete) and `/health`. Errors are
plain text, as the reference server answers them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import httpx
import msgspec
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .contexts import BadWorkingDirectory, Context, Contexts, UnknownContext
from .execution import Execution
from .languages import LANGUAGES, Language, language

log = logging.getLogger(__name__)


# The sandbox's env vars, given the caller's envd access token.
SandboxEnvFetcher = Callable[[str | None], Awaitable[dict[str, str]]]


class ExecuteBody(msgspec.Struct):
    code: str
    context_id: str | None = None
    language: str | None = None
    env_vars: dict[str, str] | None = None


class ContextBody(msgspec.Struct):
    language: str | None = None
    cwd: str | None = None


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _body(request: Request, body_type: type[msgspec.Struct]) -> msgspec.Struct:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=body_type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(400, f"invalid request body: {exc}") from None


def _language(name: str | None) -> Language:
    found = language(name)
    if found is None:
        raise BadRequest(400, f"unsupported language '{name}': use one of {', '.join(LANGUAGES)}")
    return found


def create_app(
    contexts: Contexts,
    default_cwd: str,
    sandbox_env: SandboxEnvFetcher,
    prepare_snapshot: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """`prepare_snapshot` is what `POST /snapshot/prepare` (the node, before a checkpoint)
    runs once it has answered: the listener and its connections go (see envd's)."""

    def _context(context_id: str) -> Context:
        try:
            return contexts.get(context_id)
        except UnknownContext:
            raise BadRequest(404, f"Context {context_id} not found") from None

    async def health(request: Request) -> Response:
        return JSONResponse("OK")

    async def execute(request: Request) -> Response:
        body = await _body(request, ExecuteBody)
        assert isinstance(body, ExecuteBody)
        if body.context_id and body.language:
            raise BadRequest(400, "give either context_id or language, not both")
        if body.context_id:
            context = _context(body.context_id)
        else:
            try:
                context = await contexts.default(_language(body.language), default_cwd)
            except BadRequest:
                raise
            except BadWorkingDirectory as exc:
                raise BadRequest(400, str(exc)) from None
            except Exception as exc:
                log.exception("starting the default %s context failed", body.language)
                raise BadRequest(
                    500, f"could not start a {body.language or 'python'} kernel: {exc}"
                ) from None
        token = request.headers.get("x-access-token")

        async def env() -> dict[str, str]:
            return await sandbox_env(token)

        execution = Execution(contexts, context, body.code, body.env_vars or {}, env)
        return StreamingResponse(execution.lines(), media_type="application/x-ndjson")

    async def create_context(request: Request) -> Response:
        body = await _body(request, ContextBody)
        assert isinstance(body, ContextBody)
        language = _language(body.language)
        try:
            context = await contexts.create(language, body.cwd or default_cwd)
        except BadWorkingDirectory as exc:
            raise BadRequest(400, str(exc)) from None
        except Exception as exc:
            log.exception("starting a %s context failed", language.name)
            raise BadRequest(500, f"could not start a {language.name} kernel: {exc}") from None
        return JSONResponse(context.describe())

    async def list_contexts(request: Request) -> Response:
        return JSONResponse([c.describe() for c in contexts.list()])

    async def restart_context(request: Request) -> Response:
        context = _context(request.path_params["context_id"])
        async with context.lock:
            await contexts.restart(context)
        return JSONResponse(None)

    async def delete_context(request: Request) -> Response:
        context = _context(request.path_params["context_id"])
        async with context.lock:
            await contexts.delete(context)
        return JSONResponse(None)

    async def prepare(request: Request) -> Response:
        if prepare_snapshot is None:
            return PlainTextResponse("this interpreter cannot prepare for snapshots", status_code=501)
        return Response(status_code=204, background=BackgroundTask(prepare_snapshot))

    async def on_bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        if exc.status < 500:
            return PlainTextResponse(exc.message, status_code=exc.status)
        trace_id = _trace_id()
        log.error(
            "%s %s answered %d: %s (trace id %s)", request.method, request.url.path, exc.status, exc, trace_id
        )
        return PlainTextResponse(f"{exc.message} (trace id {trace_id})", status_code=exc.status)

    async def on_fault(request: Request, exc: Exception) -> Response:
        trace_id = _trace_id()
        log.exception("%s %s failed (trace id %s)", request.method, request.url.path, trace_id)
        return PlainTextResponse(f"internal error in the interpreter (trace id {trace_id})", status_code=500)

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/execute", execute, methods=["POST"]),
            Route("/contexts", create_context, methods=["POST"]),
            Route("/contexts", list_contexts, methods=["GET"]),
            Route("/contexts/{context_id}/restart", restart_context, methods=["POST"]),
            Route("/contexts/{context_id}", delete_context, methods=["DELETE"]),
            Route("/snapshot/prepare", prepare, methods=["POST"]),
        ],
        exception_handlers={BadRequest: on_bad_request, Exception: on_fault},
    )


def _trace_id() -> str:
    """The current trace's id, so a 5xx in a client's log can be found in ours."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else uuid.uuid4().hex


def envd_env_fetcher(client: httpx.AsyncClient, envd_url: str) -> SandboxEnvFetcher:
    """The sandbox's env vars, as envd holds them (`GET /envs`, with the caller's token)."""

    async def fetch(token: str | None) -> dict[str, str]:
        headers = {"X-Access-Token": token} if token else {}
        try:
            response = await client.get(f"{envd_url}/envs", headers=headers, timeout=5)
            response.raise_for_status()
            return {str(k): str(v) for k, v in response.json().items()}
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("sandbox env vars from envd unavailable: %s", exc)
            return {}

    return fetch
