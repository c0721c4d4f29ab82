"""The libraries envd imports at run time, installed into every template at the versions
the host runs."""

from __future__ import annotations

from importlib import metadata

ENVD_DISTRIBUTIONS = (
    "asyncinotify",
    "connectrpc",
    "httptools",
    "msgspec",
    "opentelemetry-sdk",
    "protobuf-py",
    "python-multipart",
    "starlette",
    "uvicorn",
    "uvloop",
)


def envd_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in ENVD_DISTRIBUTIONS]
