"""Sans-IO health bookkeeping: rise/fall per server, quorum and the sorry server per service.

Nothing here reads a clock or touches a socket: callers pass each probe result with the time
it was observed and get back the events the director must act on.  That keeps every rule below
testable with explicit times.

Per server (:class:`ServerHealth`):

* a healthy server goes down after ``fall`` failures in a row; one success resets the count;
* a down server comes back after ``rise`` successes in a row; one failure resets the count;
* a server starts in ``initial_state`` (down by default, so a restart never sends traffic to a
  dead server) and, while it has never been probed, its *first* success brings it up at once
  (piranha pre-filled its re-entry counter the same way): startup waits one probe, not ``rise``;
* an exec probe with ``dynamic_weight`` carries a weight; a change of it while up is an event.

Per service (:class:`ServiceHealth`), keepalived's quorum rule: with ``W`` the total weight of the
healthy servers, quorum is *lost* when ``W == 0`` or ``W < quorum - hysteresis`` and *regained*
when ``W > 0`` and ``W >= quorum + hysteresis``; at start it is held iff ``W >= quorum > 0`` or
``W > 0 = quorum``.  While quorum is lost and a ``sorry_server`` is set, the sorry server
replaces the whole pool (keepalived pulls every real server and inserts the sorry server; ldirectord
does the same for its fallback when none is up): every real server is reported out of the pool.
Without a sorry server a lost quorum changes nothing in the pool; it is only reported.

The service keeps the view it last *published* and each call returns the difference between
that and the current view, so the director sees exactly one event per change and the full
initial state on the first call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pylvs.health.result import ProbeResult, Reason
from pylvs.model import Endpoint, ServiceKey

__all__ = [
    "Counters",
    "HealthEvent",
    "ServerEvent",
    "ServerHealth",
    "ServiceHealth",
    "SorryEvent",
    "Transition",
]

class Transition(StrEnum):
    """What one probe result changed for a server."""

    UP = "up"
    DOWN = "down"
    WEIGHT = "weight"


@dataclass(slots=True)
class Counters:
    """Running totals for one server, shown by the status API and ``/metrics``."""

    checks: int = 0
    successes: int = 0
    failures: int = 0
    went_up: int = 0
    went_down: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-able form."""
        return {
            "checks": self.checks,
            "successes": self.successes,
            "failures": self.failures,
            "went_up": self.went_up,
            "went_down": self.went_down,
        }


