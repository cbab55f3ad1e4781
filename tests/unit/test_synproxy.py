"""The SYN proxy (docs/ipvs.md#syn-proxy): cookies, the handshake with the real server, and the
sequence translation for the life of a connection, with scapy-built packets through the engine.

Every expected number comes from the model in this file (delta = cookie ISN - server ISN,
timestamp offset = our TSval - the server's), never from the engine itself.

The handshake and translation tests run twice (``KINDS``): on a ``synproxy = true`` service,
and on a plain service while ``[defense] syncookies`` is engaged, which must behave exactly
alike (docs/ipvs.md#syn-cookies; the rest of syncookies is in test_syncookies.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, TCPerror
from scapy.packet import Raw

from pylvs import _core
from pylvs.engine import Defense, Engine
from tests.support.packets import ip_header_ok, l4_checksum_ok

VIP, CLIENT, RS = "198.18.0.100", "198.18.1.10", "198.19.0.11"
MSSTAB = (536, 1300, 1440, 1460)
TS_NONE = 0x40
T0 = 10_000.0
U32 = 0xFFFFFFFF

isn = st.integers(0, U32)
wscale = st.one_of(st.none(), st.integers(0, 14))
mss = st.integers(1, 9000)


# synproxy: the service's own SYN proxy; syncookies: a plain service, syncookies always on
KINDS = ("synproxy", "syncookies")
# the counters each kind's cookie steps count in (core/engine.h: same order)
COUNTERS = {"synproxy": "synproxy", "syncookies": "syncookie"}


def _engine(persistence: int = 0, scheduler: str = "rr", kind: str = "synproxy") -> Engine:
    e = Engine(max_connections=1000, seed=7,
               defense=Defense(syncookies=2 if kind == "syncookies" else 1))
    svc = e.add_service("tcp", VIP, 80, scheduler=scheduler, persistence=persistence,
                        synproxy=kind == "synproxy")
    e.add_server(svc, RS, 8080)
    return e


def _opts(mss_v: int | None, ws: int | None, sack: bool, ts: tuple[int, int] | None,
          ) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if mss_v is not None:
        out.append(("MSS", mss_v))
    if sack:
        out.append(("SAckOK", b""))
    if ts is not None:
        out.append(("Timestamp", ts))
    if ws is not None:
        out += [("NOP", None), ("WScale", ws)]
    return out


def _out(e: Engine, pkt: IP, now: float) -> IP:
    """The engine's output for ``pkt`` (it must not drop it), parsed."""
    out = e.process(bytes(pkt), now)
    assert out is not None, e.stats().drops
    return IP(out)


def _cookie(e: Engine, mss: bool = True) -> int:
    """The cookie (SYN-ACK sequence) the director answers the client's SYN (port 40000) with."""
    opts = [("MSS", 1460)] if mss else []
    syn = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S", seq=1000,
                                        options=opts)
    return int(_out(e, syn, T0)[TCP].seq)


def _checksums_ok(raw: bytes) -> bool:
    return ip_header_ok(raw) and l4_checksum_ok(raw)


@dataclass
class Proxied:
    """An established proxied connection and the numbers both ends use."""

    e: Engine
    cport: int
    client_isn: int
    cookie: int
    rs_isn: int
    our_ts: int
    rs_ts: int
    now: float

    @property
    def delta(self) -> int:
        return (self.cookie - self.rs_isn) & U32

    @property
    def ts_off(self) -> int:
        return (self.our_ts - self.rs_ts) & U32

    def cin(self, flags: str, seq_off: int, ack_cookie_space: int, payload: bytes = b"",
            opts: list[tuple[str, Any]] | None = None) -> IP:
        return IP(src=CLIENT, dst=VIP) / TCP(
            sport=self.cport, dport=80, flags=flags, seq=(self.client_isn + 1 + seq_off) & U32,
            ack=ack_cookie_space & U32, window=1000, options=opts or []) / Raw(payload)

    def sout(self, flags: str, seq_off: int, ack_off: int, payload: bytes = b"",
             opts: list[tuple[str, Any]] | None = None) -> IP:
        return IP(src=RS, dst=CLIENT) / TCP(
            sport=8080, dport=self.cport, flags=flags, seq=(self.rs_isn + 1 + seq_off) & U32,
            ack=(self.client_isn + 1 + ack_off) & U32, window=100,
            options=opts or []) / Raw(payload)

    def run(self, pkt: IP) -> IP:
        out = self.e.process(bytes(pkt), self.now)
        assert out is not None
        assert _checksums_ok(out)
        return IP(out)


