"""Known scheduler sequences and properties, checked on the C schedulers (and the models).

The expected values come from the kernel rules (docs/ipvs.md#schedulers), written out here by
hand: the wrr cycles, the dh/sh bucket layouts, the lblc/lblcr rules, mh's minimal disruption.
"""

from __future__ import annotations

import random

import pytest

from tests.support.sched_harness import CSched, SchedError, hsiphash_1u32, siphash24_words
from tests.support.sched_model import (
    LBLC,
    MH_K1,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    Key,
    Service,
    hash_32,
    siphash,
)
from tests.support.sched_model import hsiphash_1u32 as model_hsiphash

OVERLOAD = 0x2
RS = [0xC6130000 + 11 + i for i in range(64)]  # 198.19.0.11, .12, ...


def build(name: str, weights: list[int], **kw: float) -> tuple[CSched, list[int]]:
    """Servers added in order, so the kernel list is reversed: the last one is the head."""
    c = CSched(name, **kw)  # type: ignore[arg-type]
    return c, [c.add(RS[i], 80, w) for i, w in enumerate(weights)]


def picks(c: CSched, n: int, saddr: int = 1, daddr: int = 2) -> list[int | None]:
    return [c.schedule(saddr, daddr, 1000, 80, 6, 0.0) for _ in range(n)]


# ---- hashes ------------------------------------------------------------------------------


def test_siphash_reference_vectors() -> None:
    """The model's SipHash is the published one (SipHash-2-4 vectors, key 00..0f)."""
    k0 = int.from_bytes(bytes(range(8)), "little")
    k1 = int.from_bytes(bytes(range(8, 16)), "little")
    assert siphash(k0, k1, b"") == 0x726FDB47DD0E0E31
    assert siphash(k0, k1, bytes(range(15))) == 0xA129CA6149BE45E5


def test_c_hsiphash_matches_model() -> None:
    r = random.Random(1)
    for _ in range(2000):
        v = r.randrange(1 << 32)
        for k in (2654435761, 2654446892, r.randrange(1 << 64)):
            assert hsiphash_1u32(v, k, k) == model_hsiphash(v, k, k)


def test_c_siphash24_matches_model_and_reference() -> None:
    """The one C SipHash (core/siphash.h) is SipHash-2-4 as published, for every word count the
    SYN proxy hashes (1 to 6 words)."""
    k0 = int.from_bytes(bytes(range(8)), "little")
    k1 = int.from_bytes(bytes(range(8, 16)), "little")
    assert siphash24_words(k0, k1, []) == 0x726FDB47DD0E0E31
    assert siphash24_words(k0, k1, [int.from_bytes(bytes(range(8)), "little")]) == \
        siphash(k0, k1, bytes(range(8)))
    r = random.Random(2)
    for _ in range(2000):
        n = r.randrange(7)
        words = [r.randrange(1 << 64) for _ in range(n)]
        a, b = r.randrange(1 << 64), r.randrange(1 << 64)
        msg = b"".join(w.to_bytes(8, "little") for w in words)
        assert siphash24_words(a, b, words) == siphash(a, b, msg)


def test_hash_32_keeps_high_bits() -> None:
    assert hash_32(1, 8) == 0x61
    assert hash_32(0xFFFFFFFF, 32) == (0xFFFFFFFF * 0x61C88647) & 0xFFFFFFFF


# ---- wrr -----------------------------------------------------------------------------------


def test_wrr_kernel_cycle_4_3_2() -> None:
    # list order A=4, B=3, C=2: add C, B, A; then (re)init as the engine does on -E -s wrr
    c, (cid, bid, aid) = build("wlc", [2, 3, 4])
    c.set_scheduler("wrr")
    name = {aid: "A", bid: "B", cid: "C"}
    seq = "".join(name[p] for p in picks(c, 18) if p is not None)
    assert seq == "AABABCABC" * 2


