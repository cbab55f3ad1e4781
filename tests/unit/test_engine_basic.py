"""Basic engine behaviour, every rewritten field checked against scapy's own recomputation."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.packet import Packet, Raw

from pylvs import Defense, Engine, ServiceKey, Verdict
from pylvs.errors import ConfigError

VIP = "198.18.0.100"
CLIENT = "198.18.0.5"
RS1 = "198.19.0.11"
RS2 = "198.19.0.12"


def raw(p: Packet) -> bytes:
    return bytes(p)


def recomputed(pkt: bytes) -> IP:
    """The same packet with every checksum recomputed by scapy."""
    p = IP(pkt)
    del p.chksum
    if TCP in p and not isinstance(p[TCP], TCPerror):
        del p[TCP].chksum
    if UDP in p and not isinstance(p[UDP], UDPerror) and p[UDP].chksum != 0:
        del p[UDP].chksum
    if ICMP in p:
        del p[ICMP].chksum
    return IP(bytes(p))


def assert_checksums_ok(pkt: bytes) -> None:
    got = IP(pkt)
    want = recomputed(pkt)
    assert got.chksum == want.chksum, "IP checksum"
    if TCP in got:
        assert got[TCP].chksum == want[TCP].chksum, "TCP checksum"
    if UDP in got and got[UDP].chksum != 0:
        assert got[UDP].chksum == want[UDP].chksum, "UDP checksum"
    if ICMP in got:
        assert got[ICMP].chksum == want[ICMP].chksum, "ICMP checksum"


def syn(sport: int = 40000, dport: int = 80, src: str = CLIENT, flags: str = "S",
        ttl: int = 64) -> bytes:
    return raw(IP(src=src, dst=VIP, ttl=ttl) / TCP(sport=sport, dport=dport, flags=flags))


@pytest.fixture
def eng() -> Engine:
    return Engine(max_connections=1024)


@pytest.fixture
def svc(eng: Engine) -> ServiceKey:
    s = eng.add_service("tcp", VIP, 80, scheduler="rr")
    eng.add_server(s, RS1, 8080)
    return s


def test_dnat_and_snat_rewrite_every_field(eng: Engine, svc: ServiceKey) -> None:
    payload = b"GET / HTTP/1.0\r\n\r\n"
    inp = raw(IP(src=CLIENT, dst=VIP, ttl=64, id=7) /
              TCP(sport=40000, dport=80, flags="S", seq=100) / Raw(payload))
    out = eng.process(inp, 1.0)
    assert out is not None
    p = IP(out)
    assert (p.src, p.dst, p.ttl, p.id) == (CLIENT, RS1, 63, 7)
    assert (p[TCP].sport, p[TCP].dport, p[TCP].seq) == (40000, 8080, 100)
    assert bytes(p[TCP].payload) == payload
    assert_checksums_ok(out)

    reply = raw(IP(src=RS1, dst=CLIENT, ttl=64) / TCP(sport=8080, dport=40000, flags="SA"))
    back = eng.process(reply, 1.1)
    assert back is not None
    q = IP(back)
    assert (q.src, q.dst, q.ttl) == (VIP, CLIENT, 64)
    assert (q[TCP].sport, q[TCP].dport) == (80, 40000)
    assert_checksums_ok(back)


def test_udp_rewrite_and_zero_checksum(eng: Engine) -> None:
    s = eng.add_service("udp", VIP, 53, scheduler="wlc")
    eng.add_server(s, RS2, 5353)
    pkt = IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53) / Raw(b"q" * 13)
    out = eng.process(raw(pkt), 1.0)
    assert out is not None
    assert IP(out)[UDP].dport == 5353
    assert_checksums_ok(out)
    # checksum 0 ("none") is replaced by a full checksum, as ip_vs_proto_udp does
    p0 = IP(src=CLIENT, dst=VIP) / UDP(sport=5001, dport=53, chksum=0) / Raw(b"z" * 7)
    out0 = eng.process(raw(p0), 1.0)
    assert out0 is not None
    got = IP(out0)[UDP].chksum
    assert got != 0
    assert got == recomputed(out0)[UDP].chksum


def test_non_syn_without_conn_is_not_forwarded(eng: Engine, svc: ServiceKey) -> None:
    assert eng.process(syn(flags="A"), 1.0) is None
    assert eng.stats().drops["tcp_no_syn"] == 1
    assert eng.connections() == []


def test_no_server_answers_port_unreachable(eng: Engine) -> None:
    eng.add_service("tcp", VIP, 80)
    inp = syn()
    verdict, out = eng.process_detailed(inp, 1.0)
    assert verdict == Verdict.REPLY
    icmp = IP(out)
    assert (icmp.src, icmp.dst) == (VIP, CLIENT)
    assert (icmp[ICMP].type, icmp[ICMP].code) == (3, 3)
    assert bytes(icmp[ICMP].payload)[:len(inp)] == inp
    assert isinstance(icmp[ICMP].payload, IPerror)
    assert_checksums_ok(out)
    assert eng.stats().drops["no_dest"] == 1


def test_out_direction_without_conn_passes(eng: Engine, svc: ServiceKey) -> None:
    pkt = raw(IP(src=RS1, dst=CLIENT) / TCP(sport=8080, dport=1, flags="A"))
    assert eng.process_detailed(pkt, 1.0) == (Verdict.PASS, pkt)


def test_tcp_lifecycle_states_and_active_counts(eng: Engine, svc: ServiceKey) -> None:
    def state() -> str:
        (c,) = eng.connections()
        return c.state

    def counts() -> tuple[int, int]:
        (s,) = eng.services()
        (d,) = s.servers
        return d.active_conns, d.inactive_conns

    out = raw(IP(src=RS1, dst=CLIENT) / TCP(sport=8080, dport=40000, flags="SA"))
    eng.process(syn(), 1.0)
    assert state() == "SYN_RECV" and counts() == (1, 0)
    eng.process(out, 1.0)
    assert state() == "SYN_RECV"
    eng.process(syn(flags="A"), 1.0)
    assert state() == "ESTABLISHED" and counts() == (1, 0)
    eng.process(syn(flags="FA"), 1.0)
    assert state() == "CLOSE_WAIT" and counts() == (0, 1)
    eng.process(raw(IP(src=RS1, dst=CLIENT) / TCP(sport=8080, dport=40000, flags="FA")), 2.0)
    assert state() == "TIME_WAIT"
    (c,) = eng.connections()
    assert c.expires == pytest.approx(2.0 + 120)


def test_expiry_and_timer_rearm(eng: Engine, svc: ServiceKey) -> None:
    eng.process(syn(), 0.0)            # SYN_RECV, 60 s
    eng.process(syn(flags="A"), 10.0)  # ESTABLISHED, 900 s from t=10
    assert eng.expire(900.0) == 0
    assert len(eng.connections()) == 1
    assert eng.expire(910.0) == 1
    assert eng.connections() == []
    (s,) = eng.services()
    assert s.servers[0].active_conns == 0


def test_set_timeouts(eng: Engine, svc: ServiceKey) -> None:
    eng.set_timeouts(tcp=30, udp=0)
    assert (eng.timeouts().tcp, eng.timeouts().tcpfin, eng.timeouts().udp) == (30, 120, 300)
    eng.process(syn(), 0.0)
    eng.process(syn(flags="A"), 1.0)
    assert eng.connections()[0].expires == pytest.approx(31.0)


def test_syn_on_time_wait_is_rescheduled(eng: Engine, svc: ServiceKey) -> None:
    eng.add_server(svc, RS2, 8080)
    eng.process(syn(), 0.0)
    first = eng.connections()[0].server_address
    eng.process(syn(flags="R"), 0.5)   # CLOSE
    eng.process(syn(flags="FA"), 0.6)  # stays CLOSE
    # drive it to TIME_WAIT: a fresh conn on another port, then FIN out/in
    eng.process(syn(sport=40001), 1.0)
    eng.process(syn(sport=40001, flags="A"), 1.0)
    c2 = next(c for c in eng.connections() if c.client_port == 40001)
    eng.process(raw(IP(src=c2.server_address, dst=CLIENT) /
                    TCP(sport=8080, dport=40001, flags="FA")), 1.1)
    eng.process(syn(sport=40001, flags="FA"), 1.2)
    assert next(c for c in eng.connections() if c.client_port == 40001).state == "TIME_WAIT"
    out = eng.process(syn(sport=40001), 2.0)
    assert out is not None
    c3 = next(c for c in eng.connections() if c.client_port == 40001)
    assert c3.state == "SYN_RECV"
    assert first in (RS1, RS2)


def test_syn_on_close_entry_goes_to_a_live_server(eng: Engine, svc: ServiceKey) -> None:
    # After an RST the client soon reuses the port; the kernel's is_new_conn_expected also
    # reschedules from CLOSE, so a quiesced (or failed) server is not picked again.
    rs2 = eng.add_server(svc, RS2, 8080)
    eng.process(syn(), 0.0)
    first = eng.connections()[0]
    # the server refuses: its RST (OUT rst) moves the entry to CLOSE
    eng.process(raw(IP(src=first.server_address, dst=CLIENT) /
                    TCP(sport=8080, dport=40000, flags="R")), 0.5)
    assert eng.connections()[0].state == "CLOSE"
    server = rs2 if first.server_address == RS2 else eng.services()[0].servers[-1].key
    eng.edit_server(server, weight=0)
    assert eng.process(syn(), 1.0) is not None
    again = eng.connections()[0]
    assert again.state == "SYN_RECV"
    assert again.server_address != first.server_address


def test_quiesced_server_keeps_connections(eng: Engine, svc: ServiceKey) -> None:
    rs1 = eng.services()[0].servers[0].key
    eng.process(syn(), 0.0)
    eng.edit_server(rs1, weight=0)
    assert eng.process(syn(flags="A"), 1.0) is not None
    assert eng.process(syn(sport=40001), 1.0) is not None  # ICMP: nobody to schedule
    assert IP(eng.process(syn(sport=40002), 1.0) or b"").proto == 1


def test_removed_server_drops_then_expires(eng: Engine, svc: ServiceKey) -> None:
    rs1 = eng.services()[0].servers[0].key
    eng.process(syn(), 0.0)
    eng.remove_server(rs1)
    assert eng.stats().trash_servers == 1
    assert eng.process(syn(flags="A"), 1.0) is None
    assert eng.stats().drops["dest_unavailable"] == 1
    # re-adding while referenced revives it with its counters
    eng.add_server(svc, RS1, 8080)
    assert eng.stats().trash_servers == 0
    assert eng.services()[0].servers[0].stats.conns == 1
    assert eng.process(syn(flags="A"), 1.0) is not None


def test_remove_server_expire_connections(eng: Engine, svc: ServiceKey) -> None:
    rs1 = eng.services()[0].servers[0].key
    eng.process(syn(), 0.0)
    eng.remove_server(rs1, expire_connections=True)
    assert eng.connections() == []
    assert eng.stats().trash_servers == 0


def test_table_full_is_counted(svc: ServiceKey) -> None:
    e = Engine(max_connections=2)
    # the kernel's behaviour: no eviction; no syncookies, which would keep SYNs out of the table
    e.set_defense(Defense(evict_embryonic=False, syncookies=0))
    s = e.add_service("tcp", VIP, 80)
    e.add_server(s, RS1, 80)
    assert e.process(syn(sport=1), 0.0) is not None
    assert e.process(syn(sport=2), 0.0) is not None
    assert e.process(syn(sport=3), 0.0) is None
    assert e.stats().drops["table_full"] == 1
    assert e.stats().connections == 2


def test_persistence_template(eng: Engine) -> None:
    s = eng.add_service("tcp", VIP, 443, scheduler="rr", persistence=300,
                        netmask="255.255.255.0")
    eng.add_server(s, RS1, 443)
    eng.add_server(s, RS2, 443)
    eng.process(syn(dport=443, sport=1000), 0.0)
    eng.process(syn(dport=443, sport=1001, src="198.18.0.77"), 1.0)
    conns = [c for c in eng.connections() if not c.template]
    assert len({c.server_address for c in conns}) == 1
    (t,) = [c for c in eng.connections() if c.template]
    assert (t.client_address, t.client_port, t.virtual_port, t.controlled) == (
        "198.18.0.0", 0, 443, 2)
    assert t.expires == pytest.approx(1.0 + 300)
    (svc_info,) = eng.services()
    assert sum(d.persist_conns for d in svc_info.servers) == 1


def test_icmp_error_translated_both_ways(eng: Engine, svc: ServiceKey) -> None:
    eng.process(syn(), 0.0)
    # RS -> client ICMP about the client's packet (client -> RS)
    quoted = IP(src=CLIENT, dst=RS1, ttl=1) / TCP(sport=40000, dport=8080, flags="S")
    err = IP(src="198.19.0.254", dst=CLIENT) / ICMP(type=11, code=0) / bytes(quoted)[:28]
    out = eng.process(raw(err), 1.0)
    assert out is not None
    p = IP(out)
    assert p.src == VIP
    inner = p[IPerror]
    assert (inner.dst, inner[TCPerror].dport) == (VIP, 80)
    assert_checksums_ok(out)
    assert IP(bytes(p[ICMP].payload)).chksum == recomputed(bytes(p[ICMP].payload)).chksum

    # client-side router -> VIP ICMP about a packet VIP -> client
    quoted2 = IP(src=VIP, dst=CLIENT) / UDP(sport=80, dport=40000)
    quoted2 = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="SA")
    err2 = IP(src="198.18.0.254", dst=VIP) / ICMP(type=3, code=4) / bytes(quoted2)
    out2 = eng.process(raw(err2), 1.0)
    assert out2 is not None
    p2 = IP(out2)
    assert p2.dst == RS1
    assert (p2[IPerror].src, p2[TCPerror].sport) == (RS1, 8080)
    assert_checksums_ok(out2)


def test_bad_input_dropped_by_reason(eng: Engine, svc: ServiceKey) -> None:
    good = syn()
    assert eng.process(good[:10], 0.0) is None
    assert eng.process(b"\x50" + good[1:], 0.0) is None
    assert eng.process(b"\x44" + good[1:], 0.0) is None
    bad_csum = bytearray(good)
    bad_csum[10] ^= 0xFF
    assert eng.process(bytes(bad_csum), 0.0) is None
    frag = raw(IP(src=CLIENT, dst=VIP, flags="MF") / TCP(dport=80))
    assert eng.process(frag, 0.0) is None
    d = eng.stats().drops
    assert (d["truncated"], d["bad_version"], d["bad_ihl"], d["bad_ip_checksum"],
            d["fragment"]) == (1, 1, 1, 1, 1)
    assert eng.connections() == []


def test_config_errors(eng: Engine) -> None:
    with pytest.raises(ConfigError):
        eng.add_service("tcp", VIP, 80, scheduler="nope")
    s = eng.add_service("tcp", VIP, 80)
    with pytest.raises(ConfigError):
        eng.add_service("tcp", VIP, 80)
    with pytest.raises(ConfigError):
        eng.add_server(s, RS1, 80, weight=-1)
    with pytest.raises(ConfigError):
        eng.add_server(s, RS1, 80, upper_threshold=1, lower_threshold=2)
    with pytest.raises(ConfigError):
        eng.add_service("sctp", VIP, 80)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        eng.add_service("tcp", "not-an-address", 80)


def test_ip_options_are_kept_and_checksummed(eng: Engine, svc: ServiceKey) -> None:
    from scapy.layers.inet import IPOption_NOP

    inp = raw(IP(src=CLIENT, dst=VIP, options=[IPOption_NOP()] * 4) /
              TCP(sport=40000, dport=80, flags="S"))
    out = eng.process(inp, 1.0)
    assert out is not None
    p = IP(out)
    assert p.ihl == 6 and p.dst == RS1 and p[TCP].dport == 8080
    assert out[20:24] == inp[20:24]
    assert_checksums_ok(out)


def test_padding_after_total_length_is_trimmed(eng: Engine, svc: ServiceKey) -> None:
    inp = syn()
    out = eng.process(inp + b"\x00" * 6, 1.0)
    assert out is not None and len(out) == len(inp)
    assert_checksums_ok(out)


def test_no_icmp_to_unanswerable_sources(eng: Engine) -> None:
    eng.add_service("udp", VIP, 53)
    for src in ("0.0.0.0", "224.0.0.5", "255.255.255.255"):
        assert eng.process(raw(IP(src=src, dst=VIP) / UDP(sport=1, dport=53)), 1.0) is None
    d = eng.stats().drops
    assert (d["no_dest"], d["reply_short_stride"]) == (3, 0)


def test_embed_example_runs() -> None:
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "embed_engine.py"
    res = subprocess.run([sys.executable, str(example), "--servers", "3", "--scheduler", "wlc"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "port-unreachable" in res.stdout and "TIME_WAIT" in res.stdout
    # No real server at all: the SYN's answer is the ICMP error the engine generated.
    res = subprocess.run([sys.executable, str(example), "--servers", "0"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "no real server: the engine answered the client with ICMP" in res.stdout
