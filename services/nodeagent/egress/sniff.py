"""The name a client connection asks for, from its first bytes: the SNI of a TLS
ClientHello or the Host of an HTTP/1 request. Nothing is decrypted or changed: the egress
proxy forwards the same bytes to the server it dials by that name."""

from __future__ import annotations

import struct

MAX_HEAD = 16 * 1024  # bytes read before giving up on finding a name

_TLS_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SNI_EXTENSION = 0x0000
_HOST_NAME = 0x00
_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ")


class NeedMore(Exception):
    """The bytes so far are a prefix of something that may still name a host."""


def looks_like_tls(data: bytes) -> bool:
    return len(data) >= 1 and data[0] == _TLS_HANDSHAKE


def looks_like_http(data: bytes) -> bool:
    return any(data.startswith(m) or m.startswith(data) for m in _HTTP_METHODS)


def tls_server_name(data: bytes) -> str | None:
    """The SNI of a ClientHello in `data` (which may span several TLS records' worth of
    bytes; the hello must fit the first record, as every client sends it)."""
    if len(data) < 5:
        raise NeedMore
    record_length = struct.unpack_from("!H", data, 3)[0]
    if len(data) < 5 + record_length:
        raise NeedMore
    hello = data[5 : 5 + record_length]
    try:
        if hello[0] != _CLIENT_HELLO:
            return None
        pos = 4 + 2 + 32  # handshake header, version, random
        pos += 1 + hello[pos]  # session id
        pos += 2 + struct.unpack_from("!H", hello, pos)[0]  # cipher suites
        pos += 1 + hello[pos]  # compression methods
        end = pos + 2 + struct.unpack_from("!H", hello, pos)[0]
        pos += 2
        while pos + 4 <= end:
            kind, length = struct.unpack_from("!HH", hello, pos)
            pos += 4
            if kind == _SNI_EXTENSION:
                names_end = pos + 2 + struct.unpack_from("!H", hello, pos)[0]
                pos += 2
                while pos + 3 <= names_end:
                    name_type, name_length = hello[pos], struct.unpack_from("!H", hello, pos + 1)[0]
                    pos += 3
                    if name_type == _HOST_NAME:
                        return hello[pos : pos + name_length].decode("ascii").lower()
                    pos += name_length
                return None
            pos += length
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return None


def http_host(data: bytes) -> str | None:
    """The Host header of an HTTP/1 request head (without its port)."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        raise NeedMore
    for line in data[:head_end].split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("latin-1").lower()
            if host.startswith("["):  # an IPv6 literal
                return host[1:].split("]", 1)[0]
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return None


def server_name(data: bytes) -> str | None:
    """The name `data` asks for; `NeedMore` while it may still come, None if it never will."""
    if not data:
        raise NeedMore
    if looks_like_tls(data):
        return tls_server_name(data)
    if looks_like_http(data):
        if len(data) < 8 and not any(data.startswith(m) for m in _HTTP_METHODS):
            raise NeedMore
        return http_host(data)
    return None
