"""NATS with typed messages: requests and replies are msgspec Structs, and every message
carries the OpenTelemetry trace context in its headers so one trace follows a sandbox from
the API through the scheduler to the node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
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

# Requests: the headers asking for and carrying a handler's acknowledgement, how often a
# requester asks whether the handler still runs, and NATS's status for "nothing subscribes".
WANTS_ACK = "Corral-Ack"
ACCEPTED_BY = "Corral-Accepted-By"
PROBE_EVERY_S = 1.0
ACK_TIMEOUT_S = 2.0
STATUS_HEADER = "Status"
NO_RESPONDERS_STATUS = "503"


def _alive_subject(bus_id: str) -> str:
    return f"corral.alive.{bus_id}"


# What a handler can fail with while a service it needs restarts: a 503, not a 500.
UNAVAILABLE = (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class BusError(RuntimeError):
    """The request could not be delivered or answered in time."""


class NoResponders(BusError):
    """Nothing subscribes to the subject: the service is not running (an immediate answer)."""


class NotTaken(BusError):
    """No handler acknowledged the request: NATS gave it to a process in the instant that
    process died. Nothing of it ran (handlers acknowledge before they start)."""


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
        self.id = uuid.uuid4().hex[:16]  # who acknowledges the requests this process takes
        self._liveness: Subscription | None = None

    async def _answer_liveness(self) -> None:
        if self._liveness is None:

            async def alive(msg: Msg) -> None:
                await msg.respond(b"")

            self._liveness = await self.client.subscribe(_alive_subject(self.id), cb=alive)

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
        """The reply to `message`. A handler first acknowledges the request with its bus id;
        while it works, it is asked every second whether it still runs. So a request never
        waits out its timeout for an answer that cannot come: nothing subscribed
        (`NoResponders`), the handler's process died, or this connection dropped (NATS
        delivers at most once) are all a `BusError` at once, which callers answer with 503."""
        with tracer.start_as_current_span(f"request {subject}", kind=trace.SpanKind.CLIENT):
            try:
                return await self._request_once(subject, message, reply_type, timeout_s)
            except NotTaken:
                # Sent again once: by now NATS knows the dead process is gone, and another
                # subscriber (a second replica, or the restarted service) takes it.
                return await self._request_once(subject, message, reply_type, timeout_s)

    async def _request_once(
        self, subject: str, message: msgspec.Struct, reply_type: type[Rep], timeout_s: float
    ) -> Rep:
        if not self.client.is_connected:
            raise BusError(f"the message bus is reconnecting ({subject})")
        headers: dict[str, str] = {WANTS_ACK: "1"}
        propagate.inject(headers)
        inbox = self.client.new_inbox()
        replies = await self.client.subscribe(inbox, max_msgs=2)
        dropped = asyncio.ensure_future(self._disconnects.current().wait())
        try:
            await self.client.publish(subject, _encoder.encode(message), reply=inbox, headers=headers)
            reply = await self._await_reply(subject, replies, dropped, timeout_s)
        finally:
            dropped.cancel()
            with contextlib.suppress(Exception):
                await replies.unsubscribe()
        return msgspec.json.decode(reply.data, type=reply_type)

    async def _await_reply(
        self, subject: str, replies: Subscription, dropped: asyncio.Future[Any], timeout_s: float
    ) -> Msg:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # A request NATS handed to a process in the instant it died is lost without a word:
        # no acknowledgement by now means nobody has it.
        ack_deadline = loop.time() + min(ACK_TIMEOUT_S, timeout_s)
        handler = ""  # the bus id of whoever took the request, once it acknowledged
        while (left := deadline - loop.time()) > 0:
            if not handler and loop.time() >= ack_deadline:
                raise NotTaken(f"nobody took the request on {subject} (its service may have just died)")
            waiting = asyncio.ensure_future(replies.next_msg(timeout=min(left, PROBE_EVERY_S)))
            await asyncio.wait({waiting, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()
                raise BusError(f"the connection to the message bus dropped while waiting on {subject}")
            try:
                msg = waiting.result()
            except nats.errors.TimeoutError:
                if handler and not await self._alive(handler):
                    raise BusError(f"the service handling {subject} went away") from None
                continue
            status = (msg.headers or {}).get(STATUS_HEADER)
            if status == NO_RESPONDERS_STATUS:
                raise NoResponders(f"no service answers on {subject}")
            if msg.headers and ACCEPTED_BY in msg.headers:
                handler = msg.headers[ACCEPTED_BY]
                continue
            return msg
        raise BusError(f"no answer on {subject} within {timeout_s:.0f}s")

    async def _alive(self, bus_id: str) -> bool:
        try:
            await self.client.request(_alive_subject(bus_id), b"", timeout=PROBE_EVERY_S * 5)
        except nats.errors.NoRespondersError:
            return False
        except nats.errors.TimeoutError:
            return True  # slow is not gone
        return True

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

        await self._answer_liveness()

        async def handle(msg: Msg) -> None:
            if msg.reply and (msg.headers or {}).get(WANTS_ACK):
                # Taken: the requester now watches this process instead of a clock.
                await self.client.publish(msg.reply, b"", headers={ACCEPTED_BY: self.id})
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
