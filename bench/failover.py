"""Failover time of two ``pylvs serve`` directors in namespaces (root).

For each heartbeat interval: start the pair (``pylvs.testbed.hapair.HaPair``: shared public and
private segments, three real servers with echo servers), then ``--runs`` times: start a UDP
prober on the client (one numbered datagram to VIP:7000 every millisecond, echoed by a real
server), wait a random 0.3-0.8 s (so the kill falls anywhere between two heartbeats), kill -9
the active director, and measure

    failover = (echo received for the first probe *sent after* the kill) - (the kill)

on the one CLOCK_MONOTONIC all namespaces share: from the crash to the first packet the new
active node forwarded, as the client sees it.  The killed director is then restarted and must
come back as BACKUP (``preempt = false``) before the next run, so the kills alternate between
the two directors (priorities 100 and 90: their skews differ).

``--term N`` adds N runs with SIGTERM instead of SIGKILL (clean handover, priority 0); for
those the number is the longest time the client went without any echo, because the stopping
node forwards until it has released the addresses.
``--soak S`` finally leaves the pair alone for S seconds under traffic (a verified stream, the
prober, and eight workers opening short connections as fast as they can, which keeps the
directors' event loops busy) and counts role changes: any is a flap.  The fastest interval
with none is the fastest one to recommend.

    python -m bench.failover --runs 20 --intervals 0.2,0.1,0.05 --term 5 --soak 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.plots import RAW as RAW_DIR
from bench.plots import draw_or_explain
from pylvs.ha.state import default_dead_time
from pylvs.testbed.hapair import HaPair

RAW = RAW_DIR / "failover.json"
"""Every run's failover time, kept by ``--record`` for bench/plots.py."""


def _probe_result(proc: subprocess.Popen[str],
                  t_event: float) -> tuple[float | None, int, float]:
    """(first echo for a probe sent after the event - event, probes lost, longest silence)."""
    out, _ = proc.communicate(timeout=60)
    probes: list[list[float]] = json.loads(out)
    after = [(s, r) for _, s, r in probes if s >= t_event]
    first = min((r for s, r in after if r > 0), default=None)
    lost = sum(1 for s, r in after if r < 0 and (first is None or s < first))
    # The client's view of the interruption: the longest time without any echo around the
    # event.  For SIGTERM this is the number that matters: the stopping node keeps
    # forwarding until it has released the addresses, so "first echo" says little.
    echoes = sorted(r for _, s, r in probes if r > 0 and s >= t_event - 0.5)
    silence = max((b - a for a, b in itertools.pairwise(echoes)), default=0.0)
    return (None if first is None else first - t_event), lost, silence


def _active(pair: HaPair) -> int:
    owners = [i for i in (0, 1) if pair.owns_vip(i)]
    if len(owners) != 1:
        raise RuntimeError(f"expected exactly one active director, got {owners}")
    return owners[0]


def _transitions(pair: HaPair, i: int) -> int:
    return pair.log(i).count("-> ACTIVE") + pair.log(i).count("ACTIVE -> BACKUP")


def _near_misses(pair: HaPair, i: int) -> int:
    # heartbeat timers that ran late, and paths that went silent: how close it came to a flap
    text = pair.log(i, current=True)
    late = re.findall(r"late timers so far: (\d+)", text)
    return (int(late[-1]) if late else 0) + text.count("path to peer is SILENT")


