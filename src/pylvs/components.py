"""The optional parts of a running director, attached by ``pylvs serve``.

:func:`attach_components` gives a :class:`pylvs.director.Director` its control API, health
probes, load monitors and (when ``[ha]`` is enabled) HA.  They start in that order once the
packet path is up and stop in reverse: HA hands over first, the API goes last.  A bare
``Director`` (embedding, unit tests) has none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

from pylvs.api.server import ApiServer
from pylvs.cluster.component import attach_cluster
from pylvs.dataplane.fastpath_component import FastPathComponent
from pylvs.dataplane.xdp_component import XdpSynproxyComponent
from pylvs.director import Director
from pylvs.errors import ConfigError
from pylvs.ha.node import HaComponent
from pylvs.health.component import attach_health
from pylvs.loadmon import LoadMonitor
from pylvs.model import Config, Endpoint, ServiceKey
from pylvs.tasks import TaskSet, cancel_and_wait
from pylvs.weights import LoadReport

__all__ = ["LoadMonitors", "attach_components"]


class LoadMonitors:
    """Runs one :class:`pylvs.loadmon.LoadMonitor` per service that has a ``load_monitor``.

    Readings become ``set_server_state(load=...)``; a failed reading (None) keeps the last
    adjustment.  Reloads add, drop or restart monitors as their service changes.
    """

    #: The director may stop this together with the API and health.
    stops_with_others = True

    def __init__(self, director: Director) -> None:
        self.director = director
        self._running: dict[ServiceKey, tuple[Any, Any, asyncio.Task[None]]] = {}
        self._retiring = TaskSet()  # monitors of removed services, until they have ended
        self._started = False
        director.config_listeners.append(self._on_config)

    async def start(self) -> None:
        """Start polling."""
        self._started = True
        self._sync(self.director.config)

    async def stop(self, *, handover: bool = True) -> None:
        """Stop every monitor (``handover`` is HA's business)."""
        self._started = False
        tasks = [task for _, _, task in self._running.values()]
        self._running.clear()
        await cancel_and_wait(tasks)
        await self._retiring.close()

    async def _on_config(self, cfg: Config) -> None:
        if self._started:
            self._sync(cfg)

    def _sync(self, cfg: Config) -> None:
        wanted = {vs.key: vs for vs in cfg.virtual_servers if vs.load_monitor.type != "none"}
        for key, (lm_cfg, _, task) in list(self._running.items()):
            if key not in wanted or wanted[key].load_monitor != lm_cfg:
                self._retiring.retire(task)
                del self._running[key]
                if any(vs.key == key for vs in cfg.virtual_servers):
                    self.director.reset_load(key)
        for key, vs in wanted.items():
            servers = [rs.address for rs in vs.real_servers]
            if key in self._running:
                self._running[key][1].set_servers(servers)
                continue
            mon = LoadMonitor(vs.load_monitor, servers, functools.partial(self._on_load, key))
            task = asyncio.create_task(mon.run(), name=f"loadmon {key}")
            self._running[key] = (vs.load_monitor, mon, task)

    def _on_load(self, key: ServiceKey, ep: Endpoint, report: LoadReport | None) -> None:
        if report is None:
            return
        with contextlib.suppress(ConfigError):  # removed by a reload since the poll began
            self.director.set_server_state(key, ep, load=report)


def attach_components(director: Director) -> None:
    """Attach the XDP SYN proxy, the fast path, the control API, health probes, load monitors,
    HA and the cluster, in order."""
    director.components.append(XdpSynproxyComponent(director))  # first: it meets the flood
    director.components.append(FastPathComponent(director))
    director.components.append(ApiServer(director))
    attach_health(director)
    director.components.append(LoadMonitors(director))
    if director.config.ha.enabled:
        director.components.append(HaComponent(director, engine=director.engine))
    if director.config.cluster.mode == "active-active":
        attach_cluster(director)  # last: it stops first, so the drain runs on a live director
