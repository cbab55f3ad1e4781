"""The HA role state machine, every transition, and two machines joined by a simulated link."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pylvs.ha.messages import Kind, Message, PathId, Role, config_digest
from pylvs.ha.state import (
    TRANSITIONS,
    Action,
    ConfigMismatch,
    HaStateMachine,
    PathChanged,
    PeerSeen,
    Reannounce,
    RoleChanged,
    SendHeartbeat,
    Trigger,
    classify,
    default_dead_time,
)

DIGEST = config_digest("same")
IV = 0.2


def _msg(node: str = "lvs2", role: Role = Role.ACTIVE, prio: int = 100,
         path: PathId = PathId.PUBLIC, epoch: int = 1, digest: bytes = DIGEST) -> Message:
    return Message(kind=Kind.HEARTBEAT, path=path, node_id=node, role=role, priority=prio,
                   interval=IV, epoch=epoch, seq=1, timestamp=0.0, digest=digest)


def _sm(**kw: object) -> HaStateMachine:
    args: dict[str, object] = {"node_id": "lvs1", "priority": 100, "interval": IV,
                               "digest": DIGEST}
    args.update(kw)
    return HaStateMachine(**args)  # type: ignore[arg-type]


def _roles(actions: list[Action]) -> list[tuple[Role, Role]]:
    return [(a.old, a.new) for a in actions if isinstance(a, RoleChanged)]


def test_table_covers_every_role_and_trigger_that_can_happen() -> None:
    timers = {Trigger.DEAD_TIMER, Trigger.PREEMPT_TIMER}
    for role in Role:
        for trigger in Trigger:
            if trigger in timers and role is not Role.BACKUP:
                continue  # only BACKUP arms these timers
            if trigger is Trigger.START and role is not Role.INIT:
                continue
            assert (role, trigger) in TRANSITIONS, (role, trigger)


def test_dead_time_is_vrrp_v3() -> None:
    assert default_dead_time(1.0, 100) == pytest.approx(3.609, abs=1e-3)
    assert default_dead_time(0.1, 100) == pytest.approx(0.361, abs=1e-3)


@pytest.mark.parametrize(
    ("role", "prio", "node", "preempt", "trigger"),
    [
        (Role.ACTIVE, 101, "lvs0", True, Trigger.PEER_ACTIVE_OUTRANKS),
        (Role.ACTIVE, 100, "lvs2", True, Trigger.PEER_ACTIVE_OUTRANKS),  # tie: higher id wins
        (Role.ACTIVE, 100, "lvs0", True, Trigger.PEER_ACTIVE_PREEMPTIBLE),
        (Role.ACTIVE, 99, "lvs9", False, Trigger.PEER_ACTIVE_TOLERATED),
        (Role.BACKUP, 150, "lvs0", True, Trigger.PEER_STANDBY_OUTRANKS),
        (Role.BACKUP, 50, "lvs9", True, Trigger.PEER_STANDBY_OUTRANKED),
        (Role.ACTIVE, 0, "lvs2", True, Trigger.PEER_RESIGNS),
        (Role.FAULT, 200, "lvs2", True, Trigger.PEER_RESIGNS),
    ],
)
def test_classify(role: Role, prio: int, node: str, preempt: bool, trigger: Trigger) -> None:
    assert classify(_msg(node, role, prio), 100, "lvs1", preempt) is trigger


def test_start_is_backup_and_takes_over_after_dead_time_of_silence() -> None:
    sm = _sm()
    out = sm.start(0.0)
    assert _roles(out) == [(Role.INIT, Role.BACKUP)]
    assert SendHeartbeat(role=Role.BACKUP, priority=100) in out
    dead = default_dead_time(IV, 100)
    assert sm.next_deadline() == pytest.approx(IV)
    t, became = 0.0, None
    while t < 2.0 and became is None:
        t = sm.next_deadline() or 2.0
        for a in sm.handle_timer(t):
            if isinstance(a, RoleChanged):
                became = (t, a.new)
    assert became is not None
    assert became[0] == pytest.approx(dead) and became[1] is Role.ACTIVE


def test_heartbeat_on_any_path_keeps_backup_and_resets_dead_timer() -> None:
    sm = _sm(priority=90)
    sm.start(0.0)
    dead = default_dead_time(IV, 90)
    for i in range(1, 20):
        path = PathId.PUBLIC if i < 10 else PathId.PRIVATE  # public cut halfway
        assert _roles(sm.receive(_msg(path=path), i * IV)) == []
        assert _roles(sm.handle_timer(i * IV + 0.01)) == []
    assert sm.dead_at == pytest.approx(19 * IV + dead)
    assert sm.path_alive == {PathId.PUBLIC: False, PathId.PRIVATE: True}
    assert sm.role is Role.BACKUP


def test_priority_zero_from_active_means_take_over_at_once() -> None:
    sm = _sm()
    sm.start(0.0)
    sm.receive(_msg(prio=200), 0.1)
    out = sm.receive(_msg(prio=0, role=Role.INIT), 0.15)
    assert _roles(out) == [(Role.BACKUP, Role.ACTIVE)]
    assert SendHeartbeat(role=Role.ACTIVE, priority=100) in out


def test_stop_sends_priority_zero_and_goes_quiet() -> None:
    sm = _sm()
    sm.start(0.0)
    sm.handle_timer(1.0)
    assert sm.role is Role.ACTIVE
    out = sm.stop(1.1)
    assert out == [RoleChanged(new=Role.INIT, old=Role.ACTIVE, reason="stop"),
                   SendHeartbeat(role=Role.INIT, priority=0)]
    assert sm.next_deadline() is None or sm.send_at is None


def test_preempt_after_delay_and_not_without_preempt() -> None:
    for preempt, delay, expect_at in ((True, 0.0, 0.5), (True, 1.0, 1.5), (False, 0.0, None)):
        sm = _sm(priority=200, preempt=preempt, preempt_delay=delay)
        sm.start(0.4)
        became = None
        t = 0.5
        while t < 3.0 and became is None:
            out = sm.receive(_msg(prio=100, epoch=7), t)  # active peer of lower priority
            out += sm.handle_timer(t)
            if _roles(out):
                became = t
            t = round(t + 0.1, 6)
        assert became == (pytest.approx(expect_at) if expect_at is not None else None), preempt


def test_heard_outranking_peer_cancels_preemption() -> None:
    sm = _sm(priority=200, preempt_delay=1.0)
    sm.start(0.0)
    sm.receive(_msg(prio=100), 0.1)
    assert sm.preempt_at == pytest.approx(1.1)
    sm.receive(_msg(prio=250), 0.2)
    assert sm.preempt_at is None


def test_split_brain_loser_steps_down_winner_reannounces_rate_limited() -> None:
    winner, loser = _sm(node_id="lvs2"), _sm(node_id="lvs1")  # tie on priority: lvs2 wins
    for sm in (winner, loser):
        sm.start(0.0)
        sm.handle_timer(1.0)
        assert sm.role is Role.ACTIVE
    out = loser.receive(_msg("lvs2", Role.ACTIVE, 100), 2.0)
    assert _roles(out) == [(Role.ACTIVE, Role.BACKUP)]
    out = winner.receive(_msg("lvs1", Role.ACTIVE, 100), 2.0)
    assert _roles(out) == [] and any(isinstance(a, Reannounce) for a in out)
    assert next(a.reason for a in out if isinstance(a, Reannounce)).startswith("split brain")
    out = winner.receive(_msg("lvs1", Role.ACTIVE, 100, epoch=1), 2.1)
    assert not any(isinstance(a, Reannounce) for a in out)
    assert SendHeartbeat(role=Role.ACTIVE, priority=100) in out
    out = winner.receive(_msg("lvs1", Role.ACTIVE, 100), 3.0)
    assert any(isinstance(a, Reannounce) for a in out)


def test_split_brain_ignores_preempt_setting() -> None:
    sm = _sm(priority=50, preempt=False)
    sm.start(0.0)
    sm.handle_timer(1.0)
    assert _roles(sm.receive(_msg(prio=60), 1.1)) == [(Role.ACTIVE, Role.BACKUP)]


def test_outranked_standby_defers_to_outranking_standby_at_cold_start() -> None:
    low = _sm(priority=100)
    low.start(0.0)
    for i in range(1, 30):
        low.receive(_msg(role=Role.BACKUP, prio=150), i * IV)
        assert _roles(low.handle_timer(i * IV + 0.001)) == []
    assert low.role is Role.BACKUP


def test_cold_start_takeover_names_the_outranked_standby_not_a_silent_peer() -> None:
    # The start-up log said "BACKUP -> ACTIVE (peer silent on every path)" 40 ms after
    # "peer lvs2 is BACKUP": the reason must say what really happened.
    high = _sm(priority=150)
    high.start(0.0)
    reasons = []
    for i in range(1, 30):
        high.receive(_msg(role=Role.BACKUP, prio=100), i * IV)
        reasons += [a.reason for a in high.handle_timer(i * IV + 0.001)
                    if isinstance(a, RoleChanged)]
    assert high.role is Role.ACTIVE
    assert reasons == ["no active peer: lvs2 is BACKUP prio 100, outranked by us"]
    # Alone at start (nothing heard): the peer is silent, and the reason says so.
    alone = _sm()
    alone.start(0.0)
    alone_reasons = [a.reason for a in alone.handle_timer(default_dead_time(IV, 100))
                     if isinstance(a, RoleChanged)]
    assert alone_reasons == ["peer silent on every path"]


def test_fault_resigns_and_recover_waits_a_full_dead_time() -> None:
    sm = _sm()
    sm.start(0.0)
    sm.handle_timer(1.0)
    out = sm.fault(1.5, "takeover failed")
    assert _roles(out) == [(Role.ACTIVE, Role.FAULT)]
    assert SendHeartbeat(role=Role.FAULT, priority=100) in out
    assert _roles(sm.receive(_msg(prio=0), 1.6)) == []  # a FAULT node never takes over
    assert _roles(sm.recover(2.0)) == [(Role.FAULT, Role.BACKUP)]
    assert sm.dead_at == pytest.approx(2.0 + default_dead_time(IV, 100))
    assert classify(_msg(role=Role.FAULT, prio=100), 100, "lvs9", True) is Trigger.PEER_RESIGNS


def test_backup_hearing_fault_peer_takes_over() -> None:
    sm = _sm()
    sm.start(0.0)
    assert _roles(sm.receive(_msg(role=Role.FAULT), 0.1)) == [(Role.BACKUP, Role.ACTIVE)]


def test_config_mismatch_reported_once_per_digest_and_on_repair() -> None:
    sm = _sm()
    sm.start(0.0)
    other = config_digest("other")
    out1 = sm.receive(_msg(role=Role.BACKUP, digest=other), 0.1)
    out2 = sm.receive(_msg(role=Role.BACKUP, digest=other), 0.2)
    out3 = sm.receive(_msg(role=Role.BACKUP), 0.3)
    mism = [[a for a in o if isinstance(a, ConfigMismatch)] for o in (out1, out2, out3)]
    assert [len(m) for m in mism] == [1, 0, 1]
    assert not mism[0][0].matches and mism[2][0].matches


def test_peer_seen_once_per_run() -> None:
    sm = _sm()
    sm.start(0.0)
    seen = [a for t in range(5) for a in sm.receive(_msg(epoch=1 + t // 3), t * 0.1)
            if isinstance(a, PeerSeen)]
    assert [a.epoch for a in seen] == [1, 2]


def test_dead_time_uses_peer_interval_and_config_override() -> None:
    sm = _sm(priority=100)
    sm.start(0.0)
    m = _msg()
    sm.receive(Message(kind=m.kind, path=m.path, node_id="lvs2", role=Role.ACTIVE, priority=100,
                       interval=1.0, epoch=1, seq=1, timestamp=0.0, digest=DIGEST), 1.0)
    assert sm.dead_at == pytest.approx(1.0 + default_dead_time(1.0, 100))
    fixed = _sm(dead_time=2.5)
    fixed.start(0.0)
    assert fixed.dead_at == 2.5


@dataclass
class _Link:
    """Two machines, a lossless link with per-path cuts and a fixed one-way delay."""

    a: HaStateMachine
    b: HaStateMachine
    delay: float = 0.0005
    cut: set[PathId] = field(default_factory=set)
    alive: dict[str, bool] = field(default_factory=lambda: {"lvs1": True, "lvs2": True})
    log: list[tuple[float, str, Role, Role]] = field(default_factory=list)
    inflight: list[tuple[float, str, Message]] = field(default_factory=list)

    def _handle(self, sm: HaStateMachine, out: list[Action], now: float) -> None:
        other = self.b if sm is self.a else self.a
        for act in out:
            if isinstance(act, RoleChanged):
                self.log.append((now, sm.node_id, act.old, act.new))
            if isinstance(act, SendHeartbeat) and self.alive[sm.node_id]:
                for path in sm.paths:
                    if path not in self.cut:
                        msg = Message(kind=Kind.HEARTBEAT, path=path, node_id=sm.node_id,
                                      role=act.role, priority=act.priority,
                                      interval=sm.interval, epoch=1, seq=1, timestamp=now,
                                      digest=sm.digest)
                        self.inflight.append((now + self.delay, other.node_id, msg))

    def run(self, until: float, now: float) -> float:
        steps = 0
        while now < until and steps < 100_000:
            steps += 1
            cands = [(t, "msg") for t, _, _ in self.inflight]
            for sm in (self.a, self.b):
                d = sm.next_deadline()
                if d is not None and self.alive[sm.node_id]:
                    cands.append((d, sm.node_id))
            if not cands:
                return until
            t, what = min(cands)
            if t > until:
                return until
            now = max(now, t)
            if what == "msg":
                self.inflight.sort(key=lambda x: x[0])
                _, dst, msg = self.inflight.pop(0)
                sm = self.a if dst == "lvs1" else self.b
                if self.alive[dst]:
                    self._handle(sm, sm.receive(msg, now), now)
            else:
                sm = self.a if what == "lvs1" else self.b
                self._handle(sm, sm.handle_timer(now), now)
        return now

    def start(self, sm: HaStateMachine, now: float) -> None:
        self._handle(sm, sm.start(now), now)

    def active(self) -> list[str]:
        return [sm.node_id for sm in (self.a, self.b)
                if sm.role is Role.ACTIVE and self.alive[sm.node_id]]


def _pair(preempt: bool = True) -> _Link:
    return _Link(_sm(node_id="lvs1", priority=200, preempt=preempt), _sm(node_id="lvs2"))


def test_pair_primary_wins_cold_start_and_backup_stays_backup() -> None:
    link = _pair()
    link.start(link.b, 0.0)  # even when the backup starts first ...
    link.start(link.a, 0.01)
    link.run(5.0, 0.01)
    assert link.active() == ["lvs1"]
    assert [entry[1:] for entry in link.log].count(("lvs2", Role.BACKUP, Role.ACTIVE)) == 0


def test_pair_crash_failover_within_dead_time_and_failback() -> None:
    for preempt in (True, False):
        link = _pair(preempt)
        link.start(link.a, 0.0)
        link.start(link.b, 0.0)
        link.run(3.0, 0.0)
        link.alive["lvs1"] = False  # kill -9: silent on every path
        link.run(6.0, 3.0)
        assert link.active() == ["lvs2"]
        took = next(t for t, n, _, new in link.log if n == "lvs2" and new is Role.ACTIVE)
        assert took - 3.0 <= default_dead_time(IV, 100) + 1e-9
        # the primary returns as a new process
        link.a = _sm(node_id="lvs1", priority=200, preempt=preempt)
        link.alive["lvs1"] = True
        link.start(link.a, 6.0)
        link.run(10.0, 6.0)
        assert link.active() == (["lvs1"] if preempt else ["lvs2"])


def test_pair_cutting_one_path_never_fails_over_cutting_both_does() -> None:
    for cut in ({PathId.PUBLIC}, {PathId.PRIVATE}):
        link = _pair()
        link.start(link.a, 0.0)
        link.start(link.b, 0.0)
        link.run(2.0, 0.0)
        link.cut = cut
        link.run(10.0, 2.0)
        assert link.active() == ["lvs1"], cut
        assert link.b.transitions == 1  # INIT -> BACKUP only
    link.cut = {PathId.PUBLIC, PathId.PRIVATE}
    link.run(12.0, 10.0)
    assert sorted(link.active()) == ["lvs1", "lvs2"]  # a real partition: both serve
    link.cut = set()
    link.run(14.0, 12.0)
    assert link.active() == ["lvs1"]  # healed: exactly one


def test_pair_clean_stop_hands_over_within_one_way_delay() -> None:
    link = _pair()
    link.start(link.a, 0.0)
    link.start(link.b, 0.0)
    link.run(2.0, 0.0)
    link._handle(link.a, link.a.stop(2.0), 2.0)
    link.run(2.1, 2.0)
    took = next(t for t, n, _, new in link.log if n == "lvs2" and new is Role.ACTIVE)
    assert took - 2.0 == pytest.approx(link.delay)


def test_path_changed_reported() -> None:
    sm = _sm()
    sm.start(0.0)
    out = sm.receive(_msg(path=PathId.PRIVATE), 0.1)
    assert PathChanged(path=PathId.PRIVATE, alive=True) in out
    out = sm.handle_timer(0.1 + default_dead_time(IV, 100))
    assert PathChanged(path=PathId.PRIVATE, alive=False) in out


def test_active_reannounces_when_peer_returns_after_silence() -> None:
    sm = _sm(priority=200)
    sm.start(0.0)
    sm.handle_timer(1.0)
    assert sm.role is Role.ACTIVE
    # the peer is heard for the first time (it may have served while we could not hear it)
    out = sm.receive(_msg(role=Role.BACKUP), 1.1)
    assert any(isinstance(a, Reannounce) for a in out)
    out = sm.receive(_msg(role=Role.BACKUP), 1.2)  # steady state: nothing
    assert not any(isinstance(a, Reannounce) for a in out)
    sm.handle_timer(5.0)  # silent on every path again
    assert not any(sm.path_alive.values())
    out = sm.receive(_msg(role=Role.BACKUP, path=PathId.PRIVATE), 5.1)
    assert any(isinstance(a, Reannounce) for a in out)
