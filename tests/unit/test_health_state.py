"""Sans-IO rise/fall, flapping, quorum hysteresis and sorry-server events, with explicit time."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from pylvs.health import ProbeResult, Reason, ServerEvent, ServerHealth, ServiceHealth, SorryEvent
from pylvs.health.state import Transition
from pylvs.model import Endpoint, ServiceKey

OK = ProbeResult.success("HTTP 200")
FAIL = ProbeResult.failure(Reason.TIMEOUT)
REFUSED = ProbeResult.failure(Reason.REFUSED)
KEY = ServiceKey("tcp", "198.18.0.100", 80)
A = Endpoint(IPv4Address("198.19.0.11"), 80)
B = Endpoint(IPv4Address("198.19.0.12"), 80)
C = Endpoint(IPv4Address("198.19.0.13"), 80)
SORRY = Endpoint(IPv4Address("198.19.0.99"), 80)


def test_fall_needs_consecutive_failures_and_records_reason() -> None:
    h = ServerHealth.new(rise=2, fall=3, initial_up=True, now=0.0)
    assert h.observe(FAIL, 1.0) is None
    assert h.observe(FAIL, 2.0) is None
    assert h.observe(OK, 3.0) is None  # one success resets the failure count
    assert h.observe(FAIL, 4.0) is None
    assert h.observe(FAIL, 5.0) is None
    assert h.observe(REFUSED, 6.0) is Transition.DOWN
    assert not h.healthy and h.last_change == 6.0 and h.reason == "refused"
    assert h.counters.as_dict() == {
        "checks": 6, "successes": 1, "failures": 5, "went_up": 0, "went_down": 1
    }


def test_rise_needs_consecutive_successes_after_a_real_down() -> None:
    h = ServerHealth.new(rise=3, fall=1, initial_up=True, now=0.0)
    assert h.observe(FAIL, 1.0) is Transition.DOWN
    assert h.observe(OK, 2.0) is None
    assert h.observe(OK, 3.0) is None
    assert h.observe(FAIL, 4.0) is None  # resets the success count
    assert h.observe(OK, 5.0) is None
    assert h.observe(OK, 6.0) is None
    assert h.observe(OK, 7.0) is Transition.UP
    assert h.healthy and h.last_change == 7.0 and h.reason == "ok: HTTP 200"


def test_initial_down_first_success_brings_it_up_but_not_after_a_failure() -> None:
    fresh = ServerHealth.new(rise=5, fall=3, initial_up=False, now=0.0)
    assert not fresh.healthy
    assert fresh.observe(OK, 1.0) is Transition.UP
    failed_first = ServerHealth.new(rise=2, fall=3, initial_up=False, now=0.0)
    assert failed_first.observe(FAIL, 1.0) is None
    assert failed_first.observe(OK, 2.0) is None
    assert failed_first.observe(OK, 3.0) is Transition.UP


def test_dynamic_weight_change_is_reported_while_up() -> None:
    h = ServerHealth.new(rise=1, fall=1, initial_up=True, now=0.0)
    assert h.observe(ProbeResult.success(weight=3), 1.0) is Transition.WEIGHT
    assert h.observe(ProbeResult.success(weight=3), 2.0) is None
    assert h.weight == 3
    assert h.observe(OK, 3.0) is Transition.WEIGHT and h.weight is None


@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.booleans(),
    st.lists(st.booleans(), max_size=60),
)
def test_state_only_changes_after_rise_or_fall_equal_results(
    rise: int, fall: int, initial_up: bool, results: list[bool]
) -> None:
    h = ServerHealth.new(rise=rise, fall=fall, initial_up=initial_up, now=0.0)
    history: list[bool] = []
    for i, ok in enumerate(results):
        before = h.healthy
        t = h.observe(OK if ok else FAIL, float(i))
        history.append(ok)
        if t is Transition.DOWN:
            assert before and history[-fall:] == [False] * fall
        elif t is Transition.UP:
            first = len(history) == 1
            assert not before and (first or history[-rise:] == [True] * rise)
        else:
            assert h.healthy == before
        # Never sits on the wrong side of a full streak.
        if len(history) >= fall and history[-fall:] == [False] * fall:
            assert not h.healthy
        if len(history) >= rise and history[-rise:] == [True] * rise:
            assert h.healthy


def test_flapping_server_does_not_flap_the_pool() -> None:
    svc = ServiceHealth(KEY)
    svc.set_server(A, weight=1, health=ServerHealth.new(rise=2, fall=3, initial_up=False, now=0))
    svc.evaluate(0.0)
    events = svc.observe(A, OK, 1.0)
    assert [type(e) for e in events] == [ServerEvent]
    flaps: list[object] = []
    for i in range(50):
        flaps += svc.observe(A, FAIL if i % 2 else OK, 2.0 + i)
        flaps += svc.observe(A, FAIL if i % 3 == 0 else OK, 2.5 + i)
    # Alternating results never give fall=3 failures in a row: no event at all.
    assert flaps == []


def service(quorum: int = 1, hysteresis: int = 0, sorry: Endpoint | None = SORRY) -> ServiceHealth:
    svc = ServiceHealth(KEY, quorum=quorum, hysteresis=hysteresis, sorry_server=sorry)
    for ep, w in ((A, 2), (B, 2), (C, 2)):
        svc.set_server(ep, weight=w, health=ServerHealth.new(rise=1, fall=1, initial_up=False,
                                                             now=0.0))
    return svc


def test_initial_events_start_with_sorry_server_then_pool_takes_over() -> None:
    svc = service()
    first = svc.evaluate(0.0)
    assert first[0] == SorryEvent(KEY, SORRY, True, 0, first[0].reason)
    assert "quorum lost" in first[0].reason
    assert [(e.endpoint, e.in_pool) for e in first[1:] if isinstance(e, ServerEvent)] == [
        (A, False), (B, False), (C, False)
    ]
    assert svc.evaluate(0.5) == []  # nothing new to publish
    up = svc.observe(A, OK, 1.0)
    # The pool is back in before the sorry server comes out.
    assert [type(e) for e in up] == [ServerEvent, SorryEvent]
    assert isinstance(up[0], ServerEvent) and up[0].in_pool and up[0].healthy
    assert isinstance(up[1], SorryEvent) and not up[1].active


def test_quorum_hysteresis_keeps_sorry_server_from_flapping() -> None:
    # weights 2 each; quorum 4 ± 1: gain at >= 5 (three servers), lose at < 3 (one server).
    svc = service(quorum=4, hysteresis=1)
    svc.evaluate(0.0)
    assert svc.sorry_active
    svc.observe(A, OK, 1.0)
    svc.observe(B, OK, 2.0)
    assert svc.healthy_weight == 4 and svc.sorry_active  # 4 < 5: not yet
    events = svc.observe(C, OK, 3.0)
    assert not svc.sorry_active and svc.quorum_held
    assert [e.endpoint for e in events if isinstance(e, ServerEvent)] == [A, B, C]
    assert all(e.in_pool for e in events if isinstance(e, ServerEvent))
    assert isinstance(events[-1], SorryEvent) and not events[-1].active
    # Down to 4 then 2... 4 >= 3 keeps quorum.
    events = svc.observe(C, FAIL, 4.0)
    assert [(e.endpoint, e.in_pool) for e in events if isinstance(e, ServerEvent)] == [(C, False)]
    assert not any(isinstance(e, SorryEvent) for e in events)
    # Flapping C up and down around the threshold does not touch the sorry server.
    for t in range(5, 15):
        evs = svc.observe(C, OK if t % 2 else FAIL, float(t))
        assert not any(isinstance(e, SorryEvent) for e in evs)
    svc.observe(C, FAIL, 20.0)
    events = svc.observe(B, FAIL, 21.0)  # weight 2 < 3: quorum lost
    assert isinstance(events[0], SorryEvent) and events[0].active
    assert events[0].healthy_weight == 2
    pulled = [e for e in events if isinstance(e, ServerEvent)]
    # B went down by its probe; A is healthy but pulled for the sorry server.
    assert [(e.endpoint, e.healthy, e.in_pool) for e in pulled] == [
        (A, True, False), (B, False, False)
    ]
    assert "quorum lost" in pulled[0].reason and pulled[1].reason == "timeout"


def test_without_sorry_server_quorum_loss_leaves_pool_alone() -> None:
    svc = service(quorum=5, sorry=None)
    svc.evaluate(0.0)
    events = svc.observe(A, OK, 1.0)
    assert [(e.endpoint, e.in_pool) for e in events if isinstance(e, ServerEvent)] == [(A, True)]
    assert not svc.quorum_held and not svc.sorry_active


def test_dynamic_weight_counts_toward_quorum_and_is_published() -> None:
    svc = service(quorum=3)
    svc.evaluate(0.0)
    events = svc.observe(A, ProbeResult.success(weight=10), 1.0)
    assert svc.healthy_weight == 10 and not svc.sorry_active
    server = [e for e in events if isinstance(e, ServerEvent)]
    assert server[0].weight == 10
    events = svc.observe(A, ProbeResult.success(weight=1), 2.0)
    assert svc.sorry_active  # 1 < 3
    assert isinstance(events[0], SorryEvent) and events[0].active


def test_sorry_server_change_while_active_swaps_it() -> None:
    svc = service()
    svc.evaluate(0.0)
    new = Endpoint(IPv4Address("198.19.0.98"), 8080)
    svc.configure(quorum=1, hysteresis=0, sorry_server=new)
    events = svc.evaluate(1.0)
    assert [(e.endpoint, e.active) for e in events if isinstance(e, SorryEvent)] == [
        (new, True), (SORRY, False)
    ]


def test_as_dict_is_json_able() -> None:
    import json

    svc = service()
    svc.evaluate(0.0)
    svc.observe(A, REFUSED, 1.0)
    text = json.dumps(svc.as_dict())
    assert '"sorry_active": true' in text and '"reason": "refused"' in text