@dataclass(slots=True)
class ServerHealth:
    """Rise/fall state of one server under one check."""

    rise: int
    fall: int
    healthy: bool
    last_change: float
    reason: str = Reason.INITIAL.value
    ok_streak: int = 0
    fail_streak: int = 0
    probed: bool = False
    last_result: ProbeResult | None = None
    last_check: float | None = None
    weight: int | None = None  # from misc_dynamic; None = the configured weight
    counters: Counters = field(default_factory=Counters)

    @classmethod
    def new(cls, *, rise: int, fall: int, initial_up: bool, now: float) -> ServerHealth:
        """A server nobody has probed yet."""
        return cls(rise=max(1, rise), fall=max(1, fall), healthy=initial_up, last_change=now)

    def observe(self, result: ProbeResult, now: float) -> Transition | None:
        """Account one probe result; return the transition it caused, if any."""
        first = not self.probed
        self.probed = True
        self.last_result = result
        self.last_check = now
        self.counters.checks += 1
        if not result.ok:
            self.counters.failures += 1
            self.ok_streak = 0
            self.fail_streak += 1
            if self.healthy and self.fail_streak >= self.fall:
                return self._change(False, result, now)
            return None
        self.counters.successes += 1
        self.fail_streak = 0
        self.ok_streak += 1
        old_weight, self.weight = self.weight, result.weight
        if not self.healthy and (first or self.ok_streak >= self.rise):
            return self._change(True, result, now)
        if self.healthy and old_weight != self.weight:
            return Transition.WEIGHT
        return None

    def _change(self, healthy: bool, result: ProbeResult, now: float) -> Transition:
        self.healthy = healthy
        self.last_change = now
        self.reason = result.describe()
        if healthy:
            self.counters.went_up += 1
            return Transition.UP
        self.counters.went_down += 1
        return Transition.DOWN

    def as_dict(self) -> dict[str, object]:
        """JSON-able form for the status API."""
        return {
            "healthy": self.healthy,
            "reason": self.reason,
            "last_change": self.last_change,
            "last_check": self.last_check,
            "last_result": None if self.last_result is None else self.last_result.as_dict(),
            "ok_streak": self.ok_streak,
            "fail_streak": self.fail_streak,
            "rise": self.rise,
            "fall": self.fall,
            "dynamic_weight": self.weight,
            "counters": self.counters.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """Tell the director what to do with one real server.

    ``in_pool`` is the instruction: True = serve at ``weight`` (``None`` = the configured
    weight), False = apply the service's ``down_action``.  ``healthy`` is the probe verdict;
    it differs from ``in_pool`` only while a sorry server stands in for a pool without quorum.
    """

    service: ServiceKey
    endpoint: Endpoint
    healthy: bool
    in_pool: bool
    weight: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SorryEvent:
    """Add (``active``: weight 1) or take out the service's sorry server."""

    service: ServiceKey
    endpoint: Endpoint
    active: bool
    healthy_weight: int
    reason: str


HealthEvent = ServerEvent | SorryEvent


@dataclass(slots=True)
class _Member:
    weight: int  # configured weight
    health: ServerHealth
    published: tuple[bool, bool, int | None] | None = None  # (healthy, in_pool, weight)

    @property
    def effective_weight(self) -> int:
        return self.health.weight if self.health.weight is not None else self.weight


class ServiceHealth:
    """Health of one virtual service: its servers' states, quorum, and sorry-server decision."""

    def __init__(
        self,
        key: ServiceKey,
        *,
        quorum: int = 1,
        hysteresis: int = 0,
        sorry_server: Endpoint | None = None,
    ) -> None:
        self.key = key
        self.quorum = quorum
        self.hysteresis = hysteresis
        self.sorry_server = sorry_server
        self._members: dict[Endpoint, _Member] = {}
        self._quorum_held: bool | None = None  # None until the first evaluation
        self._published_sorry: Endpoint | None = None
        self.quorum_changed_at: float | None = None

    # -- configuration -------------------------------------------------------------------

    def configure(
        self, *, quorum: int, hysteresis: int, sorry_server: Endpoint | None
    ) -> None:
        """Change quorum settings; the next :meth:`evaluate` publishes any effect."""
        self.quorum, self.hysteresis, self.sorry_server = quorum, hysteresis, sorry_server

    def set_server(self, endpoint: Endpoint, *, weight: int, health: ServerHealth) -> None:
        """Add a server, or replace its configured weight and health record."""
        old = self._members.get(endpoint)
        published = old.published if old is not None else None
        self._members[endpoint] = _Member(weight, health, published)

    def republish(self, endpoint: Endpoint) -> None:
        """Let the next :meth:`evaluate` publish the server's verdict again, changed or not."""
        member = self._members.get(endpoint)
        if member is not None:
            member.published = None

    def remove_server(self, endpoint: Endpoint) -> None:
        """Forget a server (the director removes it from the engine itself)."""
        self._members.pop(endpoint, None)

    def resume(self, event: HealthEvent) -> None:
        """Take over a verdict already published (by a previous checker process) silently.

        The server keeps that verdict (and counts as probed, so a down one needs ``rise``
        successes) and no event repeats it; a sorry server that was standing in stays.
        """
        if isinstance(event, SorryEvent):
            if event.active and event.endpoint == self.sorry_server:
                self._published_sorry = event.endpoint
                self._quorum_held = False
            return
        member = self._members.get(event.endpoint)
        if member is None:
            return
        member.health.healthy = event.healthy
        member.health.weight = event.weight
        member.health.probed = True
        member.health.reason = event.reason
        member.published = (event.healthy, event.in_pool, event.weight)

    def server(self, endpoint: Endpoint) -> ServerHealth:
        """The health record of one server (KeyError if unknown)."""
        return self._members[endpoint].health

    @property
    def endpoints(self) -> list[Endpoint]:
        """The servers of this service, in configuration order."""
        return list(self._members)

    # -- inputs --------------------------------------------------------------------------

    def observe(self, endpoint: Endpoint, result: ProbeResult, now: float) -> list[HealthEvent]:
        """Account one probe result for ``endpoint``; return the events it causes."""
        member = self._members.get(endpoint)
        if member is None:
            return []
        if member.health.observe(result, now) is None:
            # Neither the verdict nor the weight moved, so neither can the quorum or the pool:
            # nothing to publish (the common case, 5,000 times a second at 10,000 servers).
            return []
        return self.evaluate(now)

    @property
    def healthy_weight(self) -> int:
        """Total effective weight of the healthy servers."""
        return sum(m.effective_weight for m in self._members.values() if m.health.healthy)

    @property
    def quorum_held(self) -> bool:
        """Whether the pool currently has quorum (evaluated on the last call)."""
        return bool(self._quorum_held)

    @property
    def sorry_active(self) -> bool:
        """Whether the sorry server currently stands in for the pool."""
        return self.sorry_server is not None and self._quorum_held is False

    def _update_quorum(self, now: float) -> str | None:
        total = self.healthy_weight
        held = self._quorum_held
        if held is None:
            new = total > 0 and total >= self.quorum
        elif held:
            new = not (total == 0 or total < self.quorum - self.hysteresis)
        else:
            new = total > 0 and total >= self.quorum + self.hysteresis
        if new == held:
            return None
        self._quorum_held = new
        self.quorum_changed_at = now
        verb = "regained" if new else "lost"
        return f"quorum {verb}: healthy weight {total}, quorum {self.quorum} ± {self.hysteresis}"

    def evaluate(self, now: float) -> list[HealthEvent]:
        """Recompute quorum and the pool; return the events not yet published."""
        quorum_note = self._update_quorum(now)
        sorry = self.sorry_server if self.sorry_active else None
        total = self.healthy_weight
        adds: list[HealthEvent] = []
        server_events: list[HealthEvent] = []
        removes: list[HealthEvent] = []
        if self._published_sorry is not None and self._published_sorry != sorry:
            removes.append(
                SorryEvent(self.key, self._published_sorry, False, total, quorum_note or "pool")
            )
        if sorry is not None and self._published_sorry != sorry:
            adds.append(SorryEvent(self.key, sorry, True, total, quorum_note or "pool"))
        self._published_sorry = sorry
        for endpoint, m in self._members.items():
            h = m.health
            view = (h.healthy, h.healthy and sorry is None, h.weight)
            if view == m.published:
                continue
            healthy_changed = m.published is None or m.published[0] != h.healthy
            reason = h.reason if healthy_changed or quorum_note is None else quorum_note
            m.published = view
            server_events.append(
                ServerEvent(self.key, endpoint, view[0], view[1], view[2], reason)
            )
        # The sorry server goes in before the pool is pulled and comes out after it is back,
        # so at no point is the service left with no server at all.
        return adds + server_events + removes

    def as_dict(self) -> dict[str, object]:
        """JSON-able form for the status API."""
        return {
            "quorum": self.quorum,
            "quorum_hysteresis": self.hysteresis,
            "quorum_held": self.quorum_held,
            "quorum_changed_at": self.quorum_changed_at,
            "healthy_weight": self.healthy_weight,
            "sorry_server": None if self.sorry_server is None else str(self.sorry_server),
            "sorry_active": self.sorry_active,
            "servers": {
                str(ep): {
                    "weight": m.weight,
                    "in_pool": m.health.healthy and not self.sorry_active,
                    **m.health.as_dict(),
                }
                for ep, m in self._members.items()
            },
        }
