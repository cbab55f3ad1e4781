"""Engine API beyond the basics: offload metadata, thresholds, stats, rates, sync, listing."""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.packet import Raw

from pylvs import Engine, ServiceKey, Verdict
from pylvs.engine import SYNC_RECORD_SIZE, scheduler_names
from pylvs.errors import ConfigError

VIP = "198.18.0.100"
CLIENT = "198.18.0.5"
RS1 = "198.19.0.11"
RS2 = "198.19.0.12"
META_CSUM_PARTIAL = 1
META_GSO = 2


def syn(sport: int = 40000, flags: str = "S", dport: int = 80, ttl: int = 64) -> bytes:
    return bytes(IP(src=CLIENT, dst=VIP, ttl=ttl) / TCP(sport=sport, dport=dport, flags=flags))


def pseudo_sum(src: str, dst: str, proto: int, length: int) -> int:
    """Folded, non-inverted pseudo-header sum: what CHECKSUM_PARTIAL leaves in the field."""
    words: tuple[int, ...] = struct.unpack("!4H", socket.inet_aton(src) + socket.inet_aton(dst))
    s = sum(words) + proto + length
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.fixture
def eng() -> Engine:
    return Engine(max_connections=4096)


@pytest.fixture
def svc(eng: Engine) -> ServiceKey:
    s = eng.add_service("tcp", VIP, 80, scheduler="rr")
    eng.add_server(s, RS1, 8080)
    return s


def test_partial_checksum_updates_address_only(eng: Engine, svc: ServiceKey) -> None:
    pkt = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S") / Raw(b"x" * 100)
    b = bytearray(bytes(pkt))
    tcp_len = len(b) - 20
    struct.pack_into("!H", b, 36, pseudo_sum(CLIENT, VIP, 6, tcp_len))
    verdict, out = eng.process_detailed(bytes(b), 1.0, META_CSUM_PARTIAL | META_GSO)
    assert verdict == Verdict.FORWARD
    got = struct.unpack_from("!H", out, 36)[0]
    assert got == pseudo_sum(CLIENT, RS1, 6, tcp_len)
    assert IP(out)[TCP].dport == 8080
    # the reply direction: source address changes
    rep = bytearray(bytes(IP(src=RS1, dst=CLIENT) / TCP(sport=8080, dport=40000, flags="SA")))
    struct.pack_into("!H", rep, 36, pseudo_sum(RS1, CLIENT, 6, 20))
    verdict, back = eng.process_detailed(bytes(rep), 1.0, META_CSUM_PARTIAL)
    assert verdict == Verdict.FORWARD
    assert struct.unpack_from("!H", back, 36)[0] == pseudo_sum(VIP, CLIENT, 6, 20)


def test_ttl_one_answers_time_exceeded(eng: Engine, svc: ServiceKey) -> None:
    inp = syn(ttl=1)
    verdict, out = eng.process_detailed(inp, 1.0)
    assert verdict == Verdict.REPLY
    p = IP(out)
    assert (p.src, p.dst, p[ICMP].type, p[ICMP].code) == (VIP, CLIENT, 11, 0)
    assert out[28:] == inp
    r = IP(out)
    del r.chksum
    del r[ICMP].chksum
    assert bytes(IP(bytes(r))) == out
    assert eng.stats().drops["ttl_exceeded"] == 1
    # the state moved anyway, as in the kernel (xmit comes after ip_vs_set_state)
    assert eng.connections()[0].state == "SYN_RECV"


def test_upper_threshold_sets_overload_lower_clears(eng: Engine) -> None:
    s = eng.add_service("udp", VIP, 53, scheduler="wlc")
    srv = eng.add_server(s, RS1, 53, upper_threshold=2, lower_threshold=1)

    def overloaded() -> bool:
        return eng.services()[0].servers[0].overloaded

    for port in (1, 2):
        assert eng.process(bytes(IP(src=CLIENT, dst=VIP) / UDP(sport=port, dport=53)), 0.0)
    assert overloaded()
    # overloaded and alone: nothing to schedule -> ICMP port unreachable
    v, _ = eng.process_detailed(bytes(IP(src=CLIENT, dst=VIP) / UDP(sport=3, dport=53)), 0.0)
    assert v == Verdict.REPLY
    eng.expire(301.0)
    assert not overloaded()
    eng.edit_server(srv, upper_threshold=0, lower_threshold=0)
    assert eng.services()[0].servers[0].upper_threshold == 0


