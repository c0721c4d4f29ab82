"""One network namespace per sandbox, joined to the node by a veth pair.

Each sandbox gets slot i and the /30 at 198.18.0.0 + 4*i (198.18.0.0/15 is RFC 2544's
benchmarking range: never routed, never anyone's real network): the node side is .1, the
sandbox .2. The node reaches the sandbox's ports at the .2 address; nothing else is routed,
so a sandbox has no egress.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .commands import run

BASE = ipaddress.IPv4Address("198.18.0.0")
MAX_SLOTS = 1 << 15  # 198.18.0.0/15 in /30s
NETNS_DIR = "/var/run/netns"


@dataclass(frozen=True, slots=True)
class SandboxNetwork:
    slot: int
    sandbox_id: str

    @property
    def netns(self) -> str:
        return f"corral-{self.sandbox_id}"

    @property
    def netns_path(self) -> str:
        return f"{NETNS_DIR}/{self.netns}"

    @property
    def host_veth(self) -> str:
        return f"crv{self.slot}"

    @property
    def gateway(self) -> str:
        return str(BASE + 4 * self.slot + 1)

    @property
    def address(self) -> str:
        return str(BASE + 4 * self.slot + 2)


async def create(net: SandboxNetwork, inside: tuple[str, ...] = ()) -> None:
    """Makes the namespace and the veth pair, addressed; `inside` adds `ip` commands to
    run in the namespace. Commands go in batches (`ip -batch`): one process per side
    instead of one per command, a good part of a sandbox's start."""
    await destroy(net)  # leftovers of a crashed earlier life of this slot
    peer = f"crp{net.slot}"
    await run("ip", "netns", "add", net.netns)
    try:
        host_side = [
            f"link add {net.host_veth} type veth peer name {peer} netns {net.netns}",
            f"addr add {net.gateway}/30 dev {net.host_veth}",
            f"link set {net.host_veth} up",
        ]
        await _batch(host_side)
        await _batch([f"link set {peer} name eth0", "link set lo up", *_address_commands(net), *inside], net)
    except BaseException:
        await destroy(net)
        raise


def _address_commands(net: SandboxNetwork) -> list[str]:
    return [
        "addr flush dev eth0",
        f"addr add {net.address}/30 dev eth0",
        "link set eth0 up",
        f"route replace default via {net.gateway}",
    ]


async def _batch(commands: list[str], net: SandboxNetwork | None = None) -> None:
    where = ("-n", net.netns) if net is not None else ()
    await run("ip", *where, "-batch", "-", input="".join(f"{line}\n" for line in commands).encode())


async def address_sandbox(net: SandboxNetwork) -> None:
    """(Re)addresses eth0: runsc moves the addresses into its own network stack and takes
    them off the interface, so this runs before every sandbox start."""
    await _batch(_address_commands(net), net)


async def destroy(net: SandboxNetwork) -> None:
    await run("ip", "link", "del", net.host_veth, check=False)
    await run("ip", "netns", "del", net.netns, check=False)
