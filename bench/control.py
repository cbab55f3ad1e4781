"""The control plane of a large site: loop lag, ``pylvs ctl -R``, SIGHUP reload, SIGTERM (root).

One ``pylvs serve`` in a namespace topology, or with ``--ha`` an HA pair (the real servers are
addresses of one namespace, :mod:`pylvs.testbed.scale`: each health check is a real TCP
handshake).  Steps:

1. start the director(s) with no site, then ``pylvs ctl -R`` the whole site (``--services`` x
   ``--per-service`` real servers) on the first director and time it (ctl-created services
   have no health check, as with ipvsadm);
2. write the same site as TOML (TCP checks on every server every 2 s, every weight changed),
   SIGHUP every director at once and time each reload from the signal to its ``SIGHUP:
   reloaded`` line;
3. leave it alone ``--steady`` seconds (health checks on every server) and read the loop lag of
   the last minute from ``/api/v1/status`` (p50, p99, max), the servers up, and the HA role
   changes every director counted since step 1;
4. flush, start a second restore on the last director (the backup of a pair) and send SIGTERM
   0.3 s into it: time to exit.

    python -m bench.control --services 1000 --per-service 10 --steady 70 [--ha]

``--pythonpath DIR`` runs the daemon and ``pylvs ctl`` from another checkout (e.g. main's
``src``) to measure the code before a change; figures it cannot give are reported as n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from pylvs.api.client import ApiClient, ApiError
from pylvs.testbed.hapair import HaPair
from pylvs.testbed.scale import restore_lines, serve_servers, site_toml
from pylvs.testbed.topology import Topology, child_env


def _env(pythonpath: str | None) -> dict[str, str]:
    env = child_env()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _ctl(site: _Site, i: int, args: list[str], stdin: str, env: dict[str, str],
         timeout: float) -> tuple[float, int, str]:
    t0 = time.monotonic()
    try:
        res = subprocess.run(["ip", "netns", "exec", site.ns(i), sys.executable, "-m",
                              "pylvs", "ctl", "--socket", site.sock(i), *args], input=stdin,
                             text=True, capture_output=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.monotonic() - t0, -1, f"timed out after {timeout} s"
    return time.monotonic() - t0, res.returncode, (res.stderr or res.stdout).strip()[-300:]


def _lag(client: ApiClient) -> dict[str, Any] | None:
    try:
        lag = client.get("/api/v1/loop_lag")
    except ApiError:
        try:  # a daemon before the light route (--pythonpath)
            lag = client.get("/api/v1/status").get("loop_lag")
        except ApiError:
            return None
    return lag if isinstance(lag, dict) else None


def _wait_line(path: str, pattern: str, offset: int, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            m = re.search(pattern, fh.read())
        if m:
            return m.group(0)
        time.sleep(0.02)
    return None


def _read_from(path: str, offset: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.seek(offset)
        return fh.read(200000)


class _Site:
    """The directors under test: one ``pylvs serve`` (a Topology) or an HA pair (HaPair)."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str]) -> None:
        self.args, self.env = args, env
        self.pair: HaPair | None = HaPair(ha={"preempt": False}, n_real_servers=1,
                                          prefix="ctlh") if args.ha else None
        self.topo: Topology = Topology("ctlb", n_real_servers=1)
        self.procs: list[subprocess.Popen[str]] = []
        self.cfgs: list[str] = []
        self.logs: list[str] = []

    def __enter__(self) -> _Site:
        if self.pair is not None:
            self.pair.__enter__()
            self.topo = self.pair.topo
        else:
            self.topo.__enter__()
        try:
            serve_servers(self.topo)
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.pair is not None:
            self.pair.__exit__()
        else:
            self.topo.__exit__(None, None, None)

    def _start(self) -> None:
        if self.pair is not None:
            pair = self.pair
            pair.start(0)
            pair.wait(lambda: pair.owns_vip(0), 30, "the primary to own the VIP")
            pair.start(1)
            pair.wait(lambda: pair.is_backup(1), 30, "the backup to run as BACKUP")
            self.procs = [pair.procs[0], pair.procs[1]]
            self.logs = [pair.logs[0], pair.logs[1]]
            self.cfgs = [os.path.join(self.topo.workdir, f"dir{i + 1}.toml") for i in (0, 1)]
            return
        cfg_path = self.topo.write_director_config(self.topo.director_config([]))
        log_path = cfg_path + ".log"
        with open(log_path, "w", encoding="utf-8") as log:
            self.procs = [self.topo.popen(self.topo.director.ns, [
                sys.executable, "-m", "pylvs", "serve", "-c", cfg_path], stdout=log,
                stderr=subprocess.STDOUT, env=self.env)]
        self.cfgs, self.logs = [cfg_path], [log_path]
        if _wait_line(log_path, r"ready: ", 0, 30) is None:
            with open(log_path, encoding="utf-8") as fh:
                raise RuntimeError("pylvs serve did not start:\n" + fh.read()[-2000:])

    def ns(self, i: int) -> str:
        """Director *i*'s namespace."""
        return str(self.topo.directors[i].ns)

    def sock(self, i: int) -> str:
        """Director *i*'s control socket."""
        return os.path.join(self.topo.workdir, f"dir{i + 1}.sock")

    def ha(self) -> list[dict[str, Any] | None]:
        """Each director's ``/api/v1/ha`` (None: not answering)."""
        out: list[dict[str, Any] | None] = []
        for i in range(len(self.procs)):
            try:
                out.append(ApiClient(self.sock(i), timeout=10).get("/api/v1/ha"))
            except ApiError:
                out.append(None)
        return out

    def transitions(self) -> list[int | None]:
        """HA role changes each director counted so far (None: not answering)."""
        return [None if h is None else int(h.get("transitions") or 0) for h in self.ha()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One full run; returns the figures."""
    env = _env(args.pythonpath)
    out: dict[str, Any] = {"services": args.services, "per_service": args.per_service,
                           "servers": args.services * args.per_service, "ha": args.ha,
                           "load_at_start": os.getloadavg()[0]}
    with _Site(args, env) as site:
        client = ApiClient(site.sock(0), timeout=30)
        before = site.transitions()
        # 1. pylvs ctl -R of the whole site (ctl-created services have no health checks)
        lines = restore_lines(args.services, args.per_service)
        out["restore_lines"] = lines.count("\n")
        secs, rc, err = _ctl(site, 0, ["-R"], lines, env, args.timeout)
        out["restore_s"] = round(secs, 3) if rc == 0 else None
        out["restore_error"] = None if rc == 0 else err
        restore_lag = _lag(client)
        out["restore_max_lag_ms"] = None if restore_lag is None else round(
            restore_lag["max_ever"] * 1e3, 1)
        # 2. SIGHUP: the same site from the file, TCP checks on every server every 2 s and
        #    every weight changed; on both directors of a pair at once
        offsets = []
        for path in site.cfgs:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("\n" + site_toml(args.services, args.per_service, weight=2))
        for log_path in site.logs:
            offsets.append(os.path.getsize(log_path))
        t0 = time.monotonic()
        for proc in site.procs:
            proc.send_signal(signal.SIGHUP)
        reloads = []
        for log_path, offset in zip(site.logs, offsets, strict=True):
            line = _wait_line(log_path, r"SIGHUP: re\w+ .*", offset, args.timeout)
            reloads.append(round(time.monotonic() - t0, 3) if line and "reloaded" in line
                           else None)
        out["reload_s"] = reloads[0]
        out["reload_s_all"] = reloads
        lag = _lag(client)
        out["max_lag_through_reload_ms"] = None if lag is None else round(
            lag["max_ever"] * 1e3, 1)
        # 3. steady state: health checks on every server
        time.sleep(args.steady)
        lag = _lag(client)
        if lag is not None:
            out["steady"] = {k: round(lag[k] * 1e3, 2) for k in ("p50", "p99", "max")}
            out["steady"]["samples"] = lag["window_samples"]
            gc = lag.get("gc")  # full GC passes since start: a stall no callback of ours shows
            if isinstance(gc, dict):
                out["steady"]["gc_full_passes"] = gc.get("full_passes")
                out["steady"]["gc_max_ms"] = round(float(gc.get("max") or 0) * 1e3, 1)
        out["load_after_steady"] = os.getloadavg()[0]
        try:
            services = client.get("/api/v1/services")["services"]
            out["servers_up"] = sum(1 for svc in services for rs in svc["real_servers"]
                                    if rs.get("health") == "up")
            health = client.get("/api/v1/health")
            out["probes"] = len(health.get("probes", []))
            out["probe_runs"] = sum(int(p.get("runs", 0)) for p in health.get("probes", []))
        except ApiError as exc:
            out["probes"] = f"n/a ({exc})"
        after = site.transitions()
        out["ha_transitions"] = [None if a is None or b is None else a - b
                                 for a, b in zip(after, before, strict=True)]
        if args.ha:  # how late each heartbeat timer fired: the send jitter the peer sees
            out["heartbeat_timer_lag_ms"] = [None if h is None else h.get("timer_lag_ms")
                                             for h in site.ha()]
        # 4. SIGTERM in the middle of a restore (on the backup of a pair)
        last = len(site.procs) - 1
        _ctl(site, last, ["-C"], "", env, args.timeout)
        ctl = subprocess.Popen(["ip", "netns", "exec", site.ns(last), sys.executable, "-m",
                                "pylvs", "ctl", "--socket", site.sock(last), "-R"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, text=True, env=env)
        assert ctl.stdin is not None
        ctl.stdin.write(lines)
        ctl.stdin.close()
        time.sleep(0.3)
        t0 = time.monotonic()
        site.procs[last].send_signal(signal.SIGTERM)
        try:
            site.procs[last].wait(args.timeout)
            out["sigterm_exit_s"] = round(time.monotonic() - t0, 3)
        except subprocess.TimeoutExpired:
            out["sigterm_exit_s"] = None
        ctl.wait(30)
        out["socket_left"] = os.path.exists(site.sock(last))
        with open(site.logs[last], encoding="utf-8", errors="replace") as fh:
            tail = fh.read()[-20000:]
        # the daemon's own account of the stop: each step's time, and the exit
        out["sigterm_log"] = re.findall(r"director stopped.*|pylvs serve: exit.*", tail)
        out["reload_log"] = []  # each director's account of its reload: where the time went
        for path, offset in zip(site.logs, offsets, strict=True):
            text = _read_from(path, offset)
            for pattern in (r"configuration applied.* in \d+ ms.*", r"SIGHUP: reloaded.*"):
                m = re.search(pattern, text)
                out["reload_log"].append(m.group(0) if m else None)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run and print the figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--per-service", type=int, default=10)
    p.add_argument("--steady", type=float, default=70.0,
                   help="seconds of steady state before reading the loop lag (window: 60 s)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--pythonpath", help="run the daemon and ctl from this source tree")
    p.add_argument("--ha", action="store_true",
                   help="an HA pair (both directors run the site; role changes counted)")
    args = p.parse_args(argv)
    if args.ha and args.pythonpath:
        p.error("--ha runs this tree's pylvs (HaPair); --pythonpath is for single runs")
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