def test_stats_zero_is_a_baseline_and_rates_follow_ipvs(eng: Engine, svc: ServiceKey) -> None:
    eng.update_rates(0.0)
    eng.process(syn(), 0.5)
    for _ in range(99):
        eng.process(syn(flags="A"), 1.0)
    eng.update_rates(2.0)
    st = eng.stats()
    assert st.totals.inpkts == 100 and st.totals.conns == 1
    # avg = (100 << 9) >> 2 = 12800; shown (12800 + 511) >> 10 = 12
    assert st.rates.inpps == 12
    assert st.rates.inbps == ((4000 << 4) >> 2) + 15 >> 5
    eng.zero_stats()
    st = eng.stats()
    assert st.totals.inpkts == 0 and st.rates.inpps == 0
    eng.process(syn(flags="A"), 3.0)
    assert eng.stats().totals.inpkts == 1
    assert eng.services()[0].servers[0].stats.inpkts == 1


def test_sync_threshold_then_apply_on_backup(svc: ServiceKey, eng: Engine) -> None:
    eng.set_sync_master(True)
    eng.process(syn(), 0.0)
    eng.process(syn(flags="A"), 0.1)
    assert eng.sync_collect() == b""          # ESTABLISHED reached at pkts=2: no sync yet
    eng.process(syn(flags="A"), 0.2)          # pkts == sync_threshold (3)
    blob = eng.sync_collect()
    assert len(blob) == SYNC_RECORD_SIZE
    assert eng.sync_collect() == b""
    backup = Engine(max_connections=64)
    bs = backup.add_service("tcp", VIP, 80, scheduler="rr")
    backup.add_server(bs, RS2, 8080)
    backup.add_server(bs, RS1, 8080)
    assert backup.sync_apply(blob, 5.0) == 1
    (c,) = backup.connections()
    assert (c.state, c.server_address, c.server_port, c.synced) == (
        "ESTABLISHED", RS1, 8080, True)
    assert c.expires == pytest.approx(5.0 + 900)
    out = backup.process(syn(flags="A"), 6.0)
    assert out is not None and IP(out).dst == RS1
    # unknown service on the receiver: skipped and counted
    other = Engine(max_connections=64)
    assert other.sync_apply(blob, 5.0) == 0
    assert other.sync_skipped == 1
    with pytest.raises(ConfigError):
        other.sync_apply(blob[:-1], 5.0)


def test_sync_full_lists_templates_first(eng: Engine) -> None:
    s = eng.add_service("tcp", VIP, 443, scheduler="wlc", persistence=600)
    eng.add_server(s, RS1, 443)
    eng.process(syn(dport=443), 10.0)
    blob = eng.sync_full(now=20.0)
    assert len(blob) == 2 * SYNC_RECORD_SIZE
    flags0 = struct.unpack_from("!I", blob, 4)[0]
    assert flags0 & 0x1000
    timeout0 = struct.unpack_from("!I", blob, 20)[0]
    assert timeout0 == 600 - 10
    backup = Engine(max_connections=64)
    b = backup.add_service("tcp", VIP, 443, scheduler="wlc", persistence=600)
    backup.add_server(b, RS1, 443)
    assert backup.sync_apply(blob, 20.0) == 2
    conns = backup.connections()
    tmpl = next(c for c in conns if c.template)
    conn = next(c for c in conns if not c.template)
    # as in ip_vs_proc_conn, the backup does not link conns to templates
    assert (tmpl.controlled, conn.control) == (0, None)
    assert tmpl.expires == pytest.approx(20.0 + 590)
    assert backup.services()[0].servers[0].persist_conns == 1


def test_templates_travel_with_their_conns(eng: Engine) -> None:
    s = eng.add_service("tcp", VIP, 443, scheduler="wlc", persistence=600)
    eng.add_server(s, RS1, 443)
    eng.set_sync_master(True)
    eng.process(syn(dport=443), 0.0)  # SYN_RECV: not synced, but the template is
    blob = eng.sync_collect()
    assert len(blob) == SYNC_RECORD_SIZE
    assert struct.unpack_from("!I", blob, 4)[0] & 0x1000
    assert struct.unpack_from("!I", blob, 20)[0] == 600
    eng.process(syn(dport=443, flags="A"), 0.1)   # ES, pkts 2: template only
    eng.process(syn(dport=443, flags="A"), 0.2)   # pkts 3: conn and template
    blob = eng.sync_collect()
    assert len(blob) == 3 * SYNC_RECORD_SIZE
    flags = [struct.unpack_from("!I", blob, i * SYNC_RECORD_SIZE + 4)[0] for i in range(3)]
    assert [bool(f & 0x1000) for f in flags] == [True, False, True]


