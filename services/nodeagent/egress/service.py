"""Egress for this node's sandboxes: the nftables state (`table.py`), the resolver sandboxes
use (`resolver.py`), the egress proxy for domain rules (`proxy.py`) and the denial records
(`kernel_log.py`), kept in step with the sandboxes the agent runs.

A sandbox is `attach`ed once it runs for the scheduler (create, resume, restore of a
snapshot, adoption after a restart), `update`d by `PUT /sandboxes/{id}/network`, and
`detach`ed when it stops running here; a warm clone nobody claimed is attached to nothing,
and its interface sends nothing out."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable
from pathlib import Path

from opentelemetry import metrics

from corral_libs.contracts.records import EgressDenial, EgressPolicy
from corral_libs.contracts.sandbox_net import SANDBOX_RANGE
from corral_libs.egress_policy import CompiledPolicy, Network, always_denied, parse_networks
from corral_libs.state import Store

from ..commands import run
from ..settings import NodeSettings
from .kernel_log import KernelDenials
from .proxy import Attachment, EgressProxy, still_allowed
from .resolver import DnsServer, HostsFile, Resolver, parse_upstreams
from .table import EgressTable, Ports, iface

log = logging.getLogger(__name__)
meter = metrics.get_meter("corral.nodeagent.egress")

DENIAL_FLUSH_S = 1.0


class Egress:
    def __init__(self, settings: NodeSettings, store: Store) -> None:
        self._settings = settings
        self._store = store
        self._extra_deny: tuple[Network, ...] = parse_networks(settings.egress_always_deny)
        self._host_addresses: set[str] = set()
        self.resolver = Resolver(
            HostsFile(Path(settings.dns_hosts) if settings.dns_hosts else None),
            parse_upstreams(settings.dns_upstreams),
        )
        self._by_address: dict[str, Attachment] = {}
        self._by_id: dict[str, Attachment] = {}
        self._dns = DnsServer(self.resolver, settings.dns_port)
        self._proxy = EgressProxy(self.resolver, self._by_address.get, self.refuses, self._decided)
        self._kernel = KernelDenials(self._kernel_denial)
        self._table: EgressTable | None = None
        self._pending: dict[str, list[EgressDenial]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._connections = meter.create_counter(
            "corral.sandbox.egress.connections",
            unit="{connection}",
            description="Outbound connections of sandboxes, by outcome",
        )

    @property
    def table(self) -> EgressTable:
        assert self._table is not None, "Egress.start first"
        return self._table

    async def start(self) -> None:
        await _enable_forwarding()
        await self._dns.start()
        await self._proxy.start(self._settings.egress_proxy_port)
        self._table = EgressTable(Ports(dns=self._dns.port, proxy=self._proxy.port))
        self._host_addresses = await _host_addresses()
        await self.table.setup(self._extra_deny, sorted(self._host_addresses))
        self._kernel.start()
        self._flusher = asyncio.create_task(self._flush_denials())
        meter.create_observable_counter(
            "corral.sandbox.egress.new_flows",
            callbacks=[self._observe_flows],
            unit="{packet}",
            description="First packets of sandbox flows the kernel allowed or dropped",
        )
        log.info("egress: resolver on 127.0.0.1:%d, proxy on 127.0.0.1:%d", self._dns.port, self._proxy.port)

    async def stop(self) -> None:
        """Stops serving; the nftables state stays for the sandboxes that outlive the agent
        (a restarted agent adopts them and applies their policies again)."""
        self._kernel.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._write_denials()
        await self._proxy.stop()
        await self._dns.stop()

    def refuses(self, address: str) -> bool:
        """Whether no policy can open `address` (private ranges, this host, other sandboxes)."""
        return address in self._host_addresses or always_denied(address, self._extra_deny)

    # Sandboxes

    async def attach(self, sandbox_id: str, slot: int, address: str, policy: EgressPolicy) -> None:
        compiled = CompiledPolicy.of(policy)
        await self.table.apply(slot, compiled)
        attachment = Attachment(sandbox_id, slot, address, compiled)
        self._by_address[address] = attachment
        self._by_id[sandbox_id] = attachment

    async def update(self, sandbox_id: str, policy: EgressPolicy) -> bool:
        """Replaces an attached sandbox's policy at once; flows it no longer allows end.
        False when the sandbox is not attached here."""
        attachment = self._by_id.get(sandbox_id)
        if attachment is None:
            return False
        compiled = CompiledPolicy.of(policy)
        await self.table.apply(attachment.slot, compiled)
        attachment.policy = compiled
        for connection in list(attachment.connections):
            if not still_allowed(compiled, connection):
                connection.close()
        await _forget_flows(attachment.address, lambda destination: compiled.verdict(destination) == "deny")
        return True

    async def detach(self, sandbox_id: str, slot: int, address: str, *, flows: bool = True) -> None:
        """Removes the sandbox's rules: nothing new of it passes. Its established flows are
        forgotten too, unless `flows` is False (a kill: they die with the sandbox, and the
        teardown forgets them after it, `forget_flows`)."""
        attachment = self._by_id.pop(sandbox_id, None)
        self._by_address.pop(address, None)
        if attachment is not None:
            for connection in list(attachment.connections):
                connection.close()
        await self.table.remove(slot)
        if flows:
            await _forget_flows(address)

    async def forget_flows(self, address: str) -> None:
        await _forget_flows(address)

    def attached(self, sandbox_id: str) -> bool:
        return sandbox_id in self._by_id

    async def reconcile(self, slots: range) -> None:
        """Removes the table state of this node's slots that no sandbox holds (a sandbox killed
        while no agent ran)."""
        held = {a.slot for a in self._by_id.values()}
        for slot in await self.table.slots():
            if slot in slots and slot not in held:
                log.info("egress: removing the rules of slot %d (no sandbox holds it)", slot)
                await self.table.remove(slot)

    # Denials and counts

    def _decided(self, attachment: Attachment, denial: EgressDenial | None) -> None:
        outcome = "allowed" if denial is None else "denied"
        self._connections.add(1, {"corral.sandbox.id": attachment.sandbox_id, "outcome": outcome})
        if denial is not None:
            self._record(attachment.sandbox_id, denial)

    def _kernel_denial(self, host_iface: str, denial: EgressDenial) -> None:
        attachment = next((a for a in self._by_id.values() if iface(a.slot) == host_iface), None)
        if attachment is not None:  # else another node agent's sandbox on this host
            self._connections.add(1, {"corral.sandbox.id": attachment.sandbox_id, "outcome": "denied"})
            self._record(attachment.sandbox_id, denial)

    def _record(self, sandbox_id: str, denial: EgressDenial) -> None:
        log.info(
            "egress denied sandbox=%s protocol=%s destination=%s port=%d name=%s rule=%s",
            sandbox_id,
            denial.protocol,
            denial.destination,
            denial.port,
            denial.name or "-",
            denial.rule,
        )
        self._pending.setdefault(sandbox_id, []).append(denial)

    async def _flush_denials(self) -> None:
        while True:
            await asyncio.sleep(DENIAL_FLUSH_S)
            try:
                await self._write_denials()
            except Exception:
                log.exception("recording egress denials failed")

    async def _write_denials(self) -> None:
        pending, self._pending = self._pending, {}
        for sandbox_id, denials in pending.items():
            await self._store.add_denials(sandbox_id, denials)

    def _observe_flows(self, _options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        counts = self.table.counters_sync()
        for attachment in list(self._by_id.values()):
            labels = {"corral.sandbox.id": attachment.sandbox_id}
            yield metrics.Observation(
                counts.get(f"ok_{attachment.slot}", 0), {**labels, "outcome": "allowed"}
            )
            yield metrics.Observation(counts.get(f"no_{attachment.slot}", 0), {**labels, "outcome": "denied"})


async def _enable_forwarding() -> None:
    """The node routes its sandboxes' traffic (NAT out)."""
    await asyncio.to_thread(Path("/proc/sys/net/ipv4/ip_forward").write_text, "1\n")


