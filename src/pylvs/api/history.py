"""The last 15 minutes of the director, one sample per rate-estimator step (sans-IO).

The status page draws its charts from this ring buffer: per service and per real server the
estimator's rates (connections/s, packets/s and bytes/s in and out), each server's state with
the probe's reason, the HA role and the peer's state, and drops per second by reason.  A sample
is taken each time the estimator has run (every 2 s, see ``RATES_INTERVAL`` in the director),
so a chart point is exactly one estimator value, already smoothed the IPVS way
(``rate += (delta/2 - rate)/4``, docs/ipvs.md#statistics): nothing is averaged twice.

Storage is columnar so a large configuration stays small: per service and per server one
``array`` of integers holding the five rates of every sample slot (18 KB for 15 minutes), and
states, reasons and HA roles as lists of changes.  The API serves it as columns too.

Nothing here does I/O or reads a clock: :meth:`History.record` is given the time and the
read-side views (the same JSON the API serves), so it is tested with plain dicts.

A server's state in a sample is one word:

* ``down``: the health verdict is down (its ``reason`` says why);
* ``quiesced``: healthy (or unchecked) but the scheduler's weight is 0, so it takes no new
  connections (weight 0 configured, a load report, or slow start at its first step);
* ``up``, ``unknown`` (no verdict yet) or ``sorry`` (the sorry server standing in).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pylvs.api.views import RATE_KEYS

__all__ = ["SPAN", "STEP", "History", "server_state"]

STEP = 2.0
"""Seconds between samples: the rate estimator's period (IPVS estimates every 2 s)."""
SPAN = 900.0
"""Seconds of history kept (15 minutes)."""

Json = dict[str, Any]
_K = len(RATE_KEYS)
_ZEROS = array("q", [0]) * _K
_Key = tuple[str, str | None]  # (service id, server address or None for the service itself)


def server_state(server: Mapping[str, Any]) -> str:
    """One word for a real server as the views report it (see the module docstring)."""
    health = str(server.get("health") or "unknown")
    if health in ("down", "sorry"):
        return health
    if server.get("in_engine") and not server.get("effective_weight"):
        return "quiesced"
    return health


def _rates(obj: Mapping[str, Any]) -> list[int]:
    rates = obj.get("rates") or {}
    return [int(rates.get(k, 0)) for k in RATE_KEYS]


def _peer(ha: Mapping[str, Any]) -> tuple[str, str | None]:
    peer = ha.get("peer")
    if not isinstance(peer, Mapping):
        return "none", None
    alive = peer.get("alive")
    state = "alive" if alive else ("silent" if alive is not None else "configured")
    role = peer.get("role")
    return state, None if role is None else str(role).upper()


class _Changes:
    """A value over sample indexes, kept as the indexes where it changed."""

    def __init__(self) -> None:
        self.at: list[int] = []
        self.values: list[tuple[Any, ...]] = []

    def set(self, index: int, value: tuple[Any, ...]) -> bool:
        """Record *value* from *index* on; True if that is a change."""
        if not self.values or self.values[-1] != value:
            self.at.append(index)
            self.values.append(value)
            return True
        return False

    def get(self, index: int) -> tuple[Any, ...] | None:
        i = bisect_right(self.at, index) - 1
        return self.values[i] if i >= 0 else None

    def prune(self, first: int) -> bool:
        """Keep the change in force at *first*, drop the ones before it; True once only
        that one is left (nothing more to prune until the next change)."""
        i = bisect_right(self.at, first) - 1
        if i > 0:
            del self.at[:i], self.values[:i]
        return len(self.at) <= 1


_NO_CHANGES = _Changes()


