"""The asyncio side of health checking: schedule probes, feed results to the sans-IO state.

One :class:`HealthManager` per director.  It runs one task per distinct :class:`ProbeSpec`
(the same probe of the same server in several services runs once and its result goes to each of
them), starts each task at a random point of its first interval so a restart does not fire every
probe at once, and hands every resulting :data:`~pylvs.health.state.HealthEvent` to one callback.

What the director does with it::

    health = HealthManager(config, on_event)   # on_event(ev: ServerEvent | SorryEvent)
    await health.start()                       # publishes every server's initial state first
    await health.apply_config(new_config)      # keeps state of servers that stay
    health.snapshot()                          # JSON-able, for status / API / metrics
    await health.stop()

For a :class:`ServerEvent`: ``in_pool`` True -> the configured weight (or ``ev.weight`` when a
dynamic-weight exec check set one), False -> the service's ``down_action``.  For a
:class:`SorryEvent`: ``active`` True -> add the sorry server with weight 1, False -> remove it.
Events are delivered synchronously from the manager's tasks, in the order to apply them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pylvs.health.check import run_probe
from pylvs.health.result import ProbeResult, Reason
from pylvs.health.spec import ProbeSpec
from pylvs.health.state import HealthEvent, ServerEvent, ServerHealth, ServiceHealth
from pylvs.looplag import Slices
from pylvs.model import Config, Endpoint, ServiceKey, VirtualServerConfig
from pylvs.tasks import cancel_and_wait

__all__ = ["EventCallback", "HealthManager"]

log = logging.getLogger("pylvs.health")

EventCallback = Callable[[HealthEvent], None]
_Sub = tuple[ServiceKey, Endpoint]
# At most this many new probes after a configuration change start at once (see apply_config).
_PROBE_AT_ONCE = 16


@dataclass(slots=True)
class _Runner:
    spec: ProbeSpec
    subscribers: list[_Sub] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    runs: int = 0
    last_run: float | None = None
    last_result: ProbeResult | None = None

    def as_dict(self, now: float) -> dict[str, object]:
        # A probe whose last run is far older than its schedule allows is stuck: keepalived's
        # checker was seen to freeze silently, so make it visible.
        stale_after = 3 * (self.spec.interval + self.spec.timeout)
        stale = self.task is not None and (
            self.last_run is not None and now - self.last_run > stale_after
        )
        return {
            "probe": self.spec.label,
            "interval": self.spec.interval,
            "timeout": self.spec.timeout,
            "services": sorted({k.label for k, _ in self.subscribers}),
            "runs": self.runs,
            "last_run": self.last_run,
            "last_result": None if self.last_result is None else self.last_result.as_dict(),
            "stale": stale,
        }


class HealthManager:
    """Runs every configured check and turns results into pool events.

    ``jitter`` is the fraction of the interval over which first runs are spread (1.0 = the
    whole interval, like keepalived's ``warmup``; 0 = all at once).  ``clock`` gives the wall
    time stamped on results and changes (for display; scheduling uses the loop's clock).
    ``ca_file`` lets https checks trust a private CA.
    """

    def __init__(
        self,
        config: Config,
        on_event: EventCallback | None = None,
        *,
        jitter: float = 1.0,
        clock: Callable[[], float] = time.time,
        ca_file: str | None = None,
    ) -> None:
        self.on_event = on_event
        self._jitter = max(0.0, min(1.0, jitter))
        self._clock = clock
        self._ca_file = ca_file
        self._services: dict[ServiceKey, ServiceHealth] = {}
        self._runners: dict[ProbeSpec, _Runner] = {}
        self._running = False
        self._specs: dict[_Sub, ProbeSpec | None] = {}
        self._configure(config)

    # -- public --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._running

    @property
    def probe_count(self) -> int:
        """How many distinct probes run (after deduplication)."""
        return len(self._runners)

    def probed(self, key: ServiceKey, endpoint: Endpoint) -> bool:
        """Whether the server has a check (False: always up, as keepalived without one)."""
        return self._specs.get((key, endpoint)) is not None

    def service(self, key: ServiceKey) -> ServiceHealth:
        """The sans-IO health record of one service (KeyError if unknown)."""
        return self._services[key]

    def resume(self, events: Iterable[HealthEvent]) -> None:
        """Before :meth:`start`: take over verdicts a previous run published (a restarted
        checker process), so they are neither repeated nor reset to ``initial_state``."""
        for event in events:
            svc = self._services.get(event.service)
            if svc is not None:
                svc.resume(event)

    async def start(self) -> None:
        """Publish every server's initial state, then start probing."""
        if self._running:
            return
        self._running = True
        self._flush()
        for runner in self._runners.values():
            self._launch(runner)

    async def stop(self) -> None:
        """Stop every probe (running exec programs are killed) and wait for them."""
        self._running = False
        tasks = [r.task for r in self._runners.values() if r.task is not None]
        for runner in self._runners.values():
            runner.task = None
        await cancel_and_wait(tasks)

    async def apply_config(self, config: Config) -> None:
        """Follow a new configuration; servers that stay keep their state and counters."""
        old_tasks = self._configure(config)
        await cancel_and_wait(old_tasks)
        if self._running:
            new = [r for r in self._runners.values() if r.task is None]
            # A few servers added at run time (`pylvs ctl -a`, an API call) are probed at once,
            # so they join the pool within one probe; a bulk change spreads its first probes
            # over the interval as a start does, rather than firing them all together.
            immediate = len(new) <= _PROBE_AT_ONCE
            # Thousands of probes: launch and publish in slices, so the loop (and the HA
            # heartbeat on it) gets a turn every few milliseconds (issue 13).
            slices = Slices()
            for runner in new:
                if runner.task is None and self._running:
                    self._launch(runner, immediate=immediate)
                await slices.tick()
            now = self._clock()
            initial: Counter[str] = Counter()
            for svc in list(self._services.values()):
                self._emit(svc.evaluate(now), initial)
                await slices.tick()
            _log_initial(initial)

    def snapshot(self) -> dict[str, object]:
        """Every service's health, quorum and servers, and every probe's schedule (JSON-able)."""
        now = self._clock()
        return {
            "running": self._running,
            "services": [
                {"service": key.label, **svc.as_dict()}
                for key, svc in self._services.items()
            ],
            "probes": [r.as_dict(now) for r in self._runners.values()],
        }

    # -- configuration -------------------------------------------------------------------

    def _configure(self, config: Config) -> list[asyncio.Task[None]]:
        """Reshape services and runners for ``config``; return the tasks no longer needed."""
        now = self._clock()
        # Build every spec first: a ConfigError then leaves the running state untouched.
        specs: dict[_Sub, ProbeSpec | None] = {
            (vs.key, rs.address): ProbeSpec.from_check(vs.check, rs.address, ca_file=self._ca_file)
            for vs in config.virtual_servers
            for rs in vs.real_servers
        }
        wanted: dict[ProbeSpec, list[_Sub]] = {}
        services: dict[ServiceKey, ServiceHealth] = {}
        for vs in config.virtual_servers:
            svc = self._services.get(vs.key) or ServiceHealth(vs.key)
            svc.configure(
                quorum=vs.quorum, hysteresis=vs.quorum_hysteresis, sorry_server=vs.sorry_server
            )
            services[vs.key] = svc
            keep = {rs.address for rs in vs.real_servers}
            for endpoint in svc.endpoints:
                if endpoint not in keep:
                    svc.remove_server(endpoint)
            for rs in vs.real_servers:
                spec = specs[(vs.key, rs.address)]
                health = self._health_for(svc, vs, rs.address, spec, now)
                svc.set_server(rs.address, weight=rs.weight, health=health)
                if spec is not None and (vs.key, rs.address) in self._specs \
                        and self._specs[(vs.key, rs.address)] is None:
                    # It had no check: its first "up" may never have reached the director
                    # (the checker child does not send it), so it is published again.
                    svc.republish(rs.address)
                if spec is not None:
                    wanted.setdefault(spec, []).append((vs.key, rs.address))
        self._services = services
        stale: list[asyncio.Task[None]] = []
        for spec, runner in list(self._runners.items()):
            if spec not in wanted:
                del self._runners[spec]
                if runner.task is not None:
                    stale.append(runner.task)
        for spec, subs in wanted.items():
            self._runners.setdefault(spec, _Runner(spec)).subscribers = subs
        self._specs = specs
        return stale

    def _health_for(
        self,
        svc: ServiceHealth,
        vs: VirtualServerConfig,
        endpoint: Endpoint,
        spec: ProbeSpec | None,
        now: float,
    ) -> ServerHealth:
        check = vs.check
        try:
            health = svc.server(endpoint)
        except KeyError:
            # No check at all: the server is simply always up (keepalived without a checker).
            initial_up = spec is None or check.initial_state == "up"
            return ServerHealth.new(
                rise=check.rise, fall=check.fall, initial_up=initial_up, now=now
            )
        health.rise, health.fall = max(1, check.rise), max(1, check.fall)
        if spec is None:
            health.healthy = True
        if self._specs.get((vs.key, endpoint)) != spec:
            # A different probe: streaks measured with the old one say nothing about it.
            health.ok_streak = health.fail_streak = 0
        return health

    # -- running -------------------------------------------------------------------------

    def _launch(self, runner: _Runner, *, immediate: bool = False) -> None:
        runner.task = asyncio.get_running_loop().create_task(
            self._run(runner, immediate), name=f"health {runner.spec.label}"
        )

    async def _run(self, runner: _Runner, immediate: bool = False) -> None:
        loop = asyncio.get_running_loop()
        spec = runner.spec
        spread = 0.0 if immediate else random.uniform(0.0, spec.interval * self._jitter)
        next_start = loop.time() + spread
        while True:
            await asyncio.sleep(max(0.0, next_start - loop.time()))
            started = loop.time()
            result = await run_probe(spec)
            runner.runs += 1
            runner.last_run = self._clock()
            runner.last_result = result
            if not result.ok:
                log.debug("%s failed: %s", spec.label, result.describe())
            try:
                self._deliver(runner, result, runner.last_run)
            except Exception:
                # A bug in bookkeeping must not silently end this server's checks.
                log.exception("health bookkeeping failed for %s", spec.label)
            # Fixed rate from the start of each probe; a probe slower than its interval is
            # followed immediately by the next one rather than overlapping it.
            next_start = max(started + spec.interval, loop.time())

    def _deliver(self, runner: _Runner, result: ProbeResult, now: float) -> None:
        for key, endpoint in runner.subscribers:
            svc = self._services.get(key)
            if svc is not None:
                self._emit(svc.observe(endpoint, result, now))

    def _flush(self) -> None:
        now = self._clock()
        initial: Counter[str] = Counter()
        for svc in self._services.values():
            self._emit(svc.evaluate(now), initial)
        _log_initial(initial)

    def _emit(self, events: list[HealthEvent], initial: Counter[str] | None = None) -> None:
        for event in events:
            if (initial is not None and isinstance(event, ServerEvent)
                    and event.reason == Reason.INITIAL.value):
                # A start or a reload of 10,000 servers: one line says how they start, the
                # line per server is debug (10,000 lines cost the director's loop ~0.3 s).
                initial[_describe(event)] += 1
                log.debug("%s %s: %s (initial)", event.service.label, event.endpoint,
                          _describe(event))
            else:
                _log_event(event)
            if self.on_event is None:
                continue
            try:
                self.on_event(event)
            except Exception:
                # A failing consumer must not stop health checking for everyone else.
                log.exception("health event handler failed for %s", event)


def _describe(event: ServerEvent) -> str:
    state = "UP" if event.healthy else "DOWN"
    pool = "in pool" if event.in_pool else "out of pool"
    weight = "" if event.weight is None else f", weight {event.weight}"
    return f"{state}, {pool}{weight}"


def _log_initial(initial: Counter[str]) -> None:
    for what, count in sorted(initial.items()):
        log.info("%d server(s) start %s (initial state, until their checks say otherwise)",
                 count, what)


def _log_event(event: HealthEvent) -> None:
    service = event.service.label
    if isinstance(event, ServerEvent):
        log.info("%s %s: %s (%s)", service, event.endpoint, _describe(event), event.reason)
    else:
        verb = "takes over" if event.active else "stands down"
        log.warning("%s sorry server %s %s (%s)", service, event.endpoint, verb, event.reason)


