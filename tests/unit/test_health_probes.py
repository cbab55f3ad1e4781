"""tcp, send/expect and udp probes against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import IPv4Address

import pytest
import uvloop

from pylvs.health import ProbeSpec, Reason, run_probe
from pylvs.health.spec import PIRANHA_HTTP_EXPECT, PIRANHA_HTTP_SEND, unescape
from pylvs.model import CheckConfig, Endpoint

LOOP = IPv4Address("127.0.0.1")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def spec(port: int, **kw: object) -> ProbeSpec:
    args: dict[str, object] = {"type": "send_expect", "interval": 1.0, "timeout": 1.0}
    args.update(kw)
    return ProbeSpec(address=LOOP, port=port, **args)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler, host: str = "127.0.0.1", port: int = 0
                     ) -> AsyncIterator[int]:
    async def wrapped(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(wrapped, host, port)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_tcp_connect_ok_and_refused() -> None:
    async def idle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(1)

    async with tcp_server(idle) as port:
        ok = await run_probe(spec(port, type="tcp"))
    assert ok.ok and ok.reason is Reason.OK
    bad = await run_probe(spec(closed_port(), type="tcp"))
    assert not bad.ok and bad.reason is Reason.REFUSED


async def test_send_expect_prefix_match_and_wrong_reply_shows_what_came() -> None:
    seen: list[bytes] = []

    async def hello(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line = await r.readuntil(b"\r\n")
        seen.append(line)
        w.write(b"+PONG ready\r\n" if line == b"PING\r\n" else b"-ERR what\r\n")
        await w.drain()

    async with tcp_server(hello) as port:
        ok = await run_probe(spec(port, send="PING\r\n", expect="+PONG"))
        wrong = await run_probe(spec(port, send="PONG\r\n", expect="+PONG"))
    assert ok.ok, ok
    assert seen[0] == b"PING\r\n"
    assert not wrong.ok and wrong.reason is Reason.WRONG_REPLY
    assert "-ERR" in wrong.detail


async def test_send_expect_regex_across_segments_and_star() -> None:
    async def slow_banner(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"220 mail.exa")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"mple ESMTP ready\r\n")
        await w.drain()
        await r.read(1)

    async with tcp_server(slow_banner) as port:
        # Empty send: the server speaks first (SMTP-style banner).
        ok = await run_probe(spec(port, send="", expect=r"^220 .*ESMTP", expect_regex=True))
        miss = await run_probe(
            spec(port, send="", expect=r"^554", expect_regex=True, timeout=0.3)
        )
        star = await run_probe(spec(port, send="", expect="*"))
    assert ok.ok, ok
    # The server keeps the connection open, so the probe waits for more until its deadline and
    # then reports what it had.
    assert miss.reason is Reason.TIMEOUT and "220 mail.example ESMTP" in miss.detail, miss
    assert star.ok


async def test_short_reply_is_wrong_reply_and_silence_is_timeout() -> None:
    async def short(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n")
        w.write(b"HT")
        await w.drain()

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with tcp_server(short) as port:
        res = await run_probe(spec(port, send="GET /\r\n", expect="HTTP"))
    assert not res.ok and res.reason is Reason.WRONG_REPLY and res.detail == "HT"
    async with tcp_server(silent) as port:
        res = await run_probe(spec(port, send="x", expect="y", timeout=0.3))
    assert not res.ok and res.reason is Reason.TIMEOUT
    assert 0.25 < res.duration < 1.0


async def test_total_deadline_catches_a_trickling_reply() -> None:
    async def trickle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for b in b"220 slowly but surely\r\n":
            w.write(bytes([b]))
            await w.drain()
            await asyncio.sleep(0.1)

    async with tcp_server(trickle) as port:
        res = await run_probe(spec(port, expect="220 slowly but surely", timeout=0.5))
    # Each byte arrives well within the timeout; only a total deadline can fail this.
    assert res.reason is Reason.TIMEOUT and res.duration < 1.0


def test_escapes_and_piranha_port_80_default() -> None:
    assert unescape(r"GET / HTTP/1.0\r\n\r\n") == "GET / HTTP/1.0\r\n\r\n"
    assert unescape(r"a\tb\\c\'\"\x41\d") == "a\tb\\c'\"A\\d"
    s80 = ProbeSpec.from_check(CheckConfig(type="send_expect"), Endpoint(LOOP, 80))
    assert s80 is not None
    assert (s80.send, s80.expect) == (PIRANHA_HTTP_SEND, PIRANHA_HTTP_EXPECT)
    s81 = ProbeSpec.from_check(CheckConfig(type="send_expect"), Endpoint(LOOP, 81))
    assert s81 is not None and (s81.send, s81.expect) == (None, None)
    explicit = ProbeSpec.from_check(
        CheckConfig(type="send_expect", send="", expect="OK"), Endpoint(LOOP, 80)
    )
    assert explicit is not None and (explicit.send, explicit.expect) == ("", "OK")


async def test_piranha_default_against_a_real_port_80_server() -> None:
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    got: list[bytes] = []

    async def web(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got.append(await r.readuntil(b"\r\n\r\n"))
        w.write(b"HTTP/1.0 200 OK\r\n\r\nhi")
        await w.drain()

    try:
        ctx = tcp_server(web, host, 80)
        port = await ctx.__aenter__()
    except OSError as exc:
        pytest.skip(f"cannot bind {host}:80: {exc}")
    try:
        s = ProbeSpec.from_check(CheckConfig(type="send_expect"), Endpoint(IPv4Address(host), port))
        assert s is not None
        res = await run_probe(s)
    finally:
        await ctx.__aexit__(None, None, None)
    assert res.ok, res
    assert got == [b"GET / HTTP/1.0\r\n\r\n"]


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, reply: Callable[[bytes], bytes | None]) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        out = self.reply(data)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


@contextlib.asynccontextmanager
async def udp_server(reply: Callable[[bytes], bytes | None]) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpServer(reply), local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_udp_send_expect() -> None:
    async with udp_server(lambda d: b"PONG " + d if d.startswith(b"PING") else b"ERR") as port:
        ok = await run_probe(spec(port, type="udp", send="PING\n", expect="PONG PING\n"))
        wrong = await run_probe(spec(port, type="udp", send="HELLO", expect="PONG"))
        anyreply = await run_probe(spec(port, type="udp", send="HELLO"))
    assert ok.ok, ok
    assert not wrong.ok and wrong.reason is Reason.WRONG_REPLY and wrong.detail == "ERR"
    assert anyreply.ok


async def test_udp_silence_is_timeout_and_closed_port_is_refused() -> None:
    async with udp_server(lambda d: None) as port:
        res = await run_probe(spec(port, type="udp", send="x", expect="y", timeout=0.3))
    assert res.reason is Reason.TIMEOUT
    res = await run_probe(spec(closed_port(), type="udp", send="x", timeout=1.0))
    assert res.reason is Reason.REFUSED, res


def test_socket_probes_under_uvloop() -> None:
    """The daemon runs uvloop: its UDP error path and stream reads must behave the same."""

    async def main() -> list[Reason]:
        async def banner(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"+OK hello\r\n")
            await w.drain()
            await r.read(1)

        out: list[Reason] = []
        async with tcp_server(banner) as port:
            out.append((await run_probe(spec(port, type="tcp"))).reason)
            out.append((await run_probe(spec(port, send="", expect="+OK"))).reason)
            out.append((await run_probe(spec(port, send="", expect="-ERR"))).reason)
        async with udp_server(lambda d: d) as port:
            out.append((await run_probe(spec(port, type="udp", send="x", expect="x"))).reason)
        out.append((await run_probe(spec(closed_port(), type="udp", send="x"))).reason)
        out.append((await run_probe(spec(closed_port(), type="tcp"))).reason)
        return out

    assert uvloop.run(main()) == [
        Reason.OK, Reason.OK, Reason.WRONG_REPLY, Reason.OK, Reason.REFUSED, Reason.REFUSED
    ]


def test_config_file_with_bare_send_expect_gets_the_piranha_default() -> None:
    from pylvs import config as config_mod

    cfg = config_mod.parse(
        """
[director]
public_interface = "eth0"
private_interface = "br0"

[[virtual_server]]
address = "198.18.0.100:80"

  [virtual_server.check]
  type = "send_expect"

  [[virtual_server.real_server]]
  address = "198.19.0.11:80"
"""
    )
    vs = cfg.virtual_servers[0]
    s = ProbeSpec.from_check(vs.check, vs.real_servers[0].address)
    assert s is not None and (s.send, s.expect) == (PIRANHA_HTTP_SEND, PIRANHA_HTTP_EXPECT)


def test_spec_rejects_what_can_never_work() -> None:
    from pylvs.errors import ConfigError

    for bad in (
        {"interval": 0.0},
        {"timeout": -1.0},
        {"expect": "(", "expect_regex": True},
        {"body_regex": "[", "type": "http"},
        {"type": "exec"},
    ):
        with pytest.raises(ConfigError):
            spec(80, **bad)
    spec(80, expect="(", expect_regex=False)  # a literal prefix may contain anything
