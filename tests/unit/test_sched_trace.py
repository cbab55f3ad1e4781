"""bench/sched_trace.py: ``perf sched timehist`` lines into slices, delays per window, and what
ran while a thread waited for a CPU."""

from __future__ import annotations

import pytest

from bench.sched_trace import Slice, blame, delays, parse_timehist

TEXT = """\
           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
     100.010000 [0000]  python3[500]                        0.000      0.000     10.000
     100.011000 [0000]  pylvs-w0[501/500]                   5.000      8.000      1.000
     100.012000 [0001]  <idle>                              0.000      0.000      2.000
     100.030000 [0001]  Web Content[77/70]                  0.000      0.100     18.000
     100.031000 [0001]  pylvs-w1[502/500]                  20.000     12.000      0.500
     100.050000 [0000]  pylvs-w0[501/500]                   1.000      0.200      0.100
"""


def _is_worker(s: Slice) -> bool:
    return s.comm.startswith("pylvs-w")


def test_parse_skips_headers_and_idle_and_keeps_names_with_spaces() -> None:
    got = parse_timehist(TEXT)
    assert [s.comm for s in got] == ["python3", "pylvs-w0", "Web Content", "pylvs-w1",
                                     "pylvs-w0"]
    w0 = got[1]
    assert (w0.tid, w0.pid, w0.cpu) == (501, 500, 0)
    assert w0.delay == pytest.approx(0.008) and w0.start == pytest.approx(100.010)
    assert got[0].pid == got[0].tid == 500  # a process's main thread: no "/pid"


def test_delays_per_window_by_start() -> None:
    got = delays(parse_timehist(TEXT), _is_worker, {"a": (100.0, 100.02), "b": (100.02, 101)})
    assert got["a"]["runs"] == 1 and got["a"]["max"] == pytest.approx(0.008)
    assert got["a"]["over_5ms"] == 1 and got["a"]["over_10ms"] == 0
    assert got["b"]["runs"] == 2 and got["b"]["max"] == pytest.approx(0.012)
    assert got["b"]["over_10ms"] == 1


def test_blame_names_what_ran_during_the_long_waits() -> None:
    slices = parse_timehist(TEXT)
    # w0 waited 100.002-100.010 (python3 ran 100.000-100.010): 8 ms of python3;
    # w1 waited 100.0185-100.0305 (Web Content ran 100.012-100.030): 11.5 ms
    got = dict(blame(slices, _is_worker, 0.005))
    assert got["python3"] == pytest.approx(0.008, abs=1e-4)
    assert got["Web Content"] == pytest.approx(0.0115, abs=1e-4)
    assert "pylvs-w0" not in got
    named = blame(slices, _is_worker, 0.010, name=lambda s: f"pid {s.pid}")
    assert [n for n, _ in named] == ["pid 70"]
    assert named[0][1] == pytest.approx(0.0115, abs=1e-4)
