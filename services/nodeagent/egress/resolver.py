"""The DNS resolver sandboxes use (at `RESOLVER_ADDRESS`, which the node's nftables rules
send here), and the name lookups of the egress proxy: both answer from the same place.

Names in the hosts file (`CORRAL_DNS_HOSTS`, /etc/hosts format, re-read when it changes) are
answered here; every other query is forwarded to the upstream servers (the host's
/etc/resolv.conf by default). Without upstreams (`CORRAL_DNS_UPSTREAMS=none`) unknown names
are NXDOMAIN: a node, or a test, whose sandboxes must not reach any real resolver."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
from pathlib import Path
from typing import cast

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT_S = 3.0
RELOAD_CHECK_S = 1.0
ANSWER_TTL_S = 30
_TCP_LENGTH = struct.Struct("!H")


def system_upstreams(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    return [
        parts[1] for parts in (line.split() for line in lines) if len(parts) > 1 and parts[0] == "nameserver"
    ]


def parse_upstreams(raw: str) -> list[str]:
    """`CORRAL_DNS_UPSTREAMS`: empty for the host's, `none` for no forwarding, or addresses."""
    if not raw.strip():
        return system_upstreams()
    if raw.strip() == "none":
        return []
    upstreams = [entry.strip() for entry in raw.split(",") if entry.strip()]
    for entry in upstreams:
        ipaddress.ip_address(entry)  # ValueError names a bad one
    return upstreams


class HostsFile:
    """Name -> IPv4 addresses from an /etc/hosts-format file, re-read when it changes (looked
    at no more than once a second: lookups sit on every proxied connection's path)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._names: dict[str, list[str]] = {}

    def lookup(self, name: str) -> list[str] | None:
        self._reload()
        return self._names.get(name.lower().rstrip("."))

    def _reload(self) -> None:
        now = time.monotonic()
        if self._path is None or now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        try:
            stat = self._path.stat()
        except OSError:
            self._names, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        names: dict[str, list[str]] = {}
        for line in self._path.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(fields[0]).version == 4:
                    for name in fields[1:]:
                        names.setdefault(name.lower().rstrip("."), []).append(fields[0])
        self._names, self._stamp = names, stamp


class Resolver:
    def __init__(self, hosts: HostsFile, upstreams: list[str]) -> None:
        self._hosts = hosts
        self._upstreams = upstreams

    async def resolve(self, name: str) -> list[str]:
        """The IPv4 addresses of `name` (empty when it has none or cannot be resolved)."""
        local = self._hosts.lookup(name)
        if local is not None:
            return local
        query = dns.message.make_query(name, dns.rdatatype.A)
        response = await self._forward(query)
        if response is None:
            return []
        return [
            rdata.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for rdata in rrset
        ]

    async def answer(self, wire: bytes) -> bytes | None:
        """The response to a query as it came from a sandbox (None: not a query, drop it)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        question = query.question[0]
        response = dns.message.make_response(query, recursion_available=True)
        local = self._hosts.lookup(question.name.to_text())
        if local is not None:
            if question.rdtype == dns.rdatatype.A:
                rrset = dns.rrset.from_text_list(
                    question.name, ANSWER_TTL_S, dns.rdataclass.IN, dns.rdatatype.A, local
                )
                response.answer.append(rrset)
            return response.to_wire()
        forwarded = await self._forward(query)
        if forwarded is None:
            response.set_rcode(dns.rcode.SERVFAIL if self._upstreams else dns.rcode.NXDOMAIN)
            return response.to_wire()
        forwarded.id = query.id
        return forwarded.to_wire()

    async def _forward(self, query: dns.message.Message) -> dns.message.Message | None:
        for upstream in self._upstreams:
            try:
                response = await dns.asyncquery.udp(query, upstream, timeout=UPSTREAM_TIMEOUT_S)
                if response.flags & dns.flags.TC:
                    response = await dns.asyncquery.tcp(query, upstream, timeout=UPSTREAM_TIMEOUT_S)
                return response
            except (dns.exception.DNSException, OSError) as exc:
                log.debug("upstream %s failed: %s", upstream, exc)
        return None


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.create_task(self._reply(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        response = await self._resolver.answer(data)
        if response is not None and self._transport is not None:
            self._transport.sendto(response, addr)


class DnsServer:
    """UDP and TCP on 127.0.0.1:`port` (0: a free one, `port` tells which after `start`)."""

    def __init__(self, resolver: Resolver, port: int = 0) -> None:
        self._resolver = resolver
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # TCP first: its free port is then taken for UDP too (one port number for both).
        self._tcp = await asyncio.start_server(self._tcp_client, "127.0.0.1", self.port)
        self.port = self._tcp.sockets[0].getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpServer(self._resolver), local_addr=("127.0.0.1", self.port)
        )

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = _TCP_LENGTH.unpack(await reader.readexactly(_TCP_LENGTH.size))
                response = await self._resolver.answer(await reader.readexactly(length))
                if response is None:
                    return
                writer.write(_TCP_LENGTH.pack(len(response)) + response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
