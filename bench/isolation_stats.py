"""The sans-IO half of bench/isolation.py: read a capture, turn times into the issue's figures.

* :func:`read_pcap` parses what ``tcpdump -w`` wrote (classic pcap, micro- or nanosecond
  timestamps, Ethernet) into :class:`Frame` records: the kernel's receive timestamp, IPv4
  addresses, UDP ports and payload.
* :func:`heartbeat_times` keeps the HA heartbeats (``PLHA`` magic, kind 1) one director sent.
* :func:`jitter` gives p50/p99/max of *interval between consecutive heartbeats minus the
  configured interval*: the heartbeat send jitter of issue 14, item 3.
* :func:`latency` summarises API round trips.
* :func:`transit` pairs each packet entering the director with the same packet leaving it
  (captured on its two switch ports), so a delay the director adds is seen on the wire,
  whatever the client's or the real server's scheduling did.
* :func:`ha_events` reads the HA lines of a ``pylvs serve`` log (role changes, late timers,
  silent paths) with their times, so they can be put in the windows they happened in.
* :func:`silences` takes the echoes of a 1 ms UDP prober and returns, per named time window,
  the longest time without any echo that overlaps the window (the forwarding gap).

Nothing here touches the network, so tests/unit/test_isolation_stats.py covers all of it.
"""

from __future__ import annotations

import itertools
import re
import statistics
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address

from pylvs.ha.messages import Kind

__all__ = ["Frame", "HaEvent", "PcapError", "ha_events", "heartbeat_times", "jitter",
           "latency", "read_pcap", "silences", "transit", "window_transit"]

_MAGIC_US, _MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
_LINKTYPE_ETHERNET = 1
_ETH_IPV4 = 0x0800
_UDP = 17
_HA_MAGIC = b"PLHA"


class PcapError(ValueError):
    """The capture is not a classic Ethernet pcap file (or is cut short in its header)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured IPv4/UDP frame."""

    time: float  # seconds, the kernel's timestamp (CLOCK_REALTIME)
    src: IPv4Address
    dst: IPv4Address
    sport: int
    dport: int
    payload: bytes


