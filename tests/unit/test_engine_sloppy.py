"""Sloppy pickup: flows another director scheduled (ECMP moved them here) keep their server.

Two engines stand for two directors behind one router: a flow starts on one; its later
packets, and the real server's replies, reach the other, which has no entry for it.
"""

from __future__ import annotations

from typing import Literal

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pylvs import Engine, Verdict

VIP = "198.18.0.100"
SERVERS = ["198.19.0.11", "198.19.0.12", "198.19.0.13"]


def director(sloppy: bool, scheduler: str = "mh") -> Engine:
    eng = Engine(max_connections=4096)
    eng.set_option("sloppy_tcp", sloppy)
    eng.set_option("sloppy_udp", sloppy)
    pairs: tuple[tuple[Literal["tcp", "udp"], int], ...] = (("tcp", 80), ("udp", 53))
    for proto, port in pairs:
        svc = eng.add_service(proto, VIP, port, scheduler=scheduler)
        for rs in SERVERS:
            eng.add_server(svc, rs, port)
    return eng


def to_vip(client: str, sport: int, flags: str = "A") -> bytes:
    return bytes(IP(src=client, dst=VIP) / TCP(sport=sport, dport=80, flags=flags))


def test_non_syn_is_scheduled_to_the_same_server_as_the_first_director() -> None:
    first, second = director(True), director(True)
    moved = 0
    for i in range(200):
        client, sport = f"198.18.1.{10 + i % 50}", 20000 + i
        out = first.process(to_vip(client, sport, "S"), 1.0)
        assert out is not None
        rs = IP(out).dst
        again = second.process(to_vip(client, sport, "A"), 2.0)
        assert again is not None, "a non-SYN of an unknown flow is picked up"
        assert IP(again).dst == rs, "mh picks the same real server on every director"
        moved += 1
    assert second.stats().events["sloppy_in"] == moved
    conn = second.connections()[0]
    assert conn.state == "ESTABLISHED"


def test_without_sloppy_a_non_syn_is_dropped_and_rst_always_is() -> None:
    strict, sloppy = director(False), director(True)
    assert strict.process(to_vip("198.18.1.10", 30000, "A"), 1.0) is None
    assert strict.stats().drops["tcp_no_syn"] == 1
    assert sloppy.process(to_vip("198.18.1.10", 30000, "R"), 1.0) is None
    assert sloppy.process(to_vip("198.18.1.10", 30000, "RA"), 1.0) is None
    assert sloppy.stats().drops["tcp_no_syn"] == 2
    assert sloppy.connections() == []


def test_a_reply_without_entry_is_un_natted_and_creates_the_entry() -> None:
    first, second = director(True), director(True)
    out = first.process(to_vip("198.18.1.20", 40000, "S"), 1.0)
    assert out is not None
    rs = IP(out).dst
    reply = bytes(IP(src=rs, dst="198.18.1.20") / TCP(sport=80, dport=40000, flags="SA"))
    verdict, back = second.process_detailed(reply, 1.1)
    assert verdict == Verdict.FORWARD
    q = IP(back)
    assert (q.src, q.dst, q[TCP].sport, q[TCP].dport) == (VIP, "198.18.1.20", 80, 40000)
    assert second.stats().events["sloppy_reply"] == 1
    # the entry now serves the client's next packets through this director too
    nxt = second.process(to_vip("198.18.1.20", 40000, "A"), 1.2)
    assert nxt is not None and IP(nxt).dst == rs
    assert len(second.connections()) == 1


def test_udp_reply_pickup_and_strict_mode_passes() -> None:
    strict, sloppy = director(False), director(True)
    reply = bytes(IP(src=SERVERS[0], dst="198.18.1.30") / UDP(sport=53, dport=5353) / b"x")
    assert strict.process_detailed(reply, 1.0)[0] == Verdict.PASS
    verdict, back = sloppy.process_detailed(reply, 1.0)
    assert verdict == Verdict.FORWARD
    assert (IP(back).src, IP(back)[UDP].sport) == (VIP, 53)


@pytest.mark.parametrize("flags", ["R", "RA"])
def test_a_reset_reply_creates_no_entry(flags: str) -> None:
    eng = director(True)
    reply = bytes(IP(src=SERVERS[1], dst="198.18.1.40") / TCP(sport=80, dport=1234, flags=flags))
    assert eng.process_detailed(reply, 1.0)[0] == Verdict.PASS
    assert eng.connections() == []


def test_a_reply_from_an_unknown_port_or_host_passes() -> None:
    eng = director(True)
    for src, sport in ((SERVERS[0], 8080), ("198.19.0.99", 80)):
        reply = bytes(IP(src=src, dst="198.18.1.50") / TCP(sport=sport, dport=1, flags="A"))
        assert eng.process_detailed(reply, 1.0)[0] == Verdict.PASS
    assert eng.stats().passes["not_ours"] == 2


def test_ipv6_flows_are_picked_up_both_ways() -> None:
    from scapy.layers.inet6 import IPv6

    eng = Engine(max_connections=64)
    eng.set_option("sloppy_tcp", True)
    svc = eng.add_service("tcp", "2001:2::100", 80, scheduler="mh")
    eng.add_server(svc, "2001:2:1::11", 80)
    out = eng.process(bytes(IPv6(src="2001:2:2::5", dst="2001:2::100") /
                            TCP(sport=1000, dport=80, flags="A")), 1.0)
    assert out is not None and IPv6(out).dst == "2001:2:1::11"
    verdict, back = eng.process_detailed(bytes(IPv6(src="2001:2:1::11", dst="2001:2:2::6") /
                                               TCP(sport=80, dport=2000, flags="A")), 1.0)
    assert verdict == Verdict.FORWARD and IPv6(back).src == "2001:2::100"
    assert eng.stats().events["sloppy_reply"] == 1
