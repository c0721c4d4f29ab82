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


def nat_rules(net: network.SandboxNetwork) -> str:
    """iptables-restore input: the sandbox address leads to the guest."""
    return f"*nat\n-A PREROUTING -d {net.address}/32 -j DNAT --to-destination {GUEST_ADDRESS}\nCOMMIT\n"


async def create(net: network.SandboxNetwork) -> None:
    """The namespace with its veth pair, plus the tap and the forwarding to the guest."""
    await network.create(net)
    try:
        ns = ("ip", "-n", net.netns)
        await run(*ns, "tuntap", "add", "dev", TAP, "mode", "tap")
        await run(*ns, "addr", "add", f"{TAP_ADDRESS}/{PREFIX}", "dev", TAP)
        await run(*ns, "link", "set", TAP, "up")
        exec_in = ("ip", "netns", "exec", net.netns)
        await run(*exec_in, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        await run(*exec_in, "iptables-restore", input=nat_rules(net).encode())
    except BaseException:
        await network.destroy(net)
        raise
