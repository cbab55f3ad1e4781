"""Firewall-mark services (ipvsadm -f) in the engine: the mark each batch carries picks the
service, one persistence template covers every port the mark covers, port-0 real servers keep
the client's destination port, and the sync records carry the mark (docs/ipvs.md#fwmark)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP

from pylvs.engine import Engine, ServiceKey, Verdict
from tests.support.packets import VIP, build, tcp, udp

RS1, RS2 = "198.19.0.11", "198.19.0.12"
CLIENT = "198.18.0.1"


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
