"""A large site on an HA pair (issue 13): restore and reload without a role change, SIGTERM
during a restore handled at once (root; loose bounds, the figures are in bench/control.py).

Two directors from :class:`pylvs.testbed.hapair.HaPair`; the real servers are addresses
answered by one namespace (:mod:`pylvs.testbed.scale`), so every health check is a real TCP
handshake.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from pylvs.api.client import ApiClient
from pylvs.testbed.hapair import HaPair
from pylvs.testbed.scale import FIRST_PORT, restore_lines, serve_servers, site_toml
from pylvs.testbed.topology import child_env

SERVICES, PER_SERVICE = 100, 10  # 1,000 real servers, checked every 2 s
STEADY = 8.0  # seconds of steady state measured


def _ctl(pair: HaPair, i: int, *args: str, stdin: str = "") -> subprocess.Popen[str]:
    sock = os.path.join(pair.topo.workdir, f"dir{i + 1}.sock")
    proc = subprocess.Popen(["ip", "netns", "exec", pair.topo.directors[i].ns, sys.executable,
                             "-m", "pylvs", "ctl", "--socket", sock, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    return proc


def _buckets(client: ApiClient) -> list[tuple[float, int]]:
    # the light route: the status of 1,000 servers would itself stall the loop it measures
    lag = client.get("/api/v1/loop_lag")
    return [(float(bound), int(n)) for bound, n in lag["buckets"]]


def _lag_between(before: list[tuple[float, int]],
                 after: list[tuple[float, int]]) -> tuple[float, float, int]:
    """(p99, max, samples) of the loop lag between two readings of the cumulative buckets, as
    bucket upper bounds (a lag of 3 ms counts as 5 ms)."""
    counts = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    total = counts[-1]
    p99 = next(bound for (bound, _), n in zip(after, counts, strict=True) if n >= 0.99 * total)
    top = next(bound for (bound, _), n in zip(after, counts, strict=True) if n == total)
    return p99, top, total


def _transitions(pair: HaPair, i: int) -> int:
    client = ApiClient(os.path.join(pair.topo.workdir, f"dir{i + 1}.sock"), timeout=10)
    return int(client.get("/api/v1/ha").get("transitions") or 0)


def test_large_restore_reload_and_sigterm_keep_the_pair_steady() -> None:
    with HaPair(ha={"preempt": False}, n_real_servers=1) as pair:
        serve_servers(pair.topo)
        pair.start(0)
        pair.wait(lambda: pair.owns_vip(0), 15, "the primary to own the VIP")
        pair.start(1)
        pair.wait(lambda: pair.is_backup(1), 15, "the backup to run as BACKUP")
        before = (_transitions(pair, 0), _transitions(pair, 1))

        # 1. pylvs ctl -R of the whole site on the active node
        lines = restore_lines(SERVICES, PER_SERVICE)
        t0 = time.monotonic()
        ctl = _ctl(pair, 0, "-R", stdin=lines)
        ctl.wait(60)
        restore = time.monotonic() - t0
        assert ctl.returncode == 0, ctl.stderr.read() if ctl.stderr else ""
        assert restore < 10.0

        # 2. SIGHUP reload of the same site from the file (every weight changed)
        path = os.path.join(pair.topo.workdir, "dir1.toml")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n" + site_toml(SERVICES, PER_SERVICE, weight=2))
        offset = len(pair.log(0))
        pair.procs[0].send_signal(signal.SIGHUP)
        pair.wait(lambda: "SIGHUP: reloaded" in pair.log(0)[offset:], 15, "the reload")
        assert "SIGHUP: reload refused" not in pair.log(0)[offset:]
        client = ApiClient(os.path.join(pair.topo.workdir, "dir1.sock"), timeout=30)
        services = client.get("/api/v1/services")["services"]
        assert sum(len(s["real_servers"]) for s in services) >= SERVICES * PER_SERVICE
        lag = client.get("/api/v1/status")["loop_lag"]
        assert lag["count"] > 0

        # a client reaches a real server of the site through the VIP: the replies come back
        # through the director, steered by a few prefix rules instead of one per server
        connect = (f"import socket; socket.create_connection(('{pair.topo.vip}', "
                   f"{FIRST_PORT}), 1).close()")

        def reachable() -> bool:
            res = pair.topo.run(pair.topo.client.ns, [sys.executable, "-c", connect], check=False)
            return bool(res.returncode == 0)

        pair.wait(reachable, 20, "a site service to answer through the VIP")
        rules = pair.topo.run(pair.topo.directors[0].ns, ["ip", "rule"]).stdout
        assert rules.count("sport 80 lookup") < 50

        # steady state: 1,000 servers checked every 2 s, the probes in the checker process;
        # the loop lag of these seconds alone, from the cumulative histogram (goal at 10,000
        # servers: p99 < 20 ms, max < 100 ms, measured in bench/control.py; loose here for a
        # loaded CI machine, but a probe or a history sample back on the loop (~100 ms stalls
        # every 2 s at this size, so more than 1 % of the 50 ms samples) fails it; seen at
        # 1,000 servers: p99 <= 5 ms, max <= 10 ms)
        pair.wait(lambda: sum(rs.get("health") == "up" for s in client.get(
            "/api/v1/services")["services"] for rs in s["real_servers"])
            >= SERVICES * PER_SERVICE, 30, "every server of the site to be up")
        first = _buckets(client)
        time.sleep(STEADY)
        p99, top, samples = _lag_between(first, _buckets(client))
        print(f"steady loop lag over {samples} samples: p99 <= {p99 * 1e3:g} ms, "
              f"max <= {top * 1e3:g} ms")
        assert samples >= STEADY / 0.05 / 2  # the monitor's 50 ms timer kept running
        assert p99 <= 0.05 and top <= 0.25, (p99, top, samples)

        # 3. neither node changed its role through all that
        time.sleep(1.0)
        assert pair.owns_vip(0) and pair.is_backup(1)
        lag = client.get("/api/v1/status")["loop_lag"]
        heartbeat = [ApiClient(os.path.join(pair.topo.workdir, f"dir{i + 1}.sock"), timeout=10)
                     .get("/api/v1/ha").get("timer_lag_ms") for i in (0, 1)]
        print(f"heartbeat timer lag (primary, backup): {heartbeat}")
        assert (_transitions(pair, 0), _transitions(pair, 1)) == before, (
            f"primary loop lag {lag}\nheartbeat timer lag {heartbeat}\n{pair.log(1)[-3000:]}")

        # 4. SIGTERM in the middle of a restore (on the backup) is handled within a second
        ctl = _ctl(pair, 1, "-R", stdin=lines)
        time.sleep(0.3)
        proc = pair.procs.pop(1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        took = time.monotonic() - t0
        print(f"SIGTERM handled in {took:.2f} s: "
              f"{re.findall(r'director stopped.*', pair.log(1))}")
        assert took < 1.0, pair.log(1)[-3000:]
        ctl.wait(30)
        assert not os.path.exists(os.path.join(pair.topo.workdir, "dir2.sock"))
        assert pair.owns_vip(0)
