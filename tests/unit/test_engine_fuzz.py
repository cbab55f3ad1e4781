"""Random and mutated packets: the engine never crashes and never emits a wrong packet.

For every input the output must be one of: ``None`` (a drop, counted under exactly one reason),
the input unchanged, an ICMP port unreachable back to the sender, or a *correct rewrite*: the
same packet with only the NAT fields changed (to a configured real server going in, to the
VIP:vport going out), a valid IP header checksum, and an L4 checksum that is valid exactly when
the input's was (an incremental update keeps a corrupt checksum corrupt).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs import Defense
from tests.support.packets import (
    VIP,
    EngineView,
    Pkt,
    build,
    checksum16,
    engine_or_skip,
    icmp_error,
    ip_header_ok,
    is_icmp_reply_to,
    l4_checksum_ok,
    tcp,
    udp,
)

CLIENT = "198.18.0.9"
TCP_RS = {("198.19.0.11", 8080), ("198.19.0.12", 8081)}
UDP_RS = {("198.19.0.13", 5353)}
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def addr(b: bytes) -> str:
    return ".".join(str(x) for x in b)


class FuzzRig:
    """An engine with an established TCP conn and a UDP conn, and the valid seed packets."""

    def __init__(self) -> None:
        self.view = EngineView(engine_or_skip(max_connections=4096))
        eng = self.view.eng
        t = eng.add_service("tcp", VIP, 80, scheduler="rr")
        for rs in sorted(TCP_RS):
            eng.add_server(t, *rs, weight=1)
        u = eng.add_service("udp", VIP, 53, scheduler="wlc")
        for rs in sorted(UDP_RS):
            eng.add_server(u, *rs, weight=1)
        eng.add_service("udp", VIP, 54, scheduler="rr")  # no servers: port unreachable
        self.now = 1.0
        for cport in (1000, 1001):
            self.view.process(build(tcp(CLIENT, cport, VIP, 80, "S")), self.now)
        self.view.process(build(udp(CLIENT, 2000, VIP, 53)), self.now)
        conns = {(c[2], c[5], c[6]) for c in self.view.connections(include_templates=False)}
        rs1000 = next((d, p) for cp, d, p in conns if cp == 1000)
        rs_udp = next((d, p) for cp, d, p in conns if cp == 2000)
        self.seeds: list[Pkt] = [
            tcp(CLIENT, 1000, VIP, 80, "A", payload=b"GET / HTTP/1.0\r\n\r\n"),
            tcp(CLIENT, 1234, VIP, 80, "S"),
            tcp(*rs1000, CLIENT, 1000, "SA"),
            tcp(*rs1000, CLIENT, 1000, "PA", payload=b"HTTP/1.0 200 OK\r\n"),
            udp(CLIENT, 2000, VIP, 53, payload=b"\x12\x34query"),
            udp(CLIENT, 2001, VIP, 54),  # the answer is bigger than the question
            udp(*rs_udp, CLIENT, 2000, payload=b"\x12\x34answer"),
            udp(*rs_udp, CLIENT, 2000, udp_csum_zero=True),
            icmp_error("198.18.0.254", VIP, tcp(VIP, 80, CLIENT, 1000, "A"), 3, 4),
            icmp_error(rs1000[0], CLIENT, tcp(CLIENT, 1000, *rs1000, "A"), 11, 0),
            icmp_error(rs_udp[0], CLIENT, udp(CLIENT, 2000, *rs_udp), 3, 3),
        ]

    def drop_total(self) -> int:
        return sum(self.view.drops().values())

    def check(self, data: bytes) -> None:
        """Feed one input and assert the output is one of the allowed outcomes."""
        before = self.view.drops()
        out = self.view.process(data, self.now)
        after = self.view.drops()
        grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        if out is None:
            assert sum(grown.values()) == 1, f"a drop must count one reason, got {grown}"
            return
        if out == data:
            return
        assert len(out) >= 20 and out[0] >> 4 == 4 and ip_header_ok(out), "emitted bad IPv4"
        if is_icmp_reply_to(data, out, 3, 3) or is_icmp_reply_to(data, out, 11, 0):
            return
        check_rewrite(data, out)


def check_rewrite(data: bytes, out: bytes) -> None:
    """``out`` must be ``data`` with only NAT fields, checksums and the TTL changed."""
    ihl = (data[0] & 0x0F) * 4
    total = struct.unpack("!H", data[2:4])[0]
    # Bytes past the IP total length are link padding: trimmed (as ip_rcv does) or kept.
    assert len(out) in (total, len(data)), "a rewrite keeps the length"
    assert out[total:] in (b"", data[total:]), "padding is trimmed or left alone"
    data, out = data[:total], out[:total]
    assert out[0:8] == data[0:8] and out[9] == data[9], "only TTL/addresses/checksum may change"
    assert data[8] - out[8] in (0, 1), "TTL may drop by one at most"
    proto = data[9]
    if proto == 1:
        check_icmp_rewrite(data, out, ihl)
        return
    sport_dport = ihl
    changed_in = out[16:20] != data[16:20] or out[sport_dport + 2 : sport_dport + 4] != data[
        sport_dport + 2 : sport_dport + 4]
    if changed_in:
        # client -> VIP rewritten to a real server of that service
        assert out[12:16] == data[12:16] and out[ihl : ihl + 2] == data[ihl : ihl + 2]
        assert addr(data[16:20]) == VIP
        rs = (addr(out[16:20]), struct.unpack("!H", out[ihl + 2 : ihl + 4])[0])
        assert rs in (TCP_RS if proto == 6 else UDP_RS), f"rewritten to unknown {rs}"
    else:
        # real server -> client rewritten back to VIP:vport
        assert out[16:20] == data[16:20]
        src = (addr(data[12:16]), struct.unpack("!H", data[ihl : ihl + 2])[0])
        assert src in (TCP_RS | UDP_RS)
        assert addr(out[12:16]) == VIP
        assert struct.unpack("!H", out[ihl : ihl + 2])[0] == (80 if proto == 6 else 53)
    csum_at = ihl + (16 if proto == 6 else 6)
    rest = out[ihl + 4 : csum_at] + out[csum_at + 2 :]
    assert rest == data[ihl + 4 : csum_at] + data[csum_at + 2 :], "L4 beyond ports untouched"
    if proto == 17 and data[ihl + 6 : ihl + 8] == b"\0\0":
        assert l4_checksum_ok(out), "UDP without checksum gets a full one (IPVS)"
    else:
        assert l4_checksum_ok(out) == l4_checksum_ok(data), "checksum validity must carry over"


def check_icmp_rewrite(data: bytes, out: bytes, ihl: int) -> None:
    assert checksum16(out[ihl:]) == 0, "ICMP checksum is recomputed"
    assert out[ihl : ihl + 2] == data[ihl : ihl + 2], "ICMP type/code kept"
    inner = ihl + 8
    iihl = (data[inner] & 0x0F) * 4
    assert ip_header_ok(out[inner:]), "quoted IP header checksum"
    inbound = addr(data[16:20]) == VIP
    ports = inner + iihl
    if inbound:
        # outer dst and quoted src become the real server's, quoted sport its port
        assert out[12:16] == data[12:16] and out[16:20] == out[inner + 12 : inner + 16]
        assert out[inner + 16 : inner + 20] == data[inner + 16 : inner + 20]
        rs = (addr(out[16:20]), struct.unpack("!H", out[ports : ports + 2])[0])
        assert rs in (TCP_RS | UDP_RS), f"quoted source rewritten to unknown {rs}"
        assert out[ports + 2 : ports + 4] == data[ports + 2 : ports + 4]
    else:
        assert addr(out[12:16]) == VIP and addr(out[inner + 16 : inner + 20]) == VIP
        assert out[16:20] == data[16:20]
        vport = struct.unpack("!H", out[ports + 2 : ports + 4])[0]
        assert vport == (80 if data[inner + 9] == 6 else 53)
        assert out[ports : ports + 2] == data[ports : ports + 2]


def fix_ip_csum(b: bytes) -> bytes:
    """``b`` with a correct IP header checksum, when it has a header to sum."""
    ihl = (b[0] & 0x0F) * 4 if b else 0
    if len(b) < 20 or ihl < 20 or len(b) < ihl:
        return b
    h = bytearray(b)
    h[10:12] = b"\0\0"
    h[10:12] = checksum16(bytes(h[:ihl])).to_bytes(2, "big")
    return bytes(h)


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Targeted header damage plus random byte flips, truncation and extension."""
    n = len(seed)

    def setbyte(i: int, v: int) -> bytes:
        b = bytearray(seed)
        if i < n:
            b[i] = v
        return bytes(b)

    flips = st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 255)),
                     min_size=1, max_size=4)

    def apply_flips(fl: list[tuple[int, int]]) -> bytes:
        b = bytearray(seed)
        for i, v in fl:
            b[i] = v
        return bytes(b)

    return st.one_of(
        flips.map(apply_flips),
        flips.map(apply_flips).map(fix_ip_csum),  # damage that survives the IP checksum
        st.integers(0, n).map(lambda k: seed[:k]),
        st.binary(min_size=1, max_size=40).map(lambda tail: seed + tail),
        st.integers(0, 255).map(lambda v: fix_ip_csum(setbyte(0, v))),  # version / IHL
        st.integers(0, 65535).map(
            lambda v: fix_ip_csum(seed[:2] + v.to_bytes(2, "big") + seed[4:])),  # total length
        st.sampled_from([0x2000, 0x0001, 0x2010, 0x4000]).map(
            lambda v: fix_ip_csum(seed[:6] + v.to_bytes(2, "big") + seed[8:])),  # MF, offset, DF
        st.sampled_from([0, 1, 2, 47, 132, 255]).map(lambda v: fix_ip_csum(setbyte(9, v))),
        st.sampled_from([0, 1]).map(lambda v: fix_ip_csum(setbyte(8, v))),  # TTL 0 and 1
        st.just(fix_ip_csum(with_ip_options(seed))),
    )


