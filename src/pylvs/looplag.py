"""How late the event loop runs its timers: a continuous measure of stalls.

Everything the director does (health verdicts, API requests, reloads, heartbeats) shares one
asyncio loop, so a slow piece of work delays everything else.  :class:`LoopLagMonitor` asks the
loop to wake it every ``interval`` seconds and records how late each wake-up was; a stall of
200 ms shows up as a 200 ms sample.  :class:`LagHistogram` is the sans-IO record: cumulative
Prometheus buckets since start (``/metrics``) and the samples of the last minute for p50, p99
and max (``pylvs status``).
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import math
import time
from collections import deque
from typing import Any

__all__ = ["BUCKETS", "SLICE", "GcPauses", "LagHistogram", "LoopLagMonitor", "Slices",
           "freeze_heap"]

#: Longest stretch a large piece of work (a reload, a restore) runs before giving the loop a
#: turn, so heartbeats and probes are not held up behind it.
SLICE = 0.005

#: Upper bounds (seconds) of the histogram buckets; +Inf is implied.
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LagHistogram:
    """Lag samples: bucket counts and sum since creation, plus a window of recent samples."""

    def __init__(self, window: int = 1200) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0
        self.max = 0.0
        self._recent: deque[float] = deque(maxlen=window)

    def observe(self, lag: float) -> None:
        """Record one sample (negative values, a timer firing early, count as 0)."""
        lag = max(0.0, lag)
        self.counts[bisect.bisect_left(BUCKETS, lag)] += 1
        self.total += lag
        self.count += 1
        self.max = max(self.max, lag)
        self._recent.append(lag)

    def reset_window(self) -> None:
        """Forget the recent samples (e.g. after start-up work), keep the totals."""
        self._recent.clear()

    def percentile(self, q: float) -> float:
        """The q-quantile (0..1) of the recent samples, nearest rank; 0.0 with none."""
        if not self._recent:
            return 0.0
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def snapshot(self) -> dict[str, Any]:
        """JSON-able: recent p50/p99/max, all-time max, and cumulative buckets for /metrics."""
        cumulative = []
        running = 0
        for bound, n in zip((*BUCKETS, math.inf), self.counts, strict=True):
            running += n
            cumulative.append(["+Inf" if math.isinf(bound) else bound, running])
        return {
            "window_samples": len(self._recent),
            "p50": self.percentile(0.50),
            "p99": self.percentile(0.99),
            "max": max(self._recent, default=0.0),
            "max_ever": self.max,
            "count": self.count,
            "sum": self.total,
            "buckets": cumulative,
        }


class GcPauses:
    """Times the cyclic garbage collector's full (generation 2) passes: a stall of the loop
    that no callback of ours shows, so it is counted on its own (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.last = 0.0
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """The ``gc.callbacks`` hook."""
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            took, self._started = time.perf_counter() - self._started, None
            self.count += 1
            self.total += took
            self.max = max(self.max, took)
            self.last = took

    def snapshot(self) -> dict[str, Any]:
        """JSON-able: full passes so far, their total, longest and last duration (s)."""
        return {"full_passes": self.count, "total": self.total, "max": self.max,
                "last": self.last}


class LoopLagMonitor:
    """Wakes every ``interval`` seconds and records how late the loop woke it (and, while it
    runs, how long the garbage collector's full passes take)."""

    def __init__(self, interval: float = 0.05, window: int = 1200) -> None:
        self.interval = interval
        self.histogram = LagHistogram(window)
        self.gc = GcPauses()

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        gc.callbacks.append(self.gc)
        try:
            while True:
                due = loop.time() + self.interval
                await asyncio.sleep(self.interval)
                self.histogram.observe(loop.time() - due)
        finally:
            gc.callbacks.remove(self.gc)

    def snapshot(self) -> dict[str, Any]:
        """The histogram's snapshot with the GC passes under ``gc``."""
        return {**self.histogram.snapshot(), "gc": self.gc.snapshot()}


class Slices:
    """Cut a long loop into slices: ``await slices.tick()`` after each step gives the event
    loop a turn once ``budget`` seconds have passed since the last one."""

    def __init__(self, budget: float = SLICE) -> None:
        self._budget = budget
        self._end = time.monotonic() + budget

    async def tick(self) -> None:
        """Yield to the loop if this slice is used up."""
        if time.monotonic() >= self._end:
            await asyncio.sleep(0)
            self._end = time.monotonic() + self._budget


def freeze_heap() -> None:
    """Take every object alive now out of the cyclic garbage collector's full passes.

    A full (generation 2) pass walks every container object; with 10,000 servers configured
    that is a 150 ms stall of the loop every few seconds of allocation (measured, issue 13).
    The configuration, the indexes and the engine's façade live as long as the configuration,
    so after a start or a reload they are frozen (``gc.freeze``) and later passes only walk
    what was allocated since.  Objects of a replaced configuration stay frozen: a reload's
    worth of memory, not a leak that grows.
    """
    gc.freeze()
