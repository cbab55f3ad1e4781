"""Load monitors feeding a real Director: agent readings become engine weights.

The Director is built but not started (no TUN, no root).  The glue is the one every
component uses: ``LoadMonitor(..., on_load)`` with ``on_load`` calling
``director.set_server_state(service, endpoint, load=report)``, which brings the service into
the engine and applies :class:`pylvs.weights.ServerWeight`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

from pylvs.director import Director
from pylvs.loadmon import LoadMonitor
from pylvs.model import (
    CheckConfig,
    Config,
    DirectorConfig,
    Endpoint,
    LoadMonitorConfig,
    RealServerConfig,
    VirtualServerConfig,
)
from pylvs.weights import LoadReport

HOSTS = ("127.0.0.1", "127.0.0.2")


@asynccontextmanager
async def agents(replies: dict[str, bytes]) -> AsyncIterator[int]:
    """One agent per loopback host, all on one port; replies[host] is read per connection."""

    def handler(
        host: str,
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(replies[host])
            await w.drain()
            w.close()

        return handle

    first = await asyncio.start_server(handler(HOSTS[0]), HOSTS[0], 0)
    port = first.sockets[0].getsockname()[1]
    second = await asyncio.start_server(handler(HOSTS[1]), HOSTS[1], port)
    try:
        yield port
    finally:
        for s in (first, second):
            s.close()
            await s.wait_closed()


def config(port: int) -> Config:
    return Config(
        director=DirectorConfig(public_interface="eth0", private_interface="eth1"),
        virtual_servers=(
            VirtualServerConfig(
                address=Endpoint(IPv4Address("198.18.0.100"), 80),
                check=CheckConfig(type="none"),
                load_monitor=LoadMonitorConfig(type="agent", port=port, interval=0.05),
                real_servers=tuple(
                    RealServerConfig(address=Endpoint(IPv4Address(h), 80), weight=10) for h in HOSTS
                ),
            ),
        ),
    )


def engine_weights(d: Director) -> dict[str, int]:
    svcs = d.engine.services()
    return {s.key.address: s.weight for s in svcs[0].servers} if svcs else {}


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def monitoring(d: Director) -> AsyncIterator[list[LoadReport | None]]:
    vs = d.config.virtual_servers[0]
    seen: list[LoadReport | None] = []

    def on_load(ep: Endpoint, report: LoadReport | None) -> None:
        seen.append(report)
        if report is not None:
            d.set_server_state(vs.key, ep, load=report)

    mon = LoadMonitor(vs.load_monitor, [rs.address for rs in vs.real_servers], on_load)
    task = asyncio.create_task(mon.run())
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_agent_readings_drive_engine_weights() -> None:
    replies = {HOSTS[0]: b"50%\n", HOSTS[1]: b"drain\n"}
    async with agents(replies) as port:
        d = Director(config(port))
        async with monitoring(d):
            await wait_for(lambda: engine_weights(d) == {HOSTS[0]: 5, HOSTS[1]: 0})
            replies[HOSTS[1]] = b"ready 100%\n"
            await wait_for(lambda: engine_weights(d) == {HOSTS[0]: 5, HOSTS[1]: 10})
            replies[HOSTS[0]] = b"\n"  # says nothing understandable: the weight stays
            await asyncio.sleep(0.2)
            assert engine_weights(d) == {HOSTS[0]: 5, HOSTS[1]: 10}
            replies[HOSTS[0]] = b"down # disk full\n"  # quiesce (down_action default)
            await wait_for(lambda: engine_weights(d)[HOSTS[0]] == 0)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("loadmon")]
