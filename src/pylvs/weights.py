"""The effective engine weight of a real server: a small sans-IO policy.

Inputs, all fed by the director:

* the **configured** weight (``RealServerConfig.weight``);
* the **health** verdict, up or down (``pylvs.health``), and the service's ``down_action``:
  a down server gets weight 0 (``"quiesce"``: existing connections drain) or is removed;
* the **load monitor**'s latest :class:`LoadReport` (``pylvs.loadmon``): an absolute weight, a
  percentage of the configured weight, an agent state (``drain``/``maint``/``ready``,
  ``up``/``down``), or a 1-minute load average turned into a weight by piranha's rule
  (:func:`piranha_adjust`);
* **slow start**: a recovered or newly added server ramps linearly from 1 up to its weight over
  ``slow_start`` seconds instead of taking a flood from the least-connection schedulers.

Usage (one :class:`ServerWeight` per real server)::

    sw = ServerWeight(configured=10, slow_start=30.0, down_action="quiesce")
    sw.set_health(False, now)           # -> weight(now) == 0 (or None with "remove")
    sw.set_health(True, now)            # starts the ramp: 1 at `now`, 10 at now + 30
    sw.set_load(LoadReport(percent=50), now)
    w = sw.weight(now)                  # int, or None = take the server out of the service
    sw.ramp_until()                     # re-evaluate until then (e.g. every second)
    sw.clear_load()                     # the service's load monitor was removed

Nothing here reads a clock: every method that depends on time takes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_WEIGHT",
    "LoadReport",
    "ServerWeight",
    "piranha_adjust",
    "weight_from_percent",
]

MAX_WEIGHT = 65535  # ipvsadm's range
AdminState = Literal["ready", "drain", "maint"]
OperState = Literal["up", "down"]
DownAction = Literal["quiesce", "remove"]


@dataclass(frozen=True, slots=True)
class LoadReport:
    """One reading from a load monitor.  ``None`` fields were not mentioned by the reading.

    ``admin`` and ``oper`` are sticky, like HAProxy's agent: ``drain``/``maint`` hold until a
    later ``ready``, ``down`` until a later ``up``.  ``weight``/``percent`` replace each other.
    """

    weight: int | None = None  # absolute engine weight
    percent: int | None = None  # relative to the configured weight
    admin: AdminState | None = None
    oper: OperState | None = None
    loadavg: float | None = None  # 1-minute load average (piranha's load monitoring)


def weight_from_percent(configured: int, percent: int) -> int:
    """HAProxy's ``75%``: that share of the configured weight, rounded, and at least 1 when
    the share is not 0 (so a busy server still gets some traffic), capped at MAX_WEIGHT."""
    if percent <= 0 or configured <= 0:
        return 0
    return min(MAX_WEIGHT, max(1, (configured * percent + 50) // 100))


def piranha_adjust(last: int, configured: int, load: float, scale: int = 10) -> int:
    """Piranha's ``adjustWeight``: move a weight by the 1-minute load average ``load``.

    With step ``s = W / 2`` (W = the configured weight) and cube-root damping:

    * ``load < 1`` (idle capacity): ``new = last + s * (1 - load) ** (1/3)``, at most
      ``scale * W`` (piranha's default scale is 10);
    * ``load > 1`` (queueing): ``new = last - s * (load - 1) ** (1/3)``, at least ``W``;
    * ``load == 1``: unchanged.

    The result is truncated to an int as piranha's C does, and only applied when it moves by
    at least ``W / 4`` (hysteresis), so the weight floats in ``[W, scale * W]``.  With W < 4
    the step truncates away and the weight stays put (a documented piranha limitation).
    """
    if configured <= 0:
        return 0
    step = configured / 2
    if load < 1:
        new = min(last + step * (1 - load) ** (1 / 3), scale * configured)
    elif load > 1:
        new = max(last - step * (load - 1) ** (1 / 3), configured)
    else:
        return last
    candidate = int(new)
    return candidate if abs(candidate - last) >= configured / 4 else last


class ServerWeight:
    """The weight policy of one real server (see the module docstring)."""

    def __init__(
        self,
        configured: int,
        *,
        slow_start: float = 0.0,
        down_action: DownAction = "quiesce",
        healthy: bool = True,
        ramp_from: float | None = None,
    ) -> None:
        """``ramp_from``: start a slow-start ramp at that time (a server added at runtime)."""
        self.configured = configured
        self.slow_start = slow_start
        self.down_action: DownAction = down_action
        self.healthy = healthy
        self._up_since = ramp_from
        self._admin: AdminState = "ready"
        self._oper: OperState = "up"
        self._load_weight: int | None = None  # from weight/percent
        self._percent: int | None = None
        self._dynamic: int | None = None  # piranha's floating weight

    def reconfigure(self, configured: int, slow_start: float, down_action: DownAction) -> None:
        """A config reload changed this server or its service; the ramp and agent state stay."""
        if configured != self.configured:
            self._dynamic = None
        self.configured = configured
        self.slow_start = slow_start
        self.down_action = down_action

    def set_health(self, healthy: bool, now: float) -> None:
        """The health checker's verdict; a down -> up transition starts slow start."""
        if healthy and not self.healthy:
            self._up_since = now
            self._dynamic = None  # piranha restarts from the configured weight
        self.healthy = healthy

    def set_load(self, report: LoadReport | None, now: float) -> None:
        """Merge a load monitor reading; ``None`` (no answer) keeps the previous state."""
        if report is None:
            return
        if report.admin is not None:
            self._admin = report.admin
        if report.oper is not None:
            self._oper = report.oper
        if report.weight is not None:
            self._load_weight, self._percent = min(max(report.weight, 0), MAX_WEIGHT), None
        elif report.percent is not None:
            self._load_weight, self._percent = None, max(report.percent, 0)
        if report.loadavg is not None and not self._ramping(now):
            # piranha adjusts only once slow start has reached the configured weight
            last = self.configured if self._dynamic is None else self._dynamic
            self._dynamic = piranha_adjust(last, self.configured, report.loadavg)

    def clear_load(self) -> None:
        """Forget every load reading and agent state (the load monitor went away); health and
        any slow-start ramp in progress stay."""
        self._admin, self._oper = "ready", "up"
        self._load_weight = self._percent = self._dynamic = None

    @property
    def up(self) -> bool:
        """Healthy and not held down by the agent (``down``/``maint``)."""
        return self.healthy and self._oper == "up" and self._admin != "maint"

    def target(self) -> int:
        """The weight once any ramp is over (0 when draining or down)."""
        if not self.up or self._admin == "drain":
            return 0
        if self._load_weight is not None:
            return self._load_weight
        if self._percent is not None:
            return weight_from_percent(self.configured, self._percent)
        if self._dynamic is not None:
            return self._dynamic
        return self.configured

    def _ramping(self, now: float) -> bool:
        return (
            self.slow_start > 0
            and self._up_since is not None
            and now - self._up_since < self.slow_start
        )

    def weight(self, now: float) -> int | None:
        """The engine weight at ``now``; ``None`` means remove the server from the service."""
        if not self.up and self.down_action == "remove":
            return None
        full = self.target()
        if full <= 1 or not self._ramping(now):
            return full
        assert self._up_since is not None
        frac = (now - self._up_since) / self.slow_start
        return max(1, min(full, 1 + int((full - 1) * frac)))

    def ramp_until(self) -> float | None:
        """When the current slow-start ramp ends, or None if there is none to follow."""
        if self.slow_start <= 0 or self._up_since is None:
            return None
        return self._up_since + self.slow_start
