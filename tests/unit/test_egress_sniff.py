"""The names a sandbox's connections ask for: TLS SNI from a real ClientHello, HTTP Host."""

from __future__ import annotations

import ssl

import pytest

from corral_services.nodeagent.egress.sniff import NeedMore, server_name


def client_hello(name: str | None) -> bytes:
    """The first flight of a real TLS client (Python's ssl), as it goes on the wire."""
    context = ssl.create_default_context()
    context.check_hostname = name is not None
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def test_tls_server_name():
    assert server_name(client_hello("API.Example.com")) == "api.example.com"


def test_tls_without_a_name():
    assert server_name(client_hello(None)) is None


def test_tls_prefix_needs_more():
    hello = client_hello("api.example.com")
    for cut in (1, 4, 5, len(hello) // 2, len(hello) - 1):
        with pytest.raises(NeedMore):
            server_name(hello[:cut])


def test_http_host():
    request = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: Web.Example.com:8080\r\n\r\n"
    assert server_name(request) == "web.example.com"
    assert server_name(b"POST / HTTP/1.1\r\nhost: a.b\r\n\r\nbody") == "a.b"
    assert server_name(b"GET / HTTP/1.0\r\n\r\n") is None


def test_http_prefix_needs_more():
    for prefix in (b"G", b"GET", b"GET / HTTP/1.1\r\nHost: a.b\r\n"):
        with pytest.raises(NeedMore):
            server_name(prefix)


def test_other_protocols_have_no_name():
    assert server_name(b"SSH-2.0-OpenSSH_9.2\r\n") is None
    assert server_name(b"\x00\x01binary") is None
