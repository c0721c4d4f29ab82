"""Egress policies: E2B's `allow_internet_access` and `network.allowOut` / `denyOut` checked
and normalised into an `EgressPolicy` (the API answers 400 naming the field), and compiled
into what the node enforces (`CompiledPolicy`: networks for the kernel, names for the
egress proxy).

The order is E2B's: allow beats deny beats the default, which is allow. Domains can only be
allowed, and only where everything else is denied (`0.0.0.0/0` in `denyOut`), as E2B asks.
The always-denied ranges (`ALWAYS_DENY`) are not part of a policy: nothing opens them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from corral_libs.contracts.records import EgressPolicy
from corral_libs.contracts.sandbox_net import SANDBOX_RANGE

ALL_TRAFFIC = "0.0.0.0/0"
MAX_ENTRIES = 2000  # per list: more is a 400

# Never reachable from a sandbox, whatever its policy says: this host and every private,
# shared, link-local, loopback, multicast and reserved range (the documentation ranges stay
# reachable: they route nowhere on the internet, and tests stand in hosts there).
ALWAYS_DENY = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    SANDBOX_RANGE,  # the other sandboxes (and the node's ends of their links)
    "224.0.0.0/4",
    "240.0.0.0/4",
)
ALWAYS_DENY6 = ("::1/128", "::/128", "fc00::/7", "fe80::/10", "ff00::/8", "::ffff:0:0/96")

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Verdict = Literal["allow", "deny", "default"]


class PolicyError(ValueError):
    """Bad input, with the wire name of the field it is in."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _domain(entry: str) -> str | None:
    """`example.com` or `*.example.com`, lower-cased without a final dot; None if neither."""
    name = entry.lower().rstrip(".")
    labels = name.removeprefix("*.").split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():  # an address that failed to parse is no name either
        return None
    return name


def _entries(field: str, raw: list[str] | None) -> list[str]:
    entries = raw or []
    if len(entries) > MAX_ENTRIES:
        raise PolicyError(field, f"{len(entries)} entries, at most {MAX_ENTRIES} are allowed")
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise PolicyError(field, f"invalid entry {entry!r}: expected an IP address, CIDR or domain")
    return [entry.strip() for entry in entries]


def parse(
    allow_out: list[str] | None,
    deny_out: list[str] | None,
    allow_internet_access: bool | None = None,
) -> EgressPolicy:
    """Checks and normalises a policy as the API receives it (`PolicyError` on bad input)."""
    allowed: list[str] = []
    for entry in _entries("allowOut", allow_out):
        if entry == "*":
            allowed.append(ALL_TRAFFIC)
        elif (network := _network(entry)) is not None:
            allowed.append(str(network))
        elif (name := _domain(entry)) is not None:
            allowed.append(name)
        else:
            raise PolicyError("allowOut", f"invalid entry '{entry}': expected an IP address, CIDR or domain")
    denied: list[str] = []
    for entry in _entries("denyOut", deny_out):
        network = _network(entry)
        if network is None:
            raise PolicyError(
                "denyOut",
                f"invalid entry '{entry}': expected an IP address or CIDR (domains can only be allowed)",
            )
        denied.append(str(network))
    internet = allow_internet_access is not False
    if not internet and ALL_TRAFFIC not in denied:
        denied.append(ALL_TRAFFIC)
    domains = [entry for entry in allowed if _network(entry) is None]
    if domains and ALL_TRAFFIC not in denied:
        raise PolicyError(
            "allowOut",
            f"domains ({', '.join(domains[:3])}) can only be allowed when all other traffic is denied: "
            f"add '{ALL_TRAFFIC}' to denyOut",
        )
    return EgressPolicy(
        allow_out=list(dict.fromkeys(allowed)),
        deny_out=list(dict.fromkeys(denied)),
        allow_internet_access=internet,
    )


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    allow: tuple[Network, ...]
    deny: tuple[Network, ...]
    names: frozenset[str]  # exact domains
    suffixes: tuple[str, ...]  # from `*.domain`: ".domain"
    reserved_ok: tuple[Network, ...] = ()  # `reach_reserved`

    @classmethod
    def of(cls, policy: EgressPolicy) -> CompiledPolicy:
        allow: list[Network] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for entry in policy.allow_out:
            network = _network(entry)
            if network is not None:
                allow.append(network)
            elif entry.startswith("*."):
                suffixes.append(entry[1:])
            else:
                names.add(entry)
        deny = tuple(n for n in map(_network, policy.deny_out) if n is not None)
        reserved_ok = tuple(n for n in map(_network, policy.reach_reserved) if n is not None)
        return cls(tuple(allow), deny, frozenset(names), tuple(suffixes), reserved_ok)

    def reaches_reserved(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self.reserved_ok if network.version == ip.version)

    @property
    def has_names(self) -> bool:
        """Whether TCP must go through the egress proxy (it matches names)."""
        return bool(self.names or self.suffixes)

    def allows_name(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    def verdict(self, address: str) -> Verdict:
        ip = ipaddress.ip_address(address)
        if any(ip in network for network in self.allow if network.version == ip.version):
            return "allow"
        if any(ip in network for network in self.deny if network.version == ip.version):
            return "deny"
        return "default"

    def networks(self, version: int) -> tuple[list[str], list[str]]:
        """The allowed and denied networks of one IP version, as the kernel sets hold them."""
        return (
            [str(n) for n in self.allow if n.version == version],
            [str(n) for n in self.deny if n.version == version],
        )


_ALWAYS_DENY_NETWORKS: tuple[Network, ...] = tuple(map(ipaddress.ip_network, ALWAYS_DENY + ALWAYS_DENY6))


def always_denied(address: str, extra: tuple[Network, ...] = ()) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in (*_ALWAYS_DENY_NETWORKS, *extra) if network.version == ip.version)


def parse_networks(raw: str) -> tuple[Network, ...]:
    """A comma-separated list of IPs and CIDRs (`CORRAL_EGRESS_ALWAYS_DENY`)."""
    networks = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        network = _network(entry)
        if network is None:
            raise ValueError(f"'{entry}' is not an IP address or CIDR")
        networks.append(network)
    return tuple(networks)
