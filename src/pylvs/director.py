"""The composition root: one :class:`Director` builds and runs everything from a ``Config``.

Order of things (docs/ARCHITECTURE.md "Director"):

* ``Director(config)`` validates the config and builds the engine, the TUN dataplane and the
  network configuration, but touches neither the kernel nor the loop.
* ``await start()``: services and servers into the engine, open the TUN, apply the network
  configuration, start pumping, start the timers (expire every 1 s, rates every 2 s), then
  start the extra :attr:`components` (:func:`pylvs.components.attach_components` adds the
  control API, health probes, load monitors and HA).
* ``await apply_config(new)``: validate, then diff services and servers and apply them live.
  Connections in the engine are never flushed by a reload.
* ``set_server_state(...)``: runtime inputs (health verdicts, load weights) -> weights.
* ``await stop()``: components in reverse, timers, pump, then remove everything netconf added;
  closing the TUN removes the device.

Every change of a service or server goes through :meth:`_sync_engine` (a reload: the diff of
what the engine holds against the config, computed once, services equal to the applied ones
skipped) or :meth:`_sync_server` (a runtime input for one server: one engine call at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from pylvs import config as config_mod
from pylvs.dataplane.tun import TunDataplane, default_workers
from pylvs.engine import Defense, Engine, ServerKey, Timeouts, scheduler_names
from pylvs.errors import ConfigError
from pylvs.looplag import LoopLagMonitor, Slices, freeze_heap
from pylvs.model import (
    Config,
    DefenseConfig,
    Endpoint,
    IPAddress,
    RealServerConfig,
    ServiceKey,
    VirtualServerConfig,
    port_ranges,
)
from pylvs.netconf import (
    NetConf,
    NetPlan,
    fwmark_device,
    plan_from_config,
    send_announcements,
)
from pylvs.weights import LoadReport, ServerWeight

__all__ = ["Component", "ComponentHost", "Director", "VerdictTable", "defense_settings"]

log = logging.getLogger("pylvs.director")

EXPIRE_INTERVAL = 1.0
RATES_INTERVAL = 2.0
# [director] keys that shape objects built once; a reload that changes them is refused.
_FIXED_DIRECTOR_KEYS = ("public_interface", "private_interface", "dataplane", "tun_name",
                        "offload", "batch_size", "workers", "worker_spin_us", "worker_nice",
                        "max_connections", "loop")


class Component(Protocol):
    """Something the director starts after the packet path is up and stops before it goes.

    Components stop in the reverse order of their start; one whose class sets
    ``stops_with_others = True`` is stopped together with its neighbours that set it too.
    """

    async def start(self) -> None:
        """Start; may raise to abort the director's start."""

    async def stop(self, *, handover: bool = True) -> None:
        """Stop; must not raise.  ``handover``: let an HA peer take over at once (clean stop)."""


class ComponentHost(Protocol):
    """What a component (health, HA) may use of the :class:`Director` it plugs into.

    Components import this for typing only, so they never import the director at run time.
    """

    engine: Engine
    netconf: NetConf
    active: bool  # HA sets it: only the active node owns the VIPs
    components: list[Component]
    status_providers: dict[str, Callable[[], Any]]  # extra sections of status()
    config_listeners: list[Callable[[Config], Awaitable[None]]]  # awaited after apply_config
    config_preparers: list[Callable[[Config], None]]  # called before the engine follows
    health_managed: bool
    health_verdicts: dict[tuple[ServiceKey, Endpoint], tuple[bool, str]]

    @property
    def config(self) -> Config:
        """The configuration currently applied."""

    def set_server_state(self, service_key: ServiceKey, endpoint: Endpoint, *,
                         healthy: bool | None = None, load_weight: int | None = None) -> None:
        """Record a health verdict and/or weight and update the engine."""

    def service(self, key: ServiceKey) -> VirtualServerConfig | None:
        """The applied config's service ``key`` (a dict lookup), or None."""


def defense_settings(cfg: DefenseConfig) -> Defense:
    """The engine's flood defence settings for a ``[defense]`` section."""
    return Defense(drop_entry=cfg.drop_entry, drop_packet=cfg.drop_packet,
                   secure_tcp=cfg.secure_tcp, amemthresh=cfg.amemthresh,
                   am_droprate=cfg.am_droprate, evict_embryonic=cfg.evict_embryonic,
                   syncookies=cfg.syncookies)


