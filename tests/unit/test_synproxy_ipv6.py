"""The SYN proxy on an IPv6 service (docs/ipvs.md#syn-proxy): the cookie over the 128-bit
addresses, segments built with the IPv6 pseudo-header, the sequence translation after the
handshake, ICMPv6 quotes, and sync records with the sequence options in both families.

Expected numbers come from the packets the test itself sends (delta = cookie ISN - server ISN),
never from the engine.
"""

from __future__ import annotations

import struct

from scapy.layers.inet import IP, TCP, TCPerror
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPerror6, IPv6, IPv6ExtHdrDestOpt
from scapy.packet import Packet, Raw

from pylvs.engine import SYNC_RECORD_MAX, Engine, sync_record_count, sync_split
from tests.support.packets import l4_checksum_ok

VIP6, CLIENT6, RS6 = "2001:2::100", "2001:2:1::10", "2001:2:2::11"
VIP4, CLIENT4, RS4 = "198.18.0.100", "198.18.1.10", "198.19.0.11"
T0 = 10_000.0
U32 = 0xFFFFFFFF


def _engine() -> Engine:
    e = Engine(max_connections=1000, seed=7)
    svc6 = e.add_service("tcp", VIP6, 80, scheduler="rr", synproxy=True)
    e.add_server(svc6, RS6, 8080)
    svc4 = e.add_service("tcp", VIP4, 80, scheduler="rr", synproxy=True)
    e.add_server(svc4, RS4, 8080)
    return e


def _run(e: Engine, pkt: Packet, now: float = T0) -> bytes:
    out = e.process(bytes(pkt), now)
    assert out is not None, e.stats().drops
    return out


def _handshake6(e: Engine, *, cport: int = 40000, client_isn: int = 1000,
                rs_isn: int = 0xFFFFFF00, data: bytes = b"GET /") -> tuple[int, int]:
    """Client SYN, cookie SYN-ACK, client ACK with data, the engine's SYN to the server, the
    server's SYN-ACK, the kept data on to the server; returns (cookie, rs_isn)."""
    syn = IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=cport, dport=80, flags="S", seq=client_isn,
                                            options=[("MSS", 1440), ("SAckOK", b""),
                                                     ("Timestamp", (111, 0)), ("NOP", None),
                                                     ("WScale", 7)])
    raw = _run(e, syn)
    assert l4_checksum_ok(raw)
    sa = IPv6(raw)
    assert (sa.src, sa.dst, sa.nh, sa.hlim) == (VIP6, CLIENT6, 6, 64)
    assert sa[TCP].flags == "SA" and sa[TCP].ack == client_isn + 1
    cookie = int(sa[TCP].seq)
    our_ts = dict(sa[TCP].options)["Timestamp"][0]
    ack = IPv6(src=CLIENT6, dst=VIP6) / TCP(
        sport=cport, dport=80, flags="PA", seq=client_isn + 1, ack=(cookie + 1) & U32,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (112, our_ts))]) / Raw(data)
    raw = _run(e, ack)
    assert l4_checksum_ok(raw)
    syn2 = IPv6(raw)
    assert (syn2.src, syn2.dst, syn2[TCP].dport, syn2[TCP].flags) == (CLIENT6, RS6, 8080, "S")
    assert syn2[TCP].seq == client_isn and dict(syn2[TCP].options)["MSS"] == 1440
    synack = IPv6(src=RS6, dst=CLIENT6) / TCP(sport=8080, dport=cport, flags="SA", seq=rs_isn,
                                              ack=client_isn + 1,
                                              options=[("Timestamp", (222, 112))])
    raw = _run(e, synack)
    assert l4_checksum_ok(raw)
    third = IPv6(raw)
    assert (third.src, third.dst, third[TCP].dport) == (CLIENT6, RS6, 8080)
    assert third.plen == len(raw) - 40
    assert third[TCP].ack == (rs_isn + 1) & U32 and bytes(third[TCP].payload) == data
    return cookie, rs_isn


def test_ipv6_handshake_then_both_directions_are_translated() -> None:
    e = _engine()
    cookie, rs_isn = _handshake6(e)
    delta = (cookie - rs_isn) & U32
    reply = IPv6(src=RS6, dst=CLIENT6) / TCP(sport=8080, dport=40000, flags="PA",
                                             seq=(rs_isn + 1) & U32, ack=1006) / Raw(b"200")
    raw = _run(e, reply)
    assert l4_checksum_ok(raw)
    out = IPv6(raw)
    assert (out.src, out[TCP].sport) == (VIP6, 80)
    assert out[TCP].seq == (rs_isn + 1 + delta) & U32 == (cookie + 1) & U32
    more = IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40000, dport=80, flags="A", seq=1006,
                                             ack=(cookie + 4) & U32)
    raw = _run(e, more)
    assert l4_checksum_ok(raw)
    assert IPv6(raw)[TCP].ack == (rs_isn + 4) & U32
    (conn,) = e.connections()
    assert conn.synproxy and conn.state == "ESTABLISHED"


def test_ipv6_cookie_covers_the_whole_address() -> None:
    """An ACK from another address of the same /64 (or differing only in the upper 64 bits)
    does not pass the cookie of the SYN it copies."""
    e = _engine()
    syn = IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40000, dport=80, flags="S", seq=1000)
    cookie = int(IPv6(_run(e, syn))[TCP].seq)
    for other in ("2001:2:1::11", "2001:2:9::10"):
        ack = IPv6(src=other, dst=VIP6) / TCP(sport=40000, dport=80, flags="A", seq=1001,
                                              ack=(cookie + 1) & U32)
        assert e.process(bytes(ack), T0) is None
    drops = e.stats().drops  # a wrong H0 also lands outside the window: expired, not bad
    assert drops["synproxy_bad_cookie"] + drops["synproxy_expired_cookie"] == 2
    ok = IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40000, dport=80, flags="A", seq=1001,
                                           ack=(cookie + 1) & U32)
    assert IPv6(_run(e, ok))[TCP].flags == "S"


