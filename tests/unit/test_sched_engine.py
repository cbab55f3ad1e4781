"""The schedulers inside the real engine: every SYN's server matches the reference model.

This checks the engine's side of the scheduler contract (list order, add_dest / del_dest /
upd_dest calls, last_weight, the trash) on the packet path.  The connection counters are the
engine's business: after each packet the model takes them from ``Engine.services()``.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP

from pylvs.engine import Engine
from tests.support.sched_model import SVC_F_SCHED1, SVC_F_SCHED2, Dest, Key, Service

VIP = "198.18.0.100"
RS = [f"198.19.0.{11 + i}" for i in range(6)]
FLAG_NAMES = {SVC_F_SCHED1: "fallback", SVC_F_SCHED2: "port"}


def ip_int(a: str) -> int:
    p = [int(x) for x in a.split(".")]
    return p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]


def run(name: str, flags: int, seed: int, steps: int) -> None:
    r = random.Random(seed)
    eng = Engine()
    names = tuple(
        f"{name}-{FLAG_NAMES[bit]}" for bit in (SVC_F_SCHED1, SVC_F_SCHED2) if flags & bit
    )
    svc = eng.add_service("tcp", VIP, 80, scheduler=name, flags=names, mh_table_size=251)
    model = Service(name, flags, 251)
    keys: dict[str, object] = {}
    dests: dict[str, Dest] = {}
    now = 100.0
    for _ in range(steps):
        x = r.random()
        rs = r.choice(RS)
        if x < 0.15 and rs not in keys:
            w = r.choice([0, 1, 2, 3, 5])
            keys[rs] = eng.add_server(svc, rs, 8080, weight=w)
            dests[rs] = model.add(ip_int(rs), 8080, w)
        elif x < 0.25 and rs in keys:
            w = r.choice([0, 1, 2, 4])
            eng.edit_server(keys[rs], weight=w)  # type: ignore[arg-type]
            model.edit(dests[rs], w)
        elif x < 0.30 and rs in keys:
            eng.remove_server(keys.pop(rs))  # type: ignore[arg-type]
            model.remove(dests.pop(rs))
        else:
            client = f"198.18.0.{r.randrange(2, 250)}"
            sport = r.randrange(1024, 65535)
            syn = bytes(IP(src=client, dst=VIP) / TCP(sport=sport, dport=80, flags="S"))
            out = eng.process(syn, now)
            want = model.schedule(Key(ip_int(client), ip_int(VIP), sport, 80), now)
            # no server: a drop or an ICMP port unreachable back to the client
            got = None if out is None or IP(out).dst not in RS else IP(out).dst
            assert got == (None if want is None else str(IPv4Address(want.addr)))
            now += 0.01
        # the counters and OVERLOAD are the engine's: copy them into the model
        for info in eng.services()[0].servers:
            d = dests[info.key.address]
            d.active, d.inactive, d.overload = (
                info.active_conns,
                info.inactive_conns,
                info.overloaded,
            )
            assert (d.weight, d.last_weight) == (info.weight, info.last_weight)


CASES = [
    ("rr", 0),
    ("wrr", 0),
    ("lc", 0),
    ("wlc", 0),
    ("sed", 0),
    ("nq", 0),
    ("fo", 0),
    ("ovf", 0),
    ("dh", 0),
    ("sh", 0),
    ("sh", SVC_F_SCHED1 | SVC_F_SCHED2),
    ("mh", 0),
    ("mh", SVC_F_SCHED1 | SVC_F_SCHED2),
    ("lblc", 0),
    ("lblcr", 0),
]


@pytest.mark.parametrize(("name", "flags"), CASES)
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_engine_schedules_like_the_model(name: str, flags: int, seed: int) -> None:
    run(name, flags, seed, 60)
