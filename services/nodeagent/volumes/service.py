"""The volumes this node holds: creating and deleting them for the scheduler, their host
directories for sandboxes that mount them, and the content server the API forwards to."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.routing import BaseRoute

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

    async def start(self) -> None:
        await self.disks.mount_all()

    def routes(self) -> list[BaseRoute]:
        """The content server's volume routes (`/volumecontent/...`)."""
        return self._content.routes()

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