def test_icmp_in_direction_takes_ttl_step(eng: Engine, svc: ServiceKey) -> None:
    eng.process(syn(), 0.0)
    quoted = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="SA")
    err = IP(src="198.18.0.254", dst=VIP, ttl=9) / ICMP(type=3, code=1) / bytes(quoted)[:28]
    out = eng.process(bytes(err), 1.0)
    assert out is not None
    p = IP(out)
    assert (p.dst, p.ttl, p[IPerror].src) == (RS1, 8, RS1)
    # a bad ICMP checksum on a matching error is dropped
    bad = bytearray(bytes(err))
    bad[22] ^= 0x55
    assert eng.process(bytes(bad), 1.0) is None
    assert eng.stats().drops["bad_icmp_checksum"] == 1


def test_listing_and_edits(eng: Engine) -> None:
    assert {"rr", "wlc"} <= set(scheduler_names())
    s = eng.add_service("tcp", VIP, 80, scheduler="rr")
    a = eng.add_server(s, RS1, 80, weight=3)
    eng.add_server(s, RS2, 80, weight=0)
    (info,) = eng.services()
    assert [d.key.address for d in info.servers] == [RS2, RS1]  # newest first
    assert info.servers[0].weight == 0
    eng.edit_server(a, weight=0)
    eng.edit_server(a, weight=5)
    d = next(d for d in eng.services()[0].servers if d.key == a)
    assert (d.weight, d.last_weight) == (5, 5)
    eng.edit_service(s, scheduler="wlc", persistence=100, netmask=24)
    info = eng.services()[0]
    assert (info.scheduler, info.persistence, info.netmask) == ("wlc", 100, "255.255.255.0")
    eng.remove_server(a)
    assert [d.key for d in eng.services()[0].servers] != [a]
    with pytest.raises(ConfigError):
        eng.remove_server(a)
    eng.remove_service(s)
    assert eng.services() == []
    with pytest.raises(ConfigError):
        eng.edit_service(s, scheduler="rr")


def test_batch_mixed_verdicts(eng: Engine, svc: ServiceKey) -> None:
    other = bytes(IP(src=CLIENT, dst="198.18.0.200") / UDP(sport=1, dport=2))
    outs = eng.process_batch([syn(), b"\x45", other, syn(dport=81)], 1.0)
    assert outs[0] is not None and IP(outs[0]).dst == RS1
    assert outs[1] is None
    assert outs[2] == other
    assert outs[3] is None
    assert eng.stats().drops["no_service"] == 1
    assert eng.stats().passes["not_ours"] == 1


def test_timer_wheel_matches_brute_force() -> None:
    """Random UDP traffic and expire() calls: exactly the due entries go, none late."""
    import random

    rng = random.Random(7)
    e = Engine(max_connections=4096)
    s = e.add_service("udp", VIP, 53)
    e.add_server(s, RS1, 53)
    e.set_timeouts(udp=rng.choice([5, 17, 300]))
    pkts = [bytes(IP(src=CLIENT, dst=VIP) / UDP(sport=port, dport=53)) for port in range(1, 300)]
    now = 1000.0
    for _ in range(60):
        e.process_batch(rng.sample(pkts, rng.randrange(1, 40)), now)
        if rng.random() < 0.2:
            e.set_timeouts(udp=rng.choice([1, 5, 17, 300, 1000]))
        now += rng.choice([0.01, 0.3, 1.0, 4.0, 30.0, 700.0])
        due = sum(1 for c in e.connections() if c.expires <= now)
        assert e.expire(now) == due
        assert all(c.expires > now for c in e.connections())


