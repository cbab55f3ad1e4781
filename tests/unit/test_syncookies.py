"""``[defense] syncookies`` (docs/ipvs.md#syn-cookies; core/defense.c): SYN cookies for every
TCP service while a SYN flood is on, as the kernel's tcp_syncookies.

What is checked here: when it engages and disengages (the threshold, the hysteresis), that a
service without synproxy answers cookies while engaged and forwards SYNs when not, the cookie
ACK window after disengaging, that a live entry keeps its SYNs and an established entry is
never evicted, and the settings surface (config, API).  That a cookie connection then behaves
exactly as a synproxy one (options, data in the first ACK, translation, sync) is
test_synproxy.py, whose handshake tests run for both kinds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pylvs import model
from pylvs.config import load, validate
from pylvs.engine import Defense, Engine
from pylvs.errors import ConfigError
from tests.support.mini_director import base_config
from tests.unit.test_synproxy import CLIENT, RS, U32, VIP, _handshake

FLOOD = "198.18.{}.{}"
T0 = 9960.0  # the start of cookie period 166 (60 s periods): the window tests count from it


def _engine(max_connections: int = 1000, **defense: int | bool) -> Engine:
    """A plain TCP service VIP:80 -> RS:8080 (no synproxy); amemthresh is a tenth of the
    table, so the syncookies threshold is min(100, 4096) = 100 by default."""
    e = Engine(max_connections=max_connections, seed=5, defense=Defense(**defense))  # type: ignore[arg-type]
    svc = e.add_service("tcp", VIP, 80, scheduler="rr")
    e.add_server(svc, RS, 8080)
    return e


def _spoofed(i: int, dport: int = 80) -> bytes:
    return bytes(IP(src=FLOOD.format(128 + i // 250, i % 250 + 1), dst=VIP)
                 / TCP(sport=1024 + i % 60000, dport=dport, flags="S", seq=i))


def _syn(cport: int = 40000, seq: int = 1000) -> bytes:
    return bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=cport, dport=80, flags="S", seq=seq))


def _ack(cookie: int, cport: int = 40000, seq: int = 1001) -> bytes:
    return bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=cport, dport=80, flags="A", seq=seq,
                                               ack=(cookie + 1) & U32))


def _answered_with_cookie(out: bytes | None) -> bool:
    return out is not None and IP(out).src == VIP and IP(out)[TCP].flags == "SA"


def _forwarded(out: bytes | None) -> bool:
    return out is not None and IP(out).dst == RS and IP(out)[TCP].flags == "S"


def _flood_until_engaged(e: Engine, now: float) -> int:
    """Spoofed SYNs until syncookies engages; returns how many were forwarded."""
    n = 0
    while not e.defense().syncookies.engaged:  # type: ignore[union-attr]
        assert _forwarded(e.process(_spoofed(n), now)) and n < 10_000
        n += 1
    return n


# ---- engaging -----------------------------------------------------------------------------


def test_automatic_mode_engages_when_the_embryonic_entries_reach_the_threshold() -> None:
    e = _engine()
    assert e.defense().settings.syncookies == 1  # the kernel's default
    sc = e.defense().syncookies
    assert sc is not None and not sc.engaged and sc.threshold == 100
    # the first 100 SYNs go to the server and make embryonic entries; the 100th engages
    assert _flood_until_engaged(e, T0) == 100
    assert e.stats().connections == 100 and e.defense().embryonic == 100
    # from then on a SYN to the plain service is answered here and leaves nothing behind
    for i in range(100, 600):
        assert _answered_with_cookie(e.process(_spoofed(i), T0))
    assert e.stats().connections == 100
    assert e.stats().events["syncookie_syn"] == 500
    assert e.defense().syncookies.times_engaged == 1  # type: ignore[union-attr]


def test_the_threshold_is_amemthresh_capped_at_the_kernels_backlog() -> None:
    assert _engine(max_connections=100_000).defense().syncookies.threshold == 4096  # type: ignore[union-attr]
    assert _engine(amemthresh=7).defense().syncookies.threshold == 7  # type: ignore[union-attr]
    # amemthresh 0: the automatic mode never engages
    e = _engine(amemthresh=0)
    for i in range(300):
        assert _forwarded(e.process(_spoofed(i), T0))
    e.expire(T0 + 1)
    assert not e.defense().syncookies.engaged  # type: ignore[union-attr]


def test_without_a_flood_syns_are_forwarded_and_mode_0_never_engages() -> None:
    e = _engine()
    for port in range(40000, 40050):  # a normal load: each handshake completes
        assert _forwarded(e.process(_syn(port), T0))
        e.process(_ack(0, cport=port), T0)
    assert not e.defense().syncookies.engaged  # type: ignore[union-attr]
    off = _engine(syncookies=0)
    for i in range(1000):
        assert _forwarded(off.process(_spoofed(i), T0))
    off.expire(T0 + 1)
    assert not off.defense().syncookies.engaged  # type: ignore[union-attr]
    assert off.stats().events.get("syncookie_syn", 0) == 0


def test_mode_2_answers_every_tcp_service_at_once_and_never_udp() -> None:
    e = _engine(syncookies=2)
    other = e.add_service("tcp", VIP, 443, scheduler="wlc")
    e.add_server(other, RS, 8443)
    dns = e.add_service("udp", VIP, 53)
    e.add_server(dns, RS, 53)
    assert e.defense().syncookies.engaged  # type: ignore[union-attr]
    assert _answered_with_cookie(e.process(_spoofed(1, dport=80), T0))
    assert _answered_with_cookie(e.process(_spoofed(2, dport=443), T0))
    # a bare ACK with no cookie: refused, nothing made
    assert e.process(bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80, flags="A")),
                     T0) is None
    out = e.process(bytes(IP(src=CLIENT, dst=VIP) / UDP(sport=5353, dport=53) / b"q"), T0)
    assert out is not None and IP(out).dst == RS
    drops = e.stats().drops  # a random ACK's cookie mostly names a period long gone
    assert drops["syncookie_bad_cookie"] + drops["syncookie_expired_cookie"] == 1


# ---- disengaging: hysteresis ----------------------------------------------------------------


def test_it_stays_engaged_while_the_flood_goes_on_though_the_table_empties() -> None:
    """Cookies make no entries: once the flood's embryonic entries expire (60 s) the table is
    empty, but the unanswered cookie SYNs keep it engaged; after the flood it disengages only
    after 10 quiet seconds."""
    e = _engine()
    now = T0
    _flood_until_engaged(e, now)
    n = 1000
    for second in range(1, 80):  # 50 spoofed SYNs a second: 50 x 60 s = 3000 >= 100 / 2
        now = T0 + second
        for _ in range(50):
            assert _answered_with_cookie(e.process(_spoofed(n), now))
            n += 1
        e.expire(now)
        sc = e.defense().syncookies
        assert sc is not None and sc.engaged, second
    assert e.stats().connections == 0  # the flood's entries are all gone
    assert e.defense().syncookies.unanswered == 50  # type: ignore[union-attr]
    # the flood stops: quiet seconds count up, and it lets go at the 10th
    for quiet in range(1, 11):
        now += 1
        e.expire(now)
        sc = e.defense().syncookies
        assert sc is not None and sc.quiet_seconds == (quiet if quiet < 10 else 10)
        assert sc.engaged == (quiet < 10), quiet
    assert _forwarded(e.process(_syn(), now))  # and SYNs go to the servers again


def test_a_pause_in_the_flood_or_a_trickle_does_not_flap_it() -> None:
    e = _engine()
    now = T0
    _flood_until_engaged(e, now)
    n = 1000
    for second in range(1, 100):
        now = T0 + second
        # bursts every 8 s (a pause shorter than the hold), then a trickle too small to count
        burst = 200 if second < 70 and second % 8 == 0 else 0
        for _ in range(burst):
            e.process(_spoofed(n), now)
            n += 1
        e.expire(now)
        if second < 70:
            assert e.defense().syncookies.engaged, second  # type: ignore[union-attr]
    # the bursts stopped at 64 and the embryonic entries of the first second expired at 61
    assert not e.defense().syncookies.engaged  # type: ignore[union-attr]
    assert e.defense().syncookies.times_engaged == 1  # type: ignore[union-attr]


def test_syns_answered_in_xdp_keep_it_engaged() -> None:
    """The director reports the SYNs XDP answered: they count as unanswered as the engine's."""
    e = _engine()
    now = T0
    _flood_until_engaged(e, now)
    for second in range(1, 80):
        now = T0 + second
        e.note_cookie_syns(5000)  # the engine itself sees none of them
        e.expire(now)
        assert e.defense().syncookies.engaged, second  # type: ignore[union-attr]
    assert e.defense().syncookies.xdp_syns == 79 * 5000  # type: ignore[union-attr]


