"""Talking to envd (and the template's other services) inside a sandbox: wait until they
answer, personalise it, and get them ready for a checkpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx

from corral_libs.contracts.envd import ENVD_PORT


class EnvdNotReady(RuntimeError):
    pass


async def wait_ready(
    client: httpx.AsyncClient, address: str, timeout_s: float, services: Sequence[int] = ()
) -> None:
    """Until envd and the template's other services (their ports) answer `/health`."""
    deadline = time.monotonic() + timeout_s
    for port in (ENVD_PORT, *services):
        url = f"http://{address}:{port}/health"
        while True:
            try:
                if (await client.get(url, timeout=2)).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise EnvdNotReady(f"port {port} of {address} did not answer within {timeout_s:.0f}s")
            await asyncio.sleep(0.02)


async def init(
    client: httpx.AsyncClient,
    address: str,
    *,
    env_vars: dict[str, str],
    access_token: str | None,
    default_user: str,
    default_workdir: str | None = None,
    current_token: str | None = None,
) -> None:
    """`current_token`: what a sandbox restored from another's snapshot still holds; it
    authorises the change, and no new token clears it."""
    body: dict[str, object] = {
        "envVars": env_vars,
        "defaultUser": default_user,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    if default_workdir:
        body["defaultWorkdir"] = default_workdir
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


async def prepare_snapshot(
    client: httpx.AsyncClient,
    address: str,
    access_token: str | None = None,
    services: Sequence[int] = (),
) -> None:
    """Asks the template's services, then envd, to let go of their sockets, and waits until
    they have (runsc cannot save them)."""
    headers = {"X-Access-Token": access_token} if access_token else {}
    for port in (*services, ENVD_PORT):
        url = f"http://{address}:{port}"
        response = await client.post(f"{url}/snapshot/prepare", headers=headers, timeout=10)
        if response.status_code != 204:
            raise EnvdNotReady(f"{url}/snapshot/prepare answered {response.status_code}: {response.text}")
        deadline = time.monotonic() + 5
        # A fresh client: the pooled connection would be one more socket to reset.
        async with httpx.AsyncClient() as probe:
            while True:
                try:
                    await probe.get(f"{url}/health", timeout=1)
                except httpx.TransportError:
                    break
                if time.monotonic() >= deadline:
                    raise EnvdNotReady(f"{url} kept listening after /snapshot/prepare")
                await asyncio.sleep(0.01)
