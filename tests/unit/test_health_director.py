"""attach_health on a real Director (real engine, not started: no TUN, no root needed).

Health verdicts must reach the engine's weights through ``set_server_state``, and the sorry
server must enter the engine service when the pool is lost and step back when it recovers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from pylvs.director import Director
from pylvs.health.component import HealthComponent, attach_health
from pylvs.model import (
    CheckConfig,
    Config,
    DirectorConfig,
    Endpoint,
    RealServerConfig,
    VirtualServerConfig,
)
from tests.support.tcp_backend import LOCAL, Backend

SORRY = Endpoint(LOCAL, 9)
CHECK = CheckConfig(type="tcp", interval=0.05, timeout=0.2, rise=1, fall=1)


def make_config(backends: list[Backend], **vs_options: object) -> Config:
    vs = VirtualServerConfig(
        address=Endpoint(IPv4Address("198.18.0.100"), 80),
        scheduler="rr",
        check=CHECK,
        sorry_server=SORRY,
        real_servers=tuple(RealServerConfig(address=b.endpoint, weight=3) for b in backends),
        **vs_options,  # type: ignore[arg-type]
    )
    return Config(
        director=DirectorConfig(public_interface="eth0", private_interface="br0"),
        virtual_servers=(vs,),
    )


def weights(d: Director) -> dict[int, int]:
    """Engine weight per server port (the sorry server is port 9)."""
    (svc,) = d.engine.services()
    return {s.key.port: s.weight for s in svc.servers}


async def wait_for(cond: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def start(cfg: Config) -> tuple[Director, HealthComponent]:
    d = Director(cfg)
    comp = next((c for c in d.components if isinstance(c, HealthComponent)), None)
    if comp is None:  # the director does not attach health itself (yet)
        comp = attach_health(d, jitter=0.0)
    assert d.health_managed
    await d.apply_config(cfg)  # fills the engine without touching the network
    await comp.start()
    return d, comp


async def test_quiesce_and_sorry_server_in_the_engine() -> None:
    a, b = await Backend().start(), await Backend().start()
    d, comp = await start(make_config([a, b]))
    try:
        # Right after start: nobody probed yet, so the sorry server carries the service.
        assert weights(d) == {a.port: 0, b.port: 0, 9: 1}
        await wait_for(lambda: weights(d) == {a.port: 3, b.port: 3, 9: 0})
        await a.stop()
        await wait_for(lambda: weights(d)[a.port] == 0)
        assert weights(d)[b.port] == 3 and weights(d)[9] == 0
        await b.stop()
        await wait_for(lambda: weights(d) == {a.port: 0, b.port: 0, 9: 1})
        health = d.status()["health"]
        (svc,) = health["services"]
        assert svc["sorry_active"] and svc["servers"][str(a.endpoint)]["reason"] == "refused"
        assert health["sorry_in_engine"] == [f"tcp 198.18.0.100:80 -> {SORRY}"]
        await b.start()
        await wait_for(lambda: weights(d) == {a.port: 0, b.port: 3, 9: 0})
        # A new sorry server in the config: the old one leaves the engine.
        moved = make_config([a, b])
        vs = dataclasses.replace(moved.virtual_servers[0], sorry_server=Endpoint(LOCAL, 10))
        await d.apply_config(dataclasses.replace(moved, virtual_servers=(vs,)))
        assert 9 not in weights(d)
    finally:
        await comp.stop()
        await a.stop()
        await b.stop()


async def test_sorry_server_that_becomes_a_real_server_does_not_block_the_reload() -> None:
    a, sorry = await Backend().start(), await Backend().start()
    await a.stop()  # the pool is down: the sorry server carries the service
    cfg = make_config([a])
    vs = dataclasses.replace(cfg.virtual_servers[0], sorry_server=sorry.endpoint)
    d, comp = await start(dataclasses.replace(cfg, virtual_servers=(vs,)))
    try:
        assert weights(d) == {a.port: 0, sorry.port: 1}
        # The operator makes the sorry server a real server of the same service (and keeps it
        # as the sorry server): the reload must apply, the configured server replacing it.
        both = dataclasses.replace(vs, real_servers=(
            *vs.real_servers, RealServerConfig(address=sorry.endpoint, weight=5)))
        await d.apply_config(dataclasses.replace(cfg, virtual_servers=(both,)))
        assert d.config.virtual_servers[0] == both
        await wait_for(lambda: weights(d) == {a.port: 0, sorry.port: 5})
        assert d.status()["health"]["sorry_in_engine"] == []
        await d.apply_config(dataclasses.replace(cfg, virtual_servers=(both,)))  # again: fine
    finally:
        await comp.stop()
        await a.stop()
        await sorry.stop()


async def test_remove_action_takes_servers_and_sorry_out() -> None:
    a = await Backend().start()
    d, comp = await start(make_config([a], down_action="remove"))
    try:
        assert weights(d) == {9: 1}  # down servers are not in the engine at all
        await wait_for(lambda: weights(d) == {a.port: 3})
        await a.stop()
        await wait_for(lambda: weights(d) == {9: 1})
    finally:
        await comp.stop()
        await a.stop()


async def test_dynamic_weight_from_exec_reaches_the_engine(tmp_path: Path) -> None:
    prog = tmp_path / "w.sh"
    # misc_dynamic: exit 4 = weight 2 while the flag file exists, then exit 0 = configured (3).
    flag = tmp_path / "dynamic"
    flag.touch()
    prog.write_text(f"#!/bin/sh\n[ -e {flag} ] && exit 4\nexit 0\n")
    prog.chmod(0o755)
    check = CheckConfig(type="exec", command=f"{prog} %h %p", dynamic_weight=True,
                        interval=0.05, timeout=1.0, rise=1, fall=1)
    a = await Backend().start()
    cfg = make_config([a])
    vs = dataclasses.replace(cfg.virtual_servers[0], check=check)
    d, comp = await start(dataclasses.replace(cfg, virtual_servers=(vs,)))
    try:
        await wait_for(lambda: weights(d).get(a.port) == 2)
        flag.unlink()
        await wait_for(lambda: weights(d).get(a.port) == 3)
    finally:
        await comp.stop()
        await a.stop()
