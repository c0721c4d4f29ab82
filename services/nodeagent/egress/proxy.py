"""The egress proxy: where the nftables rules send the TCP connections of sandboxes whose
policy names domains (`table.py`). It finds the sandbox by the connection's source address,
reads the address the sandbox dialled (`SO_ORIGINAL_DST`), and decides:

- an allowed network: dial that address;
- otherwise, the name the connection asks for (TLS SNI or HTTP Host, `sniff.py`) if the
  policy allows it: dial *the name*, resolved here and never to an always-denied address,
  so a sandbox cannot point a permitted name at another address (its /etc/hosts, `curl
  --resolve`);
- otherwise the deny list, then the default (allow).

A refused connection is closed and recorded. Open connections are checked again when the
policy changes and closed if it no longer allows them."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from corral_libs.contracts.records import EgressDenial
from corral_libs.egress_policy import CompiledPolicy

from .resolver import Resolver
from .sniff import MAX_HEAD, NeedMore, server_name

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
SNIFF_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0


@dataclass(eq=False)
class Connection:
    destination: str
    port: int
    name: str | None
    sockets: tuple[socket.socket, ...] = ()

    def close(self) -> None:
        """Ends both directions (the copy loops see the end and finish)."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass(eq=False)
class Attachment:
    """A sandbox the node enforces a policy for."""

    sandbox_id: str
    slot: int
    address: str
    policy: CompiledPolicy
    connections: set[Connection] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Dial:
    addresses: list[str]
    name: str | None


def original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


def still_allowed(policy: CompiledPolicy, connection: Connection) -> bool:
    verdict = policy.verdict(connection.destination)
    if verdict == "allow" or (connection.name is not None and policy.allows_name(connection.name)):
        return True
    return verdict == "default"


class EgressProxy:
    def __init__(
        self,
        resolver: Resolver,
        attachment: Callable[[str], Attachment | None],
        refused_address: Callable[[str], bool],
        on_decision: Callable[[Attachment, EgressDenial | None], None],
    ) -> None:
        self._resolver = resolver
        self._attachment = attachment
        self._refused_address = refused_address
        self._on_decision = on_decision
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> None:
        """Raw non-blocking sockets throughout: after the decision, bytes move between them
        without passing through Python (`_pipe`)."""
        listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept())

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, *self._clients, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()

    async def _accept(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, (peer, _) = await loop.sock_accept(self._listener)
            except OSError as exc:  # out of descriptors, say: wait instead of spinning
                log.warning("egress proxy: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            client.setblocking(False)
            task = asyncio.create_task(self._serve(client, peer))
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)

    async def _serve(self, client: socket.socket, peer: str) -> None:
        try:
            await self._handle(client, peer)
        finally:
            client.close()

    async def _handle(self, client: socket.socket, peer: str) -> None:
        try:
            destination, port = original_destination(client)
        except OSError:
            return
        attachment = self._attachment(peer)
        if attachment is None:  # no longer (or not yet) enforced here: nothing goes out
            return
        head, name = b"", None
        decision: Dial | EgressDenial
        policy = attachment.policy
        verdict = policy.verdict(destination)
        if verdict == "allow":
            decision = Dial([destination], None)
        else:
            if policy.has_names:
                head, name = await self._sniff(client)
            if name is not None and policy.allows_name(name):
                decision = await self._dial_name(name, destination, port, policy)
            elif verdict == "deny":
                decision = _denial(destination, port, name, "deny-out")
            else:
                decision = Dial([destination], name)
        if isinstance(decision, EgressDenial):
            self._on_decision(attachment, decision)
            return
        upstream = await self._connect(decision.addresses, port)
        if upstream is None:
            return
        self._on_decision(attachment, None)
        connection = Connection(destination, port, decision.name, (client, upstream))
        attachment.connections.add(connection)
        loop = asyncio.get_running_loop()
        try:
            if head:
                await loop.sock_sendall(upstream, head)
            await asyncio.gather(_pipe(client, upstream), _pipe(upstream, client))
        except OSError:
            pass
        finally:
            attachment.connections.discard(connection)
            upstream.close()

    async def _dial_name(
        self, name: str, destination: str, port: int, policy: CompiledPolicy
    ) -> Dial | EgressDenial:
        addresses = await self._resolver.resolve(name)
        usable = [a for a in addresses if not self._refused_address(a) or policy.reaches_reserved(a)]
        if usable:
            return Dial(usable, name)
        return _denial(destination, port, name, "always-deny" if addresses else "unresolved")

    @staticmethod
    async def _sniff(client: socket.socket) -> tuple[bytes, str | None]:
        loop = asyncio.get_running_loop()
        head = b""
        deadline = time.monotonic() + SNIFF_TIMEOUT_S
        while len(head) < MAX_HEAD:
            try:
                return head, server_name(head)
            except NeedMore:
                pass
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(client, MAX_HEAD), deadline - time.monotonic())
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            head += chunk
        return head, None

    @staticmethod
    async def _connect(addresses: list[str], port: int) -> socket.socket | None:
        loop = asyncio.get_running_loop()
        for address in addresses:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(upstream, (address, port)), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                upstream.close()
                log.debug("egress dial %s:%d failed: %s", address, port, exc)
                continue
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return upstream
        return None


def _denial(destination: str, port: int, name: str | None, rule: str) -> EgressDenial:
    return EgressDenial(
        at=time.time(), protocol="tcp", destination=destination, port=port, name=name, rule=rule
    )


async def _ready(sock: socket.socket, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()
    if write:
        loop.add_writer(fd, ready.set_result, None)
    else:
        loop.add_reader(fd, ready.set_result, None)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Moves bytes until end of stream with splice(2) through a pipe: they stay in the kernel
    (a Python copy loop took half the throughput on a small node). Then half-closes the
    other side; a broken side ends both."""
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    drain, fill = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fill, F_SETPIPE_SZ, PIPE_SIZE)
        while True:
            try:
                moved = os.splice(source.fileno(), fill, PIPE_SIZE, flags=flags)
            except BlockingIOError:
                await _ready(source, write=False)
                continue
            if moved == 0:
                break
            while moved:
                try:
                    moved -= os.splice(drain, sink.fileno(), moved, flags=flags)
                except BlockingIOError:
                    await _ready(sink, write=True)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    finally:
        os.close(drain)
        os.close(fill)