def test_wrr_gcd_4_2() -> None:
    c, (bid, aid) = build("wlc", [2, 4])
    c.set_scheduler("wrr")
    name = {aid: "A", bid: "B"}
    assert "".join(name[p] for p in picks(c, 9) if p is not None) == "AAB" * 3


def test_wrr_weight_zero_and_overload_skipped() -> None:
    c, (_x, y) = build("wrr", [0, 3])
    assert set(picks(c, 6)) == {y}
    c.edit(y, 3, 1, 0)
    c.open(y, True)  # u_threshold 1 reached: OVERLOAD
    assert picks(c, 2) == [None, None]


def test_wrr_matches_model_on_its_cycle() -> None:
    c, ids = build("wrr", [5, 1, 3, 3])
    m = Service("wrr")
    ds = [m.add(RS[i], 80, w) for i, w in enumerate([5, 1, 3, 3])]
    by = dict(zip(ids, ds, strict=True))
    for _ in range(40):
        got = c.schedule(1, 2, 3, 80, 6, 0.0)
        assert got is not None and by[got] is m.schedule(Key(1, 2, 3, 80), 0.0)


# ---- rr, lc, wlc, sed, nq, fo, ovf -------------------------------------------------------------


def test_rr_resumes_after_removed_pick() -> None:
    c, (a, b, cc) = build("rr", [1, 1, 1])  # list: cc, b, a
    assert picks(c, 2) == [cc, b]
    c.remove(b)  # cursor moves back to cc, so a comes next
    assert picks(c, 3) == [a, cc, a]


def test_least_connection_family_ties_go_to_list_head() -> None:
    for name in ("lc", "wlc", "sed", "nq", "fo", "ovf"):
        c, (_a, b) = build(name, [1, 1])
        assert picks(c, 1) == [b], name  # b was added last: head of the list


def test_wlc_versus_sed_on_inactive_connections() -> None:
    # wlc counts inactive conns (overhead = 256*active + inactive); sed ignores them
    for name, want_second in (("wlc", True), ("sed", False)):
        c, (a, b) = build(name, [1, 1])
        c.open(b, False)
        assert picks(c, 1) == [a if want_second else b], name


def test_nq_prefers_any_idle_server() -> None:
    c, (a, b) = build("nq", [1, 100])
    for _ in range(3):
        c.open(b, True)
    assert picks(c, 1) == [a]  # idle beats a far heavier but busy server


def test_ovf_spills_over_at_weight_plus_one() -> None:
    c, (small, big) = build("ovf", [1, 2])
    got = []
    for _ in range(5):
        p = c.schedule(1, 2, 3, 80, 6, 0.0)
        got.append(p)
        if p is not None:
            c.open(p, True)
    assert got == [big, big, big, small, small]


def test_thresholds_set_and_clear_overload() -> None:
    c, (a,) = build("wlc", [1])
    c.edit(a, 1, 4, 0)  # -x 4, no -y: clears below 3/4 of 4, i.e. at 2 conns
    for _ in range(4):
        c.open(a, True)
    assert c.info(a)["flags"] & OVERLOAD
    assert picks(c, 1) == [None]
    c.close(a, True)
    assert c.info(a)["flags"] & OVERLOAD  # 3*4 < 12 is false
    c.close(a, True)
    assert not c.info(a)["flags"] & OVERLOAD


# ---- dh / sh -----------------------------------------------------------------------------------


def test_dh_buckets_round_robin_in_list_order() -> None:
    c, (x, y, z) = build("dh", [5, 1, 0])
    order = c.order()
    assert order == [z, y, x]
    assert c.table() == [order[i % 3] for i in range(256)]


def test_sh_buckets_weight_proportional() -> None:
    c, (x, y, z) = build("sh", [3, 1, 0])
    head = [z, y, x, x, x]  # z weight 0 still gets one bucket, y one, x three
    assert c.table() == (head * 52)[:256]


