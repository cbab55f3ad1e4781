"""Load monitors wired into a real Director: agent readings become engine weights.

The Director is built but not started (no TUN, no root): the component is started by hand,
and ``set_server_state`` brings the services into the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from ipaddress import IPv4Address

from pylvs.director import Director
from pylvs.loadmon_component import LoadComponent, attach_load_monitors
from pylvs.model import (
    CheckConfig,
    Config,
    DirectorConfig,
    Endpoint,
    LoadMonitorConfig,
    RealServerConfig,
    VirtualServerConfig,
)

HOSTS = ("127.0.0.1", "127.0.0.2")


@asynccontextmanager
async def agents(replies: dict[str, bytes]) -> AsyncIterator[int]:
    """One agent per loopback host, all on the same port; replies[host] is read per connection."""

    def handler(host: str):  # type: ignore[no-untyped-def]
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


def config(port: int, hosts: tuple[str, ...] = HOSTS, interval: float = 0.05) -> Config:
    return Config(
        director=DirectorConfig(public_interface="eth0", private_interface="eth1"),
        virtual_servers=(
            VirtualServerConfig(
                address=Endpoint(IPv4Address("198.18.0.100"), 80),
                check=CheckConfig(type="none"),
                load_monitor=LoadMonitorConfig(type="agent", port=port, interval=interval),
                real_servers=tuple(
                    RealServerConfig(address=Endpoint(IPv4Address(h), 80), weight=10) for h in hosts
                ),
            ),
        ),
    )


def component(d: Director) -> LoadComponent:
    found = [c for c in d.components if isinstance(c, LoadComponent)]
    return found[0] if found else attach_load_monitors(d)


def engine_weights(d: Director) -> dict[str, int]:
    svcs = d.engine.services()
    return {s.key.address: s.weight for s in svcs[0].servers} if svcs else {}


async def wait_for(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.02)


async def test_agent_readings_drive_engine_weights() -> None:
    replies = {HOSTS[0]: b"50%\n", HOSTS[1]: b"drain\n"}
    async with agents(replies) as port:
        d = Director(config(port))
        comp = component(d)
        assert d.status_providers["load"] == comp.snapshot
        await comp.start()
        try:
            await wait_for(lambda: engine_weights(d) == {HOSTS[0]: 5, HOSTS[1]: 0})
            replies[HOSTS[1]] = b"ready 100%\n"
            await wait_for(lambda: engine_weights(d) == {HOSTS[0]: 5, HOSTS[1]: 10})
            snap = comp.snapshot()
            assert snap["tcp 198.18.0.100 80"][f"{HOSTS[1]}:80"] == {
                "percent": 100,
                "admin": "ready",
            }
            # a reload without the second server: its monitor stops
            await comp.on_config(config(port, HOSTS[:1]))
            await asyncio.sleep(0.1)
            assert set(comp.snapshot()["tcp 198.18.0.100 80"]) == {f"{HOSTS[0]}:80"}
            # a reload without a load monitor: everything stops
            cfg = config(port)
            vs = replace(cfg.virtual_servers[0], load_monitor=LoadMonitorConfig())
            await comp.on_config(replace(cfg, virtual_servers=(vs,)))
            assert comp.snapshot() == {}
        finally:
            await comp.stop()


async def test_unanswered_agent_keeps_the_weight() -> None:
    replies = {HOSTS[0]: b"30%\n", HOSTS[1]: b"30%\n"}
    async with agents(replies) as port:
        d = Director(config(port))
        comp = component(d)
        await comp.start()
        try:
            await wait_for(lambda: engine_weights(d) == {HOSTS[0]: 3, HOSTS[1]: 3})
            replies[HOSTS[0]] = b"\n"  # says nothing understandable: no report
            await asyncio.sleep(0.2)
            assert engine_weights(d)[HOSTS[0]] == 3
        finally:
            await comp.stop()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("loadmon")]
