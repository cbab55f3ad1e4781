"""The last 15 minutes of the director, one sample per rate-estimator step (sans-IO).

The status page draws its charts from this ring buffer: per service and per real server the
estimator's rates (connections/s, packets/s and bytes/s in and out), each server's state with
the probe's reason, the HA role and the peer's state, and drops per second by reason.  A sample
is taken each time the estimator has run (every 2 s, see ``RATES_INTERVAL`` in the director),
so a chart point is exactly one estimator value, already smoothed the IPVS way
(``rate += (delta/2 - rate)/4``, docs/ipvs.md#statistics): nothing is averaged twice.

Nothing here does I/O or reads a clock: :meth:`History.record` is given the time and the
read-side views (the same JSON the API serves), so it is tested with plain dicts.

A server's state in a sample is one word:

* ``down``: the health verdict is down (its ``reason`` says why);
* ``quiesced``: healthy (or unchecked) but the scheduler's weight is 0, so it takes no new
  connections (weight 0 configured, a load report, or slow start at its first step);
* ``up``, ``unknown`` (no verdict yet) or ``sorry`` (the sorry server standing in).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from pylvs.api.views import RATE_KEYS

__all__ = ["SPAN", "STEP", "History", "server_state"]

STEP = 2.0
"""Seconds between samples: the rate estimator's period (IPVS estimates every 2 s)."""
SPAN = 900.0
"""Seconds of history kept (15 minutes)."""

Json = dict[str, Any]


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


def _peer(ha: Mapping[str, Any]) -> Json:
    peer = ha.get("peer")
    if not isinstance(peer, Mapping):
        return {"state": "none", "role": None}
    alive = peer.get("alive")
    state = "alive" if alive else ("silent" if alive is not None else "configured")
    role = peer.get("role")
    return {"state": state, "role": None if role is None else str(role).upper()}


class History:
    """A ring buffer of samples; the oldest falls out once *span* seconds are held."""

    def __init__(self, step: float = STEP, span: float = SPAN) -> None:
        self.step = step
        self.span = span
        self._samples: deque[Json] = deque(maxlen=max(1, round(span / step)))
        self._last_drops: tuple[float, dict[str, int]] | None = None

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, at: float, services: Iterable[Mapping[str, Any]],
               drops: Mapping[str, int], ha: Mapping[str, Any]) -> Json:
        """Append the sample for wall-clock time *at* and return it.

        *services* is :func:`pylvs.api.views.services`, *drops* the engine's cumulative drops
        by reason and *ha* :func:`pylvs.api.views.ha`.  Drops become per-second rates since
        the previous sample; a counter that went backwards (a zeroing) counts as 0.
        """
        sample: Json = {
            "t": round(at, 3),
            "services": {
                str(svc["id"]): {
                    "r": _rates(svc),
                    "servers": {
                        str(rs["address"]): {
                            "r": _rates(rs), "s": server_state(rs),
                            **({"why": str(rs["health_reason"])}
                               if rs.get("health_reason") else {}),
                        }
                        for rs in svc.get("real_servers", ())
                    },
                }
                for svc in services
            },
            "ha": {"role": str(ha.get("role") or "INIT").upper(), "peer": _peer(ha)},
            "drops": self._drop_rates(at, drops),
        }
        if self._samples and self._samples[-1]["t"] >= sample["t"]:
            self._samples.clear()  # the wall clock stepped back: a mixed timeline would lie
        self._samples.append(sample)
        return sample

    def _drop_rates(self, at: float, drops: Mapping[str, int]) -> dict[str, float]:
        now = {str(k): int(v) for k, v in drops.items()}
        last, self._last_drops = self._last_drops, (at, now)
        if last is None or at <= last[0]:
            return {}
        dt = at - last[0]
        return {k: round(max(0, v - last[1].get(k, 0)) / dt, 3) for k, v in sorted(now.items())}

    def samples(self, since: float | None = None) -> list[Json]:
        """The samples taken after *since* (all of them when None), oldest first."""
        if since is None:
            return list(self._samples)
        return [s for s in self._samples if s["t"] > since]

    def as_json(self, since: float | None = None) -> Json:
        """The document ``GET /api/v1/history`` serves."""
        # ``rate_keys`` names the numbers of every ``r`` list (bytes per second for ``*bps``).
        return {"step": self.step, "span": self.span, "rate_keys": list(RATE_KEYS),
                "samples": self.samples(since)}