def _handshake(e: Engine, *, cport: int = 40000, client_isn: int = 1000, rs_isn: int = 5000,
               mss_v: int | None = 1460, ws: int | None = 7, sack: bool = True,
               client_ts: int | None = 111, rs_ts: int = 222, rs_ws: int | None = 7,
               now: float = T0, data: bytes = b"") -> Proxied:
    ts = (client_ts, 0) if client_ts is not None else None
    syn = IP(src=CLIENT, dst=VIP) / TCP(sport=cport, dport=80, flags="S", seq=client_isn,
                                        window=64240, options=_opts(mss_v, ws, sack, ts))
    out = e.process(bytes(syn), now)
    assert out is not None and _checksums_ok(out)
    sa = IP(out)
    assert (sa.src, sa.dst, sa[TCP].sport, sa[TCP].dport) == (VIP, CLIENT, 80, cport)
    assert sa[TCP].flags == "SA" and sa[TCP].ack == (client_isn + 1) & U32
    cookie = sa[TCP].seq
    sa_opts = dict(sa[TCP].options)
    our_ts = sa_opts["Timestamp"][0] if client_ts is not None else 0
    ack_opts = [("NOP", None), ("NOP", None), ("Timestamp", ((client_ts + 1) & U32, our_ts))] \
        if client_ts is not None else []
    ack = IP(src=CLIENT, dst=VIP) / TCP(sport=cport, dport=80, flags="A" if not data else "PA",
                                        seq=(client_isn + 1) & U32, ack=(cookie + 1) & U32,
                                        window=500, options=ack_opts) / Raw(data)
    out = e.process(bytes(ack), now)
    assert out is not None and _checksums_ok(out)
    syn2 = IP(out)
    assert (syn2.src, syn2.dst, syn2[TCP].sport, syn2[TCP].dport) == (CLIENT, RS, cport, 8080)
    assert syn2[TCP].flags == "S" and syn2[TCP].seq == client_isn
    rs_opts = _opts(1460, rs_ws, True,
                    (rs_ts, (client_ts + 1) & U32) if client_ts is not None else None)
    synack = IP(src=RS, dst=CLIENT) / TCP(sport=8080, dport=cport, flags="SA", seq=rs_isn,
                                          ack=(client_isn + 1) & U32, options=rs_opts)
    out = e.process(bytes(synack), now)
    assert out is not None and _checksums_ok(out)
    third = IP(out)
    assert (third.src, third.dst, third[TCP].dport) == (CLIENT, RS, 8080)
    assert third[TCP].ack == (rs_isn + 1) & U32 and third[TCP].seq == (client_isn + 1) & U32
    assert bytes(third[TCP].payload) == data
    return Proxied(e, cport, client_isn, cookie, rs_isn, our_ts, rs_ts, now)


# ---- cookies ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(mss_v=st.one_of(st.none(), mss), ws=wscale, sack=st.booleans(),
       client_ts=st.one_of(st.none(), isn), client_isn=isn, cport=st.integers(1, 65535),
       now=st.floats(0, 2e9))