async def _host_addresses() -> set[str]:
    """This host's IPv4 addresses (those in the sandbox range are denied as a whole)."""
    out = await run("ip", "-j", "-4", "addr", "show")
    addresses = {info["local"] for link in json.loads(out or "[]") for info in link.get("addr_info", [])}
    sandboxes = ipaddress.ip_network(SANDBOX_RANGE)
    return {a for a in addresses if ipaddress.ip_address(a) not in sandboxes}


async def _forget_flows(address: str, only: Callable[[str], bool] | None = None) -> None:
    """Drops the kernel's connection tracking of a sandbox's flows, so none goes on past its
    kill or past a policy that no longer allows it (`only`: which destinations)."""
    if only is None:
        await run("conntrack", "-D", "-s", address, check=False)
        await run("conntrack", "-D", "-d", address, check=False)
        return
    listing = await run("conntrack", "-L", "-s", address, "-o", "xml", check=False)
    for destination in sorted(set(_destinations(listing))):
        if only(destination):
            await run("conntrack", "-D", "-s", address, "-d", destination, check=False)


def _destinations(xml: str) -> Iterable[str]:
    """The original destinations in `conntrack -L -o xml` output."""
    if not xml.strip():
        return
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return
    for meta in root.iter("meta"):
        if meta.get("direction") == "original":
            dst = meta.find("layer3/dst")
            if dst is not None and dst.text:
                yield dst.text