class VerdictTable(dict[tuple[ServiceKey, Endpoint], tuple[bool, str]]):
    """The health verdict (healthy, reason) of each checked server, with a change counter.

    :attr:`version` grows with every change, so a reader that derives something from all
    10,000 verdicts (the status page's history, every 2 s) can tell in O(1) that nothing
    changed since it last looked.
    """

    version = 0

    def __setitem__(self, key: tuple[ServiceKey, Endpoint], value: tuple[bool, str]) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: tuple[ServiceKey, Endpoint]) -> None:
        self.version += 1
        super().__delitem__(key)

    def pop(self, key: Any, *default: Any) -> Any:
        """dict.pop, counted as a change."""
        self.version += 1
        return super().pop(key, *default)

    def popitem(self) -> tuple[tuple[ServiceKey, Endpoint], tuple[bool, str]]:
        """dict.popitem, counted as a change."""
        self.version += 1
        return super().popitem()

    def clear(self) -> None:
        """dict.clear, counted as a change."""
        self.version += 1
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        """dict.update, counted as a change."""
        self.version += 1
        super().update(*args, **kwargs)

    def setdefault(self, key: tuple[ServiceKey, Endpoint],
                   default: tuple[bool, str] = (False, "")) -> tuple[bool, str]:
        """dict.setdefault, counted as a change."""
        self.version += 1
        return super().setdefault(key, default)


