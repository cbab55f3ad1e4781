"""Flood defence (docs/ipvs.md#flood-defence): the kernel's three strategies and their modes,
the amemthresh trigger on table fill, and eviction of the oldest embryonic entry.

The level rules are checked against ``tests.support.defense_model`` by hypothesis; eviction is
also part of the engine-vs-model machine in test_engine_model.py (small-table variants).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs import Defense, Engine
from pylvs.errors import ConfigError
from tests.support.defense_model import DefenseModel

VIP = "198.18.0.100"
RS = ("198.19.0.11", 8080)
FLOOD_NET = (198 << 24) | (18 << 16) | (128 << 8)  # 198.18.128.0/17: spoofed sources


def _csum(b: bytes) -> int:
    s: int = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def segment(src: int | str, sport: int, dst: str, dport: int, flags: int) -> bytes:
    """A bare TCP segment (the engine checks the IP checksum, never the TCP one)."""
    s = src if isinstance(src, int) else int.from_bytes(bytes(map(int, src.split("."))))
    d = int.from_bytes(bytes(map(int, dst.split("."))))
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40, 1, 0, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return ip + struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 0x50, flags, 8192, 0, 0)


SYN, ACK, SYNACK = 0x02, 0x10, 0x12


def spoofed_syn(i: int) -> bytes:
    return segment(FLOOD_NET + (i % 32000) + 1, 1024 + i // 32000, VIP, 80, SYN)


def engine(max_connections: int, **defense: int | bool) -> Engine:
    # The floods here fill the table itself: syncookies (on by default, tested in
    # test_syncookies.py) would answer them without entries, so it is off in this file.
    defense.setdefault("syncookies", 0)
    e = Engine(max_connections=max_connections, defense=Defense(**defense))  # type: ignore[arg-type]
    svc = e.add_service("tcp", VIP, 80, scheduler="rr")
    e.add_server(svc, *RS)
    return e


# ---- the level rules against the model --------------------------------------------------------

MODE = st.integers(0, 3)
STEP = st.one_of(
    st.tuples(st.just("set"), MODE, MODE, MODE),
    st.tuples(st.just("syns"), st.integers(1, 40), st.just(0), st.just(0)),
    st.tuples(st.just("tick"), st.sampled_from([1, 1, 2, 5, 30, 61]), st.just(0), st.just(0)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(amemthresh=st.integers(0, 64), rate=st.integers(1, 5), evict=st.booleans(),
       steps=st.lists(STEP, min_size=1, max_size=25))
def test_levels_and_drop_packet_follow_the_kernel_rules(
        amemthresh: int, rate: int, evict: bool, steps: list[tuple[str, int, int, int]]) -> None:
    """Modes move 1 <-> 2 with the table fill at every tick and every write; drop_packet drops
    exactly the new connections ip_vs_todrop picks; the table never exceeds its size.  What
    is compared with amemthresh: the free slots, plus the half-open entries while eviction is
    on (they are all half-open here)."""
    size = 64
    e = engine(size, amemthresh=amemthresh, am_droprate=rate, evict_embryonic=evict)
    m = DefenseModel(amemthresh=amemthresh, am_droprate=rate)
    m.update(size)
    now, sent = 1.0, 0
    for kind, a, b, c in steps:
        if kind == "set":
            e.set_defense(Defense(drop_entry=a, drop_packet=b, secure_tcp=c,
                                  amemthresh=amemthresh, am_droprate=rate,
                                  evict_embryonic=evict, syncookies=0))
            m.drop_entry, m.drop_packet, m.secure_tcp = a, b, c
            m.update(e.defense().available)
            assert e.defense().available == (e.defense().free_slots
                                             + (e.defense().embryonic if evict else 0))
        elif kind == "syns":
            for _ in range(a):
                before = e.stats().drops["defense_drop_packet"]
                out = e.process(spoofed_syn(sent), now)
                sent += 1
                dropped = e.stats().drops["defense_drop_packet"] - before
                assert dropped == int(m.todrop())
                if evict:
                    assert (out is None) == bool(dropped), "only drop_packet drops"
        else:
            now += a
            info = e.defense()
            removed_before = info.entries_dropped["drop_entry"]
            e.expire(now)
            info = e.defense()
            # the level was taken before drop_entry removed anything in this tick; with
            # eviction on the half-open entries it removes counted as available already
            removed = info.entries_dropped["drop_entry"] - removed_before
            m.update(info.available - (0 if evict else removed))
        info = e.defense()
        got = (info.settings.drop_entry, info.settings.drop_packet, info.settings.secure_tcp,
               info.drop_rate, info.drop_entry_active, info.secure_tcp_active)
        want = (m.drop_entry, m.drop_packet, m.secure_tcp, m.drop_rate, m.drop_entry_on,
                m.secure_on)
        assert got == want
        assert e.stats().connections <= size


# ---- one test per strategy and mode -----------------------------------------------------------


def test_defaults_are_off_with_eviction_on() -> None:
    d = engine(1000).defense()
    assert (d.settings.drop_entry, d.settings.drop_packet, d.settings.secure_tcp) == (0, 0, 0)
    assert d.settings.amemthresh == 100 and d.settings.am_droprate == 10
    assert d.settings.evict_embryonic


@pytest.mark.parametrize("bad", [{"drop_entry": 4}, {"secure_tcp": -1}, {"amemthresh": -1}])
def test_bad_settings_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        engine(10, **bad)


@pytest.mark.parametrize(("mode", "fill", "engaged"), [
    (0, 100, False), (1, 10, False), (1, 95, True), (2, 10, False), (3, 10, True)])
def test_drop_entry_modes(mode: int, fill: int, engaged: bool) -> None:
    """drop_entry engages per mode; engaged, each tick removes SYN_RECV entries from a random
    1/32 of the buckets (all of them over 32 s, give or take the draw)."""
    e = engine(100, drop_entry=mode, amemthresh=10, evict_embryonic=False)
    for i in range(fill):
        e.process(spoofed_syn(i), 0.0)
    e.expire(1.0)
    d = e.defense()
    assert d.drop_entry_active == engaged
    assert d.settings.drop_entry == (2 if mode == 1 and engaged else 1 if mode == 2 else mode)
    for t in range(2, 40):
        e.expire(float(t))
    removed = e.defense().entries_dropped["drop_entry"]
    if engaged:
        # the automatic mode stops once amemthresh slots are free again; mode 3 goes on
        assert e.stats().connections <= (100 - 10 if mode == 1 else fill // 2)
        assert removed + e.stats().connections == fill
    else:
        assert removed == 0 and e.stats().connections == (fill if fill <= 100 else 100)


def test_drop_entry_spares_established_and_fresh_entries() -> None:
    """todrop_entry: ESTABLISHED entries refreshed in the last 60 s stay; so do entries with
    more than 8 incoming packets however idle."""
    e = engine(64, drop_entry=3)
    for i in range(20):
        src = FLOOD_NET + 5000 + i
        e.process(segment(src, 2000, VIP, 80, SYN), 0.0)
        for _ in range(9 if i < 10 else 1):
            e.process(segment(src, 2000, VIP, 80, ACK), 0.0)
    for t in range(1, 60):
        e.expire(float(t))
    assert e.defense().entries_dropped["drop_entry"] == 0  # refreshed less than 60 s ago
    for t in range(60, 200):
        e.expire(float(t))
    left = {c.client_address for c in e.connections()}
    heavy = {f"198.18.{(5000 + i) >> 8 | 128}.{(5000 + i) & 255}" for i in range(10)}
    assert heavy <= left, "entries with more than 8 incoming packets are never dropped"
    assert e.defense().entries_dropped["drop_entry"] == 10


@pytest.mark.parametrize(("mode", "fill", "rate"), [
    (0, 95, 0), (1, 50, 0), (1, 95, 2), (1, 100, 1), (3, 0, 4)])
def test_drop_packet_modes(mode: int, fill: int, rate: int) -> None:
    """rate = amemthresh / (amemthresh - free) in the automatic mode, am_droprate in mode 3;
    established flows are untouched."""
    e = engine(100, evict_embryonic=False)
    e.process(segment("198.18.0.9", 3000, VIP, 80, SYN), 0.0)
    e.process(segment("198.18.0.9", 3000, VIP, 80, ACK), 0.0)
    e.set_defense(Defense(drop_packet=mode, amemthresh=10, am_droprate=4,
                          evict_embryonic=False, syncookies=0))
    for i in range(fill - 1):
        e.process(spoofed_syn(i), 0.0)
    e.expire(1.0)
    assert e.defense().drop_rate == rate
    for _ in range(5):
        assert e.process(segment("198.18.0.9", 3000, VIP, 80, ACK), 1.5) is not None
    outs = [e.process(spoofed_syn(10_000 + i), 1.5) for i in range(12)]
    dropped = e.stats().drops["defense_drop_packet"]
    if rate == 0:
        assert dropped == 0
    else:
        assert dropped == 12 // rate
        # the automatic mode loads the counter with the rate; mode 3 leaves it (at 0 here),
        # so its first new connection is the first dropped, as in the kernel
        first = [True] + [False] * (rate - 1) if mode == 3 else [False] * (rate - 1) + [True]
        assert [o is None for o in outs[:rate]] == first


def test_secure_tcp_uses_the_secure_table_and_timeouts() -> None:
    """secure_tcp (mode 3): SYN_RECV lives 10 s; the server's SYN-ACK moves it to SYNACK
    (100 s); the client's ACK keeps SYNACK and the server's next packet makes it
    ESTABLISHED (8 min at most)."""
    e = engine(64, secure_tcp=3)
    client = "198.18.0.9"
    e.process(segment(client, 4000, VIP, 80, SYN), 0.0)
    [c] = e.connections()
    assert (c.state, c.expires) == ("SYN_RECV", 10.0)
    e.process(segment(RS[0], RS[1], client, 4000, SYNACK), 1.0)
    assert [(c.state, c.expires) for c in e.connections()] == [("SYNACK", 101.0)]
    e.process(segment(client, 4000, VIP, 80, ACK), 2.0)
    assert [c.state for c in e.connections()] == ["SYNACK"]
    e.process(segment(RS[0], RS[1], client, 4000, ACK), 3.0)
    assert [(c.state, c.expires) for c in e.connections()] == [("ESTABLISHED", 483.0)]
    # off again: the normal table and timeouts
    e.set_defense(Defense(secure_tcp=0, syncookies=0))
    e.process(segment(client, 4001, VIP, 80, SYN), 4.0)
    assert ("SYN_RECV", 64.0) in [(c.state, c.expires) for c in e.connections()]


def test_secure_tcp_automatic_mode_follows_the_fill() -> None:
    e = engine(100, secure_tcp=1, amemthresh=10, evict_embryonic=False)
    for i in range(95):
        e.process(spoofed_syn(i), 0.0)
    e.expire(1.0)
    assert e.defense().secure_tcp_active and e.defense().settings.secure_tcp == 2
    e.process(segment("198.18.0.9", 4000, VIP, 80, SYN), 1.0)
    assert [c.expires for c in e.connections() if c.client_address == "198.18.0.9"] == [11.0]
    e.expire(100.0)  # everything expired: idle again
    assert not e.defense().secure_tcp_active and e.defense().settings.secure_tcp == 1


# ---- eviction ---------------------------------------------------------------------------------


def test_a_full_table_evicts_the_oldest_embryonic_entry() -> None:
    """Established conns and templates are never taken; new clients always get in; every
    eviction is counted; the table stays at its size."""
    e = Engine(max_connections=50, defense=Defense(syncookies=0))
    web = e.add_service("tcp", VIP, 80, scheduler="rr")
    e.add_server(web, *RS)
    sticky = e.add_service("tcp", VIP, 443, scheduler="rr", persistence=300)
    e.add_server(sticky, RS[0], 443)
    for i in range(10):  # 10 established conns on a persistent service: 10 templates + 10
        src = f"198.18.0.{i + 1}"
        e.process(segment(src, 5000, VIP, 443, SYN), 0.0)
        e.process(segment(src, 5000, VIP, 443, ACK), 0.0)
    for i in range(5000):
        assert e.process(spoofed_syn(i), 1.0 + i / 1000) is not None
        if i % 500 == 0:  # a fresh client in the middle of the flood gets in and stays
            fresh = f"198.18.1.{i // 500 + 1}"
            assert e.process(segment(fresh, 6000, VIP, 80, SYN), 1.0 + i / 1000) is not None
            assert e.process(segment(fresh, 6000, VIP, 80, ACK), 1.0 + i / 1000) is not None
    st_ = e.stats()
    assert st_.connections == 50 and st_.drops["table_full"] == 0
    conns = e.connections()
    established = [c for c in conns if c.state == "ESTABLISHED"]
    assert len(established) == 20 and sum(c.template for c in conns) == 10
    d = e.defense()
    # 20 entries before the flood, 5000 spoofed and 10 fresh conns after, 50 slots
    assert d.entries_dropped["evict_embryonic"] == 20 + 5000 + 10 - 50
    assert d.entries_dropped["evict_template"] == 0
    assert d.embryonic == 50 - 30


def test_eviction_takes_the_unassured_template_along() -> None:
    """A spoofed SYN to a persistent service leaves a template; when its conn is evicted the
    template, never assured, goes with it, so a flood cannot fill the table with templates."""
    e = Engine(max_connections=10, defense=Defense(syncookies=0))
    svc = e.add_service("tcp", VIP, 443, scheduler="rr", persistence=300)
    e.add_server(svc, RS[0], 443)
    for i in range(100):
        assert e.process(segment(FLOOD_NET + i + 1, 1024, VIP, 443, SYN), 1.0) is not None
    d = e.defense()
    assert e.stats().connections == 10 and e.stats().templates == 5
    # each new (template, conn) pair needs two slots: one old pair goes, template and all
    assert d.entries_dropped["evict_embryonic"] == 95
    assert d.entries_dropped["evict_template"] == 95


def test_without_eviction_a_full_table_locks_new_clients_out() -> None:
    e = engine(20, evict_embryonic=False)
    for i in range(40):
        e.process(spoofed_syn(i), 1.0)
    assert e.process(segment("198.18.0.9", 7000, VIP, 80, SYN), 1.0) is None
    assert e.stats().drops["table_full"] == 21
