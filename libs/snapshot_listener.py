"""envd's listening socket, under envd's control: a snapshot needs it gone and a restored
clone needs it back.

runsc cannot save a TCP endpoint that anything waits on (uvloop keeps the listener in epoll)
nor one that is connected or in TIME_WAIT. So before a checkpoint envd stops listening and
resets every connection it holds (SO_LINGER 0: no TIME_WAIT left behind); after a restore,
SIGUSR1 makes it listen again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import struct
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

_LINGER_RESET = struct.pack("ii", 1, 0)


class Listener:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None

    async def serve(self, app: Any) -> None:
        """Serves the ASGI `app` on this listener until stopped; SIGUSR1 makes it listen
        again after a restore."""
        config = uvicorn.Config(
            app,
            host=self._host,
            port=self._port,
            log_config=None,
            access_log=False,
            http="httptools",
            # Streams (commands, watches, executions) live for hours; keepalives keep them busy.
            timeout_keep_alive=620,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(self.reopen()))
        await self._server.serve(sockets=[self.bind()])

    def bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.set_inheritable(False)
        return sock

    async def close(self) -> None:
        """Stops accepting and resets every open connection."""
        assert self._server is not None
        for server in self._server.servers:
            server.close()
        for connection in list(self._server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is None:
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()
        log.info("stopped listening for a snapshot")

    async def reopen(self) -> None:
        assert self._server is not None
        if any(server.is_serving() for server in self._server.servers):
            return
        config = self._server.config
        server_state = self._server.server_state
        app_state = self._server.lifespan.state

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(config=config, server_state=server_state, app_state=app_state)  # type: ignore[call-arg]

        loop = asyncio.get_running_loop()
        server = await loop.create_server(protocol, sock=self.bind(), backlog=config.backlog)
        self._server.servers = [server]
        log.info("listening again on port %d", self._port)
