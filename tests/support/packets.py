"""Shared packet descriptions and scapy builders for the engine tests.

A test describes a packet once, as a :class:`Pkt`, and from it gets both the wire bytes (built by
scapy, so every checksum is scapy's own computation) and the input of the reference model in
``tests.support.engine_model``.  The model answers with the *expected* output as another
:class:`Pkt`; :func:`expected_bytes` turns that back into bytes for an exact comparison with the
engine.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Any, Literal

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.packet import Raw

__all__ = [
    "CLIENT_NET",
    "CLIENT_NET6",
    "ICMP6_ERROR_TYPES",
    "ICMP_ERROR_TYPES",
    "RS_NET",
    "RS_NET6",
    "TTL_DELTA",
    "VIP",
    "VIP6",
    "EngineView",
    "Pkt",
    "build",
    "checksum16",
    "engine_or_skip",
    "error_types",
    "expected_bytes",
    "icmp6",
    "icmp_error",
    "in6_checksum",
    "ip_header_ok",
    "is_icmp_reply_to",
    "is_v6",
    "l4_checksum_ok",
    "tcp",
    "ttl_delta",
    "udp",
]

Proto = Literal["tcp", "udp", "icmp"]

# Addresses from the test-topology conventions (benchmarking range only).
VIP = "198.18.0.100"
CLIENT_NET = "198.18.0."
RS_NET = "198.19.0."

# The IPv6 side of the test topology (2001:2::/48, the benchmarking range).
VIP6 = "2001:2::100"
CLIENT_NET6 = "2001:2::"
RS_NET6 = "2001:2:1::"

# ICMP types IPVS relates to a connection (docs/ipvs.md#icmp): unreachable, source quench, time
# exceeded; for ICMPv6 every non-informational type (below 128: destination unreachable, packet
# too big, time exceeded, parameter problem...).
ICMP_ERROR_TYPES = (3, 4, 11)
ICMP6_ERROR_TYPES = tuple(range(128))


def is_v6(addr: str) -> bool:
    """True for an IPv6 address text."""
    return ":" in addr


def error_types(addr: str) -> tuple[int, ...]:
    """The ICMP (or ICMPv6, by the address family) error types IPVS translates."""
    return ICMP6_ERROR_TYPES if is_v6(addr) else ICMP_ERROR_TYPES


@dataclass(frozen=True, slots=True)
class Pkt:
    """One IPv4 or IPv6 packet (by its addresses), described by the fields the NAT engine reads
    or writes.  For IPv6 ``ttl`` is the hop limit, ``ip_id`` and ``ip_options`` are unused and
    ``proto == "icmp"`` means ICMPv6.

    For ``proto == "icmp"`` the ports are unused and ``inner`` is the quoted packet (for an
    error) whose first ``quote_len`` bytes past its IP header are carried (RFC 792: 8).
    """

    proto: Proto
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    flags: str = ""  # TCP flags in scapy's letters, e.g. "S", "SA", "FA", "R", ""
    payload: bytes = b""
    ttl: int = 64
    ip_id: int = 1
    seq: int = 1000
    udp_csum_zero: bool = False  # UDP sent without a checksum (field 0)
    icmp_type: int = 0
    icmp_code: int = 0
    inner: Pkt | None = None
    quote_len: int = 8
    ip_options: bytes = b""  # raw IPv4 options, a multiple of 4 bytes

    @property
    def flipped(self) -> Pkt:
        """The same packet with source and destination swapped (a reply's addressing)."""
        return replace(self, src=self.dst, dst=self.src, sport=self.dport, dport=self.sport)


def tcp(src: str, sport: int, dst: str, dport: int, flags: str = "S", **kw: object) -> Pkt:
    """A TCP segment description."""
    return Pkt("tcp", src, dst, sport, dport, flags, **kw)  # type: ignore[arg-type]


def udp(src: str, sport: int, dst: str, dport: int, **kw: object) -> Pkt:
    """A UDP datagram description."""
    return Pkt("udp", src, dst, sport, dport, **kw)  # type: ignore[arg-type]


def icmp_error(src: str, dst: str, quoted: Pkt, icmp_type: int = 3, icmp_code: int = 1) -> Pkt:
    """An ICMP error from ``src`` to ``dst`` quoting the packet ``quoted``."""
    return Pkt("icmp", src, dst, icmp_type=icmp_type, icmp_code=icmp_code, inner=quoted)


def _quoted_bytes(p: Pkt) -> bytes:
    """The quoted part of an ICMP error: the inner packet's IP header plus quote_len bytes."""
    full = build(p)
    ihl = 40 if is_v6(p.src) else (full[0] & 0x0F) * 4
    return full[: ihl + p.quote_len]


def icmp6(src: str, dst: str, hlim: int, icmp_type: int, icmp_code: int, body: bytes) -> bytes:
    """An ICMPv6 message with a 4-byte zero word after the checksum, then ``body``; the
    checksum (over the pseudo-header) from scapy's in6_chksum."""
    head = bytes(IPv6(src=src, dst=dst, hlim=hlim, nh=58, plen=8 + len(body)))
    msg = bytearray(struct.pack("!BBHI", icmp_type, icmp_code, 0, 0) + body)
    msg[2:4] = struct.pack("!H", in6_checksum(58, IPv6(head), bytes(msg)))
    return head + bytes(msg)


def in6_checksum(nh: int, ip: Any, payload: bytes) -> int:
    """scapy's in6_chksum (upper-layer checksum over the IPv6 pseudo-header), typed."""
    return int(in6_chksum(nh, ip, payload))  # type: ignore[no-untyped-call]


def build(p: Pkt) -> bytes:
    """Wire bytes for ``p``; every checksum and length is computed by scapy."""
    v6 = is_v6(p.src)
    ip: Any = (IPv6(src=p.src, dst=p.dst, hlim=p.ttl) if v6
               else IP(src=p.src, dst=p.dst, ttl=p.ttl, id=p.ip_id,
                       options=[IPOption(p.ip_options)] if p.ip_options else []))
    if p.proto == "tcp":
        return bytes(ip / TCP(sport=p.sport, dport=p.dport, flags=p.flags, seq=p.seq,
                              window=8192) / Raw(p.payload))
    if p.proto == "udp":
        if p.udp_csum_zero:
            return bytes(ip / UDP(sport=p.sport, dport=p.dport, chksum=0) / Raw(p.payload))
        return bytes(ip / UDP(sport=p.sport, dport=p.dport) / Raw(p.payload))
    body = _quoted_bytes(p.inner) if p.inner is not None else p.payload
    if v6:
        return icmp6(p.src, p.dst, p.ttl, p.icmp_type, p.icmp_code, body)
    return bytes(ip / ICMP(type=p.icmp_type, code=p.icmp_code) / Raw(body))


def checksum16(data: bytes) -> int:
    """RFC 1071 Internet checksum of ``data`` (what a receiver sums to verify)."""
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_header_ok(pkt: bytes) -> bool:
    """True when the IPv4 header checksum of ``pkt`` verifies (IPv6 has none: True)."""
    if pkt and pkt[0] >> 4 == 6:
        return True
    ihl = (pkt[0] & 0x0F) * 4
    return len(pkt) >= ihl and checksum16(pkt[:ihl]) == 0


def l4_checksum_ok(pkt: bytes) -> bool:
    """True when the TCP/UDP/ICMP checksum of a complete IPv4 packet verifies.

    A UDP checksum of 0 means "none" and counts as valid (over IPv4 only).  An IPv6 packet
    must have no extension headers here.
    """
    if pkt[0] >> 4 == 6:
        nh = pkt[6]
        seg = pkt[40:40 + struct.unpack("!H", pkt[4:6])[0]]
        pseudo6 = pkt[8:40] + struct.pack("!IxxxB", len(seg), nh)
        return checksum16(pseudo6 + seg) == 0
    ihl = (pkt[0] & 0x0F) * 4
    total = struct.unpack("!H", pkt[2:4])[0]
    proto = pkt[9]
    seg = pkt[ihl:total]
    if proto == 1:
        return checksum16(seg) == 0
    if proto == 17 and len(seg) >= 8 and seg[6:8] == b"\0\0":
        return True
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, proto, len(seg))
    return checksum16(pseudo + seg) == 0


