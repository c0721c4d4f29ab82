"""The volumes this node holds: creating and deleting them for the scheduler, their host
directories for sandboxes that mount them, and the content server the API forwards to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import uvicorn

from corral_libs.contracts.messages import Failure, KillReply, NodeVolumeRequest
from corral_libs.contracts.records import VolumeMount
from corral_libs.state import Store

from ..settings import NodeSettings
from .content import VolumeContent
from .disks import VolumeDisks, VolumeError

log = logging.getLogger(__name__)


class Volumes:
    def __init__(self, settings: NodeSettings, store: Store) -> None:
        self._settings = settings
        self.disks = VolumeDisks(Path(settings.data_dir) / "volumes")
        self._content = VolumeContent(settings.node_id, self.disks, store)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> None:
        await self.disks.mount_all()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._settings.volume_host, self._settings.volume_port))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self._content.app(), log_config=None, access_log=False, http="httptools")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        self.url = f"http://{self._settings.volume_advertise_host or self._settings.volume_host}:{port}"

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task

    async def create(self, request: NodeVolumeRequest) -> KillReply:
        try:
            await self.disks.create(request.volume_id, self._settings.volume_size_mb)
        except VolumeError as exc:
            return KillReply(error=Failure(status=409, message=str(exc)))
        return KillReply(killed=True)

    async def delete(self, request: NodeVolumeRequest) -> KillReply:
        return KillReply(killed=await self.disks.delete(request.volume_id))

    async def host_dirs(self, mounts: list[VolumeMount]) -> list[tuple[Path, str]]:
        """(host directory, sandbox path) of each mount, the volumes mounted on this host."""
        try:
            return [(await self.disks.ensure_mounted(m.volume_id), m.path) for m in mounts]
        except VolumeError as exc:
            raise VolumeUnavailable(str(exc)) from None


def volume_ids(mounts: list[VolumeMount]) -> tuple[str, ...]:
    """The volumes a sandbox mounts, as the node tracks them."""
    return tuple(m.volume_id for m in mounts)


class VolumeUnavailable(RuntimeError):
    """A sandbox asked for a volume this node does not hold."""
