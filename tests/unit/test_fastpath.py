"""Flow offload: the engine's half (core/offload.c: which connections it offers and recalls, and
the fold of the kernel's counts into stats, timers and sync) and the TC program
(dataplane/bpf/tc_fastpath.bpf.c) run by the kernel through BPF_PROG_TEST_RUN: its rewrite is
byte for byte the engine's NAT of the same packet (hypothesis, IPv4 and IPv6, both directions),
with valid checksums; SYN, FIN, RST, unknown flows and a TTL the TUN path would answer pass
untouched; the entries' counters count."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether

from pylvs.dataplane.fastpath import BPF_OBJECT, FP_KEY, FP_VAL, FastPath
from pylvs.engine import Engine, OffloadFold
from pylvs.errors import CoreError
from tests.support.packets import build, ip_header_ok, l4_checksum_ok, tcp

VIP, VIP6 = "198.18.0.100", "2001:2::100"
RS, RS6 = "198.19.0.11", "2001:2:1::11"
CLIENT, CLIENT6 = "198.18.1.5", "2001:2::5"
TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
NOW = 1000.0


def _engine(**kw: object) -> Engine:
    e = Engine(max_connections=1000, seed=3, **kw)  # type: ignore[arg-type]
    for vip, rs in ((VIP, RS), (VIP6, RS6)):
        e.add_server(e.add_service("tcp", vip, 80, scheduler="rr"), rs, 8080)
    return e


def _handshake(e: Engine, client: str, cport: int, vip: str = VIP, rs: str = RS) -> None:
    assert e.process(build(tcp(client, cport, vip, 80, "S")), NOW) is not None
    assert e.process(build(tcp(rs, 8080, client, cport, "SA")), NOW) is not None
    assert e.process(build(tcp(client, cport, vip, 80, "A")), NOW) is not None


# ---- the engine's events ----


def test_an_established_connection_is_offered_once_and_recalled_at_its_fin() -> None:
    e = _engine()
    e.offload_enable(64)
    _handshake(e, CLIENT, 40000)
    events, lost = e.offload_events()
    assert not lost
    assert [(ev.op, ev.client, ev.virtual, ev.server) for ev in events] == [
        ("add", (CLIENT, 40000), (VIP, 80), (RS, 8080))]
    # more packets through the engine (from the TUN queue) offer nothing new
    e.process(build(tcp(CLIENT, 40000, VIP, 80, "PA", payload=b"x")), NOW)
    e.process(build(tcp(RS, 8080, CLIENT, 40000, "A")), NOW)
    assert e.offload_events()[0] == []
    e.process(build(tcp(CLIENT, 40000, VIP, 80, "FA")), NOW)
    assert [ev.op for ev in e.offload_events()[0]] == ["del"]
    assert e.offload_stats()["adds"] == 1 and e.offload_stats()["dels"] == 1


def test_expiry_and_disable_recall_and_nothing_is_offered_when_off() -> None:
    e = _engine()
    _handshake(e, CLIENT, 40001)
    assert e.offload_events()[0] == []  # not enabled
    e.offload_enable(64)
    e.process(build(tcp(CLIENT, 40001, VIP, 80, "PA", payload=b"x")), NOW)
    assert [ev.op for ev in e.offload_events()[0]] == ["add"]  # a later packet offers it
    e.expire(NOW + 10_000)  # the ESTABLISHED timeout ran out: freed, so recalled
    assert [ev.op for ev in e.offload_events()[0]] == ["del"]
    _handshake(e, CLIENT, 40002)
    e.offload_disable()
    assert e.offload_events()[0] == []
    e.offload_enable(64)  # the mark was cleared: offered again by its next packet
    e.process(build(tcp(CLIENT, 40002, VIP, 80, "PA", payload=b"y")), NOW)
    assert [ev.op for ev in e.offload_events()[0]] == ["add"]


def test_an_ftp_control_connection_stays_and_ipv6_follows_its_switch() -> None:
    e = Engine(max_connections=1000, seed=3)
    e.add_server(e.add_service("tcp", VIP, 21, scheduler="rr", ftp=True), RS, 21)
    e.add_server(e.add_service("tcp", VIP6, 80, scheduler="rr"), RS6, 8080)
    e.offload_enable(64, ipv6=False)
    for _ in range(2):
        e.process(build(tcp(CLIENT, 40003, VIP, 21, "S")), NOW)
    e.process(build(tcp(RS, 21, CLIENT, 40003, "SA")), NOW)
    e.process(build(tcp(CLIENT, 40003, VIP, 21, "A")), NOW)
    _handshake(e, CLIENT6, 40004, VIP6, RS6)
    assert e.offload_events()[0] == []  # an FTP control conn, and IPv6 while switched off
    e.offload_enable(64, ipv6=True)
    e.process(build(tcp(CLIENT6, 40004, VIP6, 80, "PA", payload=b"z")), NOW)
    assert [ev.server for ev in e.offload_events()[0]] == [(RS6, 8080)]


def test_after_packets_and_a_full_queue() -> None:
    e = _engine()
    e.offload_enable(1, after_packets=4)
    _handshake(e, CLIENT, 40005)  # 2 packets in so far
    assert e.offload_events()[0] == []
    for _ in range(2):
        e.process(build(tcp(CLIENT, 40005, VIP, 80, "PA", payload=b"x")), NOW)
    _handshake(e, CLIENT, 40006)
    for _ in range(2):
        e.process(build(tcp(CLIENT, 40006, VIP, 80, "PA", payload=b"x")), NOW)
    # the queue holds one: the second offer is counted and retried by a later packet
    assert e.offload_stats()["full"] >= 1
    assert len(e.offload_events()[0]) == 1
    e.process(build(tcp(CLIENT, 40006, VIP, 80, "PA", payload=b"x")), NOW)
    assert [ev.client for ev in e.offload_events()[0]] == [(CLIENT, 40006)]


def test_a_del_that_finds_the_queue_full_is_reported_lost() -> None:
    e = _engine()
    e.offload_enable(1)
    _handshake(e, CLIENT, 40007)
    e.process(build(tcp(CLIENT, 40007, VIP, 80, "RA")), NOW)  # DEL behind the unread ADD
    events, lost = e.offload_events()
    assert [ev.op for ev in events] == ["add"] and lost


# ---- the fold ----


def _fold(inbound: bool, pkts: int, nbytes: int, last: float, cport: int = 40010,
          client: str = CLIENT, vip: str = VIP, rs: str = RS) -> OffloadFold:
    if inbound:
        return OffloadFold(True, (client, cport), (vip, 80), pkts, nbytes, last)
    return OffloadFold(False, (rs, 8080), (client, cport), pkts, nbytes, last)


def test_the_fold_adds_stats_refreshes_the_timer_and_says_when_to_drop() -> None:
    e = _engine()
    e.offload_enable(64)
    _handshake(e, CLIENT, 40010)
    svc = e.services()[0]
    before = (svc.stats.inpkts, svc.stats.inbytes, svc.stats.outpkts, svc.stats.outbytes)
    keep = e.offload_fold([_fold(True, 10, 15000, NOW + 500), _fold(False, 7, 700, NOW + 600)])
    assert keep == [True, True]
    svc = e.services()[0]
    assert (svc.stats.inpkts, svc.stats.inbytes, svc.stats.outpkts, svc.stats.outbytes) == (
        before[0] + 10, before[1] + 15000, before[2] + 7, before[3] + 700)
    assert svc.servers[0].stats.inbytes == svc.stats.inbytes
    conn = next(c for c in e.connections() if c.client_port == 40010)
    assert conn.expires == pytest.approx(NOW + 600 + 900) and conn.in_pkts == 2 + 10
    # 500 s after the last packet folded nothing expires; it would 900 s after the handshake
    e.expire(NOW + 1000)
    assert any(c.client_port == 40010 for c in e.connections())
    # a conn that left ESTABLISHED, or is gone, or whose server was removed: drop the entry
    e.process(build(tcp(CLIENT, 40010, VIP, 80, "FA")), NOW + 1000)
    assert e.offload_fold([_fold(True, 1, 52, NOW + 1000)]) == [False]
    assert e.offload_fold([_fold(True, 1, 52, NOW, cport=1)]) == [False]
    assert e.offload_stats()["fold_orphans"] == 1
    _handshake(e, CLIENT, 40011)
    assert e.offload_fold([_fold(True, 0, 0, 0.0, cport=40011)]) == [True]
    e.remove_server(e.services()[0].servers[0].key)
    assert e.offload_fold([_fold(True, 0, 0, 0.0, cport=40011)]) == [False]


def test_the_fold_counts_toward_the_sync_threshold() -> None:
    e = _engine()
    e.set_option("sync_master", True)
    e.offload_enable(64)
    _handshake(e, CLIENT, 40012)
    e.sync_collect()
    # in_pkts 2 -> 2 + 50: crosses 3 + 50k (threshold 3, period 50) once, so one record
    assert e.offload_fold([_fold(True, 50, 5000, NOW, cport=40012)]) == [True]
    blob = e.sync_collect()
    assert len(blob) == 36, blob


# ---- the TC program, run by the kernel ----


@dataclass
class Rig:
    fp: FastPath
    engine: Engine
    ifindex: int


def _ns(name: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    if not BPF_OBJECT.exists():
        pytest.skip("the TC program was not built (no clang)")
    if os.geteuid() != 0:
        pytest.skip("BPF_PROG_TEST_RUN and a network namespace need root")
    from pyroute2 import netns

    # the route lookup needs a namespace where forwarding is on and the addresses route
    name = f"pylvs-fpunit-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        _ns(name, "ip", "link", "add", "fpa", "type", "veth", "peer", "name", "fpb")
        for dev in ("fpa", "fpb", "lo"):
            _ns(name, "ip", "link", "set", dev, "up")
        _ns(name, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        _ns(name, "ip", "addr", "add", "198.18.255.1/15", "dev", "fpa")
        _ns(name, "ip", "addr", "add", "2001:2::1/48", "dev", "fpa", "nodad")
        _ns(name, "ip", "addr", "add", "2001:2:1::1/48", "dev", "fpa", "nodad")
        for addr in (RS, CLIENT, RS6, CLIENT6):
            _ns(name, "ip", "neigh", "replace", addr, "lladdr", "02:00:00:00:00:99", "dev", "fpa",
                "nud", "permanent")
        netns.pushns(name)
        try:
            try:
                fp = FastPath.load(1000)
            except CoreError as exc:  # no bpf(2), no libbpf
                pytest.skip(str(exc))
            import socket

            e = _engine()
            fp.bind(e, 1000, None)
            yield Rig(fp, e, socket.if_nametoindex("fpb"))
            fp.close()
        finally:
            netns.popns()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _frame(pkt: bytes) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02",
                       type=0x86DD if pkt[0] >> 4 == 6 else 0x800)) + pkt


def _entries(rig: Rig, ttl_in: int, ttl_out: int) -> None:
    """Apply the engine's events to the map, then set each entry's TTL step (the engine's own
    NAT takes 1 in and 0 out; the program takes what the TUN path takes, 3 and 2)."""
    from pylvs._core import ffi, lib

    rig.fp.drain()
    for key in _known_keys:
        val = ffi.new("uint8_t[]", FP_VAL.size)
        if lib.lvs_xdp_map_lookup(rig.fp.flows_fd, key, val) == 0:
            fields = list(FP_VAL.unpack(bytes(ffi.buffer(val, FP_VAL.size))))
            fields[3] = ttl_in if fields[2] == 0 else ttl_out
            assert lib.lvs_xdp_map_update(rig.fp.flows_fd, key, FP_VAL.pack(*fields)) == 0


_known_keys: list[bytes] = []


def _key(src: str, sport: int, dst: str, dport: int) -> bytes:
    import ipaddress

    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    pad = b"\0" * (16 - len(s.packed))
    return FP_KEY.pack(s.packed + pad, d.packed + pad, sport.to_bytes(2, "big"),
                       dport.to_bytes(2, "big"), s.version, 6)


def _established(rig: Rig, client: str, cport: int, vip: str, rs: str) -> None:
    _handshake(rig.engine, client, cport, vip, rs)
    _known_keys.extend([_key(client, cport, vip, 80), _key(rs, 8080, client, cport)])
    _entries(rig, 1, 0)


def _norm(pkt: bytes) -> bytes:
    """Checksum fields with 0xffff as 0x0000: one's complement has two zeros, and two correct
    incremental updates may land on either."""
    b = bytearray(pkt)
    v6 = b[0] >> 4 == 6
    offs = [40 + 16] if v6 else [10, 20 + 16]
    for o in offs:
        if b[o:o + 2] == b"\xff\xff":
            b[o:o + 2] = b"\0\0"
    return bytes(b)


flags_st = st.sampled_from(["A", "PA", "UA", "EA", "CA", "PUA"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(v6=st.booleans(), inbound=st.booleans(), flags=flags_st,
       payload=st.binary(max_size=1400), ttl=st.integers(2, 255),
       seq=st.integers(0, 2**32 - 1), ip_id=st.integers(0, 65535))
def test_the_rewrite_is_the_engines_byte_for_byte(rig: Rig, v6: bool, inbound: bool, flags: str,
                                                  payload: bytes, ttl: int, seq: int,
                                                  ip_id: int) -> None:
    client, vip, rs = (CLIENT6, VIP6, RS6) if v6 else (CLIENT, VIP, RS)
    cport = 41000 + (2 if v6 else 0)
    if _key(client, cport, vip, 80) not in _known_keys:
        _established(rig, client, cport, vip, rs)
    p = (tcp(client, cport, vip, 80, flags, payload=payload, ttl=ttl, seq=seq, ip_id=ip_id)
         if inbound else
         tcp(rs, 8080, client, cport, flags, payload=payload, ttl=ttl, seq=seq, ip_id=ip_id))
    pkt = build(p)
    want = rig.engine.process(pkt, NOW)
    assert want is not None
    verdict, out = rig.fp.run(_frame(pkt), rig.ifindex)
    assert verdict == TC_ACT_REDIRECT
    got = out[14:]
    assert _norm(got) == _norm(want)
    assert ip_header_ok(got) and l4_checksum_ok(got)
    assert out[:6] == bytes.fromhex("020000000099")  # the neighbour's MAC, from the lookup


def test_what_passes_untouched_and_the_counters(rig: Rig) -> None:
    _established(rig, CLIENT, 42000, VIP, RS)
    rig.fp.collect()  # the other tests' forwarded packets are folded before we count
    before = rig.fp.program_counters()
    svc_before = rig.engine.services()[0].stats
    for p in (tcp(CLIENT, 42000, VIP, 80, "S"), tcp(CLIENT, 42000, VIP, 80, "FA"),
              tcp(CLIENT, 42000, VIP, 80, "RA"), tcp(CLIENT, 42001, VIP, 80, "A"),
              tcp(CLIENT, 42000, VIP, 81, "A"), tcp(CLIENT, 42000, VIP, 80, "A", ttl=1),
              tcp(CLIENT, 42000, VIP, 80, "A", ip_options=b"\x01\x01\x01\x00")):
        frame = _frame(build(p))
        verdict, out = rig.fp.run(frame, rig.ifindex)
        assert (verdict, out) == (TC_ACT_OK, frame), p
    assert rig.fp.program_counters()["ttl"] == before["ttl"] + 1
    # a forwarded packet counts on its entry: packets, bytes (the IP length), the time
    t0 = time.monotonic()
    pkt = build(tcp(CLIENT, 42000, VIP, 80, "PA", payload=b"q" * 100))
    for _ in range(3):
        assert rig.fp.run(_frame(pkt), rig.ifindex)[0] == TC_ACT_REDIRECT
    from pylvs._core import ffi, lib

    val = ffi.new("uint8_t[]", FP_VAL.size)
    assert lib.lvs_xdp_map_lookup(rig.fp.flows_fd, _key(CLIENT, 42000, VIP, 80), val) == 0
    fields = FP_VAL.unpack(bytes(ffi.buffer(val, FP_VAL.size)))
    pkts, nbytes, last_ns = fields[5], fields[6], fields[7]
    assert (pkts, nbytes) == (3, 3 * len(pkt)) and last_ns / 1e9 >= t0 - 1
    assert rig.fp.program_counters()["forwarded"] >= before["forwarded"] + 3
    # the collector folds them into the engine: the service's in-counters grow by exactly that
    assert rig.fp.collect() >= 2
    svc = rig.engine.services()[0].stats
    assert (svc.inpkts - svc_before.inpkts, svc.inbytes - svc_before.inbytes) == (
        3, 3 * len(pkt))
    # a FIN through the engine recalls it: the entry goes, its last counts folded
    assert rig.fp.run(_frame(pkt), rig.ifindex)[0] == TC_ACT_REDIRECT
    rig.engine.process(build(tcp(CLIENT, 42000, VIP, 80, "FA")), NOW)
    rig.fp.drain()
    assert lib.lvs_xdp_map_lookup(rig.fp.flows_fd, _key(CLIENT, 42000, VIP, 80), val) != 0
    rig.fp.collect()  # the removed entry's last count waits for the collector
    svc2 = rig.engine.services()[0].stats
    assert svc2.inpkts - svc.inpkts == 1 + 1  # the folded remainder and the FIN itself