def test_cookie_round_trip_gives_the_server_the_clients_options(
        mss_v: int | None, ws: int | None, sack: bool, client_ts: int | None, client_isn: int,
        cport: int, now: float) -> None:
    """Every MSS class and option set survives the cookie: the SYN the server gets carries the
    largest MSS class not above the client's, and (with timestamps, as the kernel's cookies)
    its window scale and SACK-permitted."""
    e = _engine()
    ts = (client_ts, 0) if client_ts is not None else None
    syn = IP(src=CLIENT, dst=VIP) / TCP(sport=cport, dport=80, flags="S", seq=client_isn,
                                        options=_opts(mss_v, ws, sack, ts))
    sa = _out(e, syn, now)
    sa_opts = dict(sa[TCP].options)
    assert ("Timestamp" in sa_opts) == (client_ts is not None)
    ack_opts = [("Timestamp", (((client_ts or 0) + 5) & U32, sa_opts["Timestamp"][0]))] \
        if client_ts is not None else []
    ack = IP(src=CLIENT, dst=VIP) / TCP(sport=cport, dport=80, flags="A",
                                        seq=(client_isn + 1) & U32,
                                        ack=(sa[TCP].seq + 1) & U32, options=ack_opts)
    out = e.process(bytes(ack), now + 1.0)
    assert out is not None, e.stats().drops
    syn2 = IP(out)
    got = dict(syn2[TCP].options)
    want_mss = max(m for m in MSSTAB if m <= (mss_v or 536) or m == 536)
    assert got["MSS"] == want_mss
    if client_ts is None:
        assert "WScale" not in got and "SAckOK" not in got and "Timestamp" not in got
    else:
        assert got.get("WScale") == (min(ws, 14) if ws is not None else None)
        assert ("SAckOK" in got) == sack
        assert got["Timestamp"] == ((client_ts + 5) & U32, 0)
    assert e.stats().events["synproxy_ack_ok"] == 1


@settings(max_examples=200, deadline=None)
@given(mssind=st.integers(0, 3),
       tsopts=st.one_of(st.just(TS_NONE),
                        st.builds(lambda w, s: w | (0x10 if s else 0),
                                  st.sampled_from([*range(15), 0xF]), st.booleans())),
       saddr=isn, sport=st.integers(0, 65535), sseq=isn, now=st.floats(0, 4e9),
       later=st.floats(0, 59.9))
def test_cookie_check_accepts_its_own_cookie_within_the_window(
        mssind: int, tsopts: int, saddr: int, sport: int, sseq: int, now: float,
        later: float) -> None:
    e = _engine()
    lib, eng = _core.lib, e._e  # the cookie functions have no façade
    c = lib.lvs_synproxy_cookie_make(eng, saddr, 0xC6120064, sport, 80, sseq, mssind, tsopts,
                                     now)
    assert lib.lvs_synproxy_cookie_check(eng, saddr, 0xC6120064, sport, 80, sseq, c, tsopts,
                                         now + later) == mssind


@settings(max_examples=200, deadline=None)
@given(mssind=st.integers(0, 3), saddr=isn, sseq=isn, now=st.floats(200, 4e9),
       late=st.floats(120.0, 1e6), early=st.floats(60.0, 1e6))
def test_cookie_outside_the_window_is_refused(mssind: int, saddr: int, sseq: int, now: float,
                                              late: float, early: float) -> None:
    """A cookie is good in its 60 s period and the next one: 120 s later it never is, nor in a
    period before the one it was made in."""
    e = _engine()
    lib, eng = _core.lib, e._e
    c = lib.lvs_synproxy_cookie_make(eng, saddr, 1, 2, 80, sseq, mssind, TS_NONE, now)
    for t in (now + late, now - early):
        r = lib.lvs_synproxy_cookie_check(eng, saddr, 1, 2, 80, sseq, c, TS_NONE, t)
        # a far-away period can alias the 8-bit counter (every 256 periods); the MAC still
        # refuses it because each period has its own secret
        assert r in (lib.LVS_SP_EXPIRED, lib.LVS_SP_BAD)


@settings(max_examples=300, deadline=None)
@given(mssind=st.integers(0, 3), saddr=isn, sport=st.integers(0, 65535), sseq=isn,
       now=st.floats(0, 4e9), field=st.sampled_from(["cookie", "saddr", "sport", "sseq",
                                                     "tsopts"]), bit=st.integers(0, 31))
def test_cookie_with_a_flipped_bit_is_refused(mssind: int, saddr: int, sport: int, sseq: int,
                                              now: float, field: str, bit: int) -> None:
    e = _engine()
    lib, eng = _core.lib, e._e
    tsopts = 0x17
    c = lib.lvs_synproxy_cookie_make(eng, saddr, 9, sport, 80, sseq, mssind, tsopts, now)
    args = {"cookie": c, "saddr": saddr, "sport": sport, "sseq": sseq, "tsopts": tsopts}
    width = {"sport": 16, "tsopts": 6}.get(field, 32)
    args[field] ^= 1 << (bit % width)
    r = lib.lvs_synproxy_cookie_check(eng, args["saddr"], 9, args["sport"], 80, args["sseq"],
                                      args["cookie"], args["tsopts"], now)
    assert r < 0


