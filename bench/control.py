"""The control plane of a large site: loop lag, ``pylvs ctl -R``, SIGHUP reload, SIGTERM (root).

One ``pylvs serve`` in a namespace topology (:mod:`pylvs.testbed.scale`: the real servers are
addresses of one namespace, each health check is a real TCP handshake).  Steps:

1. start the director with no services, then ``pylvs ctl -R`` the whole site (``--services`` x
   ``--per-service`` real servers; ctl-created services get TCP checks every 2 s) and time it;
2. leave it alone ``--steady`` seconds (health checks on every server) and read the loop lag of
   the last minute from ``/api/v1/status`` (p50, p99, max);
3. write the same site as TOML (weights changed, so every server is edited), SIGHUP, and time
   the reload from the signal to the daemon's ``SIGHUP: reloaded`` line; read the largest loop
   lag seen so far;
4. flush, start a second restore and send SIGTERM 0.3 s into it: time to exit.

    python -m bench.control --services 1000 --per-service 10 --steady 70

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
from pylvs.testbed.scale import restore_lines, serve_servers, site_toml
from pylvs.testbed.topology import Topology, child_env


def _env(pythonpath: str | None) -> dict[str, str]:
    env = child_env()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _ctl(topo: Topology, sock: str, args: list[str], stdin: str, env: dict[str, str],
         timeout: float) -> tuple[float, int, str]:
    t0 = time.monotonic()
    try:
        res = subprocess.run(["ip", "netns", "exec", topo.director.ns, sys.executable, "-m",
                              "pylvs", "ctl", "--socket", sock, *args], input=stdin, text=True,
                             capture_output=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.monotonic() - t0, -1, f"timed out after {timeout} s"
    return time.monotonic() - t0, res.returncode, (res.stderr or res.stdout).strip()[-300:]


def _lag(client: ApiClient) -> dict[str, Any] | None:
    try:
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One full run; returns the figures."""
    env = _env(args.pythonpath)
    out: dict[str, Any] = {"services": args.services, "per_service": args.per_service,
                           "servers": args.services * args.per_service}
    with Topology("ctlb", n_real_servers=1) as topo:
        serve_servers(topo)
        base = topo.director_config([])
        cfg_path = topo.write_director_config(base)
        sock = os.path.join(topo.workdir, "dir1.sock")
        log_path = cfg_path + ".log"
        with open(log_path, "w", encoding="utf-8") as log:
            proc = topo.popen(topo.director.ns, [sys.executable, "-m", "pylvs", "serve", "-c",
                                                 cfg_path], stdout=log, stderr=subprocess.STDOUT,
                              env=env)
        if _wait_line(log_path, r"ready: ", 0, 30) is None:
            with open(log_path, encoding="utf-8") as fh:
                raise RuntimeError("pylvs serve did not start:\n" + fh.read()[-2000:])
        client = ApiClient(sock, timeout=30)
        lines = restore_lines(args.services, args.per_service)
        out["restore_lines"] = lines.count("\n")
        secs, rc, err = _ctl(topo, sock, ["-R"], lines, env, args.timeout)
        out["restore_s"] = round(secs, 3) if rc == 0 else None
        out["restore_error"] = None if rc == 0 else err
        restore_lag = _lag(client)
        out["restore_max_lag_ms"] = None if restore_lag is None else round(
            restore_lag["max_ever"] * 1e3, 1)
        time.sleep(args.steady)
        lag = _lag(client)
        if lag is not None:
            out["steady"] = {k: round(lag[k] * 1e3, 2) for k in ("p50", "p99", "max")}
            out["steady"]["samples"] = lag["window_samples"]
        try:
            services = client.get("/api/v1/services")["services"]
            out["servers_up"] = sum(1 for svc in services for rs in svc["real_servers"]
                                    if rs.get("health") == "up")
            health = client.get("/api/v1/health")
            out["probes"] = len(health.get("probes", []))
            out["probe_runs"] = sum(int(p.get("runs", 0)) for p in health.get("probes", []))
        except ApiError as exc:
            out["probes"] = f"n/a ({exc})"
        # SIGHUP: the same site from the file, every weight changed
        with open(cfg_path, "w", encoding="utf-8") as fh:
            fh.write(base + "\n" + site_toml(args.services, args.per_service, weight=2))
        offset = os.path.getsize(log_path)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        line = _wait_line(log_path, r"SIGHUP: re\w+ .*", offset, args.timeout)
        out["reload_s"] = round(time.monotonic() - t0, 3) if line and "reloaded" in line \
            else None
        out["reload_line"] = line
        lag = _lag(client)
        out["max_lag_after_reload_ms"] = None if lag is None else round(lag["max_ever"] * 1e3, 1)
        # SIGTERM in the middle of a restore
        _ctl(topo, sock, ["-C"], "", env, args.timeout)
        ctl = subprocess.Popen(["ip", "netns", "exec", topo.director.ns, sys.executable, "-m",
                                "pylvs", "ctl", "--socket", sock, "-R"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                               env=env)
        assert ctl.stdin is not None
        ctl.stdin.write(lines)
        ctl.stdin.close()
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(args.timeout)
            out["sigterm_exit_s"] = round(time.monotonic() - t0, 3)
        except subprocess.TimeoutExpired:
            out["sigterm_exit_s"] = None
        ctl.wait(30)
        out["socket_left"] = os.path.exists(sock)
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
    args = p.parse_args(argv)
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
