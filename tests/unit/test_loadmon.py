"""pylvs.loadmon against a real agent-check server on 127.0.0.1 and real shell commands."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest

from pylvs.loadmon import LoadMonitor, parse_agent_line, parse_loadavg, read_agent, read_command
from pylvs.model import Endpoint, LoadMonitorConfig
from pylvs.weights import LoadReport

LOCAL = IPv4Address("127.0.0.1")


@asynccontextmanager
async def agent(reply: Callable[[], bytes | None]) -> AsyncIterator[int]:
    """An agent-check server: writes reply() and closes; None = say nothing and hang."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = reply()
        if data is None:
            await asyncio.sleep(10)
        else:
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def test_parse_agent_line() -> None:
    assert parse_agent_line("75%") == LoadReport(percent=75)
    assert parse_agent_line("12\r") == LoadReport(weight=12)
    assert parse_agent_line("UP, 50% maxconn:30 # fine") == LoadReport(percent=50, oper="up")
    assert parse_agent_line("drain") == LoadReport(admin="drain")
    assert parse_agent_line("stopped#maint") == LoadReport(oper="down")
    assert parse_agent_line("ready up 100%") == LoadReport(percent=100, admin="ready", oper="up")
    assert parse_agent_line("") is None
    assert parse_agent_line("hello world") is None


def test_parse_loadavg() -> None:
    assert parse_loadavg(" 17:01:02 up 3 days,  2 users,  load average: 0.52, 0.58, 0.59\n") == 0.52
    assert parse_loadavg("load averages: 1.20 1.00 0.90") == 1.2
    assert parse_loadavg("host  up  3+04:05,  0 users,  load 2.25, 1.10, 0.50") == 2.25
    assert parse_loadavg("0.75\n") == 0.75
    assert parse_loadavg("no numbers here") is None


async def test_read_agent_line_variants() -> None:
    for raw, want in (
        (b"75%\n", LoadReport(percent=75)),
        (b"drain", LoadReport(admin="drain")),  # no newline: EOF ends the line
        (b"up 33\r\nignored second line\n", LoadReport(weight=33, oper="up")),
        (b"down # disk full\n", LoadReport(oper="down")),
    ):
        def reply(data: bytes = raw) -> bytes:
            return data

        async with agent(reply) as port:
            assert await read_agent("127.0.0.1", port, 2.0) == want


async def test_read_agent_timeout_and_refused() -> None:
    async with agent(lambda: None) as port:
        t0 = time.monotonic()
        assert await read_agent("127.0.0.1", port, 0.2) is None
        assert time.monotonic() - t0 < 2.0
    async with agent(lambda: b"") as port:
        pass  # the server is closed: its port now refuses
    assert await read_agent("127.0.0.1", port, 1.0) is None


async def test_read_command_weight_loadavg_and_failures() -> None:
    assert await read_command("echo 42", 2.0, loadavg=False) == LoadReport(weight=42)
    assert await read_command("printf 'drain\\n'", 2.0, loadavg=False) == LoadReport(admin="drain")
    uptime = "echo ' 10:00:00 up 1 day,  load average: 1.50, 0.58, 0.59'"
    assert await read_command(uptime, 2.0, loadavg=True) == LoadReport(loadavg=1.5)
    assert await read_command("echo 50%; exit 3", 2.0, loadavg=False) is None
    t0 = time.monotonic()
    assert await read_command("sleep 5; echo 1", 0.3, loadavg=False) is None
    assert time.monotonic() - t0 < 3.0


async def test_monitor_agent_polls_each_server_until_cancelled() -> None:
    answers = {"a": b"50%\n", "b": b"maint\n"}
    async with agent(lambda: answers["a"]) as pa, agent(lambda: answers["b"]) as pb:
        got: list[tuple[Endpoint, LoadReport | None]] = []
        ea, eb = Endpoint(LOCAL, pa), Endpoint(LOCAL, pb)
        # the agent port is per service; here each "server" is its own loopback agent,
        # so the port comes from the endpoint (agent port None = the server's port)
        cfg = LoadMonitorConfig(type="agent", port=None, interval=0.05, timeout=1.0)
        mon = LoadMonitor(cfg, [ea, eb], lambda ep, rep: got.append((ep, rep)))
        task = asyncio.create_task(mon.run())
        await asyncio.sleep(0.4)
        assert (ea, LoadReport(percent=50)) in got
        assert (eb, LoadReport(admin="maint")) in got
        mon.set_servers([ea])
        await asyncio.sleep(0.1)
        got.clear()
        answers["a"] = b"ready 80%\n"
        await asyncio.sleep(0.3)
        assert got and all(ep == ea for ep, _ in got)
        assert (ea, LoadReport(percent=80, admin="ready")) in got
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n = len(got)
        await asyncio.sleep(0.15)
        assert len(got) == n  # stopped


async def test_monitor_exec_substitutes_host_and_port() -> None:
    got: list[tuple[Endpoint, LoadReport | None]] = []
    cfg = LoadMonitorConfig(
        type="exec", command="test %h = 127.0.0.1 && echo %p", interval=0.05, timeout=2.0
    )
    ep = Endpoint(LOCAL, 42)
    mon = LoadMonitor(cfg, [ep], lambda e, r: got.append((e, r)))
    task = asyncio.create_task(mon.run())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if got:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got[0] == (ep, LoadReport(weight=42))


async def test_monitor_loadavg_command_and_a_failing_callback() -> None:
    calls: list[LoadReport | None] = []

    def on_load(ep: Endpoint, rep: LoadReport | None) -> None:
        calls.append(rep)
        raise RuntimeError("callback bug")  # must not stop the polling

    cfg = LoadMonitorConfig(type="loadavg", command="echo 'load average: 3.00'", interval=0.02)
    mon = LoadMonitor(cfg, [Endpoint(LOCAL, 80)], on_load)
    task = asyncio.create_task(mon.run())
    for _ in range(200):
        await asyncio.sleep(0.02)
        if len(calls) >= 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls[:2] == [LoadReport(loadavg=3.0)] * 2
