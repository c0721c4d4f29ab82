"""Which sandbox and port a request is for: the `E2b-Sandbox-Id`/`E2b-Sandbox-Port`
headers when present, otherwise a Host of the form `<port>-<sandboxID>.<domain>`."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SANDBOX_ID = re.compile(r"^[a-z0-9]+$")


class BadTarget(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    sandbox_id: str
    port: int


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise BadTarget(f"invalid sandbox port '{raw}'")
    return int(raw)


def resolve_target(headers: dict[str, str]) -> Target:
    """`headers` keys are lower-case."""
    sandbox_id = headers.get("e2b-sandbox-id")
    port = headers.get("e2b-sandbox-port")
    if sandbox_id is not None or port is not None:
        if not sandbox_id or not port:
            raise BadTarget("both E2b-Sandbox-Id and E2b-Sandbox-Port are required")
        if not _SANDBOX_ID.match(sandbox_id):
            raise BadTarget(f"invalid sandbox id '{sandbox_id}'")
        return Target(sandbox_id, _port(port))
    host = headers.get("host", "").split(":", 1)[0]
    label = host.split(".", 1)[0]
    port_part, sep, sandbox_id = label.partition("-")
    if not sep or not _SANDBOX_ID.match(sandbox_id):
        raise BadTarget(f"cannot route host '{host}': expected <port>-<sandboxID>.<domain>")
    return Target(sandbox_id, _port(port_part))