def expected_bytes(p: Pkt, ttl_delta: int = 0, inner_l4_from: Pkt | None = None) -> bytes:
    """Bytes the engine should emit for the model's expected packet ``p``.

    ``ttl_delta`` is subtracted from the TTL (the engine's documented TTL handling).  For an ICMP
    error, the quoted IP header gets a fresh checksum but the quoted L4 checksum is the one of
    ``inner_l4_from`` (the quoted packet as received): IPVS (``ip_vs_nat_icmp``) rewrites the
    quoted port without touching the quoted TCP/UDP checksum.
    """
    q = replace(p, ttl=p.ttl - ttl_delta)
    if q.proto != "icmp" or q.inner is None or inner_l4_from is None:
        return build(q)
    quoted = bytearray(_quoted_bytes(q.inner))
    original = _quoted_bytes(inner_l4_from)
    ihl = 40 if is_v6(q.src) else (quoted[0] & 0x0F) * 4
    csum_at = ihl + (16 if q.inner.proto == "tcp" else 6)
    if csum_at + 2 <= len(quoted):
        quoted[csum_at : csum_at + 2] = original[csum_at : csum_at + 2]
    if is_v6(q.src):
        return icmp6(q.src, q.dst, q.ttl, q.icmp_type, q.icmp_code, bytes(quoted))
    ip = IP(src=q.src, dst=q.dst, ttl=q.ttl, id=q.ip_id)
    return bytes(ip / ICMP(type=q.icmp_type, code=q.icmp_code) / Raw(bytes(quoted)))


