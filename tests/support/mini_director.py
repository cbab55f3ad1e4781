"""A small real director for API tests: a real Engine and real health checks, no network setup.

It does what ``Director.apply_config`` promises (validate the whole config, then diff it into
the engine, keeping what did not change) without TUN devices or routes, so the API can be
tested unprivileged against real counters and real health verdicts.  Also: the smallest config
to start from, and the type of the ``running_api`` fixture (in ``tests/unit/conftest.py``) that
starts the API in front of a :class:`MiniDirector`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, ip_address
from typing import Any, TypedDict

from pylvs import config as config_mod
from pylvs import model
from pylvs.api.server import ApiServer
from pylvs.director import RATES_INTERVAL, defense_settings
from pylvs.engine import Engine
from pylvs.health import HealthManager, ServerEvent

__all__ = ["ApiStarter", "MiniDirector", "base_config", "replace_api", "service"]


def base_config(socket_path: str, services: tuple[model.VirtualServerConfig, ...] = (),
                **api: Any) -> model.Config:
    """A config with the given services and the API on *socket_path*."""
    return model.Config(
        director=model.DirectorConfig(public_interface="eth0", private_interface="br0"),
        api=model.ApiConfig(socket=socket_path, **api),
        virtual_servers=services,
    )


def service(vip: str, *servers: str, check: str = "none", **kw: Any) -> model.VirtualServerConfig:
    """A TCP service at *vip* ("a.b.c.d:port") with weight-1 servers."""
    def ep(text: str) -> model.Endpoint:
        host, _, port = text.rpartition(":")
        return model.Endpoint(IPv4Address(host), int(port))

    check_cfg = model.CheckConfig(type=check, interval=0.2, timeout=0.2, rise=1, fall=1)  # type: ignore[arg-type]
    return model.VirtualServerConfig(
        address=ep(vip), check=check_cfg,
        real_servers=tuple(model.RealServerConfig(address=ep(s)) for s in servers), **kw)


class _ServiceOptions(TypedDict):
    scheduler: str
    persistence: int
    netmask: str
    flags: tuple[str, ...]


class MiniDirector:
    """Config -> Engine, health events -> engine weights; satisfies ``DirectorLike``."""

    def __init__(self, cfg: model.Config) -> None:
        config_mod.validate(cfg)
        self.config = cfg
        self.engine = Engine(max_connections=cfg.director.max_connections,
                             defense=defense_settings(cfg.defense))
        self._svc_keys: dict[tuple[str, model.Endpoint], Any] = {}
        self._srv_keys: dict[tuple[str, model.Endpoint, model.Endpoint], Any] = {}
        self._down: set[tuple[str, model.Endpoint, model.Endpoint]] = set()
        self.health = HealthManager(cfg, self._on_health, jitter=0.0)
        self.applied = 0
        self.rate_listeners: list[Callable[[float], None]] = []
        self._rates_task: asyncio.Task[None] | None = None
        self._sync(model.Config(director=cfg.director), cfg)

    async def start(self) -> None:
        """Start the health checks and, as the director does, the 2 s rate estimator."""
        await self.health.start()
        self._rates_task = asyncio.create_task(self._rates())

    async def stop(self) -> None:
        """Stop the estimator and the health checks."""
        if self._rates_task is not None:
            self._rates_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rates_task
        await self.health.stop()

    async def _rates(self) -> None:
        while True:
            await asyncio.sleep(RATES_INTERVAL)
            now = time.monotonic()
            self.engine.update_rates(now)
            for listener in list(self.rate_listeners):
                listener(now)

    async def edit_config(
        self, edit: Callable[[model.Config], model.Config]
    ) -> model.Config:
        """``Director.edit_config``'s contract: one step, validated whole."""
        new = edit(self.config)
        await self.apply_config(new)
        return new

    async def apply_config(self, new: model.Config) -> None:
        """Validate whole, then apply the difference (``Director.apply_config``'s contract)."""
        config_mod.validate(new)
        old, self.config = self.config, new
        self._sync(old, new)
        if new.defense != old.defense:
            self.engine.set_defense(defense_settings(new.defense))
        await self.health.apply_config(new)
        self.applied += 1

    def status(self) -> dict[str, Any]:
        """Health as the real director reports it; a standalone node is always active."""
        return {"health": self.health.snapshot(),
                "ha": {"role": "ACTIVE", "peer": None, "transitions": 0}}

    def _weight(self, vs: model.VirtualServerConfig, rs: model.RealServerConfig) -> int:
        return 0 if (vs.protocol, vs.address, rs.address) in self._down else rs.weight

    def _sync(self, old: model.Config, new: model.Config) -> None:
        old_vs = {(v.protocol, v.address): v for v in old.virtual_servers}
        new_vs = {(v.protocol, v.address): v for v in new.virtual_servers}
        for key in old_vs.keys() - new_vs.keys():
            self.engine.remove_service(self._svc_keys.pop(key))
            for skey in [k for k in self._srv_keys if k[:2] == key]:
                del self._srv_keys[skey]
        for key, vs in new_vs.items():
            opts = _ServiceOptions(scheduler=vs.scheduler, persistence=vs.persistence,
                                   netmask=str(vs.netmask), flags=vs.flags)
            if key not in self._svc_keys:
                self._svc_keys[key] = self.engine.add_service(
                    vs.protocol, str(vs.address.address), vs.address.port, fwmark=vs.fwmark,
                    ports=model.port_ranges(vs.ports), ftp=vs.ftp, **opts)
            elif old_vs[key] != vs:
                self.engine.edit_service(self._svc_keys[key], **opts)
            svc = self._svc_keys[key]
            before = {r.address: r for r in old_vs[key].real_servers} if key in old_vs else {}
            after = {r.address: r for r in vs.real_servers}
            for ep in before.keys() - after.keys():
                self.engine.remove_server(self._srv_keys.pop((*key, ep)))
            for ep, rs in after.items():
                thresholds = dict(upper_threshold=rs.upper_threshold,
                                  lower_threshold=rs.lower_threshold)
                if ep not in before:
                    self._srv_keys[(*key, ep)] = self.engine.add_server(
                        svc, str(ep.address), ep.port, weight=self._weight(vs, rs), **thresholds)
                elif before[ep] != rs:
                    self.engine.edit_server(self._srv_keys[(*key, ep)],
                                            weight=self._weight(vs, rs), **thresholds)
        t = new.timeouts
        self.engine.set_timeouts(tcp=t.tcp, tcpfin=t.tcpfin, udp=t.udp)

    def _on_health(self, event: Any) -> None:
        if not isinstance(event, ServerEvent):
            return
        svc = event.service
        key = (svc.protocol, model.Endpoint(ip_address(svc.address), svc.port), event.endpoint)
        if event.in_pool:
            self._down.discard(key)
        else:
            self._down.add(key)
        vs = next(v for v in self.config.virtual_servers if (v.protocol, v.address) == key[:2])
        rs = next(r for r in vs.real_servers if r.address == event.endpoint)
        if key in self._srv_keys:
            self.engine.edit_server(self._srv_keys[key], weight=self._weight(vs, rs),
                                    upper_threshold=rs.upper_threshold,
                                    lower_threshold=rs.lower_threshold)


ApiStarter = Callable[[model.Config], Awaitable[tuple[MiniDirector, ApiServer]]]
"""What the ``running_api`` fixture yields: start a director and its API for a config."""


def replace_api(cfg: model.Config, **kw: Any) -> model.Config:
    """*cfg* with some ``[api]`` keys changed."""
    return dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, **kw))
