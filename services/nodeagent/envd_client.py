"""Talking to envd inside a new sandbox: wait until it answers, then personalise it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx

ENVD_PORT = 49983


class EnvdNotReady(RuntimeError):
    pass


async def wait_ready(client: httpx.AsyncClient, address: str, timeout_s: float) -> None:
    url = f"http://{address}:{ENVD_PORT}/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get(url, timeout=2)).status_code == 204:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.02)
    raise EnvdNotReady(f"envd at {address} did not answer within {timeout_s:.0f}s")


async def init(
    client: httpx.AsyncClient,
    address: str,
    *,
    env_vars: dict[str, str],
    access_token: str | None,
    default_user: str,
    current_token: str | None = None,
) -> None:
    """`current_token`: what a sandbox restored from another's snapshot still holds; it
    authorises the change, and no new token clears it."""
    body: dict[str, object] = {
        "envVars": env_vars,
        "defaultUser": default_user,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    headers = {}
    if access_token:
        body["accessToken"] = access_token
    elif current_token:
        body["accessToken"] = ""
    # A restored envd already holds a token and only takes /init with it.
    if current_token or access_token:
        headers["X-Access-Token"] = current_token or access_token
    response = await client.post(f"http://{address}:{ENVD_PORT}/init", json=body, headers=headers, timeout=10)
    if response.status_code != 204:
        raise EnvdNotReady(f"envd /init answered {response.status_code}: {response.text}")


async def prepare_snapshot(client: httpx.AsyncClient, address: str, access_token: str | None = None) -> None:
    """Asks envd to let go of its sockets, then waits until it has (runsc cannot save them)."""
    headers = {"X-Access-Token": access_token} if access_token else {}
    response = await client.post(
        f"http://{address}:{ENVD_PORT}/snapshot/prepare", headers=headers, timeout=10
    )
    if response.status_code != 204:
        raise EnvdNotReady(f"envd /snapshot/prepare answered {response.status_code}: {response.text}")
    deadline = time.monotonic() + 5
    # A fresh client: the pooled connection would be one more socket for envd to reset.
    async with httpx.AsyncClient() as probe:
        while time.monotonic() < deadline:
            try:
                await probe.get(f"http://{address}:{ENVD_PORT}/health", timeout=1)
            except httpx.TransportError:
                return
            await asyncio.sleep(0.01)
    raise EnvdNotReady(f"envd at {address} kept listening after /snapshot/prepare")
