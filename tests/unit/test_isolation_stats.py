"""bench/isolation_stats.py: pcap, heartbeats, jitter, latency, transit, silences, HA log."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bench import isolation_stats as st
from pylvs.ha.messages import Kind, PathId, Role, Sender

A, B = "198.18.0.1", "198.18.0.3"


def _ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def _frame(src: str, dst: str, sport: int, dport: int, payload: bytes, *, proto: int = 17,
           ethertype: int = 0x0800, pad: int = 0) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 255, proto, 0, _ip(src),
                     _ip(dst))
    eth = b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype)
    return eth + ip + udp + b"\x00" * pad  # padding past the IP length must be ignored


def _pcap(records: list[tuple[float, bytes]], *, nano: bool = True, endian: str = "<",
          linktype: int = 1) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for t, pkt in records:
        sec = int(t)
        frac = round((t - sec) * (1e9 if nano else 1e6))
        out += struct.pack(endian + "IIII", sec, frac, len(pkt), len(pkt)) + pkt
    return out


def _beat(sender: Sender, kind: Kind = Kind.HEARTBEAT) -> bytes:
    return sender.build(kind, PathId.PUBLIC, Role.ACTIVE, 100, 1_700_000_000.0,
                        payload=b"x" * (40 if kind == Kind.SYNC else 0))


@pytest.fixture
def sender() -> Sender:
    return Sender(node_id="dir1", secret=b"s" * 32, digest=b"d" * 16, interval=0.1)


def test_read_pcap_keeps_ipv4_udp_frames_with_nanosecond_times(sender: Sender) -> None:
    beat = _beat(sender)
    data = _pcap([(100.000000001, _frame(A, B, 40000, 5405, beat, pad=6)),
                  (100.1, _frame(A, B, 1, 2, b"", proto=6)),  # TCP: skipped
                  (100.2, _frame(A, B, 1, 2, b"", ethertype=0x86DD)),  # not IPv4: skipped
                  (100.3, _frame(B, A, 5405, 5405, b"hi"))])
    frames = st.read_pcap(data)
    assert [str(f.src) for f in frames] == [A, B]
    assert frames[0].time == pytest.approx(100.000000001, abs=1e-9)
    assert (frames[0].sport, frames[0].dport, frames[0].payload) == (40000, 5405, beat)
    assert frames[1].payload == b"hi"


def test_read_pcap_microseconds_big_endian_and_a_cut_record() -> None:
    pkt = _frame(A, B, 1, 5405, b"abc")
    data = _pcap([(5.25, pkt), (6.5, pkt)], nano=False, endian=">")
    frames = st.read_pcap(data[:-3])  # tcpdump killed while writing the second record
    assert [f.time for f in frames] == [5.25]


def test_read_pcap_refuses_what_is_not_an_ethernet_pcap() -> None:
    with pytest.raises(st.PcapError, match="magic"):
        st.read_pcap(b"\x00" * 24)
    with pytest.raises(st.PcapError, match="shorter"):
        st.read_pcap(b"\xd4\xc3\xb2\xa1")
    with pytest.raises(st.PcapError, match="link type 113"):
        st.read_pcap(_pcap([], linktype=113))


def test_heartbeat_times_keeps_only_heartbeats_of_one_sender(sender: Sender) -> None:
    other = Sender(node_id="dir2", secret=b"s" * 32, digest=b"d" * 16, interval=0.1)
    data = _pcap([(2.0, _frame(A, B, 5405, 5405, _beat(sender))),
                  (1.0, _frame(A, B, 5405, 5405, _beat(sender))),
                  (1.5, _frame(A, B, 5406, 5405, _beat(sender, Kind.SYNC))),  # sync: no
                  (1.6, _frame(B, A, 5405, 5405, _beat(other))),  # the peer's: no
                  (1.7, _frame(A, B, 5405, 9999, _beat(sender))),  # another port: no
                  (1.8, _frame(A, B, 5405, 5405, b"PLH"))])  # too short: no
    assert st.heartbeat_times(st.read_pcap(data), A, 5405) == [1.0, 2.0]


def test_jitter_is_interval_minus_configured() -> None:
    times = [0.0, 0.1, 0.2, 0.305, 0.4, 0.75]  # one 5 ms late, one early, one 250 ms late
    j = st.jitter(times, 0.1)
    assert j["n"] == 5
    assert j["p50"] == pytest.approx(0.0, abs=1e-9)
    assert j["max"] == pytest.approx(0.25)
    assert j["min"] == pytest.approx(-0.005)
    assert 0.005 < j["p99"] <= 0.25
    assert j["missed"] == 1  # only the 350 ms interval is over twice the configured one


def test_jitter_and_latency_with_too_few_samples() -> None:
    assert math.isnan(st.jitter([1.0], 0.1)["p99"])
    one = st.latency([0.002])
    assert (one["n"], one["p50"], one["max"]) == (1, 0.002, 0.002)


def test_latency_percentiles() -> None:
    samples = [0.001] * 99 + [0.5]
    out = st.latency(samples)
    assert out["p50"] == pytest.approx(0.001)
    assert out["max"] == 0.5
    assert 0.001 < out["p99"] < 0.5


def test_silences_attribute_a_gap_to_every_window_it_overlaps() -> None:
    echoes = [i * 0.001 for i in range(1000)]  # 0 .. 0.999, every 1 ms
    echoes = [e for e in echoes if not 0.495 < e < 0.530] + [1.5]  # 35 ms stall, then 500 ms
    out = st.silences(echoes, {"before": (0.0, 0.49), "stall": (0.50, 0.52),
                            "edge": (0.52, 0.6), "tail": (0.9, 2.0), "empty": (3.0, 4.0)})
    assert out["before"] == pytest.approx(0.001)
    assert out["stall"] == pytest.approx(0.035)
    assert out["edge"] == pytest.approx(0.035)  # the stall began before the window: still its
    assert out["tail"] == pytest.approx(0.501)
    assert out["empty"] == math.inf


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_the_synthetic_capture_is_a_pcap_tcpdump_reads(tmp_path: Path, sender: Sender) -> None:
    # the reader and the test's writer agree; tcpdump agreeing too means the format is right
    path = tmp_path / "hb.pcap"
    path.write_bytes(_pcap([(1.0, _frame(A, B, 5405, 5405, _beat(sender)))]))
    out = subprocess.run(["tcpdump", "-r", str(path), "-nn", "--time-stamp-precision=nano"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert f"{A}.5405 > {B}.5405: UDP" in out.stdout


def _f(t: float, payload: bytes) -> st.Frame:
    return st.Frame(t, IPv4Address(A), IPv4Address(B), 1, 7000, payload)


def test_transit_pairs_packets_by_payload_and_finds_the_held_one() -> None:
    entering = [_f(1.000, b"a"), _f(1.001, b"b"), _f(1.002, b"c"), _f(1.003, b"d"),
                _f(1.0035, b"a")]  # a duplicate: the first sighting counts
    leaving = [_f(1.0002, b"a"), _f(1.0012, b"b"), _f(1.0502, b"c"), _f(1.0503, b"c")]
    rows = st.transit(entering, leaving)
    assert [t for t, _ in rows] == [1.000, 1.001, 1.002, 1.003]
    assert [round(d, 4) for _, d in rows] == [0.0002, 0.0002, 0.0482, -1.0]
    w = st.window_transit(rows, 1.0, 1.0025)
    assert w["n"] == 3 and w["never_left"] == 0
    assert w["max"] == pytest.approx(0.0482)
    assert w["out_gap"] == pytest.approx(0.049)  # b left at 1.0012, c at 1.0502
    assert w["in_gap"] == pytest.approx(0.001)  # they arrived 1 ms apart: the gap is ours
    w = st.window_transit(rows, 1.0025, 2.0)
    assert (w["n"], w["never_left"]) == (1, 1)
    assert math.isnan(w["max"]) and math.isnan(w["out_gap"])


def test_ha_events_reads_role_changes_and_late_timers_with_their_times() -> None:
    log = (
        "2026-12-02 01:51:02,100 INFO    pylvs.daemon: ready: serving 2 services\n"
        "2026-12-02 01:51:03,250 WARNING pylvs.ha: ha: timer ran 163 ms late (late timers "
        "so far: 1); a busy host needs a longer interval\n"
        "2026-12-02 01:51:03,300 WARNING pylvs.ha: ha: public path to peer is SILENT\n"
        "2026-12-02 01:51:03,400 WARNING pylvs.ha: ha: BACKUP -> ACTIVE (peer silent on "
        "every path)\n"
        "2026-12-02 01:51:03,500 INFO    pylvs.ha: ha: peer dir1 (run 00ab) is ACTIVE\n")
    events = st.ha_events(log)
    assert [e.text.split(" (")[0] for e in events] == [
        "ha: timer ran 163 ms late", "ha: public path to peer is SILENT",
        "ha: BACKUP -> ACTIVE"]
    assert [e.role_change for e in events] == [False, False, True]
    assert [e.late_ms for e in events] == [163.0, 0.0, 0.0]
    assert events[2].time - events[0].time == pytest.approx(0.15)
