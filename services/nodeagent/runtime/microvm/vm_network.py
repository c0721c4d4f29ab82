"""A microVM's network: the sandbox's namespace (network.py) gets a tap device for the
guest, and forwards what reaches the sandbox's address to the guest.

Every guest has the same address (`GUEST_ADDRESS`) and MAC: a clone restored from a
template snapshot wakes with the template's network setup, and nothing inside it needs to
change. Each namespace maps its own sandbox address to that guest address (DNAT), so the
proxy reaches envd and user ports at the sandbox address exactly as with gVisor.
"""

from __future__ import annotations

from ... import network
from ...commands import run

TAP = "tap0"
TAP_ADDRESS = "192.168.127.1"
GUEST_ADDRESS = "192.168.127.2"
PREFIX = 30
GUEST_MAC = "02:c0:ff:ee:00:02"
# The tap's MAC is fixed too: a clone's guest remembers the template's gateway MAC.
TAP_MAC = "02:c0:ff:ee:00:01"


def nat_rules(net: network.SandboxNetwork) -> str:
    """iptables-restore input: the sandbox address leads to the guest, and what the guest
    sends out leaves with the sandbox address (the node's egress rules know sandboxes by it).
    These rules live in the sandbox's own namespace, outside the guest."""
    return (
        "*nat\n"
        f"-A PREROUTING -d {net.address}/32 -j DNAT --to-destination {GUEST_ADDRESS}\n"
        f"-A POSTROUTING -s {GUEST_ADDRESS}/32 -o eth0 -j SNAT --to-source {net.address}\n"
        "COMMIT\n"
    )


async def create(net: network.SandboxNetwork) -> None:
    """The namespace with its veth pair, plus the tap and the forwarding to the guest."""
    tap = (
        f"tuntap add dev {TAP} mode tap",
        f"link set {TAP} address {TAP_MAC}",
        f"addr add {TAP_ADDRESS}/{PREFIX} dev {TAP}",
        f"link set {TAP} up",
    )
    await network.create(net, inside=tap)
    try:
        forward = "echo 1 > /proc/sys/net/ipv4/ip_forward && exec iptables-restore"
        await run("ip", "netns", "exec", net.netns, "sh", "-c", forward, input=nat_rules(net).encode())
    except BaseException:
        await network.destroy(net)
        raise