@pytest.mark.parametrize("kind", KINDS)
def test_ack_with_a_forged_or_expired_cookie_creates_nothing_and_is_counted(kind: str) -> None:
    e = _engine(kind=kind)
    cookie = _cookie(e)
    forged = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=1001,
                                           ack=(cookie + 2) & U32)
    assert e.process(bytes(forged), T0) is None
    good = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=1001,
                                         ack=(cookie + 1) & U32)
    assert e.process(bytes(good), T0 + 121.0) is None
    drops, c = e.stats().drops, COUNTERS[kind]
    assert drops[f"{c}_bad_cookie"] == 1 and drops[f"{c}_expired_cookie"] == 1
    assert e.connections() == []
    assert e.process(bytes(good), T0 + 61.0) is not None  # the next period still takes it
    assert len(e.connections()) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_spoofed_syn_flood_leaves_no_state_and_sends_the_server_nothing(kind: str) -> None:
    e = _engine(kind=kind)
    outs = e.process_batch([bytes(IP(src=f"198.18.{128 + i // 250}.{i % 250 + 1}", dst=VIP)
                                  / TCP(sport=1024 + i, dport=80, flags="S", seq=i))
                            for i in range(2000)], T0)
    assert all(o is not None and IP(o).dst != RS and IP(o)[TCP].flags == "SA" for o in outs)
    assert e.connections() == [] and e.stats().events[f"{COUNTERS[kind]}_syn"] == 2000


# ---- the handshake with the server ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_data_in_the_clients_first_ack_reaches_the_server(kind: str) -> None:
    p = _handshake(_engine(kind=kind), data=b"GET / HTTP/1.0\r\n\r\n")
    conn = p.e.connections()[0]
    assert conn.synproxy and conn.state == "ESTABLISHED" and conn.active


def test_data_sent_while_the_server_handshake_is_pending_is_kept() -> None:
    e = _engine()
    cookie = _cookie(e)
    ack = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=1001,
                                        ack=cookie + 1)
    assert _out(e, ack, T0)[TCP].flags == "S"
    data = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="PA", seq=1001,
                                         ack=cookie + 1) / Raw(b"hello")
    assert e.process(bytes(data), T0) is None  # kept, not lost
    assert e.stats().events["synproxy_held"] == 1
    # the client retransmits it (no answer yet): the SYN goes to the server again
    again = e.process(bytes(data), T0 + 0.2)
    assert again is not None and IP(again)[TCP].flags == "S" and IP(again).dst == RS
    synack = IP(src=RS, dst=CLIENT) / TCP(sport=8080, dport=40000, flags="SA", seq=9,
                                          ack=1001, options=[("MSS", 1460)])
    out = _out(e, synack, T0 + 0.3)
    assert bytes(out[TCP].payload) == b"hello" and out[TCP].ack == 10 and out.dst == RS


def test_server_refusing_is_passed_on_as_a_reset_the_client_accepts() -> None:
    e = _engine()
    cookie = _cookie(e, mss=False)
    ack = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=1001,
                                        ack=cookie + 1)
    e.process(bytes(ack), T0)
    rst = IP(src=RS, dst=CLIENT) / TCP(sport=8080, dport=40000, flags="RA", seq=0, ack=1001)
    out = e.process(bytes(rst), T0)
    assert out is not None and _checksums_ok(out)
    r = IP(out)
    assert r.src == VIP and r[TCP].flags == "RA" and r[TCP].seq == (cookie + 1) & U32
    assert e.connections()[0].state == "CLOSE"


def test_no_server_answers_an_accepted_ack_with_a_reset() -> None:
    e = Engine(max_connections=10, seed=1)
    e.add_service("tcp", VIP, 80, synproxy=True)
    cookie = _cookie(e, mss=False)
    ack = IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=1001,
                                        ack=cookie + 1)
    out = _out(e, ack, T0)
    assert out[TCP].flags == "R" and out[TCP].seq == (cookie + 1) & U32 and out.dst == CLIENT