def test_ipv6_client_data_behind_an_extension_header_is_kept_and_sent() -> None:
    e = _engine()
    syn = IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40001, dport=80, flags="S", seq=7)
    cookie = int(IPv6(_run(e, syn))[TCP].seq)
    ack = (IPv6(src=CLIENT6, dst=VIP6) / IPv6ExtHdrDestOpt()
           / TCP(sport=40001, dport=80, flags="PA", seq=8, ack=(cookie + 1) & U32)
           / Raw(b"hello"))
    assert IPv6(_run(e, ack))[TCP].flags == "S"
    synack = IPv6(src=RS6, dst=CLIENT6) / TCP(sport=8080, dport=40001, flags="SA", seq=500,
                                              ack=8)
    out = IPv6(_run(e, synack))
    assert out.dst == RS6 and out.nh == 60 and out.plen == len(bytes(out)) - 40
    assert bytes(out[TCP].payload) == b"hello" and out[TCP].ack == 501 and out[TCP].dport == 8080
    got = out[TCP].chksum
    del out[TCP].chksum  # scapy recomputes it over the pseudo-header, past the extension
    assert IPv6(bytes(out))[TCP].chksum == got


def test_icmpv6_quote_of_a_proxied_connection_is_translated() -> None:
    e = _engine()
    cookie, rs_isn = _handshake6(e, cport=40002)
    quoted = IPv6(src=CLIENT6, dst=RS6) / TCP(sport=40002, dport=8080, flags="A", seq=1006,
                                              ack=(rs_isn + 1) & U32)
    err = IPv6(src="2001:2:2::1", dst=CLIENT6) / ICMPv6PacketTooBig(mtu=1280) / bytes(quoted)
    out = IPv6(_run(e, err))
    q = out[IPerror6]
    assert (q.src, q.dst) == (CLIENT6, VIP6)
    assert q[TCPerror].dport == 80 and q[TCPerror].ack == (cookie + 1) & U32


def test_sync_records_with_options_in_both_families() -> None:
    """An IPv4 proxied conn is a 72-byte record (36 + the options), an IPv6 one 108 (72 + the
    options); both install on a backup, which then translates as the master does."""
    e = _engine()
    _, rs_isn = _handshake6(e)
    syn = IP(src=CLIENT4, dst=VIP4) / TCP(sport=41000, dport=80, flags="S", seq=50)
    c4 = int(IP(_run(e, syn))[TCP].seq)
    _run(e, IP(src=CLIENT4, dst=VIP4) / TCP(sport=41000, dport=80, flags="A", seq=51,
                                            ack=(c4 + 1) & U32))
    _run(e, IP(src=RS4, dst=CLIENT4) / TCP(sport=8080, dport=41000, flags="SA", seq=9, ack=51))
    blob = e.sync_full(T0)
    sizes = []
    off = 0
    while off < len(blob):
        size = int.from_bytes(blob[off + 2:off + 4], "big") & 0xFFF
        sizes.append((blob[off], size))
        base = 72 if blob[off] & 1 else 36
        assert blob[off + base] == 1 and blob[off + base + 1] == 24  # IPVS_OPT_SEQ_DATA
        assert blob[off + base + 26] == 0x50  # pylvs's optional parameter
        off += size
    assert sorted(sizes) == [(0, 72), (1, 108)] and SYNC_RECORD_MAX == 108
    assert sync_record_count(blob) == 2
    assert [len(c) for c in sync_split(blob, SYNC_RECORD_MAX)] in ([72, 108], [108, 72])
    backup = _engine()
    assert backup.sync_apply(blob, T0) == 2
    assert all(c.synproxy for c in backup.connections())
    reply = IPv6(src=RS6, dst=CLIENT6) / TCP(sport=8080, dport=40000, flags="A",
                                             seq=(rs_isn + 1) & U32, ack=1006)
    assert _run(backup, reply) == _run(e, reply)


def test_a_kernel_record_with_padding_is_parsed() -> None:
    """The kernel writes an IPv4 entry with IPVS_OPT_SEQ_DATA only: 62 bytes, padded to 64
    before the next record; the sequence data is applied and the next record is found."""
    e = _engine()
    entry = struct.pack("!BBHIHHHHII4s4s4s", 0, 6, 62, 0x0200, 1, 42000, 80, 8080, 0, 300,
                        bytes(map(int, CLIENT4.split("."))), bytes(map(int, VIP4.split("."))),
                        bytes(map(int, RS4.split("."))))
    seq = struct.pack("!BB", 1, 24) + struct.pack("!IiiIii", 0, 0, 0, 5000, 1000, 1000)
    second = struct.pack("!BBHIHHHHII4s4s4s", 0, 6, 36, 0, 1, 42001, 80, 8080, 0, 300,
                         bytes(map(int, CLIENT4.split("."))), bytes(map(int, VIP4.split("."))),
                         bytes(map(int, RS4.split("."))))
    blob = entry + seq + b"\0\0" + second
    assert sync_record_count(blob) == 2
    assert e.sync_apply(blob, T0) == 2 and e.sync_skipped == 0
    reply = IP(src=RS4, dst=CLIENT4) / TCP(sport=8080, dport=42000, flags="A", seq=6000, ack=1)
    out = IP(_run(e, reply))
    assert out.src == VIP4 and out[TCP].seq == 7000
