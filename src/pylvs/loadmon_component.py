"""Glue between the load monitors and the director: one :class:`LoadMonitor` per service.

:func:`attach_load_monitors` is all the director calls (from its ``_build_components``)::

    attach_load_monitors(director)

It registers a component the director starts after the packet path is up and stops before it
goes, a ``load`` section for ``status()``, and a listener that follows ``apply_config``.  Every
reading becomes ``director.set_server_state(service_key, endpoint, load=report)``; the director's
:class:`pylvs.weights.ServerWeight` turns it into the engine weight.  A failed reading (``None``)
changes nothing, so the last adjustment stays, as piranha and HAProxy do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pylvs.errors import PylvsError
from pylvs.loadmon import LoadMonitor
from pylvs.model import Config, Endpoint, LoadMonitorConfig, VirtualServerConfig
from pylvs.weights import LoadReport

__all__ = ["DirectorLike", "LoadComponent", "attach_load_monitors"]

log = logging.getLogger("pylvs.loadmon")
ServiceId = Any  # VirtualServerConfig.key: (protocol, VIP, port)


class DirectorLike(Protocol):
    """The part of :class:`pylvs.director.Director` the load monitors use."""

    components: list[Any]
    status_providers: dict[str, Callable[[], Any]]
    config_listeners: list[Callable[[Config], Awaitable[None]]]

    @property
    def config(self) -> Config:
        """The configuration currently applied."""

    def set_server_state(
        self, service_key: Any, endpoint: Endpoint, *, load: LoadReport | None = None
    ) -> None:
        """Record a load reading and update the engine."""


class LoadComponent:
    """Runs one load monitor per virtual service whose ``load_monitor.type`` is not none."""

    def __init__(self, director: DirectorLike) -> None:
        self._director = director
        self._monitors: dict[ServiceId, tuple[LoadMonitorConfig, LoadMonitor]] = {}
        self._tasks: dict[ServiceId, asyncio.Task[None]] = {}
        self._last: dict[tuple[ServiceId, Endpoint], LoadReport | None] = {}
        self._running = False

    def _on_load(self, key: ServiceId, ep: Endpoint, report: LoadReport | None) -> None:
        self._last[(key, ep)] = report
        if report is None:
            return
        try:
            self._director.set_server_state(key, ep, load=report)
        except PylvsError as exc:  # the server left the config between poll and answer
            log.debug("load report for %s in %s dropped: %s", ep, key, exc)

    def _start_monitor(self, vs: VirtualServerConfig) -> None:
        key = vs.key

        def on_load(ep: Endpoint, report: LoadReport | None) -> None:
            self._on_load(key, ep, report)

        mon = LoadMonitor(vs.load_monitor, [rs.address for rs in vs.real_servers], on_load)
        self._monitors[key] = (vs.load_monitor, mon)
        self._tasks[key] = asyncio.create_task(mon.run(), name=f"loadmon {key}")

    async def _stop_monitor(self, key: ServiceId) -> None:
        self._monitors.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for k in [k for k in self._last if k[0] == key]:
            del self._last[k]

    async def _apply(self, config: Config) -> None:
        wanted = {vs.key: vs for vs in config.virtual_servers if vs.load_monitor.type != "none"}
        for key in [k for k in self._monitors if k not in wanted]:
            await self._stop_monitor(key)
        for key, vs in wanted.items():
            current = self._monitors.get(key)
            if current is not None and current[0] != vs.load_monitor:
                await self._stop_monitor(key)  # type, port, command or timing changed
                current = None
            if current is None:
                self._start_monitor(vs)
            else:
                servers = {rs.address for rs in vs.real_servers}
                current[1].set_servers(servers)
                for k in [k for k in self._last if k[0] == key and k[1] not in servers]:
                    del self._last[k]

    async def start(self) -> None:
        """Start a monitor for every service that asks for one."""
        self._running = True
        await self._apply(self._director.config)

    async def stop(self) -> None:
        """Cancel every monitor; never raises."""
        self._running = False
        for key in list(self._monitors):
            await self._stop_monitor(key)

    async def on_config(self, config: Config) -> None:
        """``apply_config`` listener: follow added, removed and changed services and servers."""
        if self._running:
            await self._apply(config)

    def snapshot(self) -> dict[str, Any]:
        """The ``load`` section of ``status()``: the last reading of every monitored server."""
        out: dict[str, Any] = {}
        for (key, ep), rep in sorted(self._last.items(), key=lambda kv: str(kv[0])):
            svc = out.setdefault(" ".join(str(x) for x in key), {})
            svc[str(ep)] = (
                None
                if rep is None
                else {
                    k: v
                    for k, v in (
                        ("weight", rep.weight),
                        ("percent", rep.percent),
                        ("admin", rep.admin),
                        ("oper", rep.oper),
                        ("loadavg", rep.loadavg),
                    )
                    if v is not None
                }
            )
        return out


def attach_load_monitors(director: DirectorLike) -> LoadComponent:
    """Create the load-monitor component for ``director`` and register it; return it."""
    component = LoadComponent(director)
    director.components.append(component)
    director.status_providers["load"] = component.snapshot
    director.config_listeners.append(component.on_config)
    return component