# ---- the cookie ACK window ------------------------------------------------------------------


def test_cookie_acks_are_accepted_for_a_cookies_lifetime_after_disengaging() -> None:
    e = _engine(syncookies=2)
    e.expire(T0)
    sa = e.process(_syn(40000), T0 + 1)
    sa2 = e.process(_syn(40001), T0 + 1)
    sa3 = e.process(_syn(40002), T0 + 1)
    assert _answered_with_cookie(sa) and _answered_with_cookie(sa2) and _answered_with_cookie(sa3)
    cookies = [int(IP(x)[TCP].seq) for x in (sa, sa2, sa3)]  # type: ignore[arg-type]
    e.set_defense(Defense(syncookies=0))  # disengaged: no more cookies are sent ...
    e.expire(T0 + 2)  # (the window starts at this tick: a set has no clock)
    assert not e.defense().syncookies.engaged  # type: ignore[union-attr]
    assert _forwarded(e.process(_syn(40009), T0 + 2))
    # ... but the ACKs to those already sent are taken: the handshake opens as synproxy's
    out = e.process(_ack(cookies[0], cport=40000), T0 + 61)
    assert out is not None and IP(out).dst == RS and IP(out)[TCP].flags == "S"
    assert IP(out)[TCP].seq == 1000  # the client's ISN: the server sees the client's SYN
    assert e.stats().events["syncookie_ack_ok"] == 1
    # a cookie past its lifetime inside the window: refused as expired, nothing made
    before = len(e.connections())
    assert e.process(_ack(cookies[1], cport=40001), T0 + 121) is None
    assert e.stats().drops["syncookie_expired_cookie"] == 1
    # after the window no cookie is looked at: an ACK without a conn, as always
    assert e.process(_ack(cookies[2], cport=40002), T0 + 122.5) is None
    assert e.stats().drops["tcp_no_syn"] == 1 and len(e.connections()) == before


