"""Property tests: the C schedulers against the Python reference models, choice by choice.

Each example is a random sequence of operations — add / edit / remove a server, a new
connection (scheduled, then bound as active or inactive as IPVS would), a connection close, a
time step, a timer tick — replayed on both sides.  Every scheduling decision, and after every
operation each server's counters and OVERLOAD flag, must agree.
"""

from __future__ import annotations

import random
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.sched_harness import CSched
from tests.support.sched_model import (
    LBLC,
    MODELS,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    Dest,
    Key,
    Service,
)

OVERLOAD = 0x2
_rng = random.Random(7)
ADDRS = [0xC6130000 + _rng.randrange(1 << 16) for _ in range(8)]  # real servers
SADDRS = [_rng.randrange(1 << 32) for _ in range(24)]  # clients
DADDRS = [0xC6120000 + _rng.randrange(1 << 16) for _ in range(6)]  # lblc keys
# IPv6 (issue 12): 2001:2:1::/64 servers, clients anywhere in 2001:2::/48, lblc keys in
# 2001:2::/64; two of the keys share their XOR fold, so the cache must compare whole addresses.
_NET6 = 0x20010002 << 96
ADDRS6 = [_NET6 | 1 << 64 | _rng.randrange(1 << 64) for _ in range(8)]
SADDRS6 = [_NET6 | _rng.randrange(1 << 80) for _ in range(24)]
DADDRS6 = [_NET6 | _rng.randrange(1 << 64) for _ in range(5)]
DADDRS6.append(DADDRS6[0] ^ (0x5A5A << 32 | 0x5A5A))  # same fold as DADDRS6[0]

# One operation: ("add" | "edit", server index, weight, (upper, lower)), ("del", server index),
# ("conn", client index, daddr index, sport, proto, active), ("close", which open connection),
# ("time", seconds) or ("tick",).
AddOrEdit = tuple[Literal["add", "edit"], int, int, tuple[int, int]]
Op = (
    AddOrEdit
    | tuple[Literal["del"], int]
    | tuple[Literal["conn"], int, int, int, int, bool]
    | tuple[Literal["close"], int]
    | tuple[Literal["time"], float]
    | tuple[Literal["tick"]]
)


def random_ops(
    seed: int, length: int, palette: tuple[int, ...] = (0, 1, 1, 2, 3, 4, 5, 6)
) -> list[Op]:
    """A reproducible operation sequence: a few servers, then mostly new connections.

    Hypothesis draws the seed and the length (and shrinks the length); drawing every operation
    through hypothesis strategies made generation, not the schedulers, dominate the run time.
    """
    r = random.Random(seed)

    def add_or_edit(kind: Literal["add", "edit"]) -> AddOrEdit:
        upper = r.choice([0, 0, 0, r.randint(1, 5)])
        lower = r.randint(0, upper) if upper and r.random() < 0.5 else 0
        weight = r.choice(palette)
        return (kind, r.randrange(8), weight, (upper, lower))

    seq: list[Op] = [add_or_edit("add") for _ in range(r.randint(1, 6))]
    for _ in range(length):
        x = r.random()
        if x < 0.06:
            seq.append(add_or_edit("add"))
        elif x < 0.12:
            seq.append(add_or_edit("edit"))
        elif x < 0.16:
            seq.append(("del", r.randrange(8)))
        elif x < 0.60:
            seq.append(
                (
                    "conn",
                    r.randrange(24),
                    r.randrange(6),
                    r.randrange(65536),
                    r.choice([6, 6, 17]),
                    r.random() < 0.7,
                )
            )
        elif x < 0.86:
            seq.append(("close", r.randrange(1000)))
        elif x < 0.94:
            seq.append(("time", r.choice([0.5, 20.0, 61.0, 400.0, 2000.0])))
        else:
            seq.append(("tick",))
    return seq


sequences = st.builds(random_ops, st.integers(0, 2**32 - 1), st.integers(1, 200))


