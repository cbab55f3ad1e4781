"""The XDP SYN-cookie responder (dataplane/bpf/xdp_synproxy.bpf.c), run by the kernel on
generated SYNs through BPF_PROG_TEST_RUN: its SYN-ACK is byte for byte the engine's SYN-ACK for
the same SYN, secret and time (so the engine accepts the client's ACK), IPv4 and IPv6, every MSS
class, options present, absent, repeated, unknown or malformed; everything it must leave to the
kernel and the engine is XDP_PASS, untouched."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pylvs.dataplane.xdp import BPF_OBJECT, SVC_COOKIES, SVC_SYNPROXY, XdpSynproxy
from pylvs.engine import Defense, Engine
from pylvs.errors import CoreError

VIP, VIP6, OTHER_VIP, OTHER_VIP6 = "198.18.0.100", "2001:2::100", "198.18.0.101", "2001:2::101"
RS, RS6 = "198.19.0.11", "2001:2:1::11"
XDP_PASS, XDP_TX = 2, 3
CLIENT_MAC, OUR_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"

Frame = tuple[bytes, bytes]  # (Ethernet frame, its IP packet)


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[XdpSynproxy, Engine]]:
    if not BPF_OBJECT.exists():
        pytest.skip("the XDP program was not built (no clang)")
    try:
        x = XdpSynproxy.load()
    except CoreError as exc:  # no bpf(2) for this user, no libbpf
        pytest.skip(str(exc))
    e = Engine(max_connections=1000, seed=11)
    for vip, rs in ((VIP, RS), (VIP6, RS6)):
        svc = e.add_service("tcp", vip, 80, synproxy=True)
        e.add_server(svc, rs, 8080)
    # not proxied: answered only while syncookies is engaged
    e.add_server(e.add_service("tcp", OTHER_VIP, 80), RS, 8080)
    e.add_server(e.add_service("tcp", OTHER_VIP6, 80), RS6, 8080)
    e.set_defense(Defense(syncookies=0))
    x.set_services({(ipaddress.ip_address(VIP), 80): SVC_SYNPROXY,
                    (ipaddress.ip_address(VIP6), 80): SVC_SYNPROXY,
                    (ipaddress.ip_address(OTHER_VIP), 80): SVC_COOKIES,
                    (ipaddress.ip_address(OTHER_VIP6), 80): SVC_COOKIES})
    x.push_secrets(e, time.monotonic())
    yield x, e
    x.close()


def _frame(ip: Any) -> Frame:
    pkt = bytes(ip)
    return bytes(Ether(src=CLIENT_MAC, dst=OUR_MAC, type=0x86DD if ip.version == 6 else 0x800)
                 ) + pkt, pkt


def _engine_replies(e: Engine, pkt: bytes, t0: float, t1: float) -> list[bytes | None]:
    """The engine's answer at every millisecond the program's clock may have read."""
    return [e.process(pkt, (ms + 0.5) / 1000.0)
            for ms in range(int(t0 * 1000) - 1, int(t1 * 1000) + 2)]


def _xdp(x: XdpSynproxy, frame: bytes) -> tuple[int, bytes, float, float]:
    t0 = time.monotonic()
    verdict, out = x.run(frame)
    return verdict, out, t0, time.monotonic()


def _assert_same_syn_ack(rig: tuple[XdpSynproxy, Engine], ip: Any) -> None:
    x, e = rig
    frame, pkt = _frame(ip)
    verdict, out, t0, t1 = _xdp(x, frame)
    assert verdict == XDP_TX
    assert out[:6] == frame[6:12] and out[6:12] == frame[:6]  # MACs swapped
    assert out[12:14] == frame[12:14]
    assert out[14:] in _engine_replies(e, pkt, t0, t1)


# ---- generated SYNs ----

_mss = st.one_of(st.none(), st.integers(1, 535), st.integers(536, 1299),
                 st.integers(1300, 1439), st.integers(1440, 1459), st.integers(1460, 65535))
_option = st.one_of(
    st.builds(lambda v: ("MSS", v), st.integers(0, 65535)),
    st.builds(lambda v: ("WScale", v), st.integers(0, 255)),
    st.just(("SAckOK", b"")),
    st.builds(lambda a, b: ("Timestamp", (a, b)), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1)),
    st.just(("NOP", None)),
    st.builds(lambda k, v: (k, v), st.integers(9, 254), st.binary(max_size=6)),  # unknown kinds
)


def _options_len(opts: list[tuple[Any, Any]]) -> int:
    size = {"MSS": 4, "WScale": 3, "SAckOK": 2, "Timestamp": 10, "NOP": 1, "EOL": 1}
    return sum(size[k] if isinstance(k, str) else 2 + len(v) for k, v in opts)


@st.composite
def syns(draw: st.DrawFn) -> Any:
    v6 = draw(st.booleans())
    mss = draw(_mss)
    ws = draw(st.one_of(st.none(), st.integers(0, 20)))
    sack = draw(st.booleans())
    ts = draw(st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))))
    opts: list[tuple[Any, Any]] = []
    if mss is not None:
        opts.append(("MSS", mss))
    if sack:
        opts.append(("SAckOK", b""))
    if ts is not None:
        opts.append(("Timestamp", ts))
    if ws is not None:
        opts += [("NOP", None), ("WScale", ws)]
    extra = draw(st.lists(_option, max_size=4))
    opts = draw(st.permutations(opts + extra)) if draw(st.booleans()) else opts + extra
    if draw(st.booleans()):
        opts.append(("EOL", None))
    while _options_len(opts) > 40:
        opts.pop()
    client = (f"2001:2:8::{draw(st.integers(1, 0xFFFF)):x}" if v6
              else f"198.18.{draw(st.integers(128, 255))}.{draw(st.integers(1, 254))}")
    tcp = TCP(sport=draw(st.integers(1, 65535)), dport=80, seq=draw(st.integers(0, 2**32 - 1)),
              flags=draw(st.sampled_from(["S", "SE", "SEC", "SP", "SU"])),
              window=draw(st.integers(0, 65535)), options=opts)
    payload = draw(st.binary(max_size=64))  # TCP Fast Open style data is not answered
    ip = (IPv6(src=client, dst=VIP6, hlim=draw(st.integers(1, 255))) if v6
          else IP(src=client, dst=VIP, ttl=draw(st.integers(1, 255)),
                  id=draw(st.integers(0, 65535)), flags=draw(st.sampled_from(["", "DF"]))))
    return ip / tcp / Raw(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(syn=syns())
def test_xdp_syn_ack_is_the_engines_byte_for_byte(rig: tuple[XdpSynproxy, Engine],
                                                  syn: Any) -> None:
    _assert_same_syn_ack(rig, syn)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(syn=syns())
def test_while_syncookies_is_engaged_a_plain_service_gets_the_engines_bytes_too(
        rig: tuple[XdpSynproxy, Engine], syn: Any) -> None:
    """[defense] syncookies engaged: the program answers a service without synproxy exactly
    as the engine then does (docs/ipvs.md#syn-cookies); disengaged, it passes the SYN."""
    x, e = rig
    plain = syn.copy()
    plain.dst = OTHER_VIP6 if plain.version == 6 else OTHER_VIP
    before = x.counters()
    _passes(x, _frame(plain)[0])
    x.set_cookies_engaged(True)
    e.set_defense(Defense(syncookies=2))
    try:
        _assert_same_syn_ack(rig, plain)
    finally:
        x.set_cookies_engaged(False)
        e.set_defense(Defense(syncookies=0))
    after = x.counters()
    assert after["cookie_syn"] == before["cookie_syn"] + 1
    assert after["syn"] == before["syn"] + 1


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("mss", [None, 100, 536, 1300, 1440, 1460, 9000])
def test_every_mss_class_with_and_without_timestamps(rig: tuple[XdpSynproxy, Engine], v6: bool,
                                                     mss: int | None) -> None:
    for ts in (None, (12345, 0)):
        opts: list[tuple[str, Any]] = [] if mss is None else [("MSS", mss)]
        if ts:
            opts += [("SAckOK", b""), ("Timestamp", ts), ("NOP", None), ("WScale", 7)]
        ip = IPv6(src="2001:2:8::5", dst=VIP6) if v6 else IP(src="198.18.130.5", dst=VIP)
        _assert_same_syn_ack(rig, ip / TCP(sport=40000, dport=80, flags="S", seq=99,
                                           options=opts))


def test_the_engine_accepts_the_clients_ack_to_an_xdp_cookie(
        rig: tuple[XdpSynproxy, Engine]) -> None:
    x, e = rig
    syn = IP(src="198.18.140.7", dst=VIP) / TCP(sport=41000, dport=80, flags="S", seq=5000,
                                                options=[("MSS", 1400), ("SAckOK", b""),
                                                         ("Timestamp", (777, 0)),
                                                         ("NOP", None), ("WScale", 5)])
    verdict, out, _, _ = _xdp(x, _frame(syn)[0])
    assert verdict == XDP_TX
    synack = IP(out[14:])
    tsval = dict(synack[TCP].options)["Timestamp"][0]
    before = e.stats().events["synproxy_ack_ok"]
    ack = IP(src="198.18.140.7", dst=VIP) / TCP(sport=41000, dport=80, flags="A", seq=5001,
                                                ack=synack[TCP].seq + 1,
                                                options=[("NOP", None), ("NOP", None),
                                                         ("Timestamp", (778, tsval))])
    to_server = e.process(bytes(ack), time.monotonic())
    assert to_server is not None and e.stats().events["synproxy_ack_ok"] == before + 1
    syn_out = IP(to_server)
    assert syn_out.dst == RS and syn_out[TCP].flags == "S"
    opts = dict(syn_out[TCP].options)
    assert opts["MSS"] == 1300 and opts["WScale"] == 5 and "SAckOK" in opts


# ---- what the program leaves alone ----

def _passes(x: XdpSynproxy, frame: bytes) -> None:
    verdict, out, _, _ = _xdp(x, frame)
    assert verdict == XDP_PASS and out == frame


def _v4_with(raw: bytes, **fields: int) -> bytes:
    b = bytearray(raw)
    for off, value in fields.items():
        b[int(off[1:])] = value
    return bytes(b)


def test_everything_but_a_bare_syn_to_a_synproxy_service_passes(
        rig: tuple[XdpSynproxy, Engine]) -> None:
    x, _ = rig
    client = "198.18.150.1"
    for ip in (
        IP(src=client, dst=VIP) / TCP(dport=80, flags="A"),           # the client's ACK
        IP(src=client, dst=VIP) / TCP(dport=80, flags="SA"),
        IP(src=client, dst=VIP) / TCP(dport=80, flags="SR"),
        IP(src=client, dst=VIP) / TCP(dport=80, flags="SF"),
        IP(src=client, dst=VIP) / TCP(dport=81, flags="S"),           # no service on the port
        IP(src=client, dst=OTHER_VIP) / TCP(dport=80, flags="S"),     # not a synproxy service
        IP(src=client, dst=VIP, options=[b"\x01\x01\x01\x00"]) / TCP(dport=80, flags="S"),
        IP(src=client, dst=VIP, flags="MF") / TCP(dport=80, flags="S"),
        IP(src="0.0.0.0", dst=VIP) / TCP(dport=80, flags="S"),        # no handshake source
        IP(src="224.0.0.9", dst=VIP) / TCP(dport=80, flags="S"),
        IP(src=client, dst=VIP) / TCP(dport=80, flags="S", dataofs=15),  # header past the end
        IPv6(src="ff02::1", dst=VIP6) / TCP(dport=80, flags="S"),
        IPv6(src="2001:2:8::1", dst=VIP6, nh=0) / Raw(bytes(8)) / TCP(dport=80, flags="S"),
        IP(src=client, dst=VIP) / Raw(b"\x45"),                        # truncated TCP
    ):
        _passes(x, _frame(ip)[0])
    good = _frame(IP(src=client, dst=VIP) / TCP(dport=80, flags="S"))[0]
    _passes(x, good[:14] + _v4_with(good[14:], b10=good[24] ^ 0xFF))  # bad header checksum
    _passes(x, bytes.fromhex("ffffffffffff") + good[6:])  # broadcast frame
    # options past the IP total length (in padding): the engine drops it as truncated
    long = _frame(IP(src=client, dst=VIP) / TCP(dport=80, flags="S",
                                                options=[("NOP", None)] * 40))[1]
    cut = IP(long)
    cut.len, cut.chksum = 40, None
    _passes(x, _frame(cut)[0])
    v6 = _frame(IPv6(src="2001:2:8::1", dst=VIP6, plen=20) / TCP(dport=80, flags="S",
                                                                  options=[("NOP", None)] * 8))
    _passes(x, v6[0])
    _passes(x, good[:12] + b"\x81\x00" + good[14:])  # VLAN tag: not parsed


def test_without_a_pushed_secret_the_syn_goes_to_the_engine() -> None:
    if not BPF_OBJECT.exists():
        pytest.skip("the XDP program was not built (no clang)")
    try:
        x = XdpSynproxy.load()
    except CoreError as exc:
        pytest.skip(str(exc))
    try:
        x.set_services({(ipaddress.ip_address(VIP), 80): SVC_SYNPROXY})
        frame = _frame(IP(src="198.18.150.2", dst=VIP) / TCP(dport=80, flags="S"))[0]
        _passes(x, frame)
        assert x.counters() == {"syn": 0, "no_secret": 1, "cookie_syn": 0}
        x.push_secrets(Engine(max_connections=10), time.monotonic())
        assert x.run(frame)[0] == XDP_TX
        assert x.counters() == {"syn": 1, "no_secret": 1, "cookie_syn": 0}
        x.set_services({})  # the service is gone: the next SYN is the engine's again
        _passes(x, frame)
    finally:
        x.close()


def test_a_cookie_ack_reuses_a_closed_entry_as_the_syn_would_have(
        rig: tuple[XdpSynproxy, Engine]) -> None:
    """conn_reuse_mode: a client reusing its port after a close sends a SYN the engine never
    sees (XDP answers it); its cookie ACK must open a new connection, not ride the old entry."""
    x, e = rig
    client, cport = "198.18.160.9", 42000

    def handshake(isn: int) -> IP:
        syn = IP(src=client, dst=VIP) / TCP(sport=cport, dport=80, flags="S", seq=isn,
                                            options=[("MSS", 1460)])
        verdict, out, _, _ = _xdp(x, _frame(syn)[0])
        assert verdict == XDP_TX
        ack = IP(src=client, dst=VIP) / TCP(sport=cport, dport=80, flags="A", seq=isn + 1,
                                            ack=IP(out[14:])[TCP].seq + 1)
        to_server = e.process(bytes(ack), time.monotonic())
        assert to_server is not None
        return IP(to_server)

    opened = e.stats().events["synproxy_ack_ok"]
    syn1 = handshake(1000)
    assert syn1[TCP].flags == "S" and syn1[TCP].seq == 1000
    synack = IP(src=syn1.dst, dst=client) / TCP(sport=8080, dport=cport, flags="SA", seq=7000,
                                                ack=1001)
    assert e.process(bytes(synack), time.monotonic()) is not None  # the held ACK, to the server
    rst = IP(src=client, dst=VIP) / TCP(sport=cport, dport=80, flags="R", seq=1001)
    assert e.process(bytes(rst), time.monotonic()) is not None
    [old] = [c for c in e.connections() if c.client_port == cport]
    assert old.state == "CLOSE"
    syn2 = handshake(50_000)  # the same tuple again: a new connection, a new SYN to a server
    assert syn2[TCP].flags == "S" and syn2[TCP].seq == 50_000
    assert e.stats().events["synproxy_ack_ok"] == opened + 2
    [new] = [c for c in e.connections() if c.client_port == cport]
    assert new.state == "SYN_SENT"
