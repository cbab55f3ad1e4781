"""Every field the engine rewrites, checked byte for byte against scapy's own computation.

The expected packet is always built from scratch by scapy (fresh IP, TCP, UDP and ICMP
checksums), so an incremental-update bug in the engine shows up as a byte difference.
References: docs/ipvs.md#nat-rewriting (UDP checksum 0), #new-connections (ICMP port unreachable),
#icmp (ICMP errors, inner header); docs/performance.md#checksums (RFC 1624, ±0).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.packets import (
    VIP,
    EngineView,
    Pkt,
    build,
    checksum16,
    engine_or_skip,
    expected_bytes,
    icmp_error,
    ip_header_ok,
    is_icmp_reply_to,
    l4_checksum_ok,
    tcp,
    ttl_delta,
    udp,
)

RS_TCP = ("198.19.0.11", 8080)
RS_UDP = ("198.19.0.12", 5353)
CLIENT = "198.18.0.9"
ROUTER = "198.18.0.254"

FAST = settings(max_examples=40, deadline=None)


class Rig:
    """An engine with one TCP service (80 -> 8080) and one UDP service (53 -> 5353)."""

    def __init__(self) -> None:
        self.view = EngineView(engine_or_skip())
        eng = self.view.eng
        self.tcp_svc = eng.add_service("tcp", VIP, 80, scheduler="rr")
        eng.add_server(self.tcp_svc, *RS_TCP, weight=1)
        self.udp_svc = eng.add_service("udp", VIP, 53, scheduler="wlc")
        eng.add_server(self.udp_svc, *RS_UDP, weight=1)
        self.now = 1.0

    def process(self, p: Pkt | bytes) -> bytes | None:
        data = p if isinstance(p, bytes) else build(p)
        return self.view.process(data, self.now)

    def expect_rewrite(self, p: Pkt, want: Pkt, direction: str) -> bytes:
        out = self.process(p)
        exp = expected_bytes(want, ttl_delta(direction))
        assert out is not None, f"{p} was dropped"
        assert out == exp, f"\n got {out.hex()}\nwant {exp.hex()}"
        return out

    def open_tcp(self, cport: int, ttl: int = 64) -> None:
        """Client SYN in, server SYN-ACK out: the conn exists afterwards."""
        syn = tcp(CLIENT, cport, VIP, 80, "S", ttl=ttl)
        self.expect_rewrite(syn, replace(syn, dst=RS_TCP[0], dport=RS_TCP[1]), "in")
        synack = tcp(*RS_TCP, CLIENT, cport, "SA", ttl=ttl)
        self.expect_rewrite(synack, replace(synack, src=VIP, sport=80), "out")


@pytest.fixture
def rig() -> Rig:
    return Rig()


def to_rs(p: Pkt, rs: tuple[str, int]) -> Pkt:
    return replace(p, dst=rs[0], dport=rs[1])


def from_vip(p: Pkt, vport: int) -> Pkt:
    return replace(p, src=VIP, sport=vport)


# ---- TCP and UDP, both directions ----------------------------------------------------------


@FAST
@given(cport=st.integers(1, 65535), payload=st.binary(max_size=64),
       flags=st.sampled_from(["A", "PA", "FA", "R", "RA", "U", "", "E"]),
       ttl=st.integers(2, 255), ip_id=st.integers(0, 65535), seq=st.integers(0, 2**32 - 1))
def test_tcp_both_directions(cport: int, payload: bytes, flags: str, ttl: int, ip_id: int,
                             seq: int) -> None:
    r = Rig()
    r.open_tcp(cport, ttl)
    data_in = tcp(CLIENT, cport, VIP, 80, flags, payload=payload, ttl=ttl, ip_id=ip_id, seq=seq)
    r.expect_rewrite(data_in, to_rs(data_in, RS_TCP), "in")
    data_out = tcp(*RS_TCP, CLIENT, cport, flags, payload=payload, ttl=ttl, ip_id=ip_id, seq=seq)
    r.expect_rewrite(data_out, from_vip(data_out, 80), "out")


@pytest.mark.parametrize("options", [b"\x94\x04\x00\x00", b"\x01\x01\x01\x00",
                                     b"\x07\x07\x04" + bytes(4) + b"\x00"])
def test_ip_options_are_kept_and_skipped(rig: Rig, options: bytes) -> None:
    """IPVS finds L4 through the IHL: options (router alert, NOPs, record route) stay as they
    are and the ports behind them are rewritten."""
    syn = tcp(CLIENT, 7100, VIP, 80, "S", ip_options=options)
    rig.expect_rewrite(syn, to_rs(syn, RS_TCP), "in")
    reply = tcp(*RS_TCP, CLIENT, 7100, "SA", ip_options=options)
    rig.expect_rewrite(reply, from_vip(reply, 80), "out")
    query = udp(CLIENT, 7100, VIP, 53, ip_options=options, payload=b"q")
    rig.expect_rewrite(query, to_rs(query, RS_UDP), "in")


@FAST
@given(cport=st.integers(1, 65535), payload=st.binary(max_size=64), zero_in=st.booleans(),
       zero_out=st.booleans(), ttl=st.integers(2, 255))
def test_udp_both_directions(cport: int, payload: bytes, zero_in: bool, zero_out: bool,
                             ttl: int) -> None:
    """A UDP checksum of 0 comes out fully computed, as ip_vs_proto_udp.c does
    (docs/ipvs.md#nat-rewriting)."""
    r = Rig()
    d_in = udp(CLIENT, cport, VIP, 53, payload=payload, ttl=ttl, udp_csum_zero=zero_in)
    r.expect_rewrite(d_in, replace(to_rs(d_in, RS_UDP), udp_csum_zero=False), "in")
    d_out = udp(*RS_UDP, CLIENT, cport, payload=payload, ttl=ttl, udp_csum_zero=zero_out)
    r.expect_rewrite(d_out, replace(from_vip(d_out, 53), udp_csum_zero=False), "out")


def payload_for_zero_sum(rewritten: Pkt) -> bytes:
    """Two payload bytes that make the rewritten segment's checksum sum to exactly ±0."""
    probe = build(replace(rewritten, payload=b"\0\0", ttl=64))
    csum_at = 20 + (16 if rewritten.proto == "tcp" else 6)
    c = int.from_bytes(probe[csum_at : csum_at + 2], "big")
    if rewritten.proto == "udp" and c == 0xFFFF:
        c = 0  # scapy wrote the "computed 0" as 0xFFFF; the word to add is then 0
    return c.to_bytes(2, "big")


@pytest.mark.parametrize("direction", ["in", "out"])
def test_tcp_checksum_zero_boundary(rig: Rig, direction: str) -> None:
    """RFC 1624 eqn 3 gives 0x0000 where RFC 1141 gives 0xFFFF (docs/performance.md#checksums)."""
    rig.open_tcp(5555)
    if direction == "in":
        p = tcp(CLIENT, 5555, VIP, 80, "PA")
        want = to_rs(p, RS_TCP)
    else:
        p = tcp(*RS_TCP, CLIENT, 5555, "PA")
        want = from_vip(p, 80)
    payload = payload_for_zero_sum(want)
    out = rig.expect_rewrite(replace(p, payload=payload), replace(want, payload=payload),
                             direction)
    assert out[36:38] == b"\0\0"


@pytest.mark.parametrize("direction", ["in", "out"])
def test_udp_computed_zero_is_sent_as_ffff(rig: Rig, direction: str) -> None:
    if direction == "in":
        p = udp(CLIENT, 5555, VIP, 53)
        want = to_rs(p, RS_UDP)
    else:
        rig.process(udp(CLIENT, 5555, VIP, 53))
        p = udp(*RS_UDP, CLIENT, 5555)
        want = from_vip(p, 53)
    payload = payload_for_zero_sum(want)
    out = rig.expect_rewrite(replace(p, payload=payload), replace(want, payload=payload),
                             direction)
    assert out[26:28] == b"\xff\xff"


def pseudo_sum(pkt: bytes) -> int:
    """The folded, *not* complemented pseudo-header sum a CHECKSUM_PARTIAL packet carries."""
    ihl = (pkt[0] & 0x0F) * 4
    length = len(pkt) - ihl
    return 0xFFFF & ~checksum16(pkt[12:20] + bytes([0, pkt[9]]) + length.to_bytes(2, "big"))


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("direction", ["in", "out"])
def test_partial_checksum_gets_the_pseudo_header_update_only(rig: Rig, proto: str,
                                                             direction: str) -> None:
    """docs/performance.md#checksums: under CHECKSUM_PARTIAL the L4 field holds the pseudo-header
    sum; an
    address change updates it without the outer complement and a port change not at all, so
    the device that completes the checksum later ends up with a correct one."""
    from pylvs.engine import META_CSUM_PARTIAL

    rs, vport = (RS_TCP, 80) if proto == "tcp" else (RS_UDP, 53)
    make = tcp if proto == "tcp" else udp
    if direction == "in":
        p = make(CLIENT, 8100, VIP, vport, payload=b"partial!")
        want = to_rs(p, rs)
    else:
        rig.process(make(CLIENT, 8100, VIP, vport, payload=b"x"))
        p = make(*rs, CLIENT, 8100, payload=b"partial!")
        want = from_vip(p, vport)
    at = 20 + (16 if proto == "tcp" else 6)
    data = bytearray(build(p))
    data[at : at + 2] = pseudo_sum(bytes(data)).to_bytes(2, "big")
    _verdict, out = rig.view.eng.process_detailed(bytes(data), rig.now, META_CSUM_PARTIAL)
    exp = bytearray(expected_bytes(want, ttl_delta(direction)))
    exp[at : at + 2] = pseudo_sum(bytes(exp)).to_bytes(2, "big")
    assert out == bytes(exp)
    # Completing it as a NIC would (sum over L4 with the field as seed) gives scapy's checksum.
    done = bytearray(out)
    done[at : at + 2] = checksum16(bytes(out[20:])).to_bytes(2, "big")
    assert bytes(done) == expected_bytes(want, ttl_delta(direction))


def test_reply_without_conn_passes_untouched(rig: Rig) -> None:
    for p in (tcp(*RS_TCP, CLIENT, 999, "SA"), udp(*RS_UDP, CLIENT, 999)):
        data = build(p)
        assert rig.process(data) == data


# ---- ICMP errors quoting a connection (docs/ipvs.md#icmp) ----------------------------------------


@FAST
@given(proto=st.sampled_from(["tcp", "udp"]), kind=st.sampled_from([(3, 1), (3, 4), (4, 0),
                                                                   (11, 0)]),
       cport=st.integers(1, 65535), quote_len=st.sampled_from([8, 20, 28]))
def test_icmp_error_inbound(proto: str, kind: tuple[int, int], cport: int,
                            quote_len: int) -> None:
    """A client-side router complains about a VIP->client packet: outer daddr, quoted saddr and
    quoted sport go back to the real server's; IP and ICMP checksums are fresh."""
    r = Rig()
    rs, vport = (RS_TCP, 80) if proto == "tcp" else (RS_UDP, 53)
    if proto == "tcp":
        r.open_tcp(cport)
        quoted = tcp(VIP, vport, CLIENT, cport, "PA", payload=b"hello, client" * 2, ttl=1)
    else:
        r.process(udp(CLIENT, cport, VIP, vport))
        quoted = udp(VIP, vport, CLIENT, cport, payload=b"answer" * 5, ttl=1)
    quoted = replace(quoted, quote_len=quote_len)
    err = icmp_error(ROUTER, VIP, quoted, *kind)
    want = replace(err, dst=rs[0], inner=replace(quoted, src=rs[0], sport=rs[1]))
    check_icmp(r, err, want, "in")


@FAST
@given(proto=st.sampled_from(["tcp", "udp"]), kind=st.sampled_from([(3, 1), (3, 3), (4, 0),
                                                                   (11, 0)]),
       cport=st.integers(1, 65535), from_router=st.booleans())
def test_icmp_error_outbound(proto: str, kind: tuple[int, int], cport: int,
                             from_router: bool) -> None:
    """The real server side complains about a client->RS packet: outer saddr, quoted daddr and
    quoted dport become the VIP's."""
    r = Rig()
    rs, vport = (RS_TCP, 80) if proto == "tcp" else (RS_UDP, 53)
    if proto == "tcp":
        r.open_tcp(cport)
        quoted = tcp(CLIENT, cport, *rs, "PA", payload=b"request", ttl=1)
    else:
        r.process(udp(CLIENT, cport, VIP, vport))
        quoted = udp(CLIENT, cport, *rs, payload=b"query", ttl=1)
    src = "198.19.0.1" if from_router else rs[0]
    err = icmp_error(src, CLIENT, quoted, *kind)
    want = replace(err, src=VIP, inner=replace(quoted, dst=VIP, dport=vport))
    check_icmp(r, err, want, "out")


def check_icmp(r: Rig, err: Pkt, want: Pkt, direction: str) -> None:
    out = r.process(err)
    exp = expected_bytes(want, ttl_delta(direction), inner_l4_from=err.inner)
    assert out is not None
    assert out == exp or r.view.same_but_inner_l4_csum(out, exp), (
        f"\n got {out.hex()}\nwant {exp.hex()}")
    assert ip_header_ok(out) and l4_checksum_ok(out)
    inner = out[28:]
    assert ip_header_ok(inner), "quoted IP header checksum"


def test_icmp_error_with_bad_checksum_is_dropped(rig: Rig) -> None:
    """ip_vs_in_icmp verifies the ICMP checksum and drops on failure (docs/ipvs.md#icmp step 3)."""
    rig.open_tcp(4242)
    err = bytearray(build(icmp_error(ROUTER, VIP, tcp(VIP, 80, CLIENT, 4242, "A"), 3, 1)))
    err[22] ^= 0x55
    assert rig.process(bytes(err)) is None


def test_icmp_not_about_a_conn(rig: Rig) -> None:
    """ICMP to the VIP that is no error about a conn is dropped and counted (the engine's
    documented choice: the VIP is routed into the engine, so passing it would loop); ICMP
    elsewhere that matches nothing passes untouched."""
    no_conn = icmp_error(ROUTER, VIP, tcp(VIP, 80, CLIENT, 1, "A"))
    echo = replace(no_conn, icmp_type=8, inner=None, payload=b"ping")
    for p, reason in ((no_conn, "icmp_no_conn"), (echo, "icmp_other")):
        before = rig.view.drops().get(reason, 0)
        assert rig.process(p) is None
        assert rig.view.drops().get(reason, 0) == before + 1
    for p in (replace(no_conn, dst=CLIENT), replace(echo, dst=CLIENT)):
        data = build(p)
        assert rig.process(data) == data


# ---- TTL (docs/ipvs.md#nat-rewriting: decrement_ttl in ip_vs_xmit.c) -----------------------------


@pytest.mark.parametrize("ttl", [1, 0])
def test_ttl_expiring_in_the_director(rig: Rig, ttl: int) -> None:
    """At TTL <= 1 IPVS drops the packet and answers ICMP time exceeded (type 11, code 0) to
    the sender; the conn is still created and counted, as xmit runs after scheduling."""
    syn = build(tcp(CLIENT, 6000, VIP, 80, "S", ttl=ttl))
    out = rig.process(syn)
    assert rig.view.connections() != [], "the conn exists: xmit fails after scheduling"
    assert rig.view.drops().get("ttl_exceeded") == 1
    assert is_icmp_reply_to(syn, out, 11, 0), "IPVS answers ICMP time exceeded (type 11)"
    # icmp_send answers from the packet's local destination address, here the VIP
    assert out is not None and out[12:16] == syn[16:20]


def test_icmp_error_expiring_in_the_director_gets_no_answer(rig: Rig) -> None:
    """An ICMP error is never answered with another (RFC 1122 3.2.2; icmp_send checks)."""
    rig.open_tcp(6002)
    err = replace(icmp_error(ROUTER, VIP, tcp(VIP, 80, CLIENT, 6002, "A"), 11, 0), ttl=1)
    assert rig.process(err) is None
    assert rig.view.drops().get("ttl_exceeded") == 1


def test_replies_keep_their_ttl(rig: Rig) -> None:
    """Replies are only de-NATed by IPVS; the TTL is the forwarding path's business."""
    rig.open_tcp(6001)
    for ttl in (1, 0):
        p = tcp(*RS_TCP, CLIENT, 6001, "A", ttl=ttl)
        rig.expect_rewrite(p, from_vip(p, 80), "out")


# ---- no destination: ICMP port unreachable (docs/ipvs.md#new-connections step 5) -----------------


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_no_dest_answers_port_unreachable(proto: str) -> None:
    view = EngineView(engine_or_skip())
    view.eng.add_service(proto, VIP, 80, scheduler="wlc")
    p = (tcp(CLIENT, 3333, VIP, 80, "S", payload=b"x" * 30) if proto == "tcp"
         else udp(CLIENT, 3333, VIP, 80, payload=b"x" * 30))
    data = build(p)
    out = view.process(data, 1.0)
    assert is_icmp_reply_to(data, out, 3, 3), "ICMP port unreachable back to the client"
    assert out is not None and out[12:16] == data[16:20], "sent from the VIP"
    assert view.connections() == [], "no conn for a refused packet"


# ---- counters: bytes are IP total lengths (docs/ipvs.md#statistics) ------------------------------


def test_byte_and_packet_counters(rig: Rig) -> None:
    rig.open_tcp(7000)
    sizes_in = [len(build(tcp(CLIENT, 7000, VIP, 80, "S")))]
    sizes_out = [len(build(tcp(*RS_TCP, CLIENT, 7000, "SA")))]
    for n in (0, 10, 1000):
        for p, sizes in ((tcp(CLIENT, 7000, VIP, 80, "PA", payload=bytes(n)), sizes_in),
                         (tcp(*RS_TCP, CLIENT, 7000, "PA", payload=bytes(n)), sizes_out)):
            assert rig.process(p) is not None
            sizes.append(len(build(p)))
    assert rig.view.service_stats(rig.tcp_svc) == (1, 4, 4, sum(sizes_in), sum(sizes_out))


def test_checksum16_known_value() -> None:
    """The helper itself: RFC 1071's worked example sums to 0xddf2, checksum 0x220d."""
    assert checksum16(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D

