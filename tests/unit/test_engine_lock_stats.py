"""The engine lock times itself (core/lock.c, issue 14): a control call that holds it shows up
as a control hold, the packet it keeps waiting as a worker wait of the same length, each in the
right histogram bucket; the wrapper names the control call held longest."""

from __future__ import annotations

import threading
import time
from typing import Any

from pylvs._core import lib
from pylvs.engine_lock import LOCK_TIMINGS, LOCKED_PREFIX
from tests.support.worker_harness import rr_engine, syn, workers

HOLD = 0.03  # between the 20 ms and 50 ms bucket bounds


def _in_bucket(t: dict[str, Any], low: float, high: float) -> int:
    """How many durations fell in [low, high) (bounds of the cumulative buckets)."""
    cum = {b: c for b, c in t["buckets"]}
    return int(cum[high] - cum[low])


def test_a_held_control_call_delays_the_worker_and_both_are_counted() -> None:
    eng = rr_engine(3)
    with workers(eng, 2) as q:
        assert q.exchange(0, syn(40000)) is not None  # the path works before the hold
        before = eng.lock_stats()
        taken = threading.Event()

        def hold() -> None:  # a control call that takes 30 ms inside C
            lib.lvs_engine_lock_control(eng._c_handle())
            taken.set()
            time.sleep(HOLD)
            lib.lvs_engine_unlock_control(eng._c_handle())

        t = threading.Thread(target=hold)
        t.start()
        taken.wait(5)
        out = q.exchange(1, syn(40001), timeout=2.0)
        t.join(5)
        assert out is not None
        after = eng.lock_stats()
    ctl, wait = after["control_hold"], after["worker_wait"]
    assert ctl["count"] > before["control_hold"]["count"]
    assert HOLD <= ctl["max_seconds"] < 0.05
    assert _in_bucket(ctl, 0.02, 0.05) == 1
    # the SYN waited for most of the hold (it was sent after the hold began)
    assert 0.02 <= wait["max_seconds"] < 0.05
    assert _in_bucket(wait, 0.02, 0.05) == 1
    assert after["worker_hold"]["count"] >= 2  # each SYN made a connection: exclusive path
    for kind in LOCK_TIMINGS:
        t = after[kind]
        assert t["buckets"][-1] == ["+Inf", t["count"]]
        assert t["total_seconds"] >= t["max_seconds"]


def test_the_longest_control_call_is_named() -> None:
    eng = rr_engine(3)
    eng.services()
    longest = eng.lock_stats()["longest_control_call"]
    assert longest["function"].startswith("lvs_")
    assert 0 < longest["seconds"] < 1


def test_every_engine_call_locks_inside_c() -> None:
    # lock, call and unlock in one C call: the GIL is never awaited with the lock held
    from pylvs import engine

    wrapped = [n for n in dir(lib) if hasattr(lib, LOCKED_PREFIX + n)]
    assert "lvs_svc_add" in wrapped and "lvs_engine_update_rates" in wrapped
    for name in wrapped:
        assert getattr(engine._lib, name) is getattr(lib, LOCKED_PREFIX + name)
    # the lock's own calls and the workers' batch call take it themselves
    for name in ("lvs_engine_lock_control", "lvs_engine_process_batch_shared",
                 "lvs_engine_lock_stats"):
        assert not hasattr(lib, LOCKED_PREFIX + name)