def run_interval(interval: float, runs: int, term: int, soak: float) -> dict[str, Any]:
    """Measure one heartbeat interval; return the numbers."""
    res: dict[str, Any] = {"interval": interval, "kill": [], "term": [], "lost": [],
                           "bound": {}, "soak_transitions": None, "soak_near_misses": None}
    for prio, node in ((100, "dir1"), (90, "dir2")):
        res["bound"][node] = default_dead_time(interval, prio)
    with HaPair(ha={"interval": interval, "preempt": False}) as pair:
        pair.start(0)
        pair.wait(lambda: pair.owns_vip(0), 20, "dir1 to become active")
        pair.start(1)
        pair.wait(lambda: pair.is_backup(1), 20, "dir2 to run as backup")
        for n in range(runs + term):
            clean = n >= runs
            time.sleep(0.5)
            active = _active(pair)
            other = 1 - active
            probe = pair.client("probe", "--duration", str(1.5 + 4 * interval + 1.0),
                                "--gap", "0.001")
            time.sleep(0.3 + random.random() * 0.5)
            t = pair.terminate(active) if clean else pair.kill(active)
            pair.wait(lambda o=other: pair.owns_vip(o), 10, "the backup to take over")
            took, lost, silence = _probe_result(probe, t)
            if took is None:
                raise RuntimeError("no probe answered after the failover")
            if clean:
                res["term"].append((f"dir{active + 1}", silence))
            else:
                res["kill"].append((f"dir{active + 1}", took))
                res["lost"].append(lost)
            print(f"  interval {interval}: {'SIGTERM' if clean else 'kill -9'} of "
                  f"dir{active + 1}: first answer after {took * 1000:.1f} ms, longest silence "
                  f"{silence * 1000:.1f} ms ({lost} probes lost)", file=sys.stderr, flush=True)
            pair.start(active)
            pair.wait(lambda a=active: pair.is_backup(a), 20,
                      "the restarted director to run as backup")
        if soak > 0:
            time.sleep(1.0)
            before = _transitions(pair, 0) + _transitions(pair, 1)
            near = _near_misses(pair, 0) + _near_misses(pair, 1)
            load = [pair.client("stream", "--duration", str(soak), "--gap", "0.001"),
                    pair.client("probe", "--duration", str(soak), "--gap", "0.001"),
                    pair.client("shorts", "--duration", str(soak), "--workers", "8")]
            for proc in load:
                proc.communicate(timeout=soak + 60)
            res["soak_transitions"] = _transitions(pair, 0) + _transitions(pair, 1) - before
            res["soak_near_misses"] = _near_misses(pair, 0) + _near_misses(pair, 1) - near
    return res


def _ms(x: float) -> str:
    return f"{x * 1000:.0f}"


def report(results: list[dict[str, Any]], argv: list[str]) -> str:
    """Markdown table of the results."""
    lines = [
        f"`python -m bench.failover {' '.join(argv)}`",
        "",
        "| interval | dead time (prio 100 / 90) | kill -9 runs | median | worst | best "
        "| lost probes (median) | SIGTERM: longest silence, median / worst | flaps in soak "
        "| late timers + silent paths in soak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        kills = [t for _, t in r["kill"]]
        terms = [t for _, t in r["term"]]
        term = f"{_ms(statistics.median(terms))} / {_ms(max(terms))} ms" if terms else "-"
        soak = "-" if r["soak_transitions"] is None else str(r["soak_transitions"])
        near = "-" if r["soak_near_misses"] is None else str(r["soak_near_misses"])
        lines.append(
            f"| {r['interval']} s | {_ms(r['bound']['dir1'])} / {_ms(r['bound']['dir2'])} ms "
            f"| {len(kills)} | {_ms(statistics.median(kills))} ms | {_ms(max(kills))} ms "
            f"| {_ms(min(kills))} ms | {statistics.median(r['lost']):.0f} | {term} | {soak} "
            f"| {near} |")
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--intervals", default="0.2,0.1")
    ap.add_argument("--term", type=int, default=5)
    ap.add_argument("--soak", type=float, default=20.0)
    ap.add_argument("--record", action="store_true",
                    help=f"keep every run's numbers in {RAW} and redraw the charts")
    a = ap.parse_args()
    results = [run_interval(float(iv), min(a.runs, 200), min(a.term, 50), min(a.soak, 600))
               for iv in a.intervals.split(",")]
    print(report(results, sys.argv[1:]))
    if a.record:
        RAW.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": "python3 -m bench.failover " + " ".join(sys.argv[1:]),
               "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "results": results}
        RAW.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        draw_or_explain()
    return 0


if __name__ == "__main__":
    sys.exit(main())
