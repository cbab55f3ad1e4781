"""Persistence templates, quiescing and dest-removal options, checked against
docs/ipvs.md#persistence and #real-servers."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP

from pylvs import Engine, ServerKey, ServiceKey, Verdict

VIP = "198.18.0.100"
RS1 = "198.19.0.11"
RS2 = "198.19.0.12"


def syn(src: str = "198.18.0.5", sport: int = 40000, flags: str = "S") -> bytes:
    return bytes(IP(src=src, dst=VIP) / TCP(sport=sport, dport=443, flags=flags))


def server_of(out: bytes | None) -> str:
    assert out is not None
    return str(IP(out).dst)


@pytest.fixture
def eng() -> Engine:
    return Engine(max_connections=1024)


@pytest.fixture
def svc(eng: Engine) -> ServiceKey:
    return eng.add_service("tcp", VIP, 443, scheduler="rr", persistence=100)


def add_two(eng: Engine, svc: ServiceKey) -> tuple[ServerKey, ServerKey]:
    return eng.add_server(svc, RS1, 443), eng.add_server(svc, RS2, 443)


def templates(eng: Engine) -> list[float]:
    return [c.expires for c in eng.connections() if c.template]


def test_template_timer_restarts_on_each_new_conn_only(eng: Engine, svc: ServiceKey) -> None:
    add_two(eng, svc)
    first = server_of(eng.process(syn(sport=1), 0.0))
    assert templates(eng) == [pytest.approx(100.0)]
    eng.process(syn(sport=1, flags="A"), 50.0)          # packets of a conn: no refresh
    assert templates(eng) == [pytest.approx(100.0)]
    assert server_of(eng.process(syn(sport=2), 60.0)) == first
    assert templates(eng) == [pytest.approx(160.0)]


def test_template_in_control_is_rearmed_60s(eng: Engine, svc: ServiceKey) -> None:
    add_two(eng, svc)
    eng.process(syn(sport=1), 0.0)
    eng.process(syn(sport=1, flags="A"), 1.0)           # ESTABLISHED until 901
    assert eng.expire(100.0) == 0
    assert templates(eng) == [pytest.approx(160.0)]
    # from now on the template's timeout is 60 s (ip_vs_conn_expire sets cp->timeout)
    eng.process(syn(sport=2), 120.0)
    assert templates(eng) == [pytest.approx(180.0)]
    # a daemon sweeps every second: the template outlives its last conn (901) by < 60 s
    gone = sum(eng.expire(float(t)) for t in range(121, 1000))
    assert gone == 3 and eng.connections() == []


def test_template_of_removed_server_is_neutralised(eng: Engine, svc: ServiceKey) -> None:
    a, b = add_two(eng, svc)
    first = server_of(eng.process(syn(sport=1), 0.0))
    gone = a if first == RS1 else b
    eng.remove_server(gone)
    out = eng.process(syn(sport=2), 1.0)
    assert server_of(out) != first
    tmpls = [c for c in eng.connections() if c.template]
    assert len(tmpls) == 2                                # the old one lives on, unmatched
    assert sum(1 for c in tmpls if c.server_address == first) == 1


def test_quiesced_template_still_binds_unless_option(svc: ServiceKey, eng: Engine) -> None:
    a, b = add_two(eng, svc)
    first = server_of(eng.process(syn(sport=1), 0.0))
    eng.edit_server(a if first == RS1 else b, weight=0)
    assert server_of(eng.process(syn(sport=2), 1.0)) == first
    e2 = Engine(max_connections=64, expire_quiescent_template=True)
    s2 = e2.add_service("tcp", VIP, 443, scheduler="rr", persistence=100)
    a2, b2 = add_two(e2, s2)
    first2 = server_of(e2.process(syn(sport=1), 0.0))
    e2.edit_server(a2 if first2 == RS1 else b2, weight=0)
    assert server_of(e2.process(syn(sport=2), 1.0)) != first2


def test_netmask_groups_clients(eng: Engine) -> None:
    s = eng.add_service("tcp", VIP, 443, scheduler="rr", persistence=100, netmask=16)
    add_two(eng, s)
    a = server_of(eng.process(syn(src="198.18.1.1"), 0.0))
    assert server_of(eng.process(syn(src="198.18.200.9"), 0.0)) == a
    (t,) = [c for c in eng.connections() if c.template]
    assert (t.client_address, t.client_port) == ("198.18.0.0", 0)


def test_templates_count_as_persist_conns_and_trigger_threshold(eng: Engine) -> None:
    s = eng.add_service("tcp", VIP, 443, scheduler="rr", persistence=100)
    eng.add_server(s, RS1, 443, upper_threshold=1)
    eng.process(syn(sport=1), 0.0)
    (d,) = eng.services()[0].servers
    assert (d.persist_conns, d.inactive_conns + d.active_conns, d.overloaded) == (1, 1, True)


def test_expire_nodest_conn_option(eng: Engine) -> None:
    e = Engine(max_connections=64, expire_nodest_conn=True)
    s = e.add_service("tcp", VIP, 443, scheduler="rr")
    a = e.add_server(s, RS1, 443)
    e.add_server(s, RS2, 443)
    e.process(syn(sport=1), 0.0)
    c = e.connections()[0]
    if c.server_address == RS1:
        e.remove_server(a)
    else:
        e.remove_server(ServerKey(s, RS2, 443))
    assert e.process(syn(sport=1, flags="A"), 1.0) is None   # dropped and expired now
    assert e.connections() == []
    assert e.process(syn(sport=1), 2.0) is not None          # the retry is scheduled anew


def test_syn_to_quiesced_dest_rescheduled_with_expire_nodest(eng: Engine) -> None:
    e = Engine(max_connections=64, expire_nodest_conn=True)
    s = e.add_service("tcp", VIP, 443, scheduler="rr")
    a, b = add_two(e, s)
    first = server_of(e.process(syn(sport=1), 0.0))
    e.process(syn(sport=1, flags="A"), 0.5)
    e.edit_server(a if first == RS1 else b, weight=0)
    assert server_of(e.process(syn(sport=1, flags="A"), 1.0)) == first  # quiesce keeps it
    assert server_of(e.process(syn(sport=1), 2.0)) != first            # a new SYN moves


def test_conn_reuse_mode_zero_keeps_time_wait_entry() -> None:
    e = Engine(max_connections=64, conn_reuse_mode=0)
    s = e.add_service("tcp", VIP, 443, scheduler="rr")
    add_two(e, s)
    first = server_of(e.process(syn(sport=1), 0.0))
    e.process(syn(sport=1, flags="A"), 0.1)
    e.process(bytes(IP(src=first, dst="198.18.0.5") / TCP(sport=443, dport=1, flags="FA")), 0.2)
    e.process(syn(sport=1, flags="FA"), 0.3)
    assert e.connections()[0].state == "TIME_WAIT"
    assert server_of(e.process(syn(sport=1), 1.0)) == first           # same entry: IN syn
    assert e.connections()[0].state == "SYN_RECV"


def test_port_zero_service_must_be_persistent_and_keeps_ports(eng: Engine) -> None:
    from pylvs.errors import ConfigError

    with pytest.raises(ConfigError):
        eng.add_service("tcp", VIP, 0)
    s = eng.add_service("tcp", VIP, 0, persistence=30)
    eng.add_server(s, RS1, 0)
    out = eng.process(bytes(IP(src="198.18.0.5", dst=VIP) / TCP(sport=5, dport=8443,
                                                                   flags="S")), 0.0)
    assert out is not None and IP(out)[TCP].dport == 8443 and IP(out).dst == RS1
    (t,) = [c for c in eng.connections() if c.template]
    assert (t.virtual_port, t.server_port) == (0, 0)


def test_no_dest_reply_for_udp_and_quote(eng: Engine) -> None:
    from scapy.layers.inet import ICMP, UDP

    eng.add_service("udp", VIP, 53)
    pkt = bytes(IP(src="198.18.0.5", dst=VIP) / UDP(sport=9, dport=53) / (b"x" * 600))
    v, out = eng.process_detailed(pkt, 0.0)
    assert v == Verdict.REPLY
    p = IP(out)
    assert len(out) == 576 and p[ICMP].type == 3 and out[28:] == pkt[:548]


def test_lblc_references_keep_a_removed_dest_until_released() -> None:
    """lblc caches dests with a reference: removed, the dest waits in the trash; once nothing
    refers to it any more, expire() frees it."""
    e = Engine(max_connections=64)
    s = e.add_service("tcp", VIP, 443, scheduler="lblc")
    a = e.add_server(s, RS1, 443)
    e.process(syn(sport=1), 0.0)
    e.remove_server(a, expire_connections=True)
    assert e.connections() == []
    e.expire(1.0)
    assert e.stats().trash_servers == 1  # still named by lblc's cache entry for the VIP
    e.remove_service(s)                  # done_service drops the cache and its references
    assert e.stats().trash_servers == 1
    e.expire(2.0)
    assert e.stats().trash_servers == 0
