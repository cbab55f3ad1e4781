"""A TCP server on 127.0.0.1 for health-check tests: it counts accepts, stops and restarts."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from pylvs.model import Endpoint

__all__ = ["LOCAL", "Backend"]

LOCAL = IPv4Address("127.0.0.1")


class Backend:
    """A TCP server on 127.0.0.1 that can be stopped and started on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.accepts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Backend:
        """Listen (on the port of the last start, or a free one the first time)."""
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepts += 1
            w.close()

        self._server = await asyncio.start_server(on_conn, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening; connections to the port are refused until the next start."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def endpoint(self) -> Endpoint:
        """Where health checks find this server."""
        return Endpoint(LOCAL, self.port)
