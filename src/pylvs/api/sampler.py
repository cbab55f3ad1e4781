"""Feed the status page's history from the engine, a few milliseconds of the loop at a time.

Every 2 s (after each rate estimation) the history takes one sample of every service and real
server.  Building it from :func:`pylvs.api.views.services` listed the engine object by object
and built the whole status (0.2 s at 1,000 servers, 0.7 s at 10,000) on the event loop that also
sends the HA heartbeat (issue 13).  :class:`HistorySampler` instead

* reads every rate and weight in one C call (``engine.rate_rows()``: 3 ms at 10,000 servers),
* names the rows from a cache keyed by the row's identity, so addresses are decoded only for
  servers it has not seen before,
* takes each server's state from the verdicts the health component keeps
  (``director.health_verdicts``, a dict) and the weight in the row, and the HA role from the
  HA section alone,
* and puts the rows into the history in slices (:class:`pylvs.looplag.Slices`), so the loop
  gets a turn every few milliseconds.

At steady state nothing but the rates changes from one sample to the next, and working out each
server's state word still cost ~100 ms of the loop per sample at 10,000 servers.  So a sample
that finds the same rows (services, servers, weights: compared as bytes), the same
configuration and an unchanged verdict table (its change counter) only copies the rates, in
bulk (:meth:`History.put_rates <pylvs.api.history.History.put_rates>`: ~10 ms); any change
takes the full path once, which records the row keys for the next samples.
"""

from __future__ import annotations

import ipaddress
import time
from array import array
from collections.abc import Mapping
from typing import Any

from pylvs import model
from pylvs.api import codec, views
from pylvs.api.history import History
from pylvs.api.protocol import DirectorLike
from pylvs.looplag import Slices
from pylvs.tasks import TaskSet

__all__ = ["HistorySampler"]

_ZERO = (0, 0, 0, 0, 0)
_Name = tuple[str, str | None, model.ServiceKey, model.Endpoint | None]
_Key = tuple[str, str | None]
# Items of a rate row that say whose it is and what the state word depends on: the identity
# (0..4) and the weight (10); the rates (5..9) change every sample.
_IDENTITY = (0, 1, 2, 3, 4, 10)
_RATES = 5
# Rows put per slice check on the fast path (~1 ms).
_CHUNK = 1024


class _Plan:
    """What a full sample learnt: the history key of each row, the keys of configured
    servers and services the engine does not hold, and what it was learnt from."""

    def __init__(self, config: model.Config, layout: bytes, version: int, epoch: int) -> None:
        self.config = config
        self.layout = layout
        self.version = version
        self.epoch = epoch
        self.keys: list[_Key] = []
        self.absent: list[_Key] = []

    def fits(self, config: model.Config, layout: bytes, version: int | None,
             epoch: int) -> bool:
        """Whether a sample of these rows, into a history of this epoch, can reuse the plan
        (a history that started afresh holds no states to leave unchanged)."""
        return (config is self.config and version == self.version and epoch == self.epoch
                and layout == self.layout)