class History:
    """A ring buffer of samples; the oldest falls out once *span* seconds are held."""

    def __init__(self, step: float = STEP, span: float = SPAN) -> None:
        self.step = step
        self.span = span
        self._cap = max(1, round(span / step))
        self.epoch = -1  # how often the history started afresh (a reader's cache key)
        self._reset()

    def _reset(self) -> None:
        self.epoch += 1
        self._n = 0  # samples recorded; sample i lives in slot i % cap while i >= n - cap
        self._times = array("d", [0.0]) * self._cap
        self._rates: dict[_Key, array[int]] = {}  # rates[k*cap + slot]; -1: not in that sample
        # Keys with no column yet: in every sample from this index to their last (_seen) with
        # all five rates 0.  An idle server costs no 18 KB column (200 MB and ~0.3 s of the
        # loop for the first sample of 10,000 servers, issue 13) until it has traffic.
        self._idle_since: dict[_Key, int] = {}
        self._states: dict[_Key, _Changes] = {}  # per server: (state, reason)
        self._seen: dict[_Key, int] = {}  # last sample a key was in
        self._drops: dict[str, array[float]] = {}  # per reason: drops/s per slot, -1: none
        self._ha = _Changes()  # (role, peer state, peer role)
        # Servers with more than one state change held, by the first index at which pruning
        # drops one (their second change's): a sample prunes only those due, not every server
        # that changed in the last 15 minutes (10,000 after a reload, in one go, issue 13).
        self._prune_due: dict[int, list[_Key]] = {}
        self._put_count = 0
        self._open = False  # a sample is being put: its slot no longer holds the oldest one
        self._last_drops: tuple[float, dict[str, int]] | None = None

    def __len__(self) -> int:
        return min(self._n, self._cap)

    def record(self, at: float, services: Iterable[Mapping[str, Any]],
               drops: Mapping[str, int], ha: Mapping[str, Any]) -> None:
        """Append the sample for wall-clock time *at*.

        *services* is :func:`pylvs.api.views.services`, *drops* the engine's cumulative drops
        by reason and *ha* :func:`pylvs.api.views.ha`.  Drops become per-second rates since
        the previous sample; a counter that went backwards (a zeroing) counts as 0.  A large
        director feeds the same sample piece by piece instead (:mod:`pylvs.api.sampler`):
        :meth:`begin`, :meth:`put` per service and server, :meth:`end`.
        """
        self.begin(at)
        for svc in services:
            sid = str(svc["id"])
            self.put(sid, None, _rates(svc))
            for rs in svc.get("real_servers", ()):
                why = rs.get("health_reason")
                self.put(sid, str(rs["address"]), _rates(rs),
                         (server_state(rs), str(why) if why else None))
        self.end(drops, ha)

    def begin(self, at: float) -> None:
        """Start the sample for wall-clock time *at* (then :meth:`put`, then :meth:`end`)."""
        at = round(at, 3)
        if self._n and self._times[(self._n - 1) % self._cap] >= at:
            self._reset()  # the wall clock stepped back: a mixed timeline would lie
        self._times[self._n % self._cap] = at
        self._put_count = 0
        self._open = True

    def put(self, sid: str, server: str | None, rates: Sequence[int],
            state: tuple[str, str | None] | None = None) -> None:
        """One service (*server* None) or real server of the sample: its five rates (in
        ``RATE_KEYS`` order) and, for a server, its state word and reason."""
        key: _Key = (sid, server)
        self._put(key, self._n, self._n % self._cap, rates)
        self._put_count += 1
        if state is not None:
            changes = self._states.get(key)
            if changes is None:
                changes = self._states[key] = _Changes()
            if changes.set(self._n, state) and len(changes.at) == 2:
                self._prune_due.setdefault(changes.at[1], []).append(key)

    def put_rates(self, keys: Sequence[_Key], values: array[int], start: int,
                  stride: int) -> None:
        """Many services' and servers' rates at once, their states unchanged: the rates of
        ``keys[j]`` are the five integers at ``values[start + j * stride]`` (in
        ``RATE_KEYS`` order; *values* an ``array("q")``).  Per key a dict lookup and one
        slice copy: 10,000 servers cost a few milliseconds of the loop (issue 13)."""
        n, slot, cap = self._n, self._n % self._cap, self._cap
        columns, seen, idle = self._rates, self._seen, self._idle_since
        o = start
        for key in keys:
            col = columns.get(key)
            rates = values[o:o + _K]
            if col is None:
                if not any(rates) and (key in idle or key not in seen):
                    idle.setdefault(key, n)
                    seen[key] = n
                    o += stride
                    continue
                col = self._column(key)
            col[slot::cap] = rates  # one column slot of each rate
            seen[key] = n
            o += stride
        self._put_count += len(keys)

    def end(self, drops: Mapping[str, int], ha: Mapping[str, Any]) -> None:
        """Close the sample: what was not put is absent from it; drops and the HA role."""
        i, slot, cap = self._n, self._n % self._cap, self._cap
        at = self._times[slot]
        if self._put_count != len(self._seen):  # something is gone (rare: a reload)
            for key, seen in list(self._seen.items()):
                if seen == i:
                    continue
                if seen <= i - cap:  # gone for the whole window: forget it
                    del self._seen[key]
                    self._rates.pop(key, None)
                    self._idle_since.pop(key, None)
                    self._states.pop(key, None)  # a pruning still due finds none
                else:
                    col = self._column(key)
                    for k in range(_K):
                        col[k * cap + slot] = -1
        rates = self._drop_rates(at, drops)
        for reason in rates.keys() | self._drops.keys():
            self._drops.setdefault(reason, array("d", [-1.0]) * cap)[slot] = rates.get(reason,
                                                                                      -1.0)
        self._ha.set(i, (str(ha.get("role") or "INIT").upper(), *_peer(ha)))
        self._n += 1
        self._open = False
        first = self._n - len(self)
        self._ha.prune(first)
        # Only a server whose second-oldest state change fell out of the window has history
        # to prune: at 10,000 servers the others cost nothing per sample.
        for key in self._prune_due.pop(first, ()):
            changes = self._states.get(key)
            if changes is not None and not changes.prune(first):
                self._prune_due.setdefault(changes.at[1], []).append(key)

    def _put(self, key: _Key, index: int, slot: int, values: Sequence[int]) -> None:
        cap = self._cap
        col = self._rates.get(key)
        if col is None:
            if not any(values) and (key in self._idle_since or key not in self._seen):
                self._idle_since.setdefault(key, index)
                self._seen[key] = index
                return
            col = self._column(key)
        for k, v in enumerate(values):
            col[k * cap + slot] = v
        self._seen[key] = index

    def _column(self, key: _Key) -> array[int]:
        """The key's column, made from its idle run (zeros) if it has none yet."""
        col = self._rates.get(key)
        if col is not None:
            return col
        cap = self._cap
        col = self._rates[key] = array("q", [-1]) * (cap * _K)
        first = self._idle_since.pop(key, None)
        if first is not None:
            # the ring holds samples n-cap..n-1, or n-cap+1..n-1 while sample n is being put
            for i in range(max(first, self._n - cap + self._open), self._seen[key] + 1):
                col[i % cap::cap] = _ZEROS
        return col

    def _drop_rates(self, at: float, drops: Mapping[str, int]) -> dict[str, float]:
        now = {str(k): int(v) for k, v in drops.items()}
        last, self._last_drops = self._last_drops, (at, now)
        if last is None or at <= last[0]:
            return {}
        dt = at - last[0]
        return {k: round(max(0, v - last[1].get(k, 0)) / dt, 3) for k, v in sorted(now.items())}

    def as_json(self, since: float | None = None) -> Json:
        """The document ``GET /api/v1/history`` serves: the samples after *since*, as columns.

        ``t`` lists the sample times; every series lists one value per time, ``-1`` where the
        service, server or drop reason was not in that sample.  States and HA roles are lists of
        changes ``[t, …]``, the first being the one in force at ``t[0]``.  Columns make this
        cheap to build and to send for hundreds of servers; the page turns them into rows.
        """
        cap, n = self._cap, self._n
        first = n - len(self)
        if self._open and len(self) == cap:
            first += 1  # the oldest sample's slot is being overwritten by the one in progress
        start = first
        while start < n and since is not None and self._times[start % cap] <= since:
            start += 1
        count = n - start

        def column(values: array[Any], offset: int) -> list[Any]:
            # The ring's slots for samples start..n-1, in time order.
            lo, hi = (start % cap), (start % cap) + count
            if hi <= cap:
                return values[offset + lo:offset + hi].tolist()
            return (values[offset + lo:offset + cap] + values[offset:offset + hi - cap]).tolist()

        def changes(ch: _Changes) -> list[list[Any]]:
            out = []
            for at, value in zip(ch.at, ch.values, strict=True):
                if at >= n or (at < start and ch.get(start) is not value):
                    continue
                out.append([self._times[max(at, start) % cap], *value])
            return out

        times = column(self._times, 0)
        services: Json = {}

        def add(sid: str, addr: str | None, cols: list[list[Any]]) -> None:
            if addr is None:
                services.setdefault(sid, {"servers": {}})["r"] = cols
            else:
                services.setdefault(sid, {"servers": {}})["servers"][addr] = {
                    "r": cols, "states": changes(self._states.get((sid, addr), _NO_CHANGES))}

        if count:
            for (sid, addr), col in self._rates.items():
                cols = [column(col, k * cap) for k in range(_K)]
                if max(cols[0]) >= 0:  # else: not in any of these samples
                    add(sid, addr, cols)
            for (sid, addr), first in self._idle_since.items():
                last = self._seen[(sid, addr)]
                if last >= start and first < n:  # else: not in any of these samples
                    idle = [0 if first <= i <= last else -1 for i in range(start, n)]
                    add(sid, addr, [list(idle) for _ in range(_K)])
        return {
            "step": self.step, "span": self.span,
            # names the series of every ``r`` (bytes per second for ``*bps``)
            "rate_keys": list(RATE_KEYS),
            "t": times,
            "services": services,
            "ha": changes(self._ha) if count else [],
            "drops": {k: vals for k, col in sorted(self._drops.items())
                      if count and max(vals := column(col, 0)) >= 0},
        }
