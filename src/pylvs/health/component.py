"""Glue between the health checker and the director: the only file that knows both.

:func:`attach_health` is all the director calls (from its ``_build_components``)::

    attach_health(director)

It marks verdicts as health-managed (servers with a check start in their ``initial_state``),
registers a component the director starts after the packet path is up and stops before it goes,
a ``health`` section for ``status()``, and a listener that follows ``apply_config``.  The probes
run in a child process (:class:`~pylvs.health.remote.CheckerProcess`, keepalived's checker
child): the director's loop only sees the verdicts that change.

Events become engine changes like this:

* :class:`ServerEvent` -> ``director.set_server_state(service, endpoint, healthy=in_pool,
  load_weight=weight)``; the director turns that into weight 0 (quiesce) or removal
  (``down_action = "remove"``) and back.
* :class:`SorryEvent` -> the sorry server is added to the engine service with weight 1 when it
  takes over; when the pool recovers it is set to weight 0 so its open connections finish
  (``down_action = "quiesce"``, keepalived's ``sorry_server_inhibit``) or removed
  (``"remove"``, like ldirectord's fallback).  It is not a configured real server, so the
  director's own diff never touches it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pylvs.errors import PylvsError
from pylvs.health.remote import CheckerProcess
from pylvs.health.state import HealthEvent, ServerEvent, SorryEvent
from pylvs.looplag import Slices
from pylvs.model import Config, Endpoint, ServiceKey, VirtualServerConfig

if TYPE_CHECKING:
    from pylvs.director import ComponentHost
    from pylvs.engine import ServerKey

__all__ = ["HealthComponent", "attach_health"]

log = logging.getLogger("pylvs.health")


class HealthComponent:
    """Runs the health checker process for a director and applies its events."""

    #: The director may stop this together with the API and the load monitors.
    stops_with_others = True

    def __init__(self, director: ComponentHost, *, jitter: float = 1.0,
                 ca_file: str | None = None) -> None:
        self._director = director
        self.checker = CheckerProcess(director.config, self.on_event, jitter=jitter,
                                      ca_file=ca_file)
        # Sorry servers this component put into the engine: (service, endpoint) -> key.
        self._sorry: dict[tuple[ServiceKey, Endpoint], ServerKey] = {}

    async def start(self) -> None:
        """Publish initial verdicts, then probe."""
        await self.checker.start()

    async def stop(self, *, handover: bool = True) -> None:
        """Stop probing; the pool stays as it was last set (``handover`` is HA's business)."""
        await self.checker.stop()

    async def on_config(self, config: Config) -> None:
        """Follow ``apply_config``: keep state of servers that stay, drop stale sorry servers."""
        await self.checker.apply_config(config)
        services: dict[ServiceKey, VirtualServerConfig] = {
            vs.key: vs for vs in config.virtual_servers
        }
        # Forget the verdicts of servers no longer configured, in slices: 10,000 of them took
        # 75 ms of the loop in one go (issue 13).
        verdicts = self._director.health_verdicts
        slices = Slices()
        configured: set[tuple[ServiceKey, Endpoint]] = set()
        for key, service in services.items():
            configured.update((key, rs.address) for rs in service.real_servers)
            await slices.tick()
        stale = []
        for i, slot in enumerate(list(verdicts)):
            if slot not in configured:
                stale.append(slot)
            if i % 256 == 0:
                await slices.tick()
        for slot in stale:
            verdicts.pop(slot, None)
        for (key, endpoint), srv in list(self._sorry.items()):
            vs = services.get(key)
            if vs is None:
                del self._sorry[(key, endpoint)]  # the director removed the whole service
            elif vs.sorry_server != endpoint:
                self._remove_sorry(key, endpoint, srv)

    def before_config(self, config: Config) -> None:
        """Before the engine follows *config*: give up sorry servers it lists as real servers.

        The sorry server sits in the engine service as a dest of its own; a configuration that
        now names the same address as a real server must be able to add it, so the sorry entry
        is removed first and the configured server takes its place.
        """
        services = {vs.key: vs for vs in config.virtual_servers}
        for (key, endpoint), srv in list(self._sorry.items()):
            vs = services.get(key)
            if vs is not None and any(rs.address == endpoint for rs in vs.real_servers):
                log.info("sorry server %s of %s is now one of its real servers; the "
                         "configuration takes it over", endpoint, key.label)
                self._remove_sorry(key, endpoint, srv)

    def snapshot(self) -> dict[str, object]:
        """The checker's snapshot plus the sorry servers present in the engine."""
        snap = self.checker.snapshot()
        snap["sorry_in_engine"] = sorted(f"{k.label} -> {ep}" for k, ep in self._sorry)
        return snap

    def on_event(self, event: HealthEvent) -> None:
        """Apply one event to the director/engine."""
        if isinstance(event, ServerEvent):
            self._director.health_verdicts[(event.service, event.endpoint)] = (
                event.healthy, event.reason)
            weight = event.weight
            vs = self._service(event.service)
            if weight is None and vs is not None and vs.check.dynamic_weight:
                # Exit 0 after a dynamic weight: back to the configured weight.  "None" would
                # leave the director's last weight in place.
                weight = next(
                    (rs.weight for rs in vs.real_servers if rs.address == event.endpoint), None
                )
            self._director.set_server_state(
                event.service, event.endpoint, healthy=event.in_pool, load_weight=weight
            )
        else:
            self._apply_sorry(event)

    def _service(self, key: ServiceKey) -> VirtualServerConfig | None:
        # Keyed: this runs for every probe result that changes a verdict (issue 13).
        return self._director.service(key)

    def _apply_sorry(self, event: SorryEvent) -> None:
        vs = self._service(event.service)
        if vs is None:
            return
        if any(rs.address == event.endpoint for rs in vs.real_servers):
            log.warning("sorry server %s is also a real server of %s; left alone",
                        event.endpoint, vs.address)
            return
        engine = self._director.engine
        slot = (event.service, event.endpoint)
        srv = self._sorry.get(slot)
        if event.active:
            if srv is None:
                self._sorry[slot] = engine.add_server(
                    vs.key, str(event.endpoint.address), event.endpoint.port, weight=1
                )
            else:
                engine.edit_server(srv, weight=1)
        elif srv is not None:
            if vs.down_action == "remove":
                self._remove_sorry(event.service, event.endpoint, srv)
            else:
                engine.edit_server(srv, weight=0)

    def _remove_sorry(self, key: ServiceKey, endpoint: Endpoint, srv: ServerKey) -> None:
        del self._sorry[(key, endpoint)]
        try:
            self._director.engine.remove_server(srv)
        except PylvsError as exc:
            log.warning("removing sorry server %s failed: %s", endpoint, exc)


def attach_health(director: ComponentHost, **options: Any) -> HealthComponent:
    """Create the health component for ``director`` and register it; return it."""
    component = HealthComponent(director, **options)
    director.health_managed = True
    director.components.append(component)
    director.status_providers["health"] = component.snapshot
    director.config_listeners.append(component.on_config)
    director.config_preparers.append(component.before_config)
    return component