def read_pcap(data: bytes) -> list[Frame]:
    """The IPv4/UDP frames of a pcap capture; other frames are skipped.

    A record cut short at the end (tcpdump killed mid-write) ends the list instead of raising:
    every complete record before it counts.
    """
    if len(data) < 24:
        raise PcapError("shorter than a pcap header")
    for endian in ("<", ">"):
        magic = struct.unpack_from(endian + "I", data)[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise PcapError(f"not a pcap file (magic {data[:4].hex()})")
    scale = 1e-9 if magic == _MAGIC_NS else 1e-6
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype != _LINKTYPE_ETHERNET:
        raise PcapError(f"link type {linktype}, expected Ethernet (1)")
    record = struct.Struct(endian + "IIII")
    frames: list[Frame] = []
    off = 24
    while off + record.size <= len(data):
        sec, frac, incl, _orig = record.unpack_from(data, off)
        off += record.size
        if off + incl > len(data):
            break
        frame = _udp4(data[off:off + incl], sec + frac * scale)
        off += incl
        if frame is not None:
            frames.append(frame)
    return frames


def _udp4(pkt: bytes, when: float) -> Frame | None:
    if len(pkt) < 14 + 20 + 8 or struct.unpack_from("!H", pkt, 12)[0] != _ETH_IPV4:
        return None
    ihl = (pkt[14] & 0x0F) * 4
    if pkt[14] >> 4 != 4 or ihl < 20 or pkt[14 + 9] != _UDP or len(pkt) < 14 + ihl + 8:
        return None
    total = struct.unpack_from("!H", pkt, 16)[0]
    udp = 14 + ihl
    sport, dport, length = struct.unpack_from("!HHH", pkt, udp)
    end = min(len(pkt), 14 + total, udp + length)
    return Frame(when, IPv4Address(pkt[26:30]), IPv4Address(pkt[30:34]), sport, dport,
                 bytes(pkt[udp + 8:end]))


def heartbeat_times(frames: Iterable[Frame], src: str, port: int) -> list[float]:
    """Capture times of the HA heartbeats ``src`` sent to UDP ``port``, in order."""
    want = IPv4Address(src)
    return sorted(f.time for f in frames
                  if f.src == want and f.dport == port and f.payload[:4] == _HA_MAGIC
                  and len(f.payload) > 5 and f.payload[5] == Kind.HEARTBEAT)


def _summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p99/max of ``values`` (p99 interpolated between ranks, as ``statistics`` does)."""
    if len(values) < 2:
        only = values[0] if values else float("nan")
        return {"n": len(values), "p50": only, "p99": only, "max": only}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"n": len(values), "p50": q[49], "p99": q[98], "max": max(values)}


def jitter(times: Sequence[float], interval: float) -> dict[str, float]:
    """Send jitter of heartbeats captured at ``times`` (seconds) for a configured ``interval``.

    Each sample is the interval between two consecutive heartbeats minus ``interval``:
    positive when a heartbeat left late.  Also returns ``min`` (a heartbeat that left early
    after a late one) and ``missed``: intervals longer than twice the configured one.
    """
    deltas = [b - a - interval for a, b in itertools.pairwise(times)]
    out = _summary(deltas)
    out["min"] = min(deltas, default=float("nan"))
    out["missed"] = sum(1 for d in deltas if d > interval)
    return out


def latency(samples: Sequence[float]) -> dict[str, float]:
    """p50/p99/max of round-trip times (seconds); ``n`` is how many."""
    return _summary(samples)


def silences(echoes: Iterable[float], windows: Mapping[str, tuple[float, float]]
             ) -> dict[str, float]:
    """The longest time without an echo that overlaps each window (seconds).

    ``echoes`` are the times the prober received answers.  A silence from echo ``a`` to the
    next echo ``b`` belongs to every window ``(t0, t1)`` it overlaps (``a < t1`` and
    ``b > t0``), so a stall that starts just before a reload is still the reload's.  A window
    with no silence at all overlapping it (no echoes around it) gets ``inf``.
    """
    ordered = sorted(echoes)
    out: dict[str, float] = {}
    for name, (t0, t1) in windows.items():
        gaps = [b - a for a, b in itertools.pairwise(ordered) if a < t1 and b > t0]
        out[name] = max(gaps, default=float("inf"))
    return out


def transit(entering: Iterable[Frame], leaving: Iterable[Frame]) -> list[tuple[float, float]]:
    """(time in, time spent in the director or -1 if it never left) of each entering packet.

    A packet is recognised on both sides by its UDP payload (the prober numbers and
    timestamps each one, so payloads are unique); NAT changes addresses and ports, not that.
    The first sighting of a payload on each side counts.
    """
    out_at: dict[bytes, float] = {}
    for f in leaving:
        out_at.setdefault(f.payload, f.time)
    seen: set[bytes] = set()
    rows: list[tuple[float, float]] = []
    for f in sorted(entering, key=lambda f: f.time):
        if f.payload in seen:
            continue
        seen.add(f.payload)
        left = out_at.get(f.payload)
        rows.append((f.time, -1.0 if left is None else left - f.time))
    return rows


def window_transit(rows: Iterable[tuple[float, float]], t0: float, t1: float
                   ) -> dict[str, float]:
    """Over the packets that entered in ``[t0, t1)``: how many, the longest transit, how many
    never left, and the longest gap between two consecutive packets leaving (``out_gap``) and
    entering (``in_gap``): an output gap longer than the input gap plus the transit is the
    director's, the rest is the sender's."""
    inside = [(t, d) for t, d in rows if t0 <= t < t1]
    arrivals = sorted(t for t, _ in inside)
    delays = [d for _, d in inside if d >= 0]
    departures = sorted(t + d for t, d in inside if d >= 0)
    return {"n": len(inside), "max": max(delays, default=float("nan")),
            "p99": _summary(delays)["p99"], "never_left": len(inside) - len(delays),
            "out_gap": max((b - a for a, b in itertools.pairwise(departures)),
                           default=float("nan")),
            "in_gap": max((b - a for a, b in itertools.pairwise(arrivals)),
                          default=float("nan"))}


@dataclass(frozen=True, slots=True)
class HaEvent:
    """One HA line of a director's log."""

    time: float  # seconds since the epoch (the log's local time)
    text: str  # from "ha: " on
    role_change: bool
    late_ms: float  # how late a heartbeat timer ran, for a late-timer line; else 0


# "%(asctime)s %(levelname)-7s %(name)s: %(message)s", as `pylvs serve` logs in text format
_HA_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?"
                     r"(ha: (?:(\w+ -> \w+) \(.*\)|timer ran (\d+) ms late.*"
                     r"|\w+ path to peer is .*))$", re.M)


def ha_events(log: str) -> list[HaEvent]:
    """Role changes, late heartbeat timers and path changes in a ``pylvs serve`` log."""
    return [HaEvent(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(),
                    m.group(2), m.group(3) is not None, float(m.group(4) or 0))
            for m in _HA_LOG.finditer(log)]