class Pair:
    """The same service on both sides, with the id <-> model-dest map."""

    def __init__(self, name: str, flags: int, mh_size: int, expiration: float,
                 af: int = 4) -> None:
        self.c = CSched(name, flags, mh_size, expiration, seed=0x1234, af=af)
        self.m = Service(name, flags, mh_size, expiration, rng_state=0x1234, af=af)
        self.addrs, self.saddrs, self.daddrs = ((ADDRS6, SADDRS6, DADDRS6) if af == 6
                                                else (ADDRS, SADDRS, DADDRS))
        self.by_id: dict[int, Dest] = {}
        self.addr_id: dict[int, int] = {}  # addr -> current id (linked or in the trash)
        self.linked: set[int] = set()
        self.conns: list[tuple[int, bool]] = []
        self.now = 1000.0

    def run(self, op: Op) -> None:
        match op:
            case ("add", index, weight, (upper, lower)):
                addr = self.addrs[index]
                if addr in self.addr_id and self.addr_id[addr] in self.linked:
                    return
                sid = self.c.add(addr, 80, weight, upper, lower)
                d = self.m.add(addr, 80, weight, upper, lower)
                self.by_id[sid] = d
                self.addr_id[addr] = sid
                self.linked.add(sid)
            case ("edit", index, weight, (upper, lower)):
                sid_or_none = self._linked_id(index)
                if sid_or_none is None:
                    return
                self.c.edit(sid_or_none, weight, upper, lower)
                self.m.edit(self.by_id[sid_or_none], weight, upper, lower)
            case ("del", index):
                sid_or_none = self._linked_id(index)
                if sid_or_none is None:
                    return
                self.c.remove(sid_or_none)
                self.m.remove(self.by_id[sid_or_none])
                self.linked.discard(sid_or_none)
            case ("conn", si, di, sport, proto, active):
                key = Key(self.saddrs[si], self.daddrs[di], sport, 80, proto)
                got = self.c.schedule(key.saddr, key.daddr, key.sport, key.dport, key.proto,
                                      self.now)
                want = self.m.schedule(key, self.now)
                assert (None if got is None else self.by_id[got]) is want, (got, want)
                if got is not None:
                    act = active and proto == 6  # UDP conns never become active
                    self.c.open(got, act)
                    self.m.open(self.by_id[got], act)
                    self.conns.append((got, act))
            case ("close", which):
                if self.conns:
                    sid, act = self.conns.pop(which % len(self.conns))
                    self.c.close(sid, act)
                    self.m.close(self.by_id[sid], act)
            case ("time", seconds):
                self.now += seconds
            case _:
                self.c.tick(self.now)
                self.m.tick(self.now)
        self.compare()

    def _linked_id(self, index: int) -> int | None:
        """The id of server *index* if it is in the list now (not removed, not never added)."""
        sid = self.addr_id.get(self.addrs[index])
        return sid if sid is not None and sid in self.linked else None

    def compare(self) -> None:
        assert [self.by_id[i] for i in self.c.order()] == self.m.dests
        for sid in self.linked:
            info, d = self.c.info(sid), self.by_id[sid]
            assert (info["active"], info["inactive"]) == (d.active, d.inactive)
            assert bool(info["flags"] & OVERLOAD) == d.overload
            assert (info["weight"], info["last_weight"]) == (d.weight, d.last_weight)


CASES = [(name, 0, 0, 0.0) for name in MODELS if name not in ("sh", "mh", "lblc", "lblcr")] + [
    ("sh", 0, 0, 0.0),
    ("sh", SVC_F_SCHED1, 0, 0.0),
    ("sh", SVC_F_SCHED1 | SVC_F_SCHED2, 0, 0.0),
    ("mh", 0, 251, 0.0),
    ("mh", SVC_F_SCHED1 | SVC_F_SCHED2, 251, 0.0),
    ("mh", SVC_F_SCHED1, 509, 0.0),
    ("lblc", 0, 0, 0.0),
    ("lblc", 0, 0, 1000.0),
    ("lblcr", 0, 0, 0.0),
    ("lblcr", 0, 0, 300.0),
]


@pytest.mark.parametrize(("name", "flags", "mh_size", "expiration"), CASES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=sequences)
def test_c_matches_model(
    name: str, flags: int, mh_size: int, expiration: float, seq: list[Op]
) -> None:
    pair = Pair(name, flags, mh_size, expiration)
    for op in seq:
        pair.run(op)


@pytest.mark.parametrize(("name", "flags", "mh_size", "expiration"), CASES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=sequences)
def test_c_matches_model_ipv6(
    name: str, flags: int, mh_size: int, expiration: float, seq: list[Op]
) -> None:
    """The same with an IPv6 service: the kernel's AF_INET6 hash keys (the address folded
    by XOR of its words) for sh, dh, mh and the lblc/lblcr cache."""
    pair = Pair(name, flags, mh_size, expiration, af=6)
    for op in seq:
        pair.run(op)
    if name in ("lblc", "lblcr"):
        # the cache, entry by entry (two keys share a fold: one bucket, two entries)
        sched = pair.m.sched
        assert isinstance(sched, LBLC)
        assert pair.c.cache_entries() == sum(len(b) for b in sched.buckets)
        for daddr in pair.daddrs:
            entry = sched.find(daddr)
            got = [pair.by_id[i] for i in pair.c.cache_lookup(daddr)]
            assert got == ([] if entry is None else entry.dests), hex(daddr)


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=15, deadline=None)
@given(seq=sequences, switch_at=st.integers(0, 60))
def test_scheduler_change_midway(name: str, seq: list[Op], switch_at: int) -> None:
    """A scheduler change rebuilds the state from the current list on both sides."""
    pair = Pair("wlc", 0, 0, 0.0)
    for i, op in enumerate(seq):
        if i == switch_at:
            pair.c.set_scheduler(name)
            pair.m.set_scheduler(name)
        pair.run(op)


# Large weights reach the paths small ones never do: mh's weight shift (turns = weight/gcd
# >> rshift), sh's weights beyond the 256 buckets, wrr's long cycles.
BIG = (0, 1, 7, 64, 100, 255, 300, 1000, 65535)


@pytest.mark.parametrize(
    ("name", "flags", "mh_size"),
    [("mh", 0, 251), ("mh", SVC_F_SCHED1, 4093), ("sh", 0, 0), ("wrr", 0, 0), ("twos", 0, 0)],
)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 200))
def test_c_matches_model_large_weights(
    name: str, flags: int, mh_size: int, seed: int, length: int
) -> None:
    pair = Pair(name, flags, mh_size, 0.0)
    for op in random_ops(seed, length, BIG):
        pair.run(op)
