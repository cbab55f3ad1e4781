"""Isolation of the packet path and the control plane, measured (issue 14, item 3; root).

One HA pair in namespaces (:class:`pylvs.testbed.hapair.HaPair`: two ``pylvs serve`` with the
default ``[director] workers``, three real servers running echo servers).

**Heartbeats and API under packet load.**  ``tcpdump`` in the switch namespace captures every
heartbeat the active director sends on its two switch ports; the kernel timestamps each frame
as the director's veth hands it over, so the capture sees when it left, not when anyone read
it.  Two phases: the packet path idle for ``--idle`` seconds, then saturated for ``--soak``
seconds by the flooder of bench.flood (bench/flooder.c: spoofed SYNs to the VIP at its top
rate from the client namespace; the SYN-ACKs have no route back).  During both, the bench GETs
``/api/v1/status`` from the active director every 0.1 s.  Per phase: heartbeat send jitter
(interval between consecutive heartbeats minus the configured interval) p50/p99/max on each
path, missed heartbeats, API latency p50/p99/max and failures, HA role changes (transitions of
both nodes), late heartbeat timers, the loop lag, the flood rate and the load average.

**Packets during control-plane work.**  The 10,000-server site of bench.control
(:mod:`pylvs.testbed.scale`: 1,000 services x 10 servers, TCP checks every 2 s) is loaded into
the active director with ``pylvs ctl -R``; after ``--steady`` seconds the same site is
reloaded from its TOML with SIGHUP (every weight changed).  Throughout, the client runs a chain
of drill probers (a numbered UDP datagram every 1 ms through the VIP, echoed by a real server;
each prober runs 8 s and the next starts 1 s before it ends, so nothing goes unwatched).  The
figure is the longest time the client went without an echo, before, during the restore, in
between, during the reload and after; lost probes and role changes too.

    flock /tmp/pylvs-bench.lock python3 -m bench.isolation --soak 300 --record

The issue's goals: heartbeat jitter p99 < 10 ms and no role change in a 5-minute flood soak;
no forwarding gap longer than 10 ms during the reload.

**Why a packet or a heartbeat was late.**  Per window, the engine lock's own timing
(``/api/v1/stats`` ``lock``, core/lock.c): control-plane holds and worker waits over 1 and 10
ms, and the control call held longest.  With ``--sched`` (short runs: it records every context
switch), ``perf sched`` gives the scheduling delay of the director's packet workers and of its
event loop per window, and what ran on the CPUs while they waited (bench/sched_trace.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.flood import build_flooder, flooder_argv
from bench.isolation_stats import (
    Frame,
    HaEvent,
    ha_events,
    heartbeat_times,
    jitter,
    latency,
    read_pcap,
    silences,
    transit,
    window_transit,
)
from bench.plots import RAW as RAW_DIR
from bench.results_md import write_marked
from bench.sched_trace import SchedRecorder, Slice, blame, delays
from pylvs.api.client import ApiClient, ApiError
from pylvs.model import HaConfig
from pylvs.testbed.drill import ECHO_PORT
from pylvs.testbed.hapair import HaPair
from pylvs.testbed.scale import restore_lines, serve_servers, site_toml
from pylvs.testbed.serve import wait_until
from pylvs.testbed.topology import Topology, TopologyError, child_env

HA_PORT = HaConfig().port
API_EVERY = 0.1  # seconds between two status requests
SWITCH_PORT = {"public": "pub", "private": "priv"}  # the topology's switch ports: d1pub, d1priv
PROBE_LENGTH, PROBE_OVERLAP = 8.0, 1.0
BEGIN, END = "<!-- isolation:begin -->", "<!-- isolation:end -->"
RAW = RAW_DIR / "isolation.json"
"""Every figure of the latest ``--record`` run."""


# ---- heartbeats on the wire -----------------------------------------------------------------

class Capture:
    """``tcpdump`` on a switch port of the topology, ``bpf`` filtered, into a pcap file."""

    def __init__(self, topo: Topology, port: str, bpf: str) -> None:
        self.topo = topo
        self.pcap = os.path.join(topo.workdir, f"{port}-{len(os.listdir(topo.workdir))}.pcap")
        self.err = self.pcap + ".err"
        # -U: each frame written as it comes, so stopping loses nothing; -w -: tcpdump drops
        # privileges after opening the device, our file descriptor stays writable
        argv = ["tcpdump", "-i", port, "-nn", "-U", "-B", "8192", "--time-stamp-precision=nano",
                "-w", "-", bpf]
        with open(self.pcap, "wb") as out, open(self.err, "w", encoding="utf-8") as err:
            self.proc = topo.popen(topo.switch_ns, argv, stdout=out, stderr=err)
        wait_until(lambda: "listening on" in self._stderr() or self.proc.poll() is not None,
                   10, f"tcpdump on {port}")
        if self.proc.poll() is not None:
            raise TopologyError(f"tcpdump on {port} failed: {self._stderr()}")

    def _stderr(self) -> str:
        with open(self.err, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> tuple[list[Frame], int]:
        """Stop; return the captured IPv4/UDP frames and how many the kernel dropped."""
        self.topo.stop(self.proc)
        with open(self.pcap, "rb") as fh:
            frames = read_pcap(fh.read())
        m = re.search(r"(\d+) packets? dropped by kernel", self._stderr())
        return frames, int(m.group(1)) if m else -1


# ---- the control API ------------------------------------------------------------------------

def _section(client: ApiClient, path: str, key: str) -> dict[str, Any] | None:
    """``key`` of the JSON at ``path``; None when the director does not answer."""
    try:
        out: dict[str, Any] = client.get(path)[key]
    except (ApiError, KeyError):
        return None
    return out


def _ha(client: ApiClient) -> dict[str, Any] | None:
    return _section(client, "/api/v1/status", "ha")


def _sample_api(client: ApiClient, seconds: float) -> dict[str, Any]:
    """GET /api/v1/status every :data:`API_EVERY` s for ``seconds``: latencies and loop lag."""
    rtts: list[float] = []
    failed = 0
    lag_p99 = lag_max = 0.0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    end = time.monotonic() + seconds
    due = time.monotonic()
    while (now := time.monotonic()) < end:
        if now < due:
            time.sleep(min(due, end) - now)
            continue
        due = max(due + API_EVERY, now)  # a slow answer delays the next, never a burst
        t0 = time.perf_counter()
        try:
            status = client.get("/api/v1/status")
            t1 = time.monotonic()
            last = {"t": t1, **(status.get("dataplane") or {})}
            first = first or last
            lag = status.get("loop_lag") or {}
            lag_p99 = max(lag_p99, float(lag.get("p99", 0.0)))
            lag_max = max(lag_max, float(lag.get("max", 0.0)))
        except ApiError:
            failed += 1  # its time counts as a latency: a timeout is the worst one
        rtts.append(time.perf_counter() - t0)
    out = {**latency(rtts), "failed": failed, "loop_lag_p99": lag_p99, "loop_lag_max": lag_max}
    if first is not None and last is not None and last["t"] > first["t"]:
        # what the packet path did meanwhile: packets read from the TUN per second, and the
        # kernel's drops in front of the queues (full queues: the path is saturated)
        span = last["t"] - first["t"]
        for key in ("reads", "forwarded", "dropped", "queue_dropped"):
            if isinstance(last.get(key), int) and isinstance(first.get(key), int):
                out[f"dp_{key}_per_s"] = (last[key] - first[key]) / span
    return out


def _sockets(pair: HaPair, timeout: float = 5.0) -> list[ApiClient]:
    return [ApiClient(os.path.join(pair.topo.workdir, f"{d.name}.sock"), timeout=timeout)
            for d in pair.topo.directors]


def _require_dir1_active(pair: HaPair) -> None:
    # dir1 has the higher priority and preempts: anything else is a role change to report
    if not pair.owns_vip(0) or pair.owns_vip(1):
        raise TopologyError("expected dir1 active and dir2 backup before measuring")


def _late_timers(before: list[dict[str, Any] | None], after: list[dict[str, Any] | None]
                 ) -> int | None:
    """Heartbeat timers that ran late on both nodes between two snapshots (None: no answer)."""
    if None in before or None in after:
        return None
    return sum(int((a or {}).get("counters", {}).get("late_timers", 0))
               - int((b or {}).get("counters", {}).get("late_timers", 0))
               for a, b in zip(after, before, strict=True))


def _ha_events(pair: HaPair, offsets: list[int]) -> list[tuple[str, HaEvent]]:
    """The HA lines both directors logged since ``offsets``: (node, event).

    From the logs, not the API: a node whose loop is stalled answers the API late or not at
    all, and its log still says what happened.
    """
    return [(f"dir{n + 1}", e) for n, off in enumerate(offsets)
            for e in ha_events(pair.log(n)[off:])]


def _ha_summary(events: list[tuple[str, HaEvent]], t0: float = 0.0, t1: float = math.inf
                ) -> dict[str, Any]:
    """Role changes, the latest heartbeat timer and up to 40 lines to show, in ``[t0, t1)``."""
    inside = sorted(((node, e) for node, e in events if t0 <= e.time < t1),
                    key=lambda ne: ne[1].time)
    return {"role_changes": sum(1 for _, e in inside if e.role_change),
            "late_timer_max_ms": max((e.late_ms for _, e in inside), default=0.0),
            "ha_log": [f"{node}: {e.text}" for node, e in inside][:40]}


def _lock(client: ApiClient) -> dict[str, Any] | None:
    """The engine lock's timing (core/lock.c) from the light ``/api/v1/stats``."""
    return _section(client, "/api/v1/stats", "lock")