def test_a_cookie_ack_reuses_a_time_wait_entry_as_the_syn_would_have() -> None:
    """XDP answers the SYN, so the engine first sees the ACK of a reused client port."""
    e = _engine()
    assert _forwarded(e.process(_syn(40000, seq=1), T0))
    for flags, src, dst, sport, dport in (("A", CLIENT, VIP, 40000, 80),
                                          ("FA", CLIENT, VIP, 40000, 80),
                                          ("FA", RS, CLIENT, 8080, 40000),
                                          ("A", CLIENT, VIP, 40000, 80)):
        e.process(bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)), T0)
    assert [c.state for c in e.connections()] == ["TIME_WAIT"]
    e.set_defense(Defense(syncookies=2))
    # the engine's own cookie for the reused port stands for XDP's (the same bytes)
    cookie = int(IP(e.process(_syn(40000, seq=5000), T0 + 1))[TCP].seq)  # type: ignore[arg-type]
    out = e.process(_ack(cookie, seq=5001), T0 + 1)
    assert out is not None and IP(out).dst == RS and IP(out)[TCP].flags == "S"
    conns = e.connections()
    assert len(conns) == 1 and conns[0].synproxy and conns[0].state == "SYN_SENT"


@pytest.mark.parametrize("state_flags", [
    ("A", "FA", "R-FA", "A"),  # client closes first: TIME_WAIT
    ("A", "R-FA", "A", "FA"),  # server closes first (HTTP Connection: close)
])
def test_the_workers_shared_path_sends_such_an_ack_to_the_cookie_check(
        state_flags: tuple[str, ...]) -> None:
    """The workers run established packets under the shared lock (fast_one): an ACK on a
    TIME_WAIT entry is steady there and would ride the old entry to a server that resets it
    (measured: 0.004 of the conn/s with XDP answering the SYNs); while cookie ACKs are taken
    it must reach the exclusive path's check."""
    from pylvs._core import lib
    from tests.unit.test_workers_shared import _run

    e = _engine()
    assert _forwarded(e.process(_syn(40000, seq=1), T0))
    for f in state_flags:
        src, dst, sport, dport = ((RS, CLIENT, 8080, 40000) if f.startswith("R-")
                                  else (CLIENT, VIP, 40000, 80))
        e.process(bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport,
                                                   flags=f.removeprefix("R-"))), T0)
    assert [c.state for c in e.connections()] == ["TIME_WAIT"]
    e.set_defense(Defense(syncookies=2))
    xdp = _engine(syncookies=2)  # same seed: the cookie XDP would have sent
    cookie = int(IP(xdp.process(_syn(40000, seq=5000), T0 + 1))[TCP].seq)  # type: ignore[arg-type]
    [(_, out)] = _run(e, lib.lvs_engine_process_batch_shared, [_ack(cookie, seq=5001)],
                            T0 + 1)
    assert IP(out).dst == RS and IP(out)[TCP].flags == "S" and IP(out)[TCP].seq == 5000
    assert e.stats().events["syncookie_ack_ok"] == 1


