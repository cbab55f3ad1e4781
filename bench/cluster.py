"""Active-active directors behind a BGP/ECMP router: reroute after a failure, and scaling (root).

Builds :class:`pylvs.testbed.cluster.ClusterLab` (router with BIRD, ECMP over 4-tuples; three
directors each with its own BIRD; three real servers with echo and HAProxy; a client with 40
source addresses), then:

* ``--runs`` failures per ``--modes``, rotating over the directors, each under 30 echo streams
  (one message every 20 ms) and 20 new connections/s:

  - ``kill``: ``kill -9`` of the director's pylvs; its BIRD dies with it (PR_SET_PDEATHSIG),
    so the router sees the BGP session close;
  - ``freeze``: SIGSTOP of pylvs and its BIRD: a silent failure only BFD notices.

  Measured: *router reroute* (the failure to the router's route no longer naming the
  director, polled every 5 ms), *return reroute* (the same on a real server's default
  route), streams through the failed director (client packets or replies; each flow's real
  server read from the directors' tables) that resumed (x of y) and their longest stall,
  streams through the survivors that stalled over 190 ms (a loss), and failed new
  connections.  The director is restarted before the next run.
* conn/s with 1, 2 and 3 directors: ``wrk -t1 -c64 --timeout 2s -H "Connection: close"`` for
  ``--seconds`` against VIP:80, and each director's CPU time (utime + stime of its ``pylvs
  serve``) per packet it read, so the scaling on more cores than this machine has can be
  extrapolated.

The directors list each other as ``members`` and sync connections (``--no-sync``: they do
not); ``--scheduler rr`` serves the echo port with a non-hash scheduler, so a stream of the
failed director resumes only if sync gave the survivors its entry (a survivor scheduling it
anew would pick another server, which answers with a reset).  ``--record`` writes the section
(``cluster``, or ``cluster-rr`` / ``cluster-mh-nosync`` ... for the variants) into
bench/RESULTS.md, every run's numbers into ``bench/results/<section>.json`` and redraws the
charts (bench/plots.py).

    flock /tmp/pylvs-bench.lock python -m bench.cluster --runs 20 --modes kill,freeze \
        --seconds 10 --record
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import textwrap
import threading
import time
from typing import Any

from bench.netbench_tools import parse_wrk
from bench.plots import RAW, draw_or_explain
from bench.results_md import write_tagged
from pylvs.api.client import ApiClient
from pylvs.testbed.cluster import ClusterLab

STALL = 0.19  # a lost segment costs at least TCP's 200 ms minimum RTO; less is CPU noise

METHOD = """Active-active directors behind a BIRD 2 router with ECMP (docs/cluster.md): three \
directors, each running `pylvs serve` with its own BIRD and listing the others as `members` \
({sync}), three real servers (echo + HAProxy) whose return route spans the directors with BFD \
(3 x 100 ms), one client with 40 source addresses; the echo port's scheduler is `{scheduler}`. \
Each run: 30 long-lived echo streams (a 16-byte message every 20 ms, each waiting for its echo) \
and 20 new connections/s, then a failure of one director (rotating), then the director is \
restarted. A stream is "through the failed director" when its client packets (the director \
whose entry counted the most of them) or its replies (the real server's own route lookup) used \
it; it "resumed" when it never broke (a stream sent to another real server is reset); \
"disturbed" means an echo took over 190 ms (a lost segment costs at least TCP's 200 ms minimum \
RTO). Every namespace (client, router, directors, real servers) shares the machine's CPUs."""


def _poll_until_gone(fn: Any, gone: str, since: float, timeout: float,
                     out: dict[str, float], key: str) -> None:
    deadline = since + timeout
    while time.time() < deadline:
        if gone not in fn():
            out[key] = time.time() - since
            return
        time.sleep(0.005)


def _bird_pid(lab: ClusterLab, i: int) -> int:
    with open(os.path.join(lab.workdir, f"bird-dir{i + 1}", "bird.pid"), encoding="ascii") as fh:
        return int(fh.read().strip())


def failure_run(lab: ClusterLab, i: int, mode: str) -> dict[str, Any]:
    """One failure of director ``i`` under load; the director is up again afterwards."""
    proc, flows = lab.start_load(streams=30, rate=20, duration=4.5)
    flow_info = lab.flows()
    paths = [lab.paths(src, port, flow_info) for src, port in flows]
    time.sleep(1.5)
    times: dict[str, float] = {}
    pub, priv = lab.directors[i], lab.privates[i]
    bird = _bird_pid(lab, i)
    at = time.time()
    if mode == "kill":
        os.kill(lab.daemons[i].pid, signal.SIGKILL)
    else:
        os.kill(lab.daemons[i].pid, signal.SIGSTOP)
        os.kill(bird, signal.SIGSTOP)
    watchers = [threading.Thread(target=_poll_until_gone,
                                 args=(lab.nexthops, pub, at, 3.0, times, "router")),
                threading.Thread(target=_poll_until_gone,
                                 args=(lambda: lab.rs_nexthops(0), priv, at, 3.0, times,
                                       "return"))]
    for w in watchers:
        w.start()
    for w in watchers:
        w.join()
    report = lab.load_report(proc)
    if mode == "freeze":
        for pid in (lab.daemons[i].pid, bird):
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
    lab.daemons[i].wait(10)
    lab.start_director(i)
    hit = [n for n, (via_in, via_out) in enumerate(paths)
           if via_in in (pub, "?") or via_out in (priv, "?")]
    streams = report["streams"]

    def stall(n: int) -> float:
        return float(max([0.0, *(w for t, w in streams[n]["stalls"] if at - 0.05 <= t <= at + 3)]))

    resumed = [n for n in hit if streams[n]["error"] is None]
    return {
        "mode": mode, "director": i + 1,
        "router_ms": times.get("router", float("nan")) * 1000,
        "return_ms": times.get("return", float("nan")) * 1000,
        "hit": len(hit), "resumed": len(resumed),
        "hit_worst_stall_ms": max([stall(n) for n in hit] or [0.0]) * 1000,
        "survivors": len(streams) - len(hit),
        "survivors_disturbed": sum(1 for n in range(len(streams))
                                   if n not in hit and (stall(n) > STALL or streams[n]["error"])),
        "new_conn_failed": len(report["new_connections"]["failures"]),
        "new_conn_ok": report["new_connections"]["ok"],
    }


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _packets(lab: ClusterLab, i: int) -> int:
    status = ApiClient(os.path.join(lab.workdir, f"dir{i + 1}.sock")).get("/api/v1/status")
    return int((status.get("dataplane") or {}).get("reads", 0))


def scaling(lab: ClusterLab, seconds: int) -> list[dict[str, Any]]:
    """conn/s and CPU per packet with 3, 2 and 1 directors (stopping one at a time)."""
    out = []
    for n in (3, 2, 1):
        live = [i for i in range(len(lab.directors)) if lab.daemons[i].poll() is None]
        assert len(live) == n, live
        time.sleep(1.0)
        cpu0 = {i: _cpu_seconds(lab.daemons[i].pid) for i in live}
        pk0 = {i: _packets(lab, i) for i in live}
        res = lab.run(lab.ns_cli, ["wrk", "-t1", "-c64", f"-d{seconds}s", "--timeout", "2s",
                                   "-H", "Connection: close", f"http://{lab.vip}/"],
                      timeout=seconds + 30)
        wrk = parse_wrk(res.stdout)
        per = []
        for i in live:
            cpu = _cpu_seconds(lab.daemons[i].pid) - cpu0[i]
            pk = _packets(lab, i) - pk0[i]
            per.append({"director": i + 1, "cpu_s": cpu, "packets": pk,
                        "us_per_packet": cpu / pk * 1e6 if pk else float("nan")})
        out.append({"directors": n, "rps": wrk.rps, "errors": sum(wrk.errors.values()),
                    "per_director": per})
        if n > 1:
            victim = live[-1]
            lab.terminate(victim)
            lab.daemons[victim].wait(30)
    return out


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} / {max(values):.0f} ms"


def section_tag(scheduler: str, sync: bool) -> str:
    """The RESULTS.md section (and bench/results JSON) of a variant."""
    if scheduler == "mh" and sync:
        return "cluster"
    return f"cluster-{scheduler}" + ("" if sync else "-nosync")


def report(runs: list[dict[str, Any]], scale: list[dict[str, Any]], argv: list[str],
           *, scheduler: str = "mh", sync: bool = True, load_before: float = float("nan"),
           ) -> str:
    """The RESULTS.md section, between its markers."""
    tag = section_tag(scheduler, sync)
    title = "cluster (bench/cluster.py)" if tag == "cluster" else \
        f"cluster, {scheduler}{'' if sync else ', no connection sync'} (bench/cluster.py)"
    lines = [f"<!-- {tag}:begin -->", f"## {title}", "",
             textwrap.fill(METHOD.format(
                 scheduler=scheduler, sync="connection sync on" if sync else "connection sync off"),
                 width=100, break_on_hyphens=False), "",
             f"Command: `flock /tmp/pylvs-bench.lock python -m bench.cluster {' '.join(argv)}` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, "
             f"{os.getloadavg()[0]:.1f} after).", "",
             "| failure | runs | router reroute median / worst | return route median / worst "
             "| streams of the failed director resumed | their worst stall | survivors' "
             "streams disturbed | new connections failed |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in dict.fromkeys(r["mode"] for r in runs):
        rs = [r for r in runs if r["mode"] == mode]
        lines.append(
            f"| {mode} | {len(rs)} | {_ms([r['router_ms'] for r in rs])} | "
            f"{_ms([r['return_ms'] for r in rs])} | {sum(r['resumed'] for r in rs)} of "
            f"{sum(r['hit'] for r in rs)} | {max(r['hit_worst_stall_ms'] for r in rs):.0f} ms | "
            f"{sum(r['survivors_disturbed'] for r in rs)} of {sum(r['survivors'] for r in rs)} | "
            f"{sum(r['new_conn_failed'] for r in rs)} of "
            f"{sum(r['new_conn_failed'] + r['new_conn_ok'] for r in rs)} |")
    if scale:
        lines += ["", "| directors | conn/s (wrk, Connection: close) | errors | per director: "
                  "CPU µs per packet read (packets) |", "|---|---|---|---|"]
    for s in scale:
        per = ", ".join(f"dir{p['director']} {p['us_per_packet']:.1f} ({p['packets']})"
                        for p in s["per_director"])
        lines.append(f"| {s['directors']} | {s['rps']:.0f} | {s['errors']} | {per} |")
    lines.append(f"<!-- {tag}:end -->")
    return "\n".join(lines) + "\n"


def record(tag: str, runs: list[dict[str, Any]], scale: list[dict[str, Any]], text: str,
           command: str, load_before: float) -> None:
    """Write the section into RESULTS.md, every run into bench/results/<tag>.json, redraw."""
    write_tagged(text, tag)
    RAW.mkdir(parents=True, exist_ok=True)
    doc = {"command": command, "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
           "runs": runs, "scale": scale}
    (RAW / f"{tag}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    draw_or_explain()


def main() -> int:
    """Command line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m bench.cluster")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--modes", default="kill,freeze")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--scheduler", default="mh", help="of the echo port (the streams)")
    ap.add_argument("--no-sync", action="store_true", help="no connection sync among members")
    ap.add_argument("--record", action="store_true",
                    help="write the section into bench/RESULTS.md and bench/results/, redraw")
    args = ap.parse_args()
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    sync = not args.no_sync
    with ClusterLab("bcl", http=True, drain_time=1.0, scheduler=args.scheduler,
                    sync=sync) as lab:
        for i in range(3):
            lab.start_director(i)
        for mode in args.modes.split(","):
            for k in range(args.runs):
                r = failure_run(lab, k % 3, mode)
                print(r, file=sys.stderr, flush=True)
                runs.append(r)
        scale = scaling(lab, args.seconds) if args.seconds > 0 else []
    text = report(runs, scale, sys.argv[1:], scheduler=args.scheduler, sync=sync,
                  load_before=load_before)
    print(text)
    if args.record:
        record(section_tag(args.scheduler, sync), runs, scale, text,
               "python -m bench.cluster " + " ".join(sys.argv[1:]), load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