@pytest.mark.parametrize("kind", KINDS)
def test_persistence_template_and_every_scheduler_work_with_synproxy(kind: str) -> None:
    for sched in ("rr", "wlc", "sh", "mh", "lblc", "twos"):
        e = _engine(persistence=300, scheduler=sched, kind=kind)
        _handshake(e, cport=40001)
        _handshake(e, cport=40002, client_isn=77)
        conns = e.connections()
        assert sum(c.template for c in conns) == 1 and sum(c.synproxy for c in conns) == 2


# ---- translation for the life of the connection --------------------------------------------


@settings(max_examples=60, deadline=None)
@given(client_isn=isn, rs_isn=isn, client_ts=isn, rs_ts=isn, ws=st.integers(0, 14),
       rs_ws=st.one_of(st.none(), st.integers(0, 14)), sent=st.integers(0, 1 << 20))
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_numbers_translate_both_ways_for_the_life_of_the_connection(
        kind: str, client_isn: int, rs_isn: int, client_ts: int, rs_ts: int, ws: int,
        rs_ws: int | None, sent: int) -> None:
    p = _handshake(_engine(kind=kind), client_isn=client_isn, rs_isn=rs_isn, client_ts=client_ts,
                   rs_ts=rs_ts, ws=ws, rs_ws=rs_ws)
    ts_c = (client_ts + 9) & U32
    rs_t = (rs_ts + 3) & U32
    # server data, then the same segment again (a retransmission): both translated alike
    seg = p.sout("PA", sent, 5, b"x" * 10, [("NOP", None), ("NOP", None),
                                           ("Timestamp", (rs_t, ts_c))])
    for _ in range(2):
        o = p.run(seg)
        assert o.src == VIP and o[TCP].sport == 80
        assert o[TCP].seq == (p.cookie + 1 + sent) & U32
        assert o[TCP].ack == (client_isn + 1 + 5) & U32
        assert dict(o[TCP].options)["Timestamp"] == ((rs_t + p.ts_off) & U32, ts_c)
        shift = (rs_ws if rs_ws is not None else 0) - 7
        assert o[TCP].window == min(0xFFFF, 100 << shift if shift >= 0 else 100 >> -shift)
    # the client acknowledges it and SACKs a later block, in its own (cookie) numbers
    our = (rs_t + p.ts_off) & U32
    left, right = (p.cookie + 1 + sent + 20) & U32, (p.cookie + 1 + sent + 30) & U32
    i = p.run(p.cin("A", 5, p.cookie + 1 + sent + 10, opts=[
        ("NOP", None), ("NOP", None), ("Timestamp", (ts_c, our)),
        ("NOP", None), ("NOP", None), ("SAck", (left, right))]))
    assert i.dst == RS and i[TCP].dport == 8080
    assert i[TCP].ack == (rs_isn + 1 + sent + 10) & U32
    assert i[TCP].seq == (client_isn + 1 + 5) & U32
    io = dict(i[TCP].options)
    assert io["Timestamp"] == (ts_c, rs_t)
    assert io["SAck"] == ((rs_isn + 1 + sent + 20) & U32, (rs_isn + 1 + sent + 30) & U32)
    # FIN both ways
    f = p.run(p.sout("FA", sent + 10, 5))
    assert f[TCP].seq == (p.cookie + 1 + sent + 10) & U32
    f2 = p.run(p.cin("FA", 5, p.cookie + 1 + sent + 11))
    assert f2[TCP].ack == (rs_isn + 1 + sent + 11) & U32
    # a reset from the server, and one from the client
    r = p.run(p.sout("R", sent + 11, 0))
    assert r[TCP].seq == (p.cookie + 1 + sent + 11) & U32
    r2 = p.run(p.cin("RA", 6, p.cookie + 1 + sent + 11))
    assert r2[TCP].ack == (rs_isn + 1 + sent + 11) & U32


