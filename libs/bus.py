"""NATS with typed messages: requests and replies are msgspec Structs, and every message
carries the OpenTelemetry trace context in its headers so one trace follows a sandbox from
the API through the scheduler to the node."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import nats
import redis.exceptions
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import propagate, trace

from corral_libs.contracts.messages import Failure

log = logging.getLogger(__name__)
tracer = trace.get_tracer("corral.bus")

Req = TypeVar("Req", bound=msgspec.Struct)
Rep = TypeVar("Rep", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()

# What a handler can fail with while a service it needs restarts: a 503, not a 500.
UNAVAILABLE = (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class BusError(RuntimeError):
    """The request could not be delivered or answered in time."""


class NoResponders(BusError):
    """Nothing subscribes to the subject: the service is not running (an immediate answer)."""


class _Disconnects:
    """Tells waiting requests that the connection dropped: NATS delivers at most once, so a
    request (or its reply) in flight when the server went away is lost, and waiting out the
    whole timeout for it would only keep the caller from retrying."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    async def disconnected(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class _ErrorReply(msgspec.Struct, kw_only=True):
    """What a failed handler answers: every reply type decodes it (their other fields have
    defaults)."""

    error: Failure


def _failure(status: int, message: str, span: trace.Span) -> Failure:
    context = span.get_span_context()
    trace_id = trace.format_trace_id(context.trace_id) if context.is_valid else None
    return Failure(status=status, message=message, trace_id=trace_id)


class Bus:
    def __init__(self, client: Client, disconnects: _Disconnects | None = None) -> None:
        self.client = client
        self._disconnects = disconnects or _Disconnects()

    @classmethod
    async def connect(cls, url: str, name: str) -> Bus:
        disconnects = _Disconnects()
        client = await nats.connect(
            url,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            disconnected_cb=disconnects.disconnected,
        )
        return cls(client, disconnects)

    async def close(self) -> None:
        await self.client.drain()

    async def request(
        self, subject: str, message: msgspec.Struct, reply_type: type[Rep], timeout_s: float
    ) -> Rep:
        with tracer.start_as_current_span(f"request {subject}", kind=trace.SpanKind.CLIENT):
            if not self.client.is_connected:
                # NATS is restarting: a request would wait out its timeout in a buffer, and one
                # sent before the services subscribe again is lost. The caller says 503 now.
                raise BusError(f"the message bus is reconnecting ({subject})")
            headers: dict[str, str] = {}
            propagate.inject(headers)
            dropped = asyncio.ensure_future(self._disconnects.current().wait())
            asked = asyncio.ensure_future(
                self.client.request(subject, _encoder.encode(message), timeout=timeout_s, headers=headers)
            )
            try:
                await asyncio.wait({asked, dropped}, return_when=asyncio.FIRST_COMPLETED)
                if not asked.done():
                    raise BusError(f"the connection to the message bus dropped while waiting on {subject}")
                reply = asked.result()
            except nats.errors.NoRespondersError:
                raise NoResponders(f"no service answers on {subject}") from None
            except nats.errors.TimeoutError:
                raise BusError(f"no answer on {subject} within {timeout_s:.0f}s") from None
            finally:
                asked.cancel()
                dropped.cancel()
            return msgspec.json.decode(reply.data, type=reply_type)

    async def publish(self, subject: str, message: msgspec.Struct) -> None:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        await self.client.publish(subject, _encoder.encode(message), headers=headers)

    async def serve(
        self,
        subject: str,
        request_type: type[Req],
        handler: Callable[[Req], Awaitable[msgspec.Struct]],
        queue: str = "",
    ) -> Subscription:
        """Answers requests on `subject`; with `queue`, replicas share the work. Each request
        is handled in its own task (nats-py runs a subscription's callbacks one at a time)."""
        tasks: set[asyncio.Task[None]] = set()

        async def handle(msg: Msg) -> None:
            context = propagate.extract(msg.headers or {})
            with tracer.start_as_current_span(
                f"handle {subject}", context=context, kind=trace.SpanKind.SERVER
            ) as span:
                reply: msgspec.Struct
                try:
                    request = msgspec.json.decode(msg.data, type=request_type)
                except msgspec.DecodeError as exc:
                    log.warning("malformed message on %s: %s", msg.subject, exc)
                    reply = _ErrorReply(
                        error=_failure(400, f"malformed request on {msg.subject}: {exc}", span)
                    )
                else:
                    try:
                        reply = await handler(request)
                    except UNAVAILABLE as exc:
                        # Redis or another service restarting: the caller may retry shortly.
                        log.warning("handler for %s: a dependency is unavailable: %s", msg.subject, exc)
                        message = f"a part of Corral is restarting ({exc}); retry shortly"
                        reply = _ErrorReply(error=_failure(503, message, span))
                    except Exception as exc:
                        # The caller gets an answer now, not a timeout later.
                        log.exception("handler for %s failed", msg.subject)
                        reply = _ErrorReply(error=_failure(500, f"{msg.subject} failed: {exc}", span))
                if msg.reply:
                    await msg.respond(_encoder.encode(reply))

        async def on_message(msg: Msg) -> None:
            task = asyncio.create_task(handle(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        return await self.client.subscribe(subject, queue=queue, cb=on_message)

    async def listen(
        self, subject: str, message_type: type[Req], handler: Callable[[Req], Awaitable[Any]], queue: str = ""
    ) -> Subscription:
        """Receives published events: every listener gets each one, or one per `queue`."""

        async def on_message(msg: Msg) -> None:
            try:
                event = msgspec.json.decode(msg.data, type=message_type)
            except msgspec.DecodeError:
                return
            await handler(event)

        return await self.client.subscribe(subject, queue=queue, cb=on_message)