class Director:
    """Engine + TUN dataplane + netconf (+ components) for one config."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic,
                 active: bool | None = None) -> None:
        config_mod.validate(config)
        self._config = config
        self._clock = clock
        d = config.director
        t = config.timeouts
        # a random seed keys the connection hash and the SYN proxy's cookie secret
        self.engine = Engine(max_connections=d.max_connections, seed=secrets.randbits(64),
                             timeouts=Timeouts(tcp=t.tcp, tcpfin=t.tcpfin, udp=t.udp),
                             defense=defense_settings(config.defense))
        workers = default_workers() if d.workers is None else d.workers
        self.dataplane = TunDataplane(d.tun_name, offload=d.offload, batch_size=d.batch_size,
                                      workers=workers, spin_us=d.worker_spin_us, nice=d.worker_nice,
                                      engine_ptr=self._engine_ptr, clock=clock,
                                      on_failure=self._dataplane_failed)
        self.netconf = NetConf(d.public_interface, d.private_interface, d.tun_name)
        # one TUN device per firewall mark (docs/ipvs.md#fwmark), opened before netconf
        # routes the mark into it and closed after the route is gone
        self.fwmark_dataplanes: dict[int, TunDataplane] = {}
        self._set_engine_options(config)
        # Without HA this node owns the VIPs from the start; with HA the HA component claims
        # them (netconf.add_vips / add_nat_router) when it becomes active.
        self.active = (not config.ha.enabled) if active is None else active
        self.components: list[Component] = []
        self.status_providers: dict[str, Callable[[], Any]] = {}  # extra sections of status()
        self.config_listeners: list[Callable[[Config], Awaitable[None]]] = []
        # Called with a validated new config just before the engine follows it (the health
        # component hands a sorry server that became a real server back to the config here).
        self.config_preparers: list[Callable[[Config], None]] = []
        # Called with the engine's clock after each rate estimation (the API's history).
        self.rate_listeners: list[Callable[[float], None]] = []
        self.health_managed = False  # set by the health component: verdicts start unknown
        # (healthy, reason) of each checked server, kept by the health component for readers
        # that must not build the whole status (the status page's history).
        self.health_verdicts: dict[tuple[ServiceKey, Endpoint], tuple[bool, str]] = \
            VerdictTable()
        # Indexes of the applied config (see _index) and of what the engine holds, keyed so
        # that a verdict or a weight change for one server costs O(1) (issue 13).
        self._services: dict[ServiceKey, VirtualServerConfig] = {}
        self._servers: dict[ServiceKey, dict[Endpoint, RealServerConfig]] = {}
        self._index(config)
        self._svc_keys: dict[ServiceKey, ServiceKey] = {}
        # What the engine was last given, so only real changes reach it (an edit may reset a
        # scheduler's state, e.g. rebuild an mh table): options per service, and per server
        # its engine key with its options.
        self._applied_svc: dict[ServiceKey, dict[str, Any]] = {}
        self._in_engine: dict[ServiceKey, dict[Endpoint, tuple[ServerKey, dict[str, Any]]]] = {}
        # The service config each service was last fully synced from: equal ones are skipped.
        self._synced: dict[ServiceKey, VirtualServerConfig] = {}
        self._fwmark_vips: frozenset[str] | None = None  # what the engine was last given
        self._weights: dict[ServiceKey, dict[Endpoint, ServerWeight]] = {}
        self._ramping: set[tuple[ServiceKey, Endpoint]] = set()
        # Servers whose state changed while a reload is applied in slices (None: no reload).
        self._pending: set[tuple[ServiceKey, Endpoint]] | None = None
        self.loop_lag = LoopLagMonitor()
        self._timers: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._started = False
        self.failed: asyncio.Future[str] | None = None  # set by start(); resolves on a fatal error

    # -- properties --------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        """The configuration currently applied."""
        return self._config

    def _engine_ptr(self) -> Any:
        return self.engine._c_handle()

    def workers_handle(self) -> Any:
        """The running packet workers' C handle, or None (the fast path's component)."""
        return self.dataplane.workers_handle()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Bring the packet path up, then the components; on failure undo what was done."""
        self._sync_engine(self._config)
        self.failed = asyncio.get_running_loop().create_future()
        try:
            plan = await asyncio.to_thread(plan_from_config, self._config)
            self.dataplane.set_vips(plan.vips)  # steering's direction
            self.dataplane.open()
            self._open_fwmark_devices(self._config)
            await asyncio.to_thread(self.netconf.setup)
            await asyncio.to_thread(self.netconf.update, lambda cur: self._plan(plan, cur))
            self.dataplane.start()
            for dp in self.fwmark_dataplanes.values():
                dp.start()
            if self._owns_vips_alone(self._config):
                await self._announce(self.netconf.plan.vips)
            self._started = True
            self._timers = [
                asyncio.create_task(self.loop_lag.run(), name="loop lag"),
                asyncio.create_task(self._every(EXPIRE_INTERVAL, self._tick), name="expire"),
                asyncio.create_task(self._every(RATES_INTERVAL, self._rates), name="rates"),
            ]
            for component in self.components:
                await component.start()
            freeze_heap()
        except BaseException:
            await self.stop()
            raise
        log.info("director started: %d services, TUN %s (offload %s, batch %d, %s)",
                 len(self._config.virtual_servers), self.dataplane.name,
                 "on" if self.dataplane.offload else "off", self.dataplane.batch_size,
                 f"{self.dataplane.workers} worker threads" if self.dataplane.workers
                 else "pumped on the event loop")

    async def stop(self, handover: bool = True) -> None:
        """Stop components, the pump, the network.

        With ``handover`` the HA component first announces priority 0, so the peer takes over
        at once; without it the peer is left to notice the silence (a dead time later), as
        after a crash, e.g. to rehearse one.
        """
        steps = _StopClock()
        for group in _stop_groups(self.components):
            await asyncio.gather(*(self._stop_component(c, handover) for c in group))
            steps.lap("+".join(type(c).__name__ for c in group))
        for task in self._timers:
            task.cancel()
        for task in self._timers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._timers = []
        steps.lap("timers")
        self.dataplane.stop()
        steps.lap("workers")
        if self.dataplane.workers:
            log.info("packet workers stopped: %d thread(s) left", self.dataplane.threads_running())
        if self.dataplane.fd is not None:
            st = self.dataplane.stats()
            log.info("dataplane totals: read %d, written %d, forwarded %d, passed %d, dropped %d, "
                     "write EAGAIN %d, GSO %d, partial csum %d, batches %d (max %d), "
                     "queue drops %s, per worker reads %s", st.reads, st.writes, st.forwarded,
                     st.passed, st.dropped, st.write_eagain, st.gso_packets, st.csum_partial,
                     st.batches, st.max_batch, st.queue_dropped, list(st.worker_reads))
        for dp in self.fwmark_dataplanes.values():
            dp.stop()
        await asyncio.to_thread(self.netconf.remove)
        steps.lap("network")
        self.dataplane.close()
        for dp in self.fwmark_dataplanes.values():
            dp.close()
        self.fwmark_dataplanes = {}
        steps.lap("TUN")
        if self._started:
            log.info("director stopped; network configuration removed (%s)", steps)
        self._started = False

    @staticmethod
    async def _stop_component(component: Component, handover: bool) -> None:
        try:
            await component.stop(handover=handover)
        except Exception:
            log.exception("stopping %r failed", component)

    def _owns_vips_alone(self, cfg: Config) -> bool:
        # Gratuitous ARP only when this node alone answers for the VIPs: with HA the takeover
        # sends it, in a cluster the routers reach the VIPs over BGP routes, not ARP.
        return self.active and not cfg.ha.enabled and cfg.cluster.mode == "off"

    async def _announce(self, vips: frozenset[IPAddress]) -> None:
        # Neighbours that cached another MAC for a VIP (a previous director) learn ours now
        # instead of when their entry goes stale.  With HA the takeover does this.
        if not vips:
            return
        try:
            await asyncio.to_thread(send_announcements,
                                    self._config.director.public_interface, vips, 1)
        except OSError as exc:
            log.warning("announcing %s (gratuitous ARP / unsolicited NA) failed: %s",
                        ", ".join(map(str, vips)), exc)

    def _dataplane_failed(self, reason: str) -> None:
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(f"dataplane stopped: {reason}")

    async def _every(self, interval: float, fn: Callable[[float], object]) -> None:
        # Drift-free ticks on the engine's clock; a slow tick is not repeated to catch up.
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time())
            try:
                fn(self._clock())
            except Exception:
                log.exception("timer %s failed", getattr(fn, "__name__", fn))

    def _rates(self, now: float) -> None:
        self.engine.update_rates(now)
        for listener in list(self.rate_listeners):
            try:
                listener(now)
            except Exception:
                log.exception("rate listener %r failed", listener)

    # -- configuration ---------------------------------------------------------------------
    async def apply_config(self, new: Config, *, validated: bool = False) -> None:
        """Validate ``new`` whole, then apply it live; ConfigError means nothing changed.

        ``validated``: the caller has just validated this very object (:func:`pylvs.config.load`
        does), so it is not done twice (~0.3 s at 10,000 servers).
        """
        await self.edit_config(lambda _current: new, validated=validated)

    async def edit_config(self, edit: Callable[[Config], Config], *,
                          validated: bool = False) -> Config:
        """Apply ``edit(current config)`` as one step and return what was applied.

        Nothing else lands between reading the current config and applying the edit, so an
        API change racing a SIGHUP reload builds on the reloaded config instead of undoing it.
        ``edit`` must be a pure function of the config: it runs in a thread (with the
        validation), off the loop (a restore of 11,000 operations builds the config there).
        """
        async with self._lock:
            started = time.perf_counter()
            old = self._config
            # The edit, validation, the network plan and the indexes are pure functions of the
            # config: built off the loop (~0.3 s of CPU at 10,000 servers, issue 13).
            new, plan, services, servers = await asyncio.to_thread(_prepare, edit, old,
                                                                   validated)
            prepared = time.perf_counter()
            for key in _FIXED_DIRECTOR_KEYS:
                if getattr(old.director, key) != getattr(new.director, key):
                    raise ConfigError(f"{new.source}: director.{key}: cannot change while "
                                      f"running (was {getattr(old.director, key)!r}); restart")
            self._check_engine_accepts(new)
            for prepare in self.config_preparers:
                prepare(new)
            # set after the preparers: one that refuses the config must not leave updates
            # deferred forever
            self._pending = set()
            try:
                try:
                    await self._sync_engine_sliced(new)
                except Exception:
                    # The engine refused something validate() let through: put back the old
                    # services and servers so a refused reload really changes nothing.
                    self._sync_engine(old)
                    raise
                self._services, self._servers = services, servers
            finally:
                pending, self._pending = self._pending, None
            slices = Slices()
            for svc_key, endpoint in pending:  # verdicts that came in meanwhile, in slices too
                rs = self._servers.get(svc_key, {}).get(endpoint)
                if rs is not None:
                    self._sync_server(self._services[svc_key], rs)
                await slices.tick()
            if (new.cluster.mode, new.cluster.sloppy) != (old.cluster.mode, old.cluster.sloppy):
                self._set_engine_options(new)
            if new.timeouts != old.timeouts:
                t = new.timeouts
                self.engine.set_timeouts(tcp=t.tcp, tcpfin=t.tcpfin, udp=t.udp)
            if new.defense != old.defense:
                self.engine.set_defense(defense_settings(new.defense))
            synced = time.perf_counter()
            self._config = new
            self.dataplane.set_vips(plan.vips)
            if self._started:
                before = self.netconf.plan.vips
                fresh = self._open_fwmark_devices(new)
                await asyncio.to_thread(self.netconf.update, lambda cur: self._plan(plan, cur))
                for dp in fresh:
                    dp.start()
                self._close_fwmark_devices(new)
                if self._owns_vips_alone(new):
                    await self._announce(self.netconf.plan.vips - before)
            networked = time.perf_counter()
            for listener in self.config_listeners:
                await listener(new)
            freeze_heap()
            done = time.perf_counter()
            log.info("configuration applied from %s: %d services, %d real servers in %.0f ms "
                     "(prepare %.0f, engine %.0f, network %.0f, health and listeners %.0f)",
                     new.source, len(new.virtual_servers), sum(map(len, self._servers.values())),
                     (done - started) * 1e3, (prepared - started) * 1e3,
                     (synced - prepared) * 1e3, (networked - synced) * 1e3,
                     (done - networked) * 1e3)
        return new

    def _set_engine_options(self, cfg: Config) -> None:
        # Active-active: a flow ECMP moved here from another director is picked up, not
        # dropped (IPVS's sloppy_tcp / sloppy_udp; docs/cluster.md).
        sloppy = cfg.cluster.mode == "active-active" and cfg.cluster.sloppy
        self.engine.set_option("sloppy_tcp", sloppy)
        self.engine.set_option("sloppy_udp", sloppy)

    def _plan(self, plan: NetPlan, current: NetPlan) -> NetPlan:
        # *plan* is plan_from_config's, built once per config off the loop (at 10,000
        # servers its steering aggregation takes ~0.1 s)
        if self.active:
            return plan
        # A backup keeps the steering rules and fwmark routes current (takeover is then only
        # VIPs + nat_router) and leaves whatever the HA component has claimed as it is.
        return NetPlan(vips=current.vips, steering=plan.steering,
                       nat_routers=current.nat_routers, fwmarks=plan.fwmarks,
                       fwmarks6=plan.fwmarks6)

    def _open_fwmark_devices(self, cfg: Config) -> list[TunDataplane]:
        """Open the TUN device of every mark ``cfg`` has and this director has not yet."""
        d = cfg.director
        fresh = []
        for vs in cfg.virtual_servers:
            if vs.fwmark and vs.fwmark not in self.fwmark_dataplanes:
                dp = TunDataplane(fwmark_device(d.tun_name, vs.fwmark), offload=d.offload,
                                  batch_size=d.batch_size, engine_ptr=self._engine_ptr,
                                  clock=self._clock, on_failure=self._dataplane_failed,
                                  mark=vs.fwmark)
                dp.open()
                self.fwmark_dataplanes[vs.fwmark] = dp
                fresh.append(dp)
        return fresh

    def _close_fwmark_devices(self, cfg: Config) -> None:
        marks = {vs.fwmark for vs in cfg.virtual_servers}
        for mark in [m for m in self.fwmark_dataplanes if m not in marks]:
            self.fwmark_dataplanes.pop(mark).close()

    def _check_engine_accepts(self, new: Config) -> None:
        known = set(scheduler_names())
        for i, vs in enumerate(new.virtual_servers):
            if vs.scheduler not in known:
                raise ConfigError(f"{new.source}: virtual_server[{i}].scheduler: "
                                  f"{vs.scheduler!r} is not built into this engine "
                                  f"(have: {' '.join(sorted(known))})")

    # -- runtime state -----------------------------------------------------------------------
    def set_server_state(self, service_key: ServiceKey, endpoint: Endpoint, *,
                         healthy: bool | None = None, load_weight: int | None = None,
                         load: LoadReport | None = None) -> None:
        """Record a health verdict and/or a load reading and update the engine.

        ``load_weight`` is an absolute weight from a load monitor (shorthand for
        ``load=LoadReport(weight=...)``); the policy is :class:`pylvs.weights.ServerWeight`.
        Costs at most one engine call, whatever the size of the configuration.
        """
        rs = self._servers.get(service_key, {}).get(endpoint)
        if rs is None:
            raise ConfigError(f"no real server {endpoint} in service {service_key}")
        vs = self._services[service_key]
        now = self._clock()
        sw = self._weight_of(vs, rs, now)
        if healthy is not None:
            sw.set_health(healthy, now)
        if load_weight is not None:
            sw.set_load(LoadReport(weight=load_weight), now)
        if load is not None:
            sw.set_load(load, now)
        self._note_ramp(vs.key, rs.address, sw)
        self._apply_later_or_now(vs, rs)

    def reset_load(self, service_key: ServiceKey) -> None:
        """Forget load readings of a service's servers (its load monitor went away)."""
        vs = self._services.get(service_key)
        for endpoint, sw in self._weights.get(service_key, {}).items():
            sw.clear_load()  # keeps health and any slow-start ramp in progress
            rs = None if vs is None else self._servers[service_key].get(endpoint)
            if vs is not None and rs is not None:
                self._apply_later_or_now(vs, rs)

    def service(self, key: ServiceKey) -> VirtualServerConfig | None:
        """The applied config's service ``key`` (a dict lookup), or None."""
        return self._services.get(key)

    def effective_weight(self, vs: VirtualServerConfig, rs: RealServerConfig) -> int | None:
        """The weight the engine should use; None when the server must not be in the engine."""
        now = self._clock()
        return self._weight_of(vs, rs, now).weight(now)

    def _weight_of(self, vs: VirtualServerConfig, rs: RealServerConfig,
                   now: float) -> ServerWeight:
        per_service = self._weights.setdefault(vs.key, {})
        sw = per_service.get(rs.address)
        if sw is None:
            healthy = (vs.check.type == "none" or not self.health_managed
                       or vs.check.initial_state == "up")
            # A server that appears on a running director ramps up like a recovered one.
            sw = ServerWeight(rs.weight, slow_start=vs.slow_start, down_action=vs.down_action,
                              healthy=healthy, ramp_from=now if self._started else None)
            per_service[rs.address] = sw
            self._note_ramp(vs.key, rs.address, sw)
        elif (sw.configured, sw.slow_start, sw.down_action) != \
                (rs.weight, vs.slow_start, vs.down_action):
            sw.reconfigure(rs.weight, vs.slow_start, vs.down_action)
            self._note_ramp(vs.key, rs.address, sw)
        return sw

    def _note_ramp(self, key: ServiceKey, endpoint: Endpoint, sw: ServerWeight) -> None:
        # Only servers in a slow-start ramp need the 1 s re-evaluation: keep them in a set so
        # the tick costs nothing for the thousands that are not ramping.
        if sw.ramp_until() is not None:
            self._ramping.add((key, endpoint))

    def _tick(self, now: float) -> None:
        """The 1 s timer: connection expiry, and weights of servers in a slow-start ramp."""
        self.engine.expire(now)
        for key, endpoint in list(self._ramping):
            sw = self._weights.get(key, {}).get(endpoint)
            end = None if sw is None else sw.ramp_until()
            rs = self._servers.get(key, {}).get(endpoint)
            if end is None or rs is None:
                self._ramping.discard((key, endpoint))
                continue
            if now > end + EXPIRE_INTERVAL:
                self._ramping.discard((key, endpoint))  # the last step was applied at `end`
            self._apply_later_or_now(self._services[key], rs)

    def _apply_later_or_now(self, vs: VirtualServerConfig, rs: RealServerConfig) -> None:
        if self._pending is not None:
            # A reload is being applied in slices: it re-applies these servers once it is done,
            # against whatever config it ends with.
            self._pending.add((vs.key, rs.address))
        elif vs.key in self._svc_keys:
            self._sync_server(vs, rs)
        else:
            self._sync_engine(self._config)  # not started yet: bring the services in first

    def _index(self, cfg: Config) -> None:
        """Key -> service and key -> endpoint -> server for ``cfg``: O(1) runtime lookups."""
        self._services, self._servers = _indexes(cfg)

    # -- the engine diff ---------------------------------------------------------------------
    def _sync_engine(self, cfg: Config) -> None:
        """Make the engine hold exactly the services and servers ``cfg`` (+ state) asks for."""
        for _ in self._sync_steps(cfg):
            pass

    async def _sync_engine_sliced(self, cfg: Config) -> None:
        """:meth:`_sync_engine`, giving the loop a turn every :data:`pylvs.looplag.SLICE`
        seconds so heartbeats and API requests are not held up by a large reload."""
        slices = Slices()
        for _ in self._sync_steps(cfg):
            await slices.tick()

    def _sync_steps(self, cfg: Config) -> Iterator[None]:
        """The diff, one engine change per step.  Services equal to what was last applied are
        skipped whole, so the cost is the size of the config plus the size of the change."""
        wanted = {vs.key: vs for vs in cfg.virtual_servers}
        changes = _ServerChanges()
        for key in [k for k in self._svc_keys if k not in wanted]:
            for endpoint in list(self._in_engine.get(key, {})):
                self._drop_server(key, endpoint, changes)
                yield
            self.engine.remove_service(self._svc_keys.pop(key))
            self._applied_svc.pop(key, None)
            self._in_engine.pop(key, None)
            self._synced.pop(key, None)
            log.info("service %s removed", key.label)
            yield
        for key, vs in wanted.items():
            done = self._synced.get(key)
            if done is vs or (done is not None and done == vs):
                continue
            self._synced.pop(key, None)  # half-synced until the loop below ends
            opts: dict[str, Any] = dict(
                scheduler=vs.scheduler, persistence=vs.persistence, netmask=_netmask(vs),
                flags=vs.flags, mh_table_size=vs.mh_table_size, synproxy=vs.synproxy,
                ports=port_ranges(vs.ports), ftp=vs.ftp)
            if key not in self._svc_keys:
                self._svc_keys[key] = self.engine.add_service(
                    vs.protocol, str(vs.address.address), vs.address.port, fwmark=vs.fwmark,
                    **opts)
                log.info("service %s added (%s)", key.label, vs.scheduler)
            elif self._applied_svc.get(key) != opts:
                self.engine.edit_service(self._svc_keys[key], **opts)
                log.info("service %s edited (%s)", key.label, vs.scheduler)
            self._applied_svc[key] = opts
            yield
            configured = {rs.address: rs for rs in vs.real_servers}
            for endpoint in [e for e in self._in_engine.get(key, {}) if e not in configured]:
                self._drop_server(key, endpoint, changes)
                yield
            weights = self._weights.get(key, {})
            for endpoint in [e for e in weights if e not in configured]:
                del weights[endpoint]
            for rs in vs.real_servers:
                self._sync_server(vs, rs, changes)
                yield
            self._synced[key] = vs
        changes.log()
        for key in [k for k in self._weights if k not in wanted]:
            del self._weights[key]
        fwmark_vips = frozenset(str(vs.address.address) for vs in cfg.virtual_servers
                                if vs.fwmark and not vs.address.address.is_unspecified)
        if fwmark_vips != self._fwmark_vips:  # a reload touches only what differs
            self.engine.set_fwmark_vips(fwmark_vips)
            self._fwmark_vips = fwmark_vips

    def _sync_server(self, vs: VirtualServerConfig, rs: RealServerConfig,
                     changes: _ServerChanges | None = None) -> None:
        """Give the engine this one server's current weight: at most one engine call.
        With *changes* (a reload) the change is logged there."""
        endpoint = rs.address
        weight = self.effective_weight(vs, rs)
        if weight is None:
            self._drop_server(vs.key, endpoint, changes)
            return
        opts: dict[str, Any] = dict(weight=weight, upper_threshold=rs.upper_threshold,
                                    lower_threshold=rs.lower_threshold)
        in_engine = self._in_engine.setdefault(vs.key, {})
        have = in_engine.get(endpoint)
        if have is None:
            srv = self.engine.add_server(self._svc_keys[vs.key], endpoint.address,
                                         endpoint.port, **opts)
            in_engine[endpoint] = (srv, opts)
            log.debug("server %s added to %s (weight %d)", endpoint, vs.key.label, weight)
            if changes is not None:
                changes.count("added")
        elif have[1] != opts:
            self.engine.edit_server(have[0], **opts)
            in_engine[endpoint] = (have[0], opts)
            (changes or _ServerChanges.NOW).note("reweighted", "server %s of %s: weight %d",
                                                 endpoint, vs.key.label, weight)

    def _drop_server(self, key: ServiceKey, endpoint: Endpoint,
                     changes: _ServerChanges | None = None) -> None:
        have = self._in_engine.get(key, {}).pop(endpoint, None)
        if have is not None:
            self.engine.remove_server(have[0])
            (changes or _ServerChanges.NOW).note("removed", "server %s removed from %s",
                                                 endpoint, key.label)

    # -- status ------------------------------------------------------------------------------
    def status_section(self, name: str) -> Any:
        """One section of :meth:`status` (``"ha"``, ``"loop_lag"``, ``"dataplane"`` …) built
        alone, or None: readers that want one part must not pay for the health snapshot and
        the weight list of 10,000 servers (issue 13)."""
        if name == "loop_lag":
            return self.loop_lag.snapshot()
        if name == "dataplane":
            return self._dataplane_status()
        provider = self.status_providers.get(name)
        return None if provider is None else provider()

    def _dataplane_status(self) -> dict[str, Any] | None:
        if self.dataplane.fd is None:
            return None
        dp = self.dataplane.stats().as_dict()
        dp["packets"] = dp["reads"]
        dp["failed"] = self.dataplane.failed
        return dp

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for the API, ``pylvs status`` and ``/metrics``."""
        routers = sorted((str(n) for n in self.netconf.plan.nat_routers), key=lambda t: ":" in t)
        out: dict[str, Any] = {
            "source": self._config.source,
            "active": self.active,
            "running": self._started,
            "weights": [
                {"service": k.label, "server": str(ep), "weight": o["weight"]}
                for (k, ep), o in sorted((((k, ep), o) for k, servers in self._in_engine.items()
                                          for ep, (_, o) in servers.items()),
                                         key=lambda item: str(item[0]))
            ],
            "loop_lag": self.loop_lag.snapshot(),
            "network": {
                "vips": [str(v) for v in sorted(self.netconf.plan.vips,
                                                key=lambda a: (a.version, int(a)))],
                "nat_router": next(iter(routers), None),  # the first; all in nat_routers
                "nat_routers": routers,
                "steering": len(self.netconf.plan.steering),
            },
        }
        if self.dataplane.fd is not None:
            out["dataplane"] = self._dataplane_status()
        for name, provider in self.status_providers.items():
            try:
                out[name] = provider()
            except Exception as exc:
                out[name] = {"error": str(exc)}
        return out


class _ServerChanges:
    """The log of one engine diff's server changes.

    A small diff logs a line per server, as a runtime change does; a reload that changes
    thousands (logging 10,000 lines cost the loop ~0.3 s, issue 13) logs how many of each kind
    in one line, and each server at debug.  ``NOW`` logs every line at once (runtime changes).
    """

    NOW: _ServerChanges  # set below
    #: up to this many lines are kept to be logged one by one
    DETAIL = 20

    def __init__(self, *, defer: bool = True) -> None:
        self._defer = defer
        self._counts: Counter[str] = Counter()
        self._lines: list[tuple[str, tuple[object, ...]]] = []

    def count(self, kind: str) -> None:
        """Count a change that has its own (debug) line already."""
        self._counts[kind] += 1

    def note(self, kind: str, fmt: str, *args: object) -> None:
        """One change of *kind*, described by ``fmt % args``."""
        if not self._defer:
            log.info(fmt, *args)
            return
        self._counts[kind] += 1
        if len(self._lines) < self.DETAIL:
            self._lines.append((fmt, args))
        else:
            log.debug(fmt, *args)

    def log(self) -> None:
        """Log what was noted: each line, or (too many) the counts."""
        total = sum(self._counts.values())
        if total <= self.DETAIL:
            for fmt, args in self._lines:
                log.info(fmt, *args)
            return
        for fmt, args in self._lines:
            log.debug(fmt, *args)
        log.info("servers changed: %s", ", ".join(f"{kind} {n}" for kind, n
                                                  in sorted(self._counts.items())))


_ServerChanges.NOW = _ServerChanges(defer=False)


def _stop_groups(components: list[Component]) -> list[list[Component]]:
    """The components in stopping order (the reverse of starting), in groups stopped at once.

    A component marked ``stops_with_others = True`` (the API, health, the load monitors, HA,
    whose handover goes out first thing in its stop) needs no other to stop before it and is
    needed by none while stopping, so a run of them stops together: SIGTERM waits for the
    slowest of them, not their sum (issue 13).  The others (the cluster's drain, which needs
    the rest running) stop alone, in order.
    """
    groups: list[list[Component]] = []
    for component in reversed(components):
        if (getattr(component, "stops_with_others", False) and groups
                and getattr(groups[-1][0], "stops_with_others", False)):
            groups[-1].append(component)
        else:
            groups.append([component])
    return groups


class _StopClock:
    """How long each step of a stop took, for the log: SIGTERM is to be handled within a
    second at 10,000 servers (issue 13), and this says which step did not."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self._laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        """Close the step *name*."""
        now = time.perf_counter()
        self._laps.append((name, now - self._last))
        self._last = now

    def __str__(self) -> str:
        steps = ", ".join(f"{name} {took * 1e3:.0f}" for name, took in self._laps)
        return f"{(self._last - self._start) * 1e3:.0f} ms: {steps}"


_Services = dict[ServiceKey, VirtualServerConfig]
_Servers = dict[ServiceKey, dict[Endpoint, RealServerConfig]]


def _indexes(cfg: Config) -> tuple[_Services, _Servers]:
    """Key -> service and key -> endpoint -> server for ``cfg``."""
    return ({vs.key: vs for vs in cfg.virtual_servers},
            {vs.key: {rs.address: rs for rs in vs.real_servers} for vs in cfg.virtual_servers})


def _prepare(edit: Callable[[Config], Config], current: Config,
             validated: bool) -> tuple[Config, NetPlan, _Services, _Servers]:
    """The edited config, validated (ConfigError; unless *validated*), its network plan and
    its indexes: pure, so a reload runs it in a thread."""
    cfg = edit(current)
    if not validated:
        config_mod.validate(cfg)
    return (cfg, plan_from_config(cfg), *_indexes(cfg))


def _netmask(vs: VirtualServerConfig) -> str | int:
    """The engine's persistence netmask: dotted for IPv4, a prefix length for IPv6 (as -M)."""
    return vs.prefix_length if vs.address.address.version == 6 else str(vs.netmask)
