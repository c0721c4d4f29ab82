"""The host's nftables state for sandbox egress: one `inet corral` table for every node agent
on the host, and per sandbox (slot N, host interface crvN) two sets, two counters and two
chains that a transaction replaces at once.

gVisor writes a sandbox's packets past its namespace's own netfilter, so everything is
enforced on the host side of the sandbox's link (`../shared/docs/network-notes.md`):

- `pre_filter` (prerouting, before NAT): packets of established flows pass; a sandbox's
  new packets jump to its chain `f_N`; a sandbox interface without a chain (a warm clone
  nobody has claimed) sends nothing anywhere.
- `f_N`: the resolver passes; IPv6 and the always-denied ranges drop; TCP passes to the
  egress proxy when the policy names domains; allowed networks pass, denied ones drop, the
  rest passes. Drops of new flows are logged (rate-limited) for the denial records.
- `pre_nat`: `n_N` sends DNS for the resolver address to the node's resolver, and (domain
  policies) all TCP to the egress proxy, both listening on 127.0.0.1 (the link has
  `route_localnet`).
- `post_nat` masquerades sandbox traffic leaving the host; `forward` lets nothing start a
  connection into a sandbox through the host.

Calls go through libnftables (Debian's python3-nftables binding): each `_run` is one atomic
transaction, in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nftables  # type: ignore[import-not-found]

from corral_libs.contracts.sandbox_net import HOST_IFACE_PREFIX, RESOLVER_ADDRESS, SANDBOX_RANGE
from corral_libs.egress_policy import ALWAYS_DENY, CompiledPolicy, Network

TABLE = "inet corral"
DENY_LOG_PREFIX = "corral-deny"
# Kernel log lines for denials, per sandbox: enough to see what it tried, never a flood.
LOG_RATE = "limit rate 10/second burst 20 packets"


class TableError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Ports:
    """Where the node's resolver and egress proxy listen on 127.0.0.1."""

    dns: int
    proxy: int


def iface(slot: int) -> str:
    return f"{HOST_IFACE_PREFIX}{slot}"


def _elements(networks: Iterable[str]) -> str:
    return ", ".join(networks)


def base_script(extra_deny: Iterable[Network], host_addresses: Iterable[str]) -> str:
    """The shared table, idempotently (`add` keeps what exists): every node agent on the host
    runs it at start."""
    always = [*ALWAYS_DENY, *(str(n) for n in extra_deny if n.version == 4), *host_addresses]
    prefix = f'"{HOST_IFACE_PREFIX}*"'
    return f"""
add table {TABLE}
add set {TABLE} always4 {{ type ipv4_addr; flags interval; auto-merge; }}
add element {TABLE} always4 {{ {_elements(always)} }}
add map {TABLE} sbx_filter {{ type ifname : verdict; }}
add map {TABLE} sbx_nat {{ type ifname : verdict; }}
add chain {TABLE} pre_filter {{ type filter hook prerouting priority -150; policy accept; }}
flush chain {TABLE} pre_filter
add rule {TABLE} pre_filter iifname {prefix} ct state established,related accept
add rule {TABLE} pre_filter iifname vmap @sbx_filter
add rule {TABLE} pre_filter iifname {prefix} drop
add chain {TABLE} pre_nat {{ type nat hook prerouting priority dstnat; policy accept; }}
flush chain {TABLE} pre_nat
add rule {TABLE} pre_nat iifname vmap @sbx_nat
add chain {TABLE} forward {{ type filter hook forward priority 0; policy accept; }}
flush chain {TABLE} forward
add rule {TABLE} forward oifname {prefix} ct state established,related accept
add rule {TABLE} forward oifname {prefix} drop
add chain {TABLE} post_nat {{ type nat hook postrouting priority srcnat; policy accept; }}
flush chain {TABLE} post_nat
add rule {TABLE} post_nat ip saddr {SANDBOX_RANGE} oifname != {prefix} masquerade
"""


