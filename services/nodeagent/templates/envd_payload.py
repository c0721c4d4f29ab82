"""The libraries envd (and the code interpreter) import at run time, installed into every
template at the versions the host runs."""

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


# And what the code interpreter adds (its kernels), for templates that have one.
INTERPRETER_DISTRIBUTIONS = ("bash_kernel", "deno", "httpx", "ipykernel", "jupyter-client")


def _pinned(names: tuple[str, ...]) -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in names]


def envd_requirements() -> list[str]:
    return _pinned(ENVD_DISTRIBUTIONS)


def interpreter_requirements() -> list[str]:
    return _pinned(INTERPRETER_DISTRIBUTIONS)