def test_with_sloppy_tcp_an_ack_without_a_cookie_is_still_scheduled() -> None:
    """sloppy_tcp schedules a flow ECMP moved here; a cookie ACK still opens as synproxy."""
    e = _engine(syncookies=2)
    e.set_option("sloppy_tcp", 1)
    out = e.process(_ack(12345, cport=41000), T0)
    assert out is not None and IP(out).dst == RS and IP(out)[TCP].flags == "A"
    assert e.stats().events["sloppy_in"] == 1
    p = _handshake(e, cport=42000)
    assert [c.synproxy for c in e.connections() if c.client_port == p.cport] == [True]


# ---- live entries ---------------------------------------------------------------------------


def test_a_syn_on_a_live_entry_is_forwarded_on_it_while_engaged() -> None:
    e = _engine()
    assert _forwarded(e.process(_syn(40000), T0))
    e.process(_ack(0, cport=40000), T0)
    assert [c.state for c in e.connections()] == ["ESTABLISHED"]
    e.set_defense(Defense(syncookies=2))
    out = e.process(_syn(40000, seq=77), T0 + 1)  # e.g. a retransmitted or odd SYN
    assert _forwarded(out) and IP(out)[TCP].seq == 77  # type: ignore[arg-type]
    assert e.stats().events.get("syncookie_syn", 0) == 0


def test_a_cookie_ack_on_a_half_open_entry_takes_the_handshake_over() -> None:
    """The client's SYN made an entry just before syncookies engaged, the server's SYN-ACK
    was lost, the retransmitted SYN got a cookie from XDP (which cannot see the entry): the
    cookie ACK opens the connection from the cookie instead of riding the old entry."""
    e = _engine()
    assert _forwarded(e.process(_syn(40000), T0))
    assert [c.state for c in e.connections()] == ["SYN_RECV"]
    e.set_defense(Defense(syncookies=2))
    xdp = _engine(syncookies=2)  # same seed: the cookie XDP would have sent
    cookie = int(IP(xdp.process(_syn(40000), T0 + 1))[TCP].seq)  # type: ignore[arg-type]
    out = e.process(_ack(cookie), T0 + 1)
    assert out is not None and IP(out).dst == RS and IP(out)[TCP].flags == "S"
    (conn,) = e.connections()
    assert conn.synproxy and conn.state == "SYN_SENT"
    # an ordinary ACK on a half-open entry (no cookie) still rides it
    assert _forwarded(e.process(_syn(40001), T0 + 1)) is False  # engaged: a cookie now
    e.set_defense(Defense(syncookies=0))
    e.expire(T0 + 2)
    assert _forwarded(e.process(_syn(40002), T0 + 2))
    out = e.process(_ack(0, cport=40002), T0 + 2)
    assert out is not None and IP(out).dst == RS and IP(out)[TCP].flags == "A"