# ---- the engine under test, seen through the documented API --------------------------------
# The model tests compare plain tuples; this adapter is the one place that knows the shape of
# the engine's info objects.

# TTL handling as IPVS: the in direction is transmitted by IPVS itself, which decrements the
# TTL (ip_vs_xmit.c decrement_ttl); replies are only de-NATed, the forward path does the rest.
TTL_DELTA = {"in": 1, "out": 0, "": 0}


def ttl_delta(direction: str) -> int:
    """How much the engine lowers the TTL of a packet it rewrites in ``direction``."""
    return TTL_DELTA[direction]


def engine_or_skip(**kw: Any) -> Any:
    """A fresh ``pylvs.Engine(**kw)``, or skip the test when the engine is not built yet."""
    try:
        from pylvs.engine import Engine
    except ImportError as exc:  # pragma: no cover - only before the engine lands
        pytest.skip(f"pylvs.engine not available: {exc}")
    return Engine(**kw)


def _stats_tuple(s: Any) -> tuple[int, int, int, int, int]:
    return (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes)


class EngineView:
    """Drives a real engine with the model's vocabulary and reads it back as tuples."""

    def __init__(self, eng: Any) -> None:
        self.eng = eng

    def add_service(self, proto: str, vip: str, vport: int, sched: str, persistence: int,
                    netmask: str) -> Any:
        return self.eng.add_service(proto, vip, vport, scheduler=sched,
                                    persistence=persistence, netmask=netmask)

    def edit_service(self, svc: Any, sched: str, persistence: int, netmask: str) -> None:
        self.eng.edit_service(svc, scheduler=sched, persistence=persistence, netmask=netmask)

    def remove_service(self, svc: Any) -> None:
        self.eng.remove_service(svc)

    def add_server(self, svc: Any, addr: str, port: int, weight: int, upper: int,
                   lower: int) -> Any:
        return self.eng.add_server(svc, addr, port, weight=weight, upper_threshold=upper,
                                   lower_threshold=lower)

    def edit_server(self, srv: Any, weight: int, upper: int, lower: int) -> None:
        self.eng.edit_server(srv, weight=weight, upper_threshold=upper, lower_threshold=lower)

    def remove_server(self, srv: Any) -> None:
        self.eng.remove_server(srv)

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        self.eng.set_timeouts(tcp=tcp, tcpfin=tcpfin, udp=udp)

    def expire(self, now: float) -> int:
        return int(self.eng.expire(now))

    def process(self, data: bytes, now: float) -> bytes | None:
        out = self.eng.process(data, now)
        return None if out is None else bytes(out)

    def connections(self, include_templates: bool = True) -> list[tuple[Any, ...]]:
        """Sorted (proto, caddr, cport, vaddr, vport, daddr, dport, state, expires) tuples;
        a template's state reads "TEMPLATE"."""
        return sorted(
            (c.protocol, c.client_address, c.client_port, c.virtual_address, c.virtual_port,
             c.server_address, c.server_port, "TEMPLATE" if c.template else c.state, c.expires)
            for c in self.eng.connections()
            if include_templates or not c.template
        )

    def service_stats(self, svc: Any) -> tuple[int, ...]:
        """(conns, inpkts, outpkts, inbytes, outbytes) of one service."""
        for info in self.eng.services():
            if info.key == svc:
                return _stats_tuple(info.stats)
        raise KeyError(svc)

    def server_counts(self, srv: Any) -> tuple[Any, ...]:
        """(active, inactive, persistent, stats tuple) of one listed real server."""
        for info in self.eng.services():
            for d in info.servers:
                if d.key == srv:
                    return (d.active_conns, d.inactive_conns, d.persist_conns,
                            _stats_tuple(d.stats))
        raise KeyError(srv)

    def total_stats(self) -> tuple[int, ...]:
        """Engine-wide (conns, inpkts, outpkts, inbytes, outbytes)."""
        return _stats_tuple(self.eng.stats().totals)

    def drops(self) -> dict[str, int]:
        """Non-zero drop and pass counters by reason."""
        st = self.eng.stats()
        return {k: v for k, v in (*st.drops.items(), *st.passes.items()) if v}

    @staticmethod
    def same_but_inner_l4_csum(got: bytes, want: bytes) -> bool:
        """True when an ICMP error differs from ``want`` only because the quoted TCP/UDP
        checksum was also (correctly) translated, which RFC 5508 allows and IPVS skips."""
        if len(got) != len(want) or len(want) < 48:
            return False
        if want[0] >> 4 == 6:
            if got[6] != 58 or want[6] != 58:
                return False
            ihl, inner = 40, 48
            iihl, iproto = 40, want[inner + 6]
        else:
            if got[9] != 1 or want[9] != 1:
                return False
            ihl = (want[0] & 0x0F) * 4
            inner = ihl + 8
            iihl, iproto = (want[inner] & 0x0F) * 4, want[inner + 9]
        at = inner + iihl + (16 if iproto == 6 else 6)
        if got[:ihl] != want[:ihl] or got[ihl + 4 : at] != want[ihl + 4 : at]:
            return False
        return got[at + 2 :] == want[at + 2 :] and l4_checksum_ok(got)