def test_sh_same_client_same_server_and_port_flag() -> None:
    c, _ = build("sh", [1, 1, 1, 1])
    for s in range(50):
        client = 0x0A000000 + s * 7919
        first = c.schedule(client, 2, 1000, 80, 6, 0.0)
        assert all(c.schedule(client, 2, p, 80, 6, 0.0) == first for p in range(1000, 1100, 7))
        bucket = hash_32(client, 8)
        assert first == c.table()[bucket]
    cp, _ = build("sh", [1, 1, 1, 1], flags=SVC_F_SCHED2)
    spread = {cp.schedule(0x0A000001, 2, p, 80, 6, 0.0) for p in range(1000, 1200)}
    assert len(spread) == 4  # sh-port spreads one client's ports


def test_sh_fallback_only_with_flag() -> None:
    for flags, expect_none in ((0, True), (SVC_F_SCHED1, False)):
        c, ids = build("sh", [1, 1], flags=flags)
        client = next(s for s in range(1, 1000) if c.table()[hash_32(s, 8)] == ids[0])
        c.edit(ids[0], 0)  # quiesced: still owns its buckets
        got = c.schedule(client, 2, 1, 80, 6, 0.0)
        assert (got is None) == expect_none
        if not expect_none:
            assert got == ids[1]


# ---- mh ------------------------------------------------------------------------------------


def test_mh_removing_one_of_n_moves_about_one_nth() -> None:
    n = 10
    c, ids = build("mh", [1] * n)
    r = random.Random(5)
    clients = [r.randrange(1 << 32) for _ in range(20000)]
    before = [c.schedule(s, 2, 1, 80, 6, 0.0) for s in clients]
    victim = ids[3]
    c.remove(victim)
    after = [c.schedule(s, 2, 1, 80, 6, 0.0) for s in clients]
    moved = sum(1 for b, a in zip(before, after, strict=True) if b != a)
    owned = sum(1 for b in before if b == victim)
    assert all(a != victim for a in after)
    # Maglev is not perfectly minimal: a few keys of other servers move too, but few
    assert owned <= moved < owned + 0.02 * len(clients)
    assert 0.07 < moved / len(clients) < 0.14  # about 1/N = 0.1


def test_mh_quiesce_does_not_reshuffle() -> None:
    c, ids = build("mh", [1, 2, 3])
    table = c.table()
    c.edit(ids[1], 0)
    assert c.table() == table  # last_weight keeps its slots
    client = next(s for s in range(1, 5000) if _mh_slot(s, 4093, table) == ids[1])
    assert c.schedule(client, 2, 1, 80, 6, 0.0) is None
    c.edit(ids[1], 2)
    assert c.table() == table


def _mh_slot(saddr: int, m: int, table: list[int | None]) -> int | None:
    return table[model_hsiphash(saddr, MH_K1, MH_K1) % m]


def test_mh_weights_share_slots() -> None:
    c, ids = build("mh", [1, 3], mh_table_size=4093)
    table = c.table()
    share = table.count(ids[1]) / len(table)
    assert 0.70 < share < 0.80  # 3/4 of the slots


def test_mh_table_size_must_be_prime() -> None:
    assert len(CSched("mh", mh_table_size=251).table()) == 251
    assert len(CSched("mh").table()) == 4093
    for bad in (250, 1, 4096, 262139):
        with pytest.raises(SchedError):
            CSched("mh", mh_table_size=bad)


def test_mh_port_flag_and_fallback() -> None:
    c, ids = build("mh", [1, 1, 1], flags=SVC_F_SCHED1 | SVC_F_SCHED2)
    spread = {c.schedule(0x0A000001, 2, p, 80, 6, 0.0) for p in range(1000, 1100)}
    assert spread == set(ids)
    c.edit(ids[0], 0)
    assert {c.schedule(0x0A000001, 2, p, 80, 6, 0.0) for p in range(1000, 1100)} == set(ids[1:])


# ---- lblc / lblcr --------------------------------------------------------------------------


