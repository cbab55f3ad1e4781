"""A tiny real server for the test and demo topology.

Run as ``python -m pylvs.testbed.realserver --name rs1``.

It runs inside a real-server namespace (started by :meth:`pylvs.testbed.topology.Topology.
start_http_servers`) and answers with its own name so that a client can tell which real
server the director picked:

* HTTP on TCP ``--http`` (default 80):
  ``GET /`` (any other path not listed below too) → ``<name>\\n``;
  ``GET /bytes/<n>`` → ``n`` bytes of the pattern ``bytes(i % 251)`` (bulk transfers whose
  content the client can check); ``POST /sha256`` → hex SHA-256 of the request body;
  ``GET /sleep/<seconds>`` → waits (at most 600 s), then ``<name>\\n`` (long-lived connections).
  Every response carries ``X-Server: <name>``.
* UDP on ``--udp`` (default 53; 0 disables): every datagram is answered with ``<name>\\n``.

When both sockets are bound it prints ``ready`` on stdout, which is what the topology waits for.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import socket
import sys
from collections.abc import Sequence
from typing import cast

from aiohttp import web

__all__ = ["main", "make_app", "pattern_bytes"]

_MAX_SLEEP = 600.0
_CHUNK = 1 << 16


def pattern_bytes(offset: int, length: int) -> bytes:
    """Return ``length`` bytes of the ``/bytes`` pattern starting at byte ``offset``."""
    return bytes((offset + i) % 251 for i in range(length))


def make_app(name: str) -> web.Application:
    """Build the aiohttp application that answers as real server ``name``."""
    reply = f"{name}\n"
    headers = {"X-Server": name}
    # One period of the pattern, repeated: 251 does not divide 64 KiB, so slice per offset.
    period = pattern_bytes(0, 251)

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text=reply, headers=headers)

    async def data(request: web.Request) -> web.StreamResponse:
        total = int(request.match_info["n"])
        resp = web.StreamResponse(headers=headers)
        resp.content_length = total
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        sent = 0
        while sent < total:
            n = min(_CHUNK, total - sent)
            start = sent % 251
            reps = (start + n) // 251 + 1
            await resp.write((period * reps)[start : start + n])
            sent += n
        await resp.write_eof()
        return resp

    async def digest(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        async for chunk in request.content.iter_chunked(_CHUNK):
            h.update(chunk)
        return web.Response(text=h.hexdigest() + "\n", headers=headers)

    async def sleep(request: web.Request) -> web.Response:
        await asyncio.sleep(min(float(request.match_info["s"]), _MAX_SLEEP))
        return web.Response(text=reply, headers=headers)

    app = web.Application()
    app.router.add_get(r"/bytes/{n:\d+}", data)
    app.router.add_post("/sha256", digest)
    app.router.add_get(r"/sleep/{s:[0-9.]+}", sleep)
    app.router.add_get("/{tail:.*}", hello)
    return app


class _NameEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self._reply = f"{name}\n".encode()
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport; it quacks alike.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(self._reply, addr)


def _udp_socket(host: str, port: int) -> socket.socket:
    # IPv6 only on "::", so it can share the port with the IPv4 socket on 0.0.0.0.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def _serve(name: str, hosts: Sequence[str], http_port: int, udp_port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(name), access_log=None, handle_signals=False)
    await runner.setup()
    udps: list[asyncio.DatagramTransport] = []
    for host in hosts:
        # A big backlog: the benchmark opens hundreds of connections at once.
        site = web.TCPSite(runner, host, http_port, backlog=4096, reuse_address=True)
        await site.start()
        if udp_port:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _NameEcho(name), sock=_udp_socket(host, udp_port)
            )
            udps.append(udp)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        for udp in udps:
            udp.close()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the real server until SIGTERM or SIGINT; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pylvs.testbed.realserver", description=__doc__)
    parser.add_argument("--name", required=True, help="the name it answers with, e.g. rs1")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    parser.add_argument("--ipv6", action="store_true",
                        help="also serve on every IPv6 address (::)")
    parser.add_argument("--http", type=int, default=80, help="HTTP port (default 80)")
    parser.add_argument("--udp", type=int, default=53, help="UDP name-echo port; 0 disables")
    args = parser.parse_args(argv)
    hosts = [args.host, *(["::"] if args.ipv6 else [])]
    coro = _serve(args.name, hosts, args.http, args.udp)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
