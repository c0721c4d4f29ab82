"""The sandbox proxy: an ASGI app that streams HTTP (both directions, frame by frame) and
WebSockets to a port inside the sandbox the request names."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable

import httpx
import websockets
from starlette.types import Message, Receive, Scope, Send

from corral_libs.contracts.envd import ENVD_PORT

from .routes import Route, RouteCache
from .target import BadTarget, Target, resolve_target

log = logging.getLogger(__name__)

TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token"
# Per RFC 9110 these describe one connection, not the message: never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)


# In-sandbox daemons let go of their sockets when this is posted (before a checkpoint).
SNAPSHOT_PREPARE_PATH = "/snapshot/prepare"


def _path_and_query(scope: Scope) -> str:
    path = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.decode("latin-1").lower() not in HOP_BY_HOP]


def _masked(headers: list[tuple[bytes, bytes]], mask: str | None, port: int) -> list[tuple[bytes, bytes]]:
    """The request's headers with the Host the sandbox is to see (`maskRequestHost`)."""
    if mask is None:
        return headers
    host = mask.replace("${PORT}", str(port)).encode("latin-1")
    return [(b"host", host) if k.lower() == b"host" else (k, v) for k, v in headers]


def _error(status: int, body: dict[str, object]) -> tuple[int, bytes]:
    return status, json.dumps({**body, "code": status}).encode()


class UpstreamBroke(Exception):
    """The sandbox's side of a response ended before the response did (the sandbox was
    killed mid-stream, say). Raised through the server so that it drops the client's
    connection too: a client must see a broken response, never a clean but short one."""


class QuietUpstreamBroke(logging.Filter):
    """Keeps uvicorn from logging each such drop as an application error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], UpstreamBroke))


def not_found(sandbox_id: str) -> tuple[int, bytes]:
    return _error(502, {"sandboxId": sandbox_id, "message": "The sandbox was not found"})


def port_closed(sandbox_id: str, port: int) -> tuple[int, bytes]:
    return _error(
        502, {"sandboxId": sandbox_id, "message": "The sandbox is running but port is not open", "port": port}
    )


async def _send_error(send: Send, error: tuple[int, bytes]) -> None:
    status, body = error
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SandboxProxy:
    def __init__(self, routes: RouteCache, connect_timeout_s: float) -> None:
        self._routes = routes
        timeout = httpx.Timeout(connect=connect_timeout_s, read=None, write=None, pool=None)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)
        # The request goes upstream as the client sent it: none of httpx's own defaults
        # (an Accept-Encoding the client never asked for gets it a body it cannot decode).
        self._client.headers.clear()
        # Responses being streamed, per sandbox: cut when the sandbox goes (`cut`).
        self._streams: dict[str, set[asyncio.Task[None]]] = {}
        self._cut: set[asyncio.Task[None]] = set()

    def cut(self, sandbox_id: str) -> None:
        """The sandbox is gone (killed, paused): its responses break off now, whether or not
        its end of the connections ever says so."""
        for pump in self._streams.pop(sandbox_id, set()):
            self._cut.add(pump)
            pump.cancel()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            target = resolve_target(headers)
        except BadTarget as exc:
            if scope["type"] == "http":
                await _send_error(send, _error(400, {"message": str(exc)}))
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        route = await self._routes.lookup(target.sandbox_id)
        error = self._refusal(target, route, headers)
        if error is not None or route is None:
            if scope["type"] == "http":
                await _send_error(send, error or not_found(target.sandbox_id))
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http":
            if scope["path"] == SNAPSHOT_PREPARE_PATH:  # the node's alone, never from outside
                await _send_error(send, _error(404, {"message": "not found"}))
                return
            await self._http(scope, receive, send, target, route)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send, target, route)

    @staticmethod
    def _refusal(target: Target, route: Route | None, headers: dict[str, str]) -> tuple[int, bytes] | None:
        if route is None:
            return not_found(target.sandbox_id)
        token = route.traffic_access_token
        if token and target.port != ENVD_PORT and headers.get(TRAFFIC_TOKEN_HEADER) != token:
            return _error(
                403, {"sandboxId": target.sandbox_id, "message": "missing or invalid traffic access token"}
            )
        return None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send, target: Target, route: Route) -> None:
        url = f"http://{route.host}:{target.port}{_path_and_query(scope)}"
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        body_done = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    if chunk:
                        yield chunk
                    if not message.get("more_body", False):
                        return
            finally:
                body_done.set()

        if not has_body:
            body_done.set()
        headers = _masked(_end_to_end(scope["headers"]), route.mask_request_host, target.port)
        request = self._client.build_request(
            scope["method"], url, headers=headers, content=body() if has_body else None
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            log.info("upstream %s failed: %s", url, exc)
            await _send_error(send, port_closed(target.sandbox_id, target.port))
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _end_to_end(response.headers.raw),
                }
            )
            pump = asyncio.create_task(self._pump(response, send))
            streams = self._streams.setdefault(target.sandbox_id, set())
            streams.add(pump)
            client_gone = asyncio.create_task(self._until_disconnect(receive, body_done))
            done, _ = await asyncio.wait({pump, client_gone}, return_when=asyncio.FIRST_COMPLETED)
            # Whichever side ends first ends the exchange: a client that left stops the
            # upstream read (envd then sees its stream closed), a finished response stops the watch.
            for task in (pump, client_gone):
                if task not in done:
                    task.cancel()
            await asyncio.gather(pump, client_gone, return_exceptions=True)
            streams.discard(pump)
            if not streams and self._streams.get(target.sandbox_id) is streams:
                del self._streams[target.sandbox_id]
            broke = pump in self._cut or (
                not pump.cancelled() and isinstance(pump.exception(), UpstreamBroke)
            )
            self._cut.discard(pump)
            if broke:
                log.info("upstream %s broke off mid-response: dropping the client's connection", url)
                raise UpstreamBroke(url)
        finally:
            await response.aclose()

    @staticmethod
    async def _pump(response: httpx.Response, send: Send) -> None:
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (httpx.TransportError, OSError) as exc:
            raise UpstreamBroke(str(exc)) from exc
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _until_disconnect(receive: Receive, body_done: asyncio.Event) -> None:
        await body_done.wait()
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, target: Target, route: Route
    ) -> None:
        path = _path_and_query(scope)
        skip = HOP_BY_HOP | {
            "host",
            "sec-websocket-key",
            "sec-websocket-version",
            "sec-websocket-extensions",
            "sec-websocket-protocol",
        }
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in skip
        ]
        try:
            upstream = await websockets.connect(
                f"ws://{route.host}:{target.port}{path}",
                additional_headers=headers,
                subprotocols=scope.get("subprotocols") or None,
                max_size=None,
                open_timeout=10,
            )
        except (OSError, websockets.WebSocketException):
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close()
                    return
                if message["type"] == "websocket.receive":
                    data = message.get("bytes")
                    await upstream.send(data if data is not None else message.get("text", ""))

        async def upstream_to_client() -> None:
            try:
                async for data in upstream:
                    if isinstance(data, bytes):
                        await send({"type": "websocket.send", "bytes": data})
                    else:
                        await send({"type": "websocket.send", "text": data})
            finally:
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": upstream.close_code or 1000})

        tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await upstream.close()
