"""Who kept a thread off the CPU: ``perf sched`` around a bench window (bench/isolation.py --sched).

A packet held 20 ms inside the director is either the engine lock (the lock's own timing says,
core/lock.c) or the worker thread not running: woken by the packet, then waiting for a CPU.
``perf sched record`` (every context switch and wakeup on every CPU, timestamps on
CLOCK_MONOTONIC so they line up with the bench's windows) and ``perf sched timehist`` give, for
each time a thread ran, how long it waited for a CPU after its wakeup (the *scheduling delay*).
:func:`delays` summarises one set of threads per window; :func:`blame` names what ran on the
CPUs while those threads waited longer than a threshold.

:class:`SchedRecorder` is the I/O half (root, perf); the rest parses text and is tested in
tests/unit/test_sched_trace.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["SchedRecorder", "Slice", "blame", "delays", "parse_timehist"]

# "  21297.949575 [0000]  python3[13608]   0.000   0.000   0.692" or "comm[tid/pid]"
_LINE = re.compile(r"^\s*(\d+\.\d+)\s+\[(\d+)\]\s+(.+?)\[(\d+)(?:/(\d+))?\]\s+"
                   r"([\d.]+)\s+([\d.]+)\s+([\d.]+)")


@dataclass(frozen=True)
class Slice:
    """One run of one thread: it was woken (or preempted) at ``start - delay``, ran from
    ``start`` to ``end`` on ``cpu`` (seconds, CLOCK_MONOTONIC)."""

    end: float
    cpu: int
    comm: str
    tid: int
    pid: int
    delay: float
    run: float

    @property
    def start(self) -> float:
        """When it got the CPU."""
        return self.end - self.run


def parse_timehist(text: str) -> list[Slice]:
    """The slices of ``perf sched timehist`` output (header and idle lines are skipped)."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        end, cpu, comm, tid, pid, _wait, delay, run = m.groups()
        if comm == "<idle>":
            continue
        out.append(Slice(float(end), int(cpu), comm, int(tid), int(pid or tid),
                         float(delay) / 1e3, float(run) / 1e3))
    return out


def delays(slices: Iterable[Slice], which: Callable[[Slice], bool],
           windows: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    """Per window: how many times the ``which`` threads were put on a CPU, the p99 and max
    scheduling delay (seconds) and how many delays were over 5 and 10 ms (by when the thread
    started running)."""
    mine = [s for s in slices if which(s)]
    out: dict[str, dict[str, float]] = {}
    for name, (t0, t1) in windows.items():
        ds = sorted(s.delay for s in mine if t0 <= s.start < t1)
        out[name] = {"runs": len(ds),
                     "p99": ds[min(len(ds) - 1, int(len(ds) * 0.99))] if ds else 0.0,
                     "max": ds[-1] if ds else 0.0,
                     "over_5ms": sum(1 for d in ds if d > 0.005),
                     "over_10ms": sum(1 for d in ds if d > 0.010)}
    return out


def blame(slices: Sequence[Slice], which: Callable[[Slice], bool], threshold: float,
          top: int = 8, name: Callable[[Slice], str] = lambda s: s.comm,
          ) -> list[tuple[str, float]]:
    """What ran on the CPUs while a ``which`` thread waited longer than ``threshold`` for one:
    (``name`` of the thread, by default its comm; seconds of CPU inside those waits), the
    largest first."""
    waits = [(s.start - s.delay, s.start) for s in slices if which(s) and s.delay > threshold]
    waits = sorted(waits, key=lambda w: w[0] - w[1])[:200]  # the longest: enough to name them
    spent: dict[str, float] = {}
    for a, b in waits:
        for s in slices:
            overlap = min(b, s.end) - max(a, s.start)
            if overlap > 0 and not which(s):
                key = name(s)
                spent[key] = spent.get(key, 0.0) + overlap
    worst = sorted(spent.items(), key=lambda kv: -kv[1])[:top]
    return [(comm, round(sec, 4)) for comm, sec in worst]


class SchedRecorder:
    """``perf sched record -a`` into ``path`` from :meth:`start` to :meth:`stop` (root)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start recording every CPU's context switches."""
        self._proc = subprocess.Popen(
            ["perf", "sched", "record", "-k", "CLOCK_MONOTONIC", "-a", "-o", self.path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> list[Slice]:
        """Stop recording; the slices (empty if perf failed), and the data file removed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return []
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            res = subprocess.run(["perf", "sched", "timehist", "-i", self.path],
                                 capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            return []
        finally:
            if os.path.exists(self.path):
                os.unlink(self.path)
        return parse_timehist(res.stdout)