@pytest.mark.parametrize("sched", scheduler_names())
def test_every_scheduler_through_the_engine(sched: str) -> None:
    """Add, schedule, edit, remove and switch schedulers with live conns; counts stay sane."""
    e = Engine(max_connections=1024)
    s = e.add_service("tcp", VIP, 80, scheduler=sched)
    servers = [e.add_server(s, f"198.19.0.{11 + i}", 80, weight=i + 1) for i in range(3)]
    syns = [syn(sport=p) for p in range(1000, 1030)]
    outs = e.process_batch(syns, 1.0)
    assert all(o is not None for o in outs)
    e.edit_server(servers[0], weight=0)
    e.remove_server(servers[1])
    outs = e.process_batch([syn(sport=p) for p in range(2000, 2010)], 2.0)
    assert all(o is not None for o in outs)
    created = 0
    for i, other in enumerate(scheduler_names()):
        e.edit_service(s, scheduler=other)
        v, _ = e.process_detailed(syn(sport=3000 + i), 3.0)
        # dh/sh/mh may hash this client onto the quiesced server: ICMP, no conn
        assert v in (Verdict.FORWARD, Verdict.REPLY)
        created += v == Verdict.FORWARD
    e.add_server(s, "198.19.0.12", 80)  # revived from the trash, with its conns
    assert e.stats().trash_servers == 0
    total = sum(d.active_conns + d.inactive_conns for d in e.services()[0].servers)
    assert total == len(e.connections())
    live = e.stats().connections
    assert live == e.stats().totals.conns and live >= created
    e.remove_service(s)
    assert e.expire(10_000.0) == live
    assert e.stats().connections == 0 and e.stats().trash_servers == 0


def test_c_batch_contract_through_the_handle(eng: Engine, svc: ServiceKey) -> None:
    """The dataplane's view: lvs_engine_process_batch on a strided buffer, in place."""
    from pylvs._core import ffi, lib

    eng.add_service("udp", VIP, 53)                       # no servers: REPLY
    pkts = [syn(), bytes(IP(src=CLIENT, dst=VIP) / UDP(sport=7, dport=53) / Raw(b"q" * 300)),
            bytes(IP(src=CLIENT, dst="198.18.0.7") / UDP(sport=7, dport=9)), b"\x45\x00"]
    stride = 512
    data = ffi.new("uint8_t[]", stride * len(pkts))
    lens = ffi.new("uint32_t[]", [len(p) for p in pkts])
    meta = ffi.new("uint8_t[]", len(pkts))
    verdict = ffi.new("uint8_t[]", len(pkts))
    for i, p in enumerate(pkts):
        ffi.memmove(data + i * stride, p, len(p))
    b = ffi.new("lvs_batch *", {"count": len(pkts), "stride": stride, "data": data,
                                "len": lens, "meta": meta, "verdict": verdict})
    sent = lib.lvs_engine_process_batch(eng._c_handle(), b, 1.0)
    assert list(verdict) == [lib.LVS_VERDICT_FORWARD, lib.LVS_VERDICT_REPLY,
                             lib.LVS_VERDICT_PASS, lib.LVS_VERDICT_DROP]
    assert sent == 2
    fwd = bytes(ffi.buffer(data, lens[0]))
    assert IP(fwd).dst == RS1
    reply = IP(bytes(ffi.buffer(data + stride, lens[1])))
    assert lens[1] == 28 + len(pkts[1]) and reply[ICMP].type == 3 and reply.dst == CLIENT


def test_sync_refresh_moves_state_and_counters(svc: ServiceKey, eng: Engine) -> None:
    eng.set_sync_master(True)
    for flags in ("S", "A", "A"):
        eng.process(syn(flags=flags), 0.0)
    first = eng.sync_collect()
    eng.process(syn(flags="FA"), 1.0)           # CLOSE_WAIT: a non-ES change syncs at once
    second = eng.sync_collect()
    assert len(first) == len(second) == SYNC_RECORD_SIZE
    backup = Engine(max_connections=64)
    bs = backup.add_service("tcp", VIP, 80, scheduler="rr")
    backup.add_server(bs, RS1, 8080)

    def counts() -> tuple[int, int]:
        d = backup.services()[0].servers[0]
        return d.active_conns, d.inactive_conns

    backup.sync_apply(first, 10.0)
    assert backup.connections()[0].state == "ESTABLISHED" and counts() == (1, 0)
    backup.sync_apply(second, 11.0)
    (c,) = backup.connections()
    assert c.state == "CLOSE_WAIT" and c.expires == pytest.approx(11.0 + 60)
    assert counts() == (0, 1)
    assert backup.stats().totals.conns == 0     # synced conns are not counted as scheduled


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_non_finite_or_negative_time_is_refused(bad: float) -> None:
    eng = Engine()
    with pytest.raises(ConfigError, match="now must be"):
        eng.process(b"\x45" + bytes(19), bad)
    with pytest.raises(ConfigError, match="now must be"):
        eng.expire(bad)
