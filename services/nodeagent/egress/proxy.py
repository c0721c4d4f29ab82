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
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from libs.contracts.records import EgressDenial
from libs.egress_policy import CompiledPolicy

from .resolver import Resolver
from .sniff import MAX_HEAD, NeedMore, server_name

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80
SNIFF_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
CHUNK = 256 * 1024


@dataclass(eq=False)
class Connection:
    destination: str
    port: int
    name: str | None
    writers: tuple[asyncio.StreamWriter, ...] = ()

    def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


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
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peername")[0]
            destination, port = original_destination(writer.get_extra_info("socket"))
        except OSError:
            writer.transport.abort()
            return
        attachment = self._attachment(peer)
        if attachment is None:  # no longer (or not yet) enforced here: nothing goes out
            writer.transport.abort()
            return
        head, name = b"", None
        decision: Dial | EgressDenial
        policy = attachment.policy
        verdict = policy.verdict(destination)
        if verdict == "allow":
            decision = Dial([destination], None)
        else:
            if policy.has_names:
                head, name = await self._sniff(reader)
            if name is not None and policy.allows_name(name):
                decision = await self._dial_name(name, destination, port)
            elif verdict == "deny":
                decision = _denial(destination, port, name, "deny-out")
            else:
                decision = Dial([destination], name)
        if isinstance(decision, EgressDenial):
            self._on_decision(attachment, decision)
            writer.transport.abort()
            return
        upstream = await self._connect(decision.addresses, port)
        if upstream is None:
            writer.transport.abort()
            return
        self._on_decision(attachment, None)
        up_reader, up_writer = upstream
        connection = Connection(destination, port, decision.name, (writer, up_writer))
        attachment.connections.add(connection)
        try:
            if head:
                up_writer.write(head)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            attachment.connections.discard(connection)
            connection.close()

    async def _dial_name(self, name: str, destination: str, port: int) -> Dial | EgressDenial:
        addresses = await self._resolver.resolve(name)
        usable = [a for a in addresses if not self._refused_address(a)]
        if usable:
            return Dial(usable, name)
        return _denial(destination, port, name, "always-deny" if addresses else "unresolved")

    @staticmethod
    async def _sniff(reader: asyncio.StreamReader) -> tuple[bytes, str | None]:
        head = b""
        deadline = time.monotonic() + SNIFF_TIMEOUT_S
        while len(head) < MAX_HEAD:
            try:
                return head, server_name(head)
            except NeedMore:
                pass
            try:
                chunk = await asyncio.wait_for(reader.read(MAX_HEAD), deadline - time.monotonic())
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            head += chunk
        return head, None

    @staticmethod
    async def _connect(
        addresses: list[str], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for address in addresses:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(address, port, limit=CHUNK), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                log.debug("egress dial %s:%d failed: %s", address, port, exc)
        return None


def _denial(destination: str, port: int, name: str | None, rule: str) -> EgressDenial:
    return EgressDenial(
        at=time.time(), protocol="tcp", destination=destination, port=port, name=name, rule=rule
    )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies until end of stream, then half-closes the other side."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        with contextlib.suppress(Exception):
            writer.transport.abort()
