"""The sandboxes' resolver without any upstream: names from its hosts file, NXDOMAIN for the
rest, and the kernel's denial lines read back."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype

from corral_services.nodeagent.egress import resolver as resolver_module
from corral_services.nodeagent.egress.kernel_log import parse_line
from corral_services.nodeagent.egress.resolver import HostsFile, Resolver, parse_upstreams


def resolver(tmp_path, text: str) -> Resolver:
    hosts = tmp_path / "hosts"
    hosts.write_text(text)
    return Resolver(HostsFile(hosts), upstreams=[])


async def ask(resolver: Resolver, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    answer = await resolver.answer(query.to_wire())
    assert answer is not None
    response = dns.message.from_wire(answer)
    assert response.id == query.id
    return response


async def test_names_from_the_hosts_file(tmp_path):
    resolver_ = resolver(
        tmp_path, "198.51.100.10 web.test.example a.test.example  # a comment\n::1 v6.only\n"
    )
    response = await ask(resolver_, "Web.Test.Example.")
    assert [r.address for r in response.answer[0]] == ["198.51.100.10"]
    assert await resolver_.resolve("a.test.example") == ["198.51.100.10"]
    # A name with only IPv4 addresses has no AAAA: an empty answer, not an error.
    empty = await ask(resolver_, "web.test.example", "AAAA")
    assert empty.rcode() == dns.rcode.NOERROR and not empty.answer


async def test_unknown_names_without_upstreams(tmp_path):
    resolver_ = resolver(tmp_path, "")
    assert (await ask(resolver_, "example.com")).rcode() == dns.rcode.NXDOMAIN
    assert await resolver_.resolve("example.com") == []


async def test_the_hosts_file_is_read_again_when_it_changes(tmp_path, monkeypatch):
    resolver_ = resolver(tmp_path, "198.51.100.10 one.test\n")
    assert await resolver_.resolve("two.test") == []
    (tmp_path / "hosts").write_text("198.51.100.10 one.test\n198.51.100.11 two.test\n")
    monkeypatch.setattr(resolver_module, "RELOAD_CHECK_S", 0.0)
    assert await resolver_.resolve("two.test") == ["198.51.100.11"]


async def test_garbage_is_not_answered(tmp_path):
    assert await resolver(tmp_path, "").answer(b"\x00\x01garbage") is None


def test_upstreams():
    assert parse_upstreams("none") == []
    assert parse_upstreams("192.0.2.53, 198.51.100.53") == ["192.0.2.53", "198.51.100.53"]


def test_kernel_denial_lines():
    line = (
        "4,1234,5678,-;corral-deny always-deny IN=crv20004 OUT= MAC=aa SRC=198.19.56.146 DST=10.0.0.1 "
        "LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=41234 DPT=80 WINDOW=64240 RES=0x00 SYN URGP=0"
    )
    parsed = parse_line(line)
    assert parsed is not None
    iface, denial = parsed
    assert (iface, denial.rule, denial.protocol, denial.destination, denial.port) == (
        "crv20004",
        "always-deny",
        "tcp",
        "10.0.0.1",
        80,
    )
    assert parse_line("6,1,2,-;EXT4-fs (vda): mounted filesystem") is None