def sandbox_script(slot: int, policy: CompiledPolicy, ports: Ports) -> str:
    """Creates or replaces slot `slot`'s sets, chains and map entries in one transaction."""
    n = slot
    allow, deny = policy.networks(4)
    proxied = policy.has_names
    dns = f"ip daddr {RESOLVER_ADDRESS} meta l4proto {{ tcp, udp }} th dport 53"
    lines = [
        f"add set {TABLE} a4_{n} {{ type ipv4_addr; flags interval; auto-merge; }}",
        f"add set {TABLE} d4_{n} {{ type ipv4_addr; flags interval; auto-merge; }}",
        f"add counter {TABLE} ok_{n}",
        f"add counter {TABLE} no_{n}",
        f"add chain {TABLE} f_{n}",
        f"add chain {TABLE} n_{n}",
        f"flush set {TABLE} a4_{n}",
        f"flush set {TABLE} d4_{n}",
        f"flush chain {TABLE} f_{n}",
        f"flush chain {TABLE} n_{n}",
    ]
    if allow:
        lines.append(f"add element {TABLE} a4_{n} {{ {_elements(allow)} }}")
    if deny:
        lines.append(f"add element {TABLE} d4_{n} {{ {_elements(deny)} }}")
    f = f"add rule {TABLE} f_{n}"
    reserved_ok = [str(network) for network in policy.reserved_ok if network.version == 4]
    lines += [
        f"{f} {dns} accept",
        f"{f} meta nfproto ipv6 counter name no_{n} drop",
        # A template build's mirrors, in ranges no sandbox reaches otherwise (its TCP still
        # goes through the egress proxy: names decide).
        *([f"{f} ip daddr {{ {_elements(reserved_ok)} }} counter name ok_{n} accept"] if reserved_ok else []),
        f'{f} ip daddr @always4 ct state new {LOG_RATE} log prefix "{DENY_LOG_PREFIX} always-deny "',
        f"{f} ip daddr @always4 counter name no_{n} drop",
    ]
    if proxied:
        lines.append(f"{f} meta l4proto tcp accept")  # the egress proxy decides and counts
    lines += [
        f"{f} ip daddr @a4_{n} counter name ok_{n} accept",
        f'{f} ip daddr @d4_{n} ct state new {LOG_RATE} log prefix "{DENY_LOG_PREFIX} deny-out "',
        f"{f} ip daddr @d4_{n} counter name no_{n} drop",
        f"{f} counter name ok_{n} accept",
        f"add rule {TABLE} n_{n} {dns} dnat ip to 127.0.0.1:{ports.dns}",
    ]
    if proxied:
        lines.append(f"add rule {TABLE} n_{n} meta l4proto tcp dnat ip to 127.0.0.1:{ports.proxy}")
    lines += [
        f'add element {TABLE} sbx_filter {{ "{iface(n)}" : jump f_{n} }}',
        f'add element {TABLE} sbx_nat {{ "{iface(n)}" : jump n_{n} }}',
    ]
    return "\n".join(lines) + "\n"


def remove_script(slot: int) -> str:
    """Removes everything of slot `slot`; adding each object first makes it idempotent (the
    nft of Debian 12 has no `destroy`), all in one transaction."""
    n = slot
    name = iface(n)
    return f"""
add map {TABLE} sbx_filter {{ type ifname : verdict; }}
add map {TABLE} sbx_nat {{ type ifname : verdict; }}
add chain {TABLE} f_{n}
add chain {TABLE} n_{n}
add element {TABLE} sbx_filter {{ "{name}" : jump f_{n} }}
add element {TABLE} sbx_nat {{ "{name}" : jump n_{n} }}
delete element {TABLE} sbx_filter {{ "{name}" }}
delete element {TABLE} sbx_nat {{ "{name}" }}
delete chain {TABLE} f_{n}
delete chain {TABLE} n_{n}
add set {TABLE} a4_{n} {{ type ipv4_addr; flags interval; }}
add set {TABLE} d4_{n} {{ type ipv4_addr; flags interval; }}
delete set {TABLE} a4_{n}
delete set {TABLE} d4_{n}
add counter {TABLE} ok_{n}
add counter {TABLE} no_{n}
delete counter {TABLE} ok_{n}
delete counter {TABLE} no_{n}
"""


class EgressTable:
    def __init__(self, ports: Ports | None = None) -> None:
        self.ports = ports  # None: a table to clean up, not to enforce with
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._lock = threading.Lock()  # one libnftables context: one call at a time

    def _run_sync(self, script: str) -> Any:
        with self._lock:
            rc, out, err = self._nft.cmd(script)
        if rc != 0:
            raise TableError(f"nft failed: {err.strip()}")
        return json.loads(out) if out.strip() else None

    async def _run(self, script: str) -> Any:
        return await asyncio.to_thread(self._run_sync, script)

    async def setup(self, extra_deny: Iterable[Network], host_addresses: Iterable[str]) -> None:
        await self._run(base_script(extra_deny, host_addresses))

    async def apply(self, slot: int, policy: CompiledPolicy) -> None:
        assert self.ports is not None
        await self._run(sandbox_script(slot, policy, self.ports))

    async def remove(self, slot: int) -> None:
        await self._run(remove_script(slot))

    async def slots(self) -> set[int]:
        """The slots that have a chain in the table (any node agent's on this host)."""
        listing = await self._run(f"list chains {TABLE.split()[0]}")
        found = set()
        for item in (listing or {}).get("nftables", []):
            chain = item.get("chain")
            if chain and chain.get("table") == "corral" and chain["name"].startswith("f_"):
                found.add(int(chain["name"][2:]))
        return found

    def counters_sync(self) -> dict[str, int]:
        """`ok_N` / `no_N` packet counts (metrics callbacks are synchronous)."""
        listing = self._run_sync(f"list counters table {TABLE}")
        counts = {}
        for item in (listing or {}).get("nftables", []):
            counter = item.get("counter")
            if counter:
                counts[counter["name"]] = int(counter.get("packets", 0))
        return counts