def test_lblc_half_load_rule() -> None:
    c, (a, b) = build("lblc", [1, 4])  # list: b, a
    daddr = 0xC6120001
    c.open(b, True)  # b: overhead 256/4 = 64; a: 0 -> wlc picks a
    assert c.schedule(1, daddr, 1, 80, 6, 0.0) == a
    c.open(a, True)
    c.open(a, True)  # a: 2 active > weight 1 ...
    # ... and b has 1 active, 1*2 < 4: someone under half load -> reschedule (wlc: b)
    assert c.schedule(1, daddr, 1, 80, 6, 0.0) == b
    assert c.cache_lookup(daddr) == [b]
    # now make the cached b above its weight with nobody under half load: it stays
    for _ in range(4):
        c.open(b, True)  # b: 5 active > 4
    c.edit(a, 1)
    assert c.schedule(1, daddr, 1, 80, 6, 0.0) == b  # a: 2*2 < 1 false, b: 10 < 4 false


def test_lblc_removed_server_is_rescheduled_and_revived() -> None:
    c, (a, b) = build("lblc", [1, 1])
    daddr = 0xC6120002
    first = c.schedule(1, daddr, 1, 80, 6, 0.0)
    assert first == b
    c.remove(b)
    assert c.info(b)["refcnt"] == 1  # the cache entry holds the removed dest
    assert c.schedule(1, daddr, 1, 80, 6, 0.0) == a
    assert c.cache_lookup(daddr) == [a]


def test_lblcr_set_grows_then_shrinks() -> None:
    c, (a, b) = build("lblcr", [1, 4], lblc_expiration=100.0)
    daddr = 0xC6120003
    assert c.schedule(1, daddr, 1, 80, 6, 0.0) == b
    for _ in range(5):
        c.open(b, True)  # b above its weight; a (0 active) under half: replicate
    assert c.schedule(1, daddr, 1, 80, 6, 1.0) == a
    assert c.cache_lookup(daddr) == [a, b]
    # no change for longer than the expiration: the most loaded member (b) is shed
    assert c.schedule(1, daddr, 1, 80, 6, 200.0) == a
    assert c.cache_lookup(daddr) == [a]


def test_lblc_gc_full_sweep_every_30_checks() -> None:
    for name in ("lblc", "lblcr"):
        c, _ = build(name, [1, 1], lblc_expiration=600.0)
        m = Service(name, lblc_expiration=600.0)
        m.add(RS[0], 80, 1)
        m.add(RS[1], 80, 1)
        now = 0.0
        for d in range(50):
            c.schedule(1, 0xC6000000 + d, 1, 80, 6, now)
            m.schedule(Key(1, 0xC6000000 + d, 1, 80), now)
        c.tick(now)
        m.tick(now)
        counts = []
        for _ in range(31):
            now += 60.0
            c.tick(now)
            m.tick(now)
            counts.append(c.cache_entries())
            assert isinstance(m.sched, LBLC)  # LBLCR is one too
            assert c.cache_entries() == m.sched.entries
        assert counts[28] == 50 and counts[29] == 0  # the 30th check sweeps expired entries


def test_lblc_gc_partial_sweep_over_max_size() -> None:
    c, _ = build("lblc", [1])
    m = Service("lblc")
    m.add(RS[0], 80, 1)
    n = 16384 + 300
    for d in range(n):
        c.schedule(1, d * 2654435761 & 0xFFFFFFFF, 1, 80, 6, 0.0)
        m.schedule(Key(1, d * 2654435761 & 0xFFFFFFFF, 1, 80), 0.0)
    for t in (0.0, 400.0):
        c.tick(t)
        m.tick(t)
    assert isinstance(m.sched, LBLC)
    assert c.cache_entries() == m.sched.entries
    removed = n - c.cache_entries()
    assert 400 <= removed < 600  # goal (300 * 4/3 = 400), whole buckets at a time
