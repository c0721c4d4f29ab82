"""A test "internet": a network namespace joined to this host by a veth, holding hosts at
documentation addresses (TEST-NET-2 only: TEST-NET-1 is this kind of machine's own LAN, and
its package registries answer at an address in TEST-NET-3)
that serve HTTP, HTTPS, TCP and UDP echo (`testnet_server.py`), and a hosts file of names
for them that the node's resolver answers from (`CORRAL_DNS_HOSTS`). Sandbox traffic for
these addresses leaves the node as it would for the internet (NAT out of the host), and
reaches nothing else: tests pass `EGRESS_SAFETY_NET` as the node's always-denied ranges.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from .testnet_server import ECHO_PORT, HTTPS_PORT

NETNS = "corral-testnet"
HOST_IFACE = "ctn0"
RANGES = ("198.51.100.0/24",)
HOST_SIDE = ("198.51.100.1/24",)
WEB = "198.51.100.10"
API = "198.51.100.11"
OTHER = "198.51.100.200"
NAMES = {
    WEB: ["web.test.example", "a.wild.test.example", "b.wild.test.example"],
    API: ["api.test.example"],
    OTHER: ["other.test.example"],
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def safety_net() -> str:
    """Every IPv4 range but the test hosts': the always-denied ranges of a test node, so that
    no sandbox of a test reaches anything on any real network."""
    everything = [ipaddress.ip_network("0.0.0.0/0")]
    for keep in map(ipaddress.ip_network, RANGES):
        everything = [
            part
            for net in everything
            for part in (net.address_exclude(keep) if keep.subnet_of(net) else [net])
        ]  # type: ignore[arg-type]
    return ",".join(str(n) for n in sorted(everything))


EGRESS_SAFETY_NET = safety_net()


@dataclass
class TestNet:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    directory: Path
    ca: trustme.CA

    @property
    def hosts_file(self) -> Path:
        return self.directory / "hosts"

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def node_env(self) -> dict[str, str]:
        """What a node agent needs to serve the test hosts' names and nothing else."""
        return {
            "CORRAL_DNS_HOSTS": str(self.hosts_file),
            "CORRAL_DNS_UPSTREAMS": "none",
            "CORRAL_EGRESS_ALWAYS_DENY": EGRESS_SAFETY_NET,
        }

    def add_name(self, name: str, address: str) -> None:
        with self.hosts_file.open("a") as f:
            f.write(f"{address} {name}\n")


def _ip(*args: str, input: str | None = None) -> None:
    subprocess.run(["ip", *args], check=True, input=input, text=True, capture_output=True)


def remove() -> None:
    subprocess.run(["ip", "link", "del", HOST_IFACE], capture_output=True)
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


@contextlib.contextmanager
def running_testnet() -> Iterator[TestNet]:
    remove()
    directory = Path(tempfile.mkdtemp(prefix="corral-testnet-"))
    ca = trustme.CA()
    names = [name for group in NAMES.values() for name in group]
    cert = ca.issue_cert(*names, *NAMES)
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    (directory / "hosts").write_text("".join(f"{ip} {' '.join(n)}\n" for ip, n in NAMES.items()))
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("netns", "add", NETNS)
        _ip("link", "add", HOST_IFACE, "type", "veth", "peer", "name", "eth0", "netns", NETNS)
        for address in HOST_SIDE:
            _ip("addr", "add", address, "dev", HOST_IFACE)
        _ip("link", "set", HOST_IFACE, "up")
        inside = ["link set lo up", "link set eth0 up"]
        inside += [f"addr add {address}/24 dev eth0" for address in NAMES]
        inside += ["route add default via 198.51.100.1"]
        _ip("-n", NETNS, "-batch", "-", input="".join(f"{line}\n" for line in inside))
        server = subprocess.Popen(
            [
                "ip", "netns", "exec", NETNS, sys.executable, "-m", "tests.harness.testnet_server",
                "--cert", str(directory / "cert.pem"), "--key", str(directory / "key.pem"),
                *(arg for address in NAMES for arg in ("--address", address)),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError("the test network's servers did not start")
        yield TestNet(directory, ca)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        remove()


__all__ = ["API", "ECHO_PORT", "HTTPS_PORT", "OTHER", "WEB", "TestNet", "running_testnet"]