def is_icmp_reply_to(data: bytes, out: bytes | None, icmp_type: int, icmp_code: int) -> bool:
    """True when ``out`` is an ICMP error of that type/code the engine generated about
    ``data``: sent back to ``data``'s source, quoting ``data``'s IP header and at least 8 bytes
    of it, with valid IP and ICMP checksums.  For IPv6 ``data`` the reply is ICMPv6."""
    if out is not None and data[0] >> 4 == 6:
        quoted6 = out[48:]
        return (
            len(out) >= 48 + 48 and out[0] >> 4 == 6 and out[6] == 58
            and out[40] == icmp_type and out[41] == icmp_code
            and out[24:40] == data[8:24] and out[8:24] == data[24:40]
            and len(quoted6) >= min(len(data), 1280 - 48) and data.startswith(quoted6)
            and l4_checksum_ok(out)
        )
    if out is None or len(out) < 48 or out[9] != 1 or not ip_header_ok(out):
        return False
    ihl = (out[0] & 0x0F) * 4
    quoted = out[ihl + 8 :]
    return (
        out[ihl] == icmp_type and out[ihl + 1] == icmp_code
        and out[16:20] == data[12:16]
        and len(quoted) >= min(len(data), (data[0] & 0x0F) * 4 + 8)
        and data.startswith(quoted)
        and checksum16(out[ihl:]) == 0
    )
