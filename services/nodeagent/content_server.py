"""The node's HTTP content server: volume files and template build files, and the template
archives other nodes fetch. The API forwards to it (volumes, uploads); its address is in the
node's heart-beat (`content_url`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from .settings import NodeSettings


class ContentServer:
    def __init__(self, settings: NodeSettings) -> None:
        self._settings = settings
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self, routes: list[BaseRoute]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._settings.content_host, self._settings.content_port))
        port = sock.getsockname()[1]
        config = uvicorn.Config(Starlette(routes=routes), log_config=None, access_log=False, http="httptools")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        host = self._settings.content_advertise_host or self._settings.content_host
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
