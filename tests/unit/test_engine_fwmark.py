"""Firewall-mark services (ipvsadm -f) in the engine: the mark each batch carries picks the
service, one persistence template covers every port the mark covers, port-0 real servers keep
the client's destination port, and the sync records carry the mark (docs/ipvs.md#fwmark).
IPv6 services of a mark (``-f 80 -6``) are their own services, with prefix-length persistence."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from pylvs.engine import Engine, ServiceKey, Verdict
from pylvs.errors import ConfigError
from tests.support.packets import VIP, VIP6, build, l4_checksum_ok, tcp, udp

RS1, RS2 = "198.19.0.11", "198.19.0.12"
CLIENT = "198.18.0.1"
CLIENT6 = "2001:2::2"


def _engine(persistence: int = 300, rs_port: int = 0) -> tuple[Engine, ServiceKey]:
    eng = Engine(max_connections=1024)
    svc = eng.add_service("tcp", "0.0.0.0", 0, fwmark=80, scheduler="rr",
                          persistence=persistence)
    eng.add_server(svc, RS1, rs_port)
    eng.add_server(svc, RS2, rs_port)
    eng.set_fwmark_vips([VIP])
    return eng, svc


def _dst(out: bytes) -> tuple[str, int]:
    ip = IP(out)
    return ip.dst, ip[TCP].dport if TCP in ip else ip[UDP].dport


def test_key_and_listing() -> None:
    eng, svc = _engine()
    assert svc == ServiceKey.for_fwmark(80)
    assert str(svc) == "FWM 80" and svc.label == "fwm 80"
    info = eng.services()[0]
    assert info.key == svc and info.persistence == 300
    assert sorted(s.key.port for s in info.servers) == [0, 0]


def test_marked_packets_share_one_persistence_across_ports() -> None:
    eng, _svc = _engine()
    seen = set()
    for i, port in enumerate((80, 443, 8080)):
        out = eng.process(build(tcp(CLIENT, 40000 + i, VIP, port)), 1.0, mark=80)
        assert out is not None
        daddr, dport = _dst(out)
        assert dport == port  # port-0 servers keep the client's destination port
        seen.add(daddr)
    assert len(seen) == 1  # one template for the whole mark
    tmpl = [c for c in eng.connections() if c.template]
    assert len(tmpl) == 1 and tmpl[0].virtual_port == 0
    # UDP under the same mark follows the same template (IPPROTO_IP template)
    out = eng.process(build(udp(CLIENT, 5353, VIP, 53)), 1.0, mark=80)
    assert out is not None and _dst(out) == (seen.pop(), 53)


def test_without_persistence_the_scheduler_picks_per_connection() -> None:
    eng, _svc = _engine(persistence=0, rs_port=8000)
    outs = [eng.process(build(tcp(CLIENT, 40000 + i, VIP, 80)), 1.0, mark=80) for i in range(4)]
    dests = [_dst(o) for o in outs if o is not None]
    assert len(dests) == 4
    assert {d[0] for d in dests} == {RS1, RS2}  # rr alternates
    assert {d[1] for d in dests} == {8000}  # a dest port is used without persistence


def test_unmarked_or_other_mark_is_not_the_service() -> None:
    eng, _svc = _engine()
    v, _ = eng.process_detailed(build(tcp(CLIENT, 40000, VIP, 80)), 1.0)
    assert v == Verdict.DROP  # a fwmark VIP: dropped, never passed back into the TUN
    assert eng.stats().drops["no_service"] == 1
    v, _ = eng.process_detailed(build(tcp(CLIENT, 40000, VIP, 80)), 1.0, mark=81)
    assert v == Verdict.DROP
    # an address nobody claims, unmarked: not ours
    v, _ = eng.process_detailed(build(tcp(CLIENT, 40000, "198.18.0.200", 80)), 1.0)
    assert v == Verdict.PASS


def test_mark_wins_over_an_address_service() -> None:
    eng, _svc = _engine()
    other = eng.add_service("tcp", VIP, 80, scheduler="rr")
    eng.add_server(other, "198.19.0.99", 80)
    out = eng.process(build(tcp(CLIENT, 40000, VIP, 80)), 1.0, mark=80)
    assert out is not None and _dst(out)[0] in (RS1, RS2)
    out = eng.process(build(tcp(CLIENT, 40001, VIP, 80)), 1.0)
    assert out is not None and _dst(out)[0] == "198.19.0.99"


def test_replies_and_established_packets_need_no_mark() -> None:
    eng, _svc = _engine()
    out = eng.process(build(tcp(CLIENT, 40000, VIP, 443)), 1.0, mark=80)
    assert out is not None
    rs, _ = _dst(out)
    reply = eng.process(build(tcp(rs, 443, CLIENT, 40000, flags="SA")), 1.1)
    assert reply is not None and IP(reply).src == VIP and IP(reply)[TCP].sport == 443
    ack = eng.process(build(tcp(CLIENT, 40000, VIP, 443, flags="A")), 1.2, mark=80)
    assert ack is not None and _dst(ack) == (rs, 443)


def test_sync_records_carry_the_mark() -> None:
    eng, _svc = _engine()
    eng.process(build(tcp(CLIENT, 40000, VIP, 443)), 1.0, mark=80)
    blob = eng.sync_full(1.0)
    backup, _ = _engine()
    applied = backup.sync_apply(blob, 1.0)
    assert applied == 2  # the conn and the mark's template
    conns = {(c.template, c.virtual_port, c.server_address) for c in backup.connections()}
    assert conns == {(c.template, c.virtual_port, c.server_address)
                     for c in eng.connections()}


def test_fwmark_service_removed_and_edited() -> None:
    eng, svc = _engine()
    eng.edit_service(svc, scheduler="wlc", persistence=0)
    assert eng.services()[0].scheduler == "wlc"
    eng.remove_service(svc)
    assert eng.services() == []


# ---- IPv6: the kernel keys a fwmark service by (family, mark): ipvsadm -A -f 80 -6 ----

RS6_1, RS6_2 = "2001:2:1::11", "2001:2:1::12"


def _engine6(persistence: int = 300, netmask: int | None = 64) -> tuple[Engine, ServiceKey]:
    eng = Engine(max_connections=1024)
    svc = eng.add_service("tcp", "::", 0, fwmark=80, scheduler="rr", persistence=persistence,
                          netmask=netmask)
    eng.add_server(svc, RS6_1, 0)
    eng.add_server(svc, RS6_2, 0)
    eng.set_fwmark_vips([VIP6])
    return eng, svc


def _dst6(out: bytes) -> tuple[str, int]:
    ip = IPv6(out)
    return ip.dst, ip[TCP].dport if TCP in ip else ip[UDP].dport


def test_ipv6_key_listing_and_the_two_families_of_one_mark() -> None:
    eng, svc6 = _engine6()
    assert svc6 == ServiceKey.for_fwmark(80, 6) and svc6 != ServiceKey.for_fwmark(80)
    assert (str(svc6), svc6.label, svc6.family) == ("FWM 80 IPv6", "fwm6 80", 6)
    svc4 = eng.add_service("tcp", "0.0.0.0", 0, fwmark=80, scheduler="rr")
    eng.add_server(svc4, RS1, 0)
    by_key = {s.key: s for s in eng.services()}
    assert by_key[svc6].netmask == "64" and by_key[svc6].persistence == 300
    assert sorted(s.key.address for s in by_key[svc6].servers) == [RS6_1, RS6_2]
    assert [s.key.address for s in by_key[svc4].servers] == [RS1]
    # each family's packets under mark 80 reach that family's service
    out6 = eng.process(build(tcp(CLIENT6, 40000, VIP6, 80)), 1.0, mark=80)
    out4 = eng.process(build(tcp(CLIENT, 40000, VIP, 80)), 1.0, mark=80)
    assert out6 is not None and _dst6(out6)[0] in (RS6_1, RS6_2)
    assert out4 is not None and _dst(out4)[0] == RS1


def test_ipv6_server_of_the_other_family_is_refused() -> None:
    eng, svc = _engine6()
    with pytest.raises(ConfigError, match="IPv4 server for an IPv6 service"):
        eng.add_server(svc, RS1, 0)


def test_ipv6_marked_packets_share_one_template_per_prefix_across_ports() -> None:
    eng, _svc = _engine6()
    seen = set()
    # two clients of one /64 and every port the mark covers: one template, one server
    for i, (client, port) in enumerate(((CLIENT6, 80), ("2001:2::77", 443), (CLIENT6, 8080))):
        out = eng.process(build(tcp(client, 40000 + i, VIP6, port)), 1.0, mark=80)
        assert out is not None
        daddr, dport = _dst6(out)
        assert dport == port
        seen.add(daddr)
    assert len(seen) == 1
    tmpl = [c for c in eng.connections() if c.template]
    assert len(tmpl) == 1 and tmpl[0].client_address == "2001:2::"
    # the template's vaddr is the mark in the first word (ip_vs_sched_persist's fwmark)
    assert tmpl[0].virtual_address == str(ipaddress.IPv6Address(80 << 96))
    out = eng.process(build(udp(CLIENT6, 5353, VIP6, 53)), 1.0, mark=80)
    assert out is not None and _dst6(out) == (seen.pop(), 53)
    # a client of another /64 gets its own template (rr: the other server)
    out = eng.process(build(tcp("2001:2:0:1::2", 40000, VIP6, 80)), 1.0, mark=80)
    assert out is not None and len([c for c in eng.connections() if c.template]) == 2


def test_ipv6_unmarked_or_other_mark_is_not_the_service() -> None:
    eng, _svc = _engine6()
    v, _ = eng.process_detailed(build(tcp(CLIENT6, 40000, VIP6, 80)), 1.0)
    assert v == Verdict.DROP  # an IPv6 fwmark VIP: dropped, never passed back into the TUN
    assert eng.stats().drops["no_service"] == 1
    v, _ = eng.process_detailed(build(tcp(CLIENT6, 40000, VIP6, 80)), 1.0, mark=81)
    assert v == Verdict.DROP
    v, _ = eng.process_detailed(build(tcp(CLIENT6, 40000, "2001:2::200", 80)), 1.0)
    assert v == Verdict.PASS
    # an IPv4 packet with mark 80 finds no IPv4 service of that mark
    v, _ = eng.process_detailed(build(tcp(CLIENT, 40000, "198.18.0.200", 80)), 1.0, mark=80)
    assert v == Verdict.PASS


def test_ipv6_replies_need_no_mark_and_checksums_hold() -> None:
    eng, _svc = _engine6()
    out = eng.process(build(tcp(CLIENT6, 40000, VIP6, 443)), 1.0, mark=80)
    assert out is not None and l4_checksum_ok(out)
    rs, _ = _dst6(out)
    reply = eng.process(build(tcp(rs, 443, CLIENT6, 40000, flags="SA")), 1.1)
    assert reply is not None and l4_checksum_ok(reply)
    assert IPv6(reply).src == VIP6 and IPv6(reply)[TCP].sport == 443


def test_ipv6_sync_records_carry_the_mark() -> None:
    eng, _svc = _engine6()
    eng.process(build(tcp(CLIENT6, 40000, VIP6, 443)), 1.0, mark=80)
    backup, _ = _engine6()
    assert backup.sync_apply(eng.sync_full(1.0), 1.0) == 2  # the conn and the template
    key = [(c.template, c.client_address, c.virtual_address, c.virtual_port, c.server_address)
           for c in eng.connections()]
    assert sorted(key) == sorted(
        (c.template, c.client_address, c.virtual_address, c.virtual_port, c.server_address)
        for c in backup.connections())
    # an IPv4-only backup has no IPv6 service of mark 80: nothing applies
    v4_backup, _ = _engine()
    assert v4_backup.sync_apply(eng.sync_full(1.0), 1.0) == 0


def test_ipv6_fwmark_service_netmask_checked() -> None:
    eng = Engine(max_connections=16)
    with pytest.raises(ConfigError):
        eng.add_service("tcp", "::", 0, fwmark=80, persistence=300, netmask=129)
    svc = eng.add_service("tcp", "::", 0, fwmark=80, persistence=300)
    assert eng.services()[0].netmask == "128"
    eng.edit_service(svc, netmask=48)
    assert eng.services()[0].netmask == "48"
    eng.remove_service(svc)
    assert eng.services() == []