class HistorySampler:
    """Takes one history sample per estimator step; ``on_rates`` is the rate listener."""

    def __init__(self, director: DirectorLike, history: History) -> None:
        self.director = director
        self.history = history
        self._names: dict[tuple[int, ...], _Name] = {}
        self._config: model.Config | None = None
        self._services: dict[model.ServiceKey, tuple[model.VirtualServerConfig,
                                                     dict[str, model.Endpoint]]] = {}
        self._tasks = TaskSet()
        self._plan: _Plan | None = None
        self.last_duration = 0.0
        self.full_samples = 0  # samples that took the full path (the rest reused a plan)

    def on_rates(self, engine_now: float) -> None:
        """Start a sample unless the previous one is still being taken."""
        if len(self._tasks) == 0:
            self._tasks.start(self.sample(time.time()), name="history sample")

    async def close(self) -> None:
        """Stop a sample in progress."""
        await self._tasks.close()

    async def sample(self, at: float) -> None:
        """Take the sample for wall-clock time *at*."""
        started = time.monotonic()
        d = self.director
        rows = d.engine.rate_rows()
        width = d.engine.RATE_ROW
        slices = Slices()
        config = d.config
        verdicts = d.health_verdicts
        # a table without a change counter (a plain dict) is read whole every sample
        version: int | None = getattr(verdicts, "version", None)
        view = memoryview(rows)
        layout = b"".join(view[k::width].tobytes() for k in _IDENTITY)
        hist = self.history
        hist.begin(at)
        plan = self._plan
        if plan is not None and plan.fits(config, layout, version, hist.epoch):
            signed = array("q")
            signed.frombytes(view.cast("B"))  # the same integers, typed as the history's
            for first in range(0, len(plan.keys), _CHUNK):
                hist.put_rates(plan.keys[first:first + _CHUNK], signed, first * width + _RATES,
                               width)
                await slices.tick()
            for sid, address in plan.absent:
                hist.put(sid, address, _ZERO)
            hist.end(d.engine.stats().drops, views.ha(d))
            self.last_duration = time.monotonic() - started
            return
        self.full_samples += 1
        plan = None if version is None else _Plan(config, layout, version, hist.epoch)
        services = await self._configured(config, slices)
        seen: set[model.ServiceKey] = set()
        left: dict[str, model.Endpoint] = {}  # configured servers of this service not seen
        sid = ""
        service: model.ServiceKey | None = None
        service_ident: tuple[int, ...] = ()
        vs: model.VirtualServerConfig | None = None
        for i in range(len(rows) // width):
            o = i * width
            ident = tuple(rows[o:o + 5])
            is_server = ident[0] & 1
            name = self._names.get((*service_ident, *ident) if is_server else ident)
            if name is None:
                name = self._name(rows, i, service, sid, service_ident, ident)
            rates = rows[o + 5:o + 10]
            if not is_server:
                self._put_missing(sid, service, vs, left, verdicts, plan)
                sid, _, service, _ = name
                service_ident = ident
                seen.add(service)
                entry = services.get(service)
                vs, configured = entry if entry is not None else (None, {})
                left = dict(configured)
                hist.put(sid, None, rates)
                if plan is not None:
                    plan.keys.append((sid, None))
            else:
                endpoint = name[3]
                assert endpoint is not None and service is not None
                configured_as = left.pop(name[1], None)  # type: ignore[arg-type]
                weight = rows[o + 10]
                if vs is None or configured_as is None:
                    state: tuple[str, str | None] = ("sorry", None)
                else:
                    state = _state(vs, verdicts.get((service, endpoint)), True, weight)
                hist.put(sid, name[1], rates, state)
                if plan is not None:
                    plan.keys.append((sid, name[1]))
            await slices.tick()
        self._put_missing(sid, service, vs, left, verdicts, plan)
        for key, (vs, configured) in services.items():
            if key not in seen:  # configured, not in the engine (not applied yet)
                sid = codec.service_id(key)
                hist.put(sid, None, _ZERO)
                if plan is not None:
                    plan.absent.append((sid, None))
                self._put_missing(sid, key, vs, dict(configured), verdicts, plan)
        hist.end(d.engine.stats().drops, views.ha(d))
        self._plan = plan
        self.last_duration = time.monotonic() - started

    def _put_missing(self, sid: str, service: model.ServiceKey | None,
                     vs: model.VirtualServerConfig | None, left: Mapping[str, model.Endpoint],
                     verdicts: Mapping[tuple[model.ServiceKey, model.Endpoint],
                                       tuple[bool, str]], plan: _Plan | None) -> None:
        # Configured servers the engine does not hold: taken out by health ("remove").
        if service is None or vs is None:
            return
        for address, endpoint in left.items():
            self.history.put(sid, address, _ZERO,
                             _state(vs, verdicts.get((service, endpoint)), False, 0))
            if plan is not None:
                plan.absent.append((sid, address))

    def _name(self, rows: Any, i: int, service: model.ServiceKey | None, sid: str,
              service_ident: tuple[int, ...], ident: tuple[int, ...]) -> _Name:
        svc_key, server = self.director.engine.rate_row_key(rows, i, service)
        if server is None:
            name: _Name = (codec.service_id(svc_key), None, svc_key, None)
            self._names[ident] = name
        else:
            endpoint = model.Endpoint(ipaddress.ip_address(server.address), server.port)
            name = (sid, str(endpoint), svc_key, endpoint)
            self._names[(*service_ident, *ident)] = name
        return name

    async def _configured(self, config: model.Config, slices: Slices) -> dict[
            model.ServiceKey, tuple[model.VirtualServerConfig, dict[str, model.Endpoint]]]:
        if config is not self._config:
            services = {}
            for vs in config.virtual_servers:  # after a reload: 10,000 servers, in slices
                services[vs.key] = (vs, {str(rs.address): rs.address for rs in vs.real_servers})
                await slices.tick()
            self._config, self._services = config, services
            if len(self._names) > 4 * (len(self._services) + sum(
                    len(c) for _, c in self._services.values())) + 1024:
                self._names.clear()  # many servers came and went: start the cache afresh
        return self._services


def _state(vs: model.VirtualServerConfig, verdict: tuple[bool, str] | None, in_engine: bool,
           weight: int) -> tuple[str, str | None]:
    # server_state()'s rule, on the verdict and the engine's weight instead of a view
    if verdict is None:
        health, reason = ("up" if vs.check.type == "none" else "unknown"), None
    elif not verdict[0]:
        return "down", verdict[1] or None
    else:
        health, reason = "up", verdict[1] or None
    return ("quiesced" if in_engine and not weight else health), reason