@settings(max_examples=40, deadline=None)
@given(client_isn=isn, rs_isn=isn, sent=st.integers(0, 1 << 20))
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_numbers_quoted_in_icmp_errors_are_translated(kind: str, client_isn: int,
                                                               rs_isn: int, sent: int) -> None:
    p = _handshake(_engine(kind=kind), client_isn=client_isn, rs_isn=rs_isn, client_ts=None)
    # the client's side reports a packet it got from the VIP (cookie numbers) ...
    quoted = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=p.cport, flags="A",
                                           seq=(p.cookie + 1 + sent) & U32,
                                           ack=(client_isn + 1) & U32)
    err = IP(src="198.18.1.1", dst=VIP) / ICMP(type=3, code=4) / bytes(quoted)[:40]
    o = p.run(err)
    q = o[TCPerror]
    assert o.dst == RS and q.sport == 8080 and q.seq == (rs_isn + 1 + sent) & U32
    assert q.ack == (client_isn + 1) & U32
    # ... and the server's side one it got from the client (server numbers in the ack)
    quoted = IP(src=CLIENT, dst=RS) / TCP(sport=p.cport, dport=8080, flags="A",
                                          seq=(client_isn + 1) & U32,
                                          ack=(rs_isn + 1 + sent) & U32)
    err = IP(src="198.19.0.1", dst=CLIENT) / ICMP(type=3, code=4) / bytes(quoted)[:40]
    o = p.run(err)
    q = o[TCPerror]
    assert o.src == VIP and q.dport == 80 and q.ack == (p.cookie + 1 + sent) & U32
    assert q.seq == (client_isn + 1) & U32


@pytest.mark.parametrize("kind", KINDS)
def test_the_sequence_delta_travels_in_connection_sync(kind: str) -> None:
    p = _handshake(_engine(kind=kind), client_isn=123, rs_isn=0xFFFFFF00, rs_ws=9)
    blob = p.e.sync_full(p.now)
    assert len(blob) == 72 and blob[36] == 1 and blob[37] == 24  # IPVS_OPT_SEQ_DATA
    backup = _engine(kind=kind)
    assert backup.sync_apply(blob, p.now) == 1
    assert backup.connections()[0].synproxy
    seg = p.sout("PA", 100, 0, b"abc", [("NOP", None), ("NOP", None),
                                       ("Timestamp", (999, 112))])
    master_out = p.run(seg)
    p.e = backup
    backup_out = p.run(seg)
    assert bytes(master_out[TCP]) == bytes(backup_out[TCP])


def test_synproxy_is_for_tcp_services_only() -> None:
    import pytest

    from pylvs import config
    from pylvs.errors import ConfigError

    with pytest.raises(ConfigError, match="synproxy"):
        Engine(max_connections=10).add_service("udp", VIP, 53, synproxy=True)
    example = Path(__file__).parents[2] / "examples" / "pylvs.toml"
    toml = example.read_text(encoding="utf-8").replace('protocol = "tcp"', 'protocol = "udp"', 1)
    toml = toml.replace("synproxy = false", "synproxy = true", 1)
    with pytest.raises(ConfigError, match="synproxy"):
        config.parse(toml)
    e = _engine()
    (svc,) = e.services()
    assert svc.synproxy
    e.edit_service(svc.key, synproxy=False)
    assert not e.services()[0].synproxy
    e.edit_service(svc.key, scheduler="wlc")  # other edits keep it as it is
    assert not e.services()[0].synproxy


def test_an_established_proxied_connection_is_never_evicted() -> None:
    """Eviction (a full table gives the oldest embryonic entry away) takes pending handshakes
    at most: a proxied connection the server has answered is established."""
    # syncookies off: the plain service's flood must fill the table
    e = Engine(max_connections=8, seed=3, defense=Defense(syncookies=0))
    svc = e.add_service("tcp", VIP, 80, scheduler="rr", synproxy=True)
    e.add_server(svc, RS, 8080)
    plain = e.add_service("tcp", VIP, 81, scheduler="rr")
    e.add_server(plain, RS, 8081)
    _handshake(e, cport=40001)
    _handshake(e, cport=40002)
    for i in range(40):
        e.process(bytes(IP(src=f"198.18.200.{i + 1}", dst=VIP)
                        / TCP(sport=1000 + i, dport=81, flags="S")), T0 + 1)
    ports = {c.client_port for c in e.connections() if c.synproxy}
    assert ports == {40001, 40002} and len(e.connections()) == 8