def test_an_established_entry_is_never_evicted_by_a_flood() -> None:
    """A tiny table, syncookies automatic: the flood fills it with embryonic entries until it
    engages, then costs nothing; fresh clients get in through cookies, taking the flood's
    embryonic slots; the established entries stay."""
    e = _engine(max_connections=12, amemthresh=6)
    for port in range(40000, 40004):
        assert _forwarded(e.process(_syn(port), T0))
        e.process(_ack(0, cport=port), T0)
    assert e.defense().embryonic == 0  # established: out of the embryonic FIFO
    assert _flood_until_engaged(e, T0) == 6
    for i in range(6, 3000):
        assert _answered_with_cookie(e.process(_spoofed(i), T0 + i / 1000))
    for i, port in enumerate(range(45000, 45006)):  # 4 + 6 fresh: 4 flood entries evicted
        _handshake(e, cport=port, now=T0 + 3 + i)
    conns = e.connections()
    assert len(conns) == 12 and e.defense().entries_dropped["evict_embryonic"] == 4
    established = {c.client_port for c in conns if c.state == "ESTABLISHED"}
    assert established == set(range(40000, 40004)) | set(range(45000, 45006))


# ---- settings -------------------------------------------------------------------------------


def test_the_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match="syncookies"):
        _engine(syncookies=3)
    cfg = base_config("/tmp/x.sock", ())
    bad = dataclasses.replace(cfg, defense=model.DefenseConfig(syncookies=5))
    with pytest.raises(ConfigError, match=r"defense\.syncookies.*tcp_syncookies"):
        validate(bad)


def test_config_default_and_file(tmp_path: Path) -> None:
    assert model.DefenseConfig().syncookies == 1
    path = tmp_path / "p.toml"
    path.write_text('[director]\npublic_interface = "eth0"\nprivate_interface = "eth1"\n'
                    '[defense]\nsyncookies = 2\n')
    assert load(path).defense.syncookies == 2


def test_status_and_metrics_show_it(tmp_path: Path) -> None:
    """``pylvs status``, the status JSON and /metrics: mode, engaged, SYNs by where (the
    engine's and those the director reported from XDP), cookie ACKs by outcome."""
    from prometheus_client.parser import text_string_to_metric_families

    from pylvs.api import views
    from pylvs.api.metrics import render
    from pylvs.cli.status import render_status
    from tests.support.mini_director import MiniDirector, service

    cfg = base_config(str(tmp_path / "x.sock"), (service(f"{VIP}:80", f"{RS}:8080"),))
    director = MiniDirector(dataclasses.replace(cfg, defense=model.DefenseConfig(syncookies=2)))
    e = director.engine
    for i in range(30):
        e.process(_spoofed(i), T0)
    e.note_cookie_syns(1000)
    _handshake(e, cport=45000)
    e.process(_ack(0, cport=45001), T0)
    sc = views.defense(director)["syncookies"]
    assert sc["mode"] == 2 and sc["engaged"] is True
    assert (sc["syns_engine"], sc["syns_xdp"], sc["syns"]) == (31, 1000, 1031)
    assert sc["acks_accepted"] == 1 and sum(sc["acks_refused"].values()) == 1
    text = render_status(views.status(director))
    assert "syncookies on ENGAGED (syns 1031 acks 1 refused 1)" in text
    families = {f.name: f for f in text_string_to_metric_families(render(director))}
    assert [s.value for s in families["pylvs_defense_syncookies_engaged"].samples] == [1]
    syns = {s.labels["where"]: s.value for s in families["pylvs_defense_syncookies_syns"].samples}
    assert syns == {"engine": 31, "xdp": 1000}
    acks = {s.labels["outcome"]: s.value
            for s in families["pylvs_defense_syncookies_acks"].samples}
    assert acks["accepted"] == 1 and acks["refused_bad"] + acks["refused_expired"] == 1
