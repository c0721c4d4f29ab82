"""Egress policies as the API receives them: what is accepted, normalised or refused (with
the field named), and how a compiled policy decides."""

from __future__ import annotations

import pytest

from corral_libs.contracts.records import EgressPolicy
from corral_libs.egress_policy import (
    ALL_TRAFFIC,
    MAX_ENTRIES,
    CompiledPolicy,
    PolicyError,
    always_denied,
    parse,
    parse_networks,
)


def test_default_is_internet_with_nothing_listed():
    assert parse(None, None) == EgressPolicy()


def test_entries_are_normalised():
    policy = parse(["1.2.3.4", "10.1.2.3/8", "Example.COM.", "*.Wild.example.com", "*"], ["0.0.0.0/0"])
    assert policy.allow_out == ["1.2.3.4/32", "10.0.0.0/8", "example.com", "*.wild.example.com", ALL_TRAFFIC]


def test_no_internet_denies_everything_and_keeps_allowed_entries():
    policy = parse(["198.51.100.0/24"], None, allow_internet_access=False)
    assert policy.deny_out == [ALL_TRAFFIC]
    assert policy.allow_out == ["198.51.100.0/24"]
    assert policy.allow_internet_access is False


@pytest.mark.parametrize(
    ("allow", "deny", "field", "words"),
    [
        (["999.1.1.1"], None, "allowOut", "999.1.1.1"),
        (["not a host"], None, "allowOut", "not a host"),
        ([""], None, "allowOut", "invalid entry"),
        (None, ["example.com"], "denyOut", "domains can only be allowed"),
        (None, ["10.0.0.0/33"], "denyOut", "10.0.0.0/33"),
        (["example.com"], None, "allowOut", "0.0.0.0/0"),
        (["example.com"], ["10.0.0.0/8"], "allowOut", "0.0.0.0/0"),
        (["1.1.1.1"] * (MAX_ENTRIES + 1), None, "allowOut", f"at most {MAX_ENTRIES}"),
    ],
)
def test_bad_input_names_its_field(allow, deny, field, words):
    with pytest.raises(PolicyError) as caught:
        parse(allow, deny)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_domains_are_allowed_when_everything_else_is_denied():
    assert parse(["example.com"], None, allow_internet_access=False).allow_out == ["example.com"]


def test_allow_beats_deny_beats_default():
    policy = CompiledPolicy.of(parse(["198.51.100.10"], ["198.51.100.0/24"]))
    assert policy.verdict("198.51.100.10") == "allow"
    assert policy.verdict("198.51.100.11") == "deny"
    assert policy.verdict("203.0.113.1") == "default"


def test_names_and_wildcards():
    policy = CompiledPolicy.of(parse(["api.example.com", "*.cdn.example.com"], [ALL_TRAFFIC]))
    assert policy.has_names
    assert policy.allows_name("API.example.com.")
    assert policy.allows_name("a.b.cdn.example.com")
    assert not policy.allows_name("cdn.example.com")  # the wildcard is for subdomains
    assert not policy.allows_name("evilapi.example.com")
    assert not policy.allows_name("example.com")
    assert not CompiledPolicy.of(parse(["1.2.3.4"], [ALL_TRAFFIC])).has_names


def test_kernel_sets_get_one_ip_version_each():
    policy = CompiledPolicy.of(parse(["1.2.3.4", "2001:db8::/32"], ["0.0.0.0/0", "::/0"]))
    assert policy.networks(4) == (["1.2.3.4/32"], ["0.0.0.0/0"])
    assert policy.networks(6) == (["2001:db8::/32"], ["::/0"])


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "198.18.0.2",
     "0.0.0.0", "224.0.0.1", "::1", "fd00::1", "fe80::1"],
)  # fmt: skip
def test_private_and_reserved_ranges_are_always_denied(address):
    assert always_denied(address)


def test_public_and_documentation_addresses_are_not_always_denied():
    assert not always_denied("8.8.8.8")
    assert not always_denied("198.51.100.10")


def test_always_deny_extension():
    extra = parse_networks(" 8.8.8.0/24, 1.1.1.1 ")
    assert always_denied("8.8.8.8", extra)
    assert always_denied("1.1.1.1", extra)
    assert not always_denied("9.9.9.9", extra)
    with pytest.raises(ValueError, match="nonsense"):
        parse_networks("nonsense")
