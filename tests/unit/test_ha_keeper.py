"""The heartbeat keeper: repeats the loop's last heartbeat during a stall, for a bounded time."""

from __future__ import annotations

import itertools
import time

from hypothesis import given
from hypothesis import strategies as st

from pylvs.ha.keeper import LATE_FACTOR, HeartbeatKeeper, should_repeat


@given(st.floats(0.0, 10.0), st.floats(0.01, 1.0), st.floats(0.5, 5.0))
def test_repeats_only_between_late_and_the_cover(since: float, interval: float,
                                                 cover: float) -> None:
    assert should_repeat(since, 0.0, interval, cover) == (
        interval * LATE_FACTOR < since <= cover)


def _run_stall(stall: float, interval: float = 0.02, cover: float = 0.3) -> list[float]:
    sends: list[float] = []
    keeper: HeartbeatKeeper[str] = HeartbeatKeeper(lambda hb: sends.append(time.monotonic()),
                                                   interval, cover)
    keeper.start()
    try:
        with keeper.lock:
            keeper.sent("hb")  # the loop's last heartbeat, then the loop stalls
        stalled_at = time.monotonic()
        time.sleep(stall)  # the "loop" sends nothing meanwhile
    finally:
        keeper.stop()
    return [t - stalled_at for t in sends]


def test_a_stall_is_covered_at_the_interval() -> None:
    sends = _run_stall(0.2)
    # ~0.2 s of stall after the first 1.5 intervals, one repeat per interval (thread wakes at
    # half intervals): far more than none, never faster than the interval allows.
    assert len(sends) >= 3
    assert sends[0] > 0.02 * LATE_FACTOR
    assert all(b - a >= 0.02 * 0.99 for a, b in itertools.pairwise(sends))


def test_a_hung_loop_is_not_covered_past_the_bound() -> None:
    sends = _run_stall(0.6, cover=0.2)
    assert sends and max(sends) <= 0.2 + 0.05  # nothing after the cover (one wake of slack)


def test_nothing_is_sent_while_the_loop_keeps_up_or_after_stop() -> None:
    sends: list[str] = []
    keeper: HeartbeatKeeper[str] = HeartbeatKeeper(sends.append, 0.02, 1.0)
    keeper.start()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        with keeper.lock:
            keeper.sent("hb")
        time.sleep(0.01)
    keeper.stop()
    assert sends == []
    time.sleep(0.1)
    assert sends == []
