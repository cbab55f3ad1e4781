"""pylvs.weights: configured weight, health, load reports, piranha's rule and slow start."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.weights import LoadReport, ServerWeight, piranha_adjust, weight_from_percent


def test_configured_weight_when_healthy() -> None:
    assert ServerWeight(7).weight(0.0) == 7


def test_down_quiesces_or_removes() -> None:
    q = ServerWeight(5, down_action="quiesce")
    q.set_health(False, 1.0)
    assert q.weight(1.0) == 0
    r = ServerWeight(5, down_action="remove")
    r.set_health(False, 1.0)
    assert r.weight(1.0) is None


def test_slow_start_ramps_linearly_from_one() -> None:
    sw = ServerWeight(11, slow_start=10.0)
    sw.set_health(False, 0.0)
    sw.set_health(True, 100.0)
    assert sw.weight(100.0) == 1
    assert sw.weight(105.0) == 6  # 1 + (11 - 1) * 0.5
    assert sw.weight(109.99) == 10
    assert sw.weight(110.0) == 11
    assert sw.ramp_until() == 110.0


def test_new_server_ramps_from_its_start() -> None:
    sw = ServerWeight(4, slow_start=4.0, ramp_from=50.0)
    assert [sw.weight(50.0 + t) for t in range(5)] == [1, 1, 2, 3, 4]


def test_no_ramp_without_slow_start_or_on_initial_servers() -> None:
    sw = ServerWeight(9)
    sw.set_health(False, 0.0)
    sw.set_health(True, 1.0)
    assert sw.weight(1.0) == 9
    assert ServerWeight(9, slow_start=30.0).weight(0.0) == 9


@settings(max_examples=100)
@given(
    configured=st.integers(0, 1000),
    slow=st.floats(0.5, 100.0),
    times=st.lists(st.floats(0.0, 200.0), min_size=2, max_size=20),
)
def test_slow_start_is_monotonic_and_bounded(
    configured: int, slow: float, times: list[float]
) -> None:
    sw = ServerWeight(configured, slow_start=slow, ramp_from=0.0)
    ws = [sw.weight(t) for t in sorted(times)]
    assert all(w is not None and 0 <= w <= configured for w in ws)
    assert ws == sorted(ws)  # type: ignore[type-var]
    if configured:
        assert all(w is not None and w >= 1 for w in ws)


def test_percent_and_absolute_weights() -> None:
    assert weight_from_percent(10, 50) == 5
    assert weight_from_percent(10, 1) == 1  # never rounded away while above 0%
    assert weight_from_percent(10, 0) == 0
    assert weight_from_percent(3, 150) == 5  # 4.5 rounds half up
    sw = ServerWeight(10)
    sw.set_load(LoadReport(percent=75), 0.0)
    assert sw.weight(0.0) == 8
    sw.set_load(LoadReport(weight=3), 0.0)
    assert sw.weight(0.0) == 3
    sw.set_load(None, 0.0)  # no answer: keep the last adjustment
    assert sw.weight(0.0) == 3


def test_agent_states_are_sticky() -> None:
    sw = ServerWeight(10, down_action="remove")
    sw.set_load(LoadReport(admin="drain"), 0.0)
    assert sw.weight(0.0) == 0  # drain keeps the server, with no new connections
    sw.set_load(LoadReport(percent=50), 0.0)
    assert sw.weight(0.0) == 0  # still draining
    sw.set_load(LoadReport(admin="ready"), 0.0)
    assert sw.weight(0.0) == 5
    sw.set_load(LoadReport(admin="maint"), 0.0)
    assert sw.weight(0.0) is None  # maintenance is down: down_action applies
    sw.set_load(LoadReport(admin="ready", oper="down"), 0.0)
    assert sw.weight(0.0) is None
    sw.set_load(LoadReport(oper="up"), 0.0)
    assert sw.weight(0.0) == 5


def test_health_down_wins_over_the_agent() -> None:
    sw = ServerWeight(10)
    sw.set_load(LoadReport(oper="up", weight=20), 0.0)
    sw.set_health(False, 0.0)
    assert sw.weight(0.0) == 0


def test_piranha_rule_examples() -> None:
    assert piranha_adjust(8, 8, 0.0) == 12  # 8 + 4 * 1
    assert piranha_adjust(8, 8, 0.99) == 8  # +0.86 truncates away: below the W/4 hysteresis
    assert piranha_adjust(20, 8, 2.0) == 16  # 20 - 4 * 1
    assert piranha_adjust(11, 8, 9.0) == 8  # 11 - 4 * 2 = 3, floored at W
    assert piranha_adjust(9, 8, 9.0) == 9  # floored at W = 8: a move of 1 < W/4
    assert piranha_adjust(79, 8, 0.0) == 79  # capped at 10 W = 80, a move of 1 < W/4
    assert piranha_adjust(70, 8, 0.0) == 74
    assert piranha_adjust(12, 8, 1.0) == 12
    assert piranha_adjust(1, 1, 0.0) == 1  # W = 1: the step truncates away


@settings(max_examples=200)
@given(
    w=st.integers(1, 1000),
    loads=st.lists(st.floats(0.0, 50.0), min_size=1, max_size=30),
)
def test_piranha_weight_floats_between_w_and_10w(w: int, loads: list[float]) -> None:
    last = w
    for load in loads:
        last = piranha_adjust(last, w, load)
        assert w <= last <= 10 * w


def test_loadavg_drives_weight_after_slow_start() -> None:
    sw = ServerWeight(8, slow_start=10.0, ramp_from=0.0)
    sw.set_load(LoadReport(loadavg=0.0), 5.0)  # ramping: ignored, as piranha does
    assert sw.weight(20.0) == 8
    sw.set_load(LoadReport(loadavg=0.0), 20.0)
    assert sw.weight(20.0) == 12
    sw.set_load(LoadReport(loadavg=0.0), 21.0)
    assert sw.weight(21.0) == 16
    sw.set_health(False, 22.0)
    sw.set_health(True, 23.0)  # recovery restarts from the configured weight, ramping
    assert sw.weight(33.0) == 8


def test_reconfigure_keeps_agent_state() -> None:
    sw = ServerWeight(10)
    sw.set_load(LoadReport(percent=50), 0.0)
    sw.reconfigure(20, 0.0, "quiesce")
    assert sw.weight(0.0) == 10


def test_clear_load_keeps_health_and_the_ramp() -> None:
    sw = ServerWeight(10, slow_start=10.0, ramp_from=0.0)
    sw.set_load(LoadReport(admin="drain", percent=30), 0.0)
    assert sw.weight(5.0) == 0
    sw.clear_load()
    assert sw.weight(5.0) == 5  # back to the configured weight, still ramping
    sw.set_health(False, 6.0)
    sw.clear_load()
    assert sw.weight(6.0) == 0  # health is not the load monitor's to clear