def with_ip_options(b: bytes) -> bytes:
    """Insert a 4-byte NOP,NOP,NOP,EOL options block, fixing IHL and total length."""
    ihl = (b[0] & 0x0F) * 4
    total = len(b) + 4
    head = bytes([0x40 | (ihl // 4 + 1)]) + b[1:2] + total.to_bytes(2, "big") + b[4:ihl]
    return head + b"\x01\x01\x01\x00" + b[ihl:]


_RIG: list[FuzzRig] = []


def rig() -> FuzzRig:
    """One shared rig: fuzz inputs never create state worth isolating, and it keeps runs fast."""
    if not _RIG:
        _RIG.append(FuzzRig())
    return _RIG[0]


@FUZZ
@given(data=st.binary(min_size=0, max_size=120))
def test_random_bytes(data: bytes) -> None:
    rig().check(data)


@FUZZ
@given(data=st.binary(min_size=20, max_size=80).map(lambda b: b"\x45" + b[1:]))
def test_random_bytes_that_look_like_ipv4(data: bytes) -> None:
    rig().check(data)


@FUZZ
@given(st.data())
def test_mutated_valid_packets(data: Any) -> None:
    r = rig()
    seed = build(data.draw(st.sampled_from(r.seeds)))
    r.check(data.draw(mutations(seed)))


def test_seeds_are_handled() -> None:
    """Sanity: the unmutated seeds are rewritten (or, for the stray SYN, scheduled)."""
    r = rig()
    for p in r.seeds:
        data = build(p)
        out = r.view.process(data, r.now)
        assert out is not None and out != data, p
        r.check(data)


def _reason_after(data: bytes) -> dict[str, int]:
    r = rig()
    before = r.view.drops()
    out = r.view.process(data, r.now)
    after = r.view.drops()
    assert out is None, "expected a drop"
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


CASES: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda b: b[:12],
    "bad_version": lambda b: bytes([0x55]) + b[1:],
    "bad_ihl": lambda b: bytes([0x44]) + b[1:],
    "bad_total_length": lambda b: fix_ip_csum(b[:2] + (len(b) + 10).to_bytes(2, "big") + b[4:]),
    "bad_ip_checksum": lambda b: b[:10] + bytes([b[10] ^ 0xFF]) + b[11:],
    "fragment": lambda b: fix_ip_csum(b[:6] + b"\x20\x00" + b[8:]),
    "unknown_proto": lambda b: fix_ip_csum(b[:9] + bytes([47]) + b[10:]),
}


def test_drop_reasons_by_name() -> None:
    """Each kind of bad input to the VIP is dropped and counted under its own reason."""
    seed = build(rig().seeds[0])
    for reason, damage in CASES.items():
        assert _reason_after(damage(seed)) == {reason: 1}, reason


def test_unknown_protocol_elsewhere_passes() -> None:
    r = rig()
    gre = CASES["unknown_proto"](build(udp(CLIENT, 1, "198.18.0.77", 2)))
    before = r.view.drops().get("not_ours", 0)
    assert r.view.process(gre, r.now) == gre
    assert r.view.drops().get("not_ours", 0) == before + 1


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_batch_equals_one_by_one(data: Any) -> None:
    """process_batch on one engine gives what process gives packet by packet on its twin,
    including the generated replies and packets that grow (ICMP unreachable for a short SYN)."""
    one, many = FuzzRig(), FuzzRig()
    seeds = [build(p) for p in one.seeds]
    batch = data.draw(st.lists(st.sampled_from(seeds).flatmap(mutations), min_size=1,
                               max_size=12))
    singles = [one.view.process(p, one.now) for p in batch]
    assert many.view.eng.process_batch(batch, many.now) == singles
    assert one.view.drops() == many.view.drops()
    assert one.view.connections() == many.view.connections()


# ---- flood-shaped inputs with every defence on (docs/ipvs.md#flood-defence) -------------------

_DEFENDED: list[FuzzRig] = []
FLOOD_FUZZ = settings(FUZZ, max_examples=100)


def defended_rig() -> FuzzRig:
    """The rig with drop_entry, drop_packet and secure_tcp always on and a tiny amemthresh."""
    if not _DEFENDED:
        r = FuzzRig()
        # syncookies off: the rig's model answers SYNs as the table does (test_syncookies.py)
        r.view.eng.set_defense(Defense(drop_entry=3, drop_packet=3, secure_tcp=3,
                                       amemthresh=1, am_droprate=3, syncookies=0))
        _DEFENDED.append(r)
    return _DEFENDED[0]


def _tcp_with_options(src: str, sport: int, flags: str, options: bytes, ack: int,
                      payload: bytes) -> bytes:
    """A TCP segment to the VIP carrying raw ``options`` (padded to a multiple of 4)."""
    options += b"\0" * (-len(options) % 4)
    options = options[:40]
    raw = build(tcp(src, sport, VIP, 80, flags, payload=payload))
    ihl = (raw[0] & 0x0F) * 4
    head = bytearray(raw[ihl : ihl + 20])
    head[8:12] = ack.to_bytes(4, "big")
    head[12] = ((20 + len(options)) // 4) << 4
    body = bytes(head) + options + payload
    ip = bytearray(raw[:ihl])
    ip[2:4] = (ihl + len(body)).to_bytes(2, "big")
    return fix_ip_csum(bytes(ip) + body)


OPTION = st.one_of(
    st.just(b"\x01"), st.just(b"\x00"),
    st.integers(0, 65535).map(lambda m: b"\x02\x04" + m.to_bytes(2, "big")),  # MSS
    st.integers(0, 255).map(lambda w: bytes([3, 3, w])),  # window scale
    st.just(b"\x04\x02"),  # SACK permitted
    st.binary(min_size=8, max_size=8).map(lambda t: b"\x08\x0a" + t),  # timestamps
    st.binary(min_size=8, max_size=32).map(lambda s: bytes([5, 2 + len(s)]) + s),  # SACK
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=6)).map(
        lambda t: bytes([t[0], t[1]]) + t[2]),  # any kind, any (even lying) length
)


@FLOOD_FUZZ
@given(options=st.lists(OPTION, max_size=10).map(b"".join),
       flags=st.sampled_from(["S", "A", "PA", "SA", "FA", "R", ""]),
       src=st.integers(1, 254).map(lambda i: f"198.18.128.{i}"), sport=st.integers(1, 65535),
       ack=st.integers(0, 2**32 - 1), payload=st.binary(max_size=30))
def test_option_soup_with_defences_on(options: bytes, flags: str, src: str, sport: int,
                                      ack: int, payload: bytes) -> None:
    defended_rig().check(_tcp_with_options(src, sport, flags, options, ack, payload))


@FLOOD_FUZZ
@given(src=st.integers(0, 2**15 - 1).map(lambda i: f"198.18.{128 + (i >> 8)}.{i & 255}"),
       sport=st.integers(1024, 65535), ack=st.integers(0, 2**32 - 1),
       payload=st.binary(max_size=40), timestamps=st.booleans())
def test_cookie_shaped_acks_create_nothing(src: str, sport: int, ack: int, payload: bytes,
                                           timestamps: bool) -> None:
    """A bare ACK from an unseen source (what a SYN-cookie check meets) is dropped as
    tcp_no_syn and creates no entry, whatever it carries."""
    r = defended_rig()
    opts = b"\x01\x01\x08\x0a" + ack.to_bytes(4, "big") + b"\0\0\0\0" if timestamps else b""
    data = _tcp_with_options(src, sport, "PA" if payload else "A", opts, ack, payload)
    before = r.view.eng.stats().connections
    r.check(data)
    assert r.view.eng.process(data, r.now) is None
    assert r.view.eng.stats().connections == before


def test_sanitized_engine_survives_a_short_fuzz_run() -> None:
    """The CI-sized run of bench/fuzz.py: 30,000 generated packets through the engine under
    ASan + UBSan, checked packet by packet (``python3 -m bench.fuzz`` runs 10^6)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the sanitized engine")
    from bench import fuzz

    summary = fuzz.run(30_000, seed=7)
    assert summary["packets"] == 30_000
    assert summary["forward"] > 1000 and summary["drop"] > 1000  # it exercised both ways
