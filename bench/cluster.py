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

    python -m bench.cluster --runs 20 --modes kill,freeze --seconds 10
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from typing import Any

from bench.netbench_tools import parse_wrk
from pylvs.api.client import ApiClient
from pylvs.testbed.cluster import ClusterLab

STALL = 0.19  # a lost segment costs at least TCP's 200 ms minimum RTO; less is CPU noise


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


def report(runs: list[dict[str, Any]], scale: list[dict[str, Any]], argv: list[str]) -> str:
    """The RESULTS.md section."""
    lines = [f"Command: `python -m bench.cluster {' '.join(argv)}` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}).", "",
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
    lines += ["", "| directors | conn/s (wrk, Connection: close) | errors | per director: "
              "CPU µs per packet read (packets) |", "|---|---|---|---|"]
    for s in scale:
        per = ", ".join(f"dir{p['director']} {p['us_per_packet']:.1f} ({p['packets']})"
                        for p in s["per_director"])
        lines.append(f"| {s['directors']} | {s['rps']:.0f} | {s['errors']} | {per} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Command line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m bench.cluster")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--modes", default="kill,freeze")
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    runs: list[dict[str, Any]] = []
    with ClusterLab("bcl", http=True, drain_time=1.0) as lab:
        for i in range(3):
            lab.start_director(i)
        for mode in args.modes.split(","):
            for k in range(args.runs):
                r = failure_run(lab, k % 3, mode)
                print(r, file=sys.stderr, flush=True)
                runs.append(r)
        scale = scaling(lab, args.seconds) if args.seconds > 0 else []
    text = report(runs, scale, sys.argv[1:])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
