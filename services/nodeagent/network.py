"""One network namespace per sandbox, joined to the node by a veth pair.

Each sandbox gets slot i and the /30 at 198.18.0.0 + 4*i (`libs/contracts/sandbox_net.py`):
the node side is .1, the sandbox .2. The node reaches the sandbox's ports at the .2 address;
what the sandbox sends out is the node's egress rules' to pass or drop (`egress/`).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from corral_libs.contracts.sandbox_net import HOST_IFACE_PREFIX, MAX_SLOTS, SANDBOX_RANGE

from .commands import run

__all__ = ["MAX_SLOTS", "SandboxNetwork", "address_sandbox", "create", "destroy"]

BASE = ipaddress.ip_network(SANDBOX_RANGE).network_address
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
        return f"{HOST_IFACE_PREFIX}{self.slot}"

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
        await asyncio.to_thread(_route_localnet, net.host_veth)
        await _batch([f"link set {peer} name eth0", "link set lo up", *_address_commands(net), *inside], net)
    except BaseException:
        await destroy(net)
        raise


def _route_localnet(host_veth: str) -> None:
    """The node's resolver and egress proxy listen on 127.0.0.1; the egress rules send a
    sandbox's DNS (and domain-policy TCP) there, which needs this on the sandbox's link."""
    Path(f"/proc/sys/net/ipv4/conf/{host_veth}/route_localnet").write_text("1\n")


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