def _over(t: Mapping[str, Any], bound: float) -> int:
    """Durations at or over ``bound`` seconds in a cumulative-bucket timing."""
    below = max((c for b, c in t["buckets"] if b != "+Inf" and b <= bound), default=0)
    return int(t["count"]) - int(below)


def lock_window(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the engine lock did between two snapshots: control holds and worker waits of 1 ms
    or more and of 10 ms or more, and the longest of each since start (as of ``b``)."""
    if a is None or b is None:
        return {}
    out: dict[str, Any] = {}
    for kind in ("control_hold", "worker_wait", "worker_hold"):
        out[kind] = {"over_1ms": _over(b[kind], 0.001) - _over(a[kind], 0.001),
                     "over_10ms": _over(b[kind], 0.01) - _over(a[kind], 0.01),
                     "max_ever": b[kind]["max_seconds"]}
    out["longest_control_call"] = b["longest_control_call"]
    return out


def _labels(pair: HaPair) -> dict[int, str]:
    """pid -> "dir1", "dir1 checker"...: the bench's own processes, named in the blame."""
    out: dict[int, str] = {}
    for n, proc in pair.procs.items():
        out[proc.pid] = f"dir{n + 1}"
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            out[int(child)] = f"dir{n + 1} child"
    return out


def _sched_summary(slices: Sequence[Slice], pid: int, labels: Mapping[int, str],
                   windows: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """Scheduling delays of the director's workers and of its event loop, and the worst
    competitors (bench/sched_trace.py), named by ``labels`` where the pid is the bench's."""
    if not slices:
        return {"error": "perf sched recorded nothing"}

    def name(s: Slice) -> str:
        label = labels.get(s.pid)
        if label is None:
            return s.comm
        return f"{label} loop" if s.tid == s.pid and not label.endswith("child") else \
            f"{label} {s.comm}"

    def workers(s: Slice) -> bool:
        return s.pid == pid and s.comm.startswith("pylvs-w")

    def loop(s: Slice) -> bool:
        return s.tid == pid

    return {"workers": delays(slices, workers, windows), "loop": delays(slices, loop, windows),
            "workers_waited_behind": blame(slices, workers, 0.005, name=name),
            "loop_waited_behind": blame(slices, loop, 0.005, name=name)}


# ---- part 1: heartbeats and API, idle and flooded -------------------------------------------

def ha_phase(pair: HaPair, name: str, seconds: float, interval: float,
             flood: list[str] | None, sched: SchedRecorder | None = None) -> dict[str, Any]:
    """One phase: capture heartbeats, sample the API, count role changes; optionally flooded."""
    topo = pair.topo
    _require_dir1_active(pair)
    i = 0
    me = topo.directors[i]
    assert me.private_address is not None
    clients, patient = _sockets(pair), _sockets(pair, 30.0)
    srcs = {"public": me.address, "private": me.private_address}
    caps = {path: Capture(topo, f"d{i + 1}{SWITCH_PORT[path]}",
                          f"udp and src host {src} and dst port {HA_PORT}")
            for path, src in srcs.items()}
    offsets = [len(pair.log(n)) for n in (0, 1)]
    flooder = None
    time.sleep(0.5)
    before = [_ha(c) for c in patient]
    lock0 = _lock(patient[i])
    if sched is not None:
        sched.start()
    if flood is not None:
        # the window opens with the flood: its onset (queues filling, the table filling with
        # half-open entries) is part of what heartbeats must ride out
        flooder = topo.popen(topo.client.ns, flood, stdout=subprocess.PIPE)
    load0, w0 = os.getloadavg()[0], time.time()
    api = _sample_api(clients[i], seconds)
    w1, load1 = time.time(), os.getloadavg()[0]
    m1 = time.monotonic()
    after = [_ha(c) for c in patient]
    slices = sched.stop() if sched is not None else None
    out: dict[str, Any] = {"phase": name, "seconds": round(w1 - w0, 1), "active": me.name,
                           "interval": interval, "api": api, "load": [load0, load1]}
    out["late_timers"] = _late_timers(before, after)
    out["lock"] = lock_window(lock0, _lock(patient[i]))
    out["pacer"] = (after[i] or {}).get("pacer")
    if slices is not None:
        out["sched"] = _sched_summary(slices, pair.procs[i].pid, _labels(pair),
                                      {name: (m1 - (w1 - w0), m1)})
    out["still_active"] = pair.owns_vip(i)
    if flooder is not None:
        text, _ = flooder.communicate(timeout=seconds + 60)
        sent = json.loads(text.strip().splitlines()[-1])
        out["flood_pps"] = sent["sent"] / max(sent["seconds"], 1e-9)
    out.update(_ha_summary(_ha_events(pair, offsets)))
    for path, cap in caps.items():
        frames, dropped = cap.stop()
        window = [t for t in heartbeat_times(frames, srcs[path], HA_PORT) if w0 <= t <= w1]
        out[path] = {**jitter(window, interval), "capture_dropped": dropped}
    return out


# ---- part 2: forwarding during a large restore and reload -----------------------------------

class ProbeChain:
    """Overlapping drill probers, so the client sends a probe every 1 ms for as long as needed.

    ``start_probe(duration)`` starts one prober process whose stdout is its JSON result.
    """

    def __init__(self, start_probe: Callable[[float], subprocess.Popen[str]]) -> None:
        self._start_probe = start_probe
        self._procs: list[subprocess.Popen[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    def _run(self) -> None:
        while not self._stop.is_set() and len(self._procs) < 1000:
            self._procs.append(self._start_probe(PROBE_LENGTH))
            self._stop.wait(PROBE_LENGTH - PROBE_OVERLAP)

    def start(self) -> None:
        """Start the first prober and keep the chain going in a thread."""
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> list[tuple[float, float]]:
        """Stop the chain, wait for the last prober; every probe's (sent, echoed or -1).

        The last 0.2 s of each prober is dropped: it stops listening when its time is up, so
        answers still on their way would look lost.
        """
        self._stop.set()
        self._thread.join(PROBE_LENGTH + 5)
        probes: list[tuple[float, float]] = []
        for proc in self._procs:
            text, _ = proc.communicate(timeout=PROBE_LENGTH + 60)
            rows = json.loads(text)
            if not rows:
                continue
            last = max(sent for _, sent, _ in rows)
            probes += [(sent, echoed) for _, sent, echoed in rows if sent <= last - 0.2]
        return probes


def _lost(probes: Sequence[tuple[float, float]], t0: float, t1: float) -> int:
    return sum(1 for sent, echoed in probes if t0 <= sent < t1 and echoed < 0)


def _ctl_restore(topo: Topology, sock: str, lines: str, timeout: float) -> str | None:
    """``pylvs ctl -R`` in director 1's namespace; None on success, else why not."""
    argv = ["ip", "netns", "exec", topo.directors[0].ns, sys.executable, "-m", "pylvs", "ctl",
            "--socket", sock, "-R"]
    try:
        res = subprocess.run(argv, input=lines, text=True, capture_output=True,
                             env=child_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s"
    return None if res.returncode == 0 else (res.stderr or res.stdout).strip()[-300:]


def reload_gaps(pair: HaPair, args: argparse.Namespace) -> dict[str, Any]:
    """Restore and reload the 10,000-server site on the active director under 1 ms probes."""
    topo = pair.topo
    _require_dir1_active(pair)
    clients = _sockets(pair, 30.0)
    sock = os.path.join(topo.workdir, "dir1.sock")
    serve_servers(topo)
    chain = ProbeChain(lambda d: pair.client("probe", "--duration", str(d), "--gap", "0.001"))
    caps = {side: Capture(topo, f"d1{side}", f"udp and port {ECHO_PORT}")
            for side in ("pub", "priv")}
    offsets = [len(pair.log(n)) for n in (0, 1)]
    before = [_ha(c) for c in clients]
    load0 = os.getloadavg()[0]
    sched = SchedRecorder(os.path.join(topo.workdir, "sched.data")) if args.sched else None
    if sched is not None:
        sched.start()
    chain.start()
    time.sleep(1.0 + args.quiet)  # the first second is the chain starting up: not measured
    locks = [_lock(clients[0])]
    t_restore = time.monotonic()
    error = _ctl_restore(topo, sock, restore_lines(args.services, args.per_service),
                         args.timeout)
    t_restored = time.monotonic()
    locks.append(_lock(clients[0]))
    time.sleep(args.steady)
    locks.append(_lock(clients[0]))
    offset = len(pair.log(0))
    path = topo.write_director_config(
        pair.config(0) + "\n" + site_toml(args.services, args.per_service, weight=2), 0)
    t_hup = time.monotonic()
    pair.procs[0].send_signal(signal.SIGHUP)
    pattern = re.compile(r"SIGHUP: (reloaded|reload refused|reload failed).*")
    found: list[str] = []

    def reloaded() -> bool:
        m = pattern.search(pair.log(0)[offset:])
        if m:
            found.append(m.group(0))
        return m is not None

    wait_until(reloaded, args.timeout, "the SIGHUP reload", interval=0.005)
    t_reloaded = time.monotonic()
    locks.append(_lock(clients[0]))
    time.sleep(args.quiet)
    t_end = time.monotonic()
    locks.append(_lock(clients[0]))
    probes = chain.stop()
    slices = sched.stop() if sched is not None else None
    wall = time.time() - time.monotonic()  # the captures' clock is CLOCK_REALTIME
    after = [_ha(c) for c in clients]
    pub, _ = caps["pub"].stop()
    priv, _ = caps["priv"].stop()
    # requests enter on the public port and leave on the private one; replies the other way
    requests = transit([f for f in pub if f.dport == ECHO_PORT],
                       [f for f in priv if f.dport == ECHO_PORT])
    replies = transit([f for f in priv if f.sport == ECHO_PORT],
                      [f for f in pub if f.sport == ECHO_PORT])
    windows = {"before": (chain.started + 1.0, t_restore), "restore": (t_restore, t_restored),
               "steady": (t_restored, t_hup), "reload": (t_hup, t_reloaded),
               "after": (t_reloaded, t_end)}
    gaps = silences((e for _, e in probes if e > 0), windows)
    lock_windows = dict(zip(("restore", "steady", "reload", "after"),
                            (lock_window(a, b) for a, b in itertools.pairwise(locks)),
                            strict=True))
    try:  # the whole site's status is large and the loop is busy: be patient, never fatal
        status = ApiClient(sock, timeout=60.0).get("/api/v1/status")
        servers: int | None = sum(len(s["real_servers"]) for s in status["services"])
    except ApiError as exc:
        status, servers = {"error": str(exc)}, None
    events = _ha_events(pair, offsets)
    return {
        **_ha_summary(events),
        "servers": args.services * args.per_service, "servers_loaded": servers,
        "config": os.path.basename(path), "restore_error": error,
        "restore_s": round(t_restored - t_restore, 3), "reload_s": round(t_reloaded - t_hup, 3),
        "reload_line": found[-1] if found else None,
        "windows": {k: {"seconds": round(t1 - t0, 3), "longest_silence": gaps[k],
                        "lost": _lost(probes, t0, t1),
                        "probes": sum(1 for s, _ in probes if t0 <= s < t1),
                        "requests": window_transit(requests, t0 + wall, t1 + wall),
                        "replies": window_transit(replies, t0 + wall, t1 + wall),
                        **_ha_summary(events, t0 + wall, t1 + wall),
                        "lock": lock_windows.get(k, {})}
                    for k, (t0, t1) in windows.items()},
        "sched": None if slices is None else _sched_summary(slices, pair.procs[0].pid,
                                                            _labels(pair), windows),
        "late_timers": _late_timers(before, after), "still_active": pair.owns_vip(0),
        "loop_lag_max_ever": (status.get("loop_lag") or {}).get("max_ever"),
        "load": [load0, os.getloadavg()[0]],
    }


# ---- the report -----------------------------------------------------------------------------

def _ms(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    return "inf" if v == float("inf") else f"{v * 1000:.1f}"


def _pacer(st: Mapping[str, Any] | None) -> str:
    return "n/a (loop sends)" if not st else f"{st['late_max_ms']:.1f}"


def _lock_cells(lock: Mapping[str, Any]) -> str:
    if not lock:
        return "n/a"
    c, w = lock["control_hold"], lock["worker_wait"]
    return f"{c['over_1ms']} / {c['over_10ms']}, {w['over_1ms']} / {w['over_10ms']}"


def _cpu_wait(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "n/a"
    return f"{d['p99'] * 1e3:.1f} / {d['max'] * 1e3:.1f} ({d['over_5ms']})"


def _why(name: str, lock: Mapping[str, Any], sched: Mapping[str, Any] | None) -> list[str]:
    """One line: the longest lock holds and waits since start, and what the workers and the
    loop waited behind for a CPU (perf sched)."""
    parts = []
    if lock:
        longest = lock["longest_control_call"]
        parts.append(f"engine lock since start: longest control hold "
                     f"{lock['control_hold']['max_ever'] * 1e3:.1f} ms "
                     f"(`{longest['function']}`), longest worker wait "
                     f"{lock['worker_wait']['max_ever'] * 1e3:.1f} ms, longest worker hold "
                     f"{lock['worker_hold']['max_ever'] * 1e3:.1f} ms")
    if sched and "workers_waited_behind" in sched:
        for who in ("workers", "loop"):
            top = ", ".join(f"{n} {sec * 1e3:.0f} ms" for n, sec in
                            sched[f"{who}_waited_behind"][:5])
            parts.append(f"while the {who} waited > 5 ms for a CPU, it ran: {top or 'nothing'}")
    return ["", f"Why ({name}): " + "; ".join(parts) + "."] if parts else []


def render(doc: dict[str, Any]) -> str:
    """The isolation section of bench/RESULTS.md."""
    lines = [BEGIN, "## Isolation: heartbeats, API and packets (bench/isolation.py, issue 14)", "",
             f"`{doc['command']}` ({doc['recorded']}, kernel {doc['kernel']}, "
             f"{doc['cpus']} CPUs, `[director] workers` default).", ""]
    if doc["ha"]:
        lines += [
            "Heartbeat send jitter = interval between consecutive heartbeats of the active "
            "director on the wire (tcpdump kernel timestamps on its switch port) minus the "
            "configured interval; missed = intervals over twice the configured one. API: "
            "`GET /api/v1/status` every 0.1 s. Role changes: as both nodes logged them; "
            "late timers: heartbeat "
            "timers that ran late, from the nodes' counters.",
            "",
            "| phase | seconds | flood pkt/s sent | TUN reads/s, queue drops/s | path "
            "| heartbeats | jitter p50 / p99 / max ms | missed "
            "| API p50 / p99 / max ms (failed) | role changes | late timers (latest ms) "
            "| loop lag p99 / max ms | pacer: latest send ms | load 1 min (start, end) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for ph in doc["ha"]:
            api = ph["api"]
            tun = (f"{api.get('dp_reads_per_s', float('nan')):,.0f}, "
                   f"{api.get('dp_queue_dropped_per_s', float('nan')):,.0f}")
            for path in ("public", "private"):
                j = ph[path]
                lines.append(
                    f"| {ph['phase']} | {ph['seconds']:.0f} | "
                    f"{ph.get('flood_pps', 0):,.0f} | {tun} | {path} | {j['n']} | "
                    f"{_ms(j['p50'])} / {_ms(j['p99'])} / {_ms(j['max'])} | {j['missed']} | "
                    f"{_ms(api['p50'])} / {_ms(api['p99'])} / {_ms(api['max'])} "
                    f"({api['failed']}) | {ph['role_changes']} | {ph['late_timers']} "
                    f"({ph['late_timer_max_ms']:.0f}) | "
                    f"{_ms(api['loop_lag_p99'])} / {_ms(api['loop_lag_max'])} | "
                    f"{_pacer(ph.get('pacer'))} | "
                    f"{ph['load'][0]:.2f}, {ph['load'][1]:.2f} |")
        for ph in doc["ha"]:
            lines += _why(ph["phase"], ph.get("lock") or {}, ph.get("sched"))
        for ph in doc["ha"]:
            if ph["ha_log"]:
                lines += ["", f"HA log lines in the {ph['phase']} phase: "
                          + "; ".join(f"`{x}`" for x in ph["ha_log"])]
        lines.append("")
    if doc["reload"]:
        r = doc["reload"]
        lines += [
            f"Forwarding during control-plane work: `pylvs ctl -R` of {r['servers']:,} real "
            f"servers ({r['restore_s']:.2f} s"
            f"{'' if r['restore_error'] is None else ', failed: ' + r['restore_error']}), "
            f"then a SIGHUP reload of the same site with every weight changed "
            f"({r['reload_s']:.2f} s: `{r['reload_line']}`), "
            f"{r['servers_loaded']} servers loaded at the end; role changes "
            f"{r['role_changes']}, late heartbeat timers {r['late_timers']}; "
            f"load {r['load'][0]:.2f} → {r['load'][1]:.2f}. "
            "Client: the longest time without an echo of its 1 ms UDP probes (includes the "
            "client's and the echo server's own scheduling). Director: each probe and each "
            "echo captured entering and leaving the active director (tcpdump kernel "
            "timestamps on its two switch ports): the longest time one spent inside, how many "
            "never left, and the longest gap between two leaving (a role change moves the "
            "VIP to the other director, whose packets these captures do not see).",
            "",
            "| window | seconds | probes sent | lost | client: longest silence ms "
            "| director: longest transit ms, request / reply | never left | "
            "longest gap between requests arriving / forwarded ms | role changes "
            "| latest heartbeat timer ms | engine lock: control holds, worker waits ≥ 1 / ≥ 10 ms "
            "| workers' wait for a CPU p99 / max ms (> 5 ms) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        sched = (r.get("sched") or {}).get("workers") or {}
        for name, w in r["windows"].items():
            req, rep = w["requests"], w["replies"]
            lines.append(f"| {name} | {w['seconds']:.2f} | {w['probes']} | {w['lost']} | "
                         f"{_ms(w['longest_silence'])} | {_ms(req['max'])} / {_ms(rep['max'])} "
                         f"| {req['never_left'] + rep['never_left']} | "
                         f"{_ms(req.get('in_gap'))} / {_ms(req['out_gap'])} "
                         f"| {w['role_changes']} | {w['late_timer_max_ms']:.0f} "
                         f"| {_lock_cells(w.get('lock') or {})} | {_cpu_wait(sched.get(name))} |")
        lines += _why("run", r["windows"]["after"].get("lock") or {}, r.get("sched"))
        if r["ha_log"]:
            lines += ["", "HA log lines meanwhile: " + "; ".join(f"`{x}`" for x in r["ha_log"])]
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the arguments ask for; the JSON-able figures."""
    parts = set(args.parts.split(","))
    interval = args.interval or HaConfig().interval
    ha = {"interval": args.interval} if args.interval else {}
    doc: dict[str, Any] = {"ha": [], "reload": None}
    with tempfile.TemporaryDirectory(prefix="pylvs-iso-") as tmp, HaPair(ha=ha) as pair:
        flooder = build_flooder(Path(tmp))
        pair.start(0)
        pair.wait(lambda: pair.owns_vip(0), 20, "dir1 to become active")
        pair.start(1)
        pair.wait(lambda: pair.is_backup(1), 20, "dir2 to run as backup")
        if "ha" in parts:
            for name, seconds, flood in (("idle", args.idle, False), ("flood", args.soak, True)):
                if seconds <= 0:
                    continue
                argv = (flooder_argv(flooder, pair.topo.vip, ECHO_PORT, 0, 10**12,
                                     seconds + 2) if flood else None)
                print(f"{name}: {seconds:.0f} s ...", file=sys.stderr, flush=True)
                sched = (SchedRecorder(os.path.join(tmp, f"sched-{name}.data"))
                         if args.sched else None)
                doc["ha"].append(ha_phase(pair, name, seconds, interval, argv, sched))
                print(json.dumps(doc["ha"][-1]), file=sys.stderr, flush=True)
        if "reload" in parts:
            print("reload ...", file=sys.stderr, flush=True)
            doc["reload"] = reload_gaps(pair, args)
            print(json.dumps(doc["reload"]), file=sys.stderr, flush=True)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m bench.isolation [--soak 300] [--idle S] [--parts ha,reload] [--record]``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--soak", type=float, default=300.0, help="seconds of flood (default 300)")
    p.add_argument("--idle", type=float, default=None,
                   help="seconds with the packet path idle (default: as --soak)")
    p.add_argument("--interval", type=float, default=None,
                   help="heartbeat interval (default: the [ha] default)")
    p.add_argument("--parts", default="ha,reload", help="ha, reload or both")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--per-service", type=int, default=10)
    p.add_argument("--steady", type=float, default=10.0,
                   help="seconds between the restore and the reload (health checks run)")
    p.add_argument("--quiet", type=float, default=3.0,
                   help="seconds probed before the restore and after the reload")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--sched", action="store_true",
                   help="record perf sched (every context switch: keep the run short) and "
                        "report the workers' and the loop's scheduling delays")
    p.add_argument("--record", action="store_true",
                   help=f"write the isolation section of bench/RESULTS.md and {RAW}")
    args = p.parse_args(argv)
    args.soak = min(args.soak, 3600.0)
    args.idle = min(args.soak if args.idle is None else args.idle, 3600.0)
    if set(args.parts.split(",")) - {"ha", "reload"}:
        p.error("--parts takes ha, reload or ha,reload")
    command = "python3 -m bench.isolation " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    doc = run(args)
    doc.update(command=command, kernel=os.uname().release, cpus=os.cpu_count(),
               recorded=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    text = render(doc)
    print(text)
    if args.record:
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        write_marked(text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
