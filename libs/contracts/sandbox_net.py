"""Network facts every sandbox and node share (both runtimes, every template).

Sandboxes are numbered by slot: slot i owns the /30 at 198.18.0.0 + 4*i (198.18.0.0/15 is
RFC 2544's benchmarking range: never routed, never anyone's real network); the node side is
.1, the sandbox .2. The last /30 of the range is never a slot: its .254 is the resolver
address every template's /etc/resolv.conf names, which the node answers for each sandbox
(so a clone restored from a template snapshot needs no change to find it)."""

from __future__ import annotations

SANDBOX_RANGE = "198.18.0.0/15"
MAX_SLOTS = (1 << 15) - 1
RESOLVER_ADDRESS = "198.19.255.254"
DNS_PORT = 53
# Host-side interface names: `crv<slot>` (the veth's node end).
HOST_IFACE_PREFIX = "crv"
