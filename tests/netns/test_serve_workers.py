"""``pylvs serve`` with ``workers = 2``: two C threads, one TUN queue each, one shared engine.

The scheduler tests of test_serve_director.py run here again with two workers pinned (the
default is one per CPU, so a bigger CI machine would run them with more); the tests below add
what only threads can break: exact rr over many short connections spread over both queues, the
steering program keeping both directions of each connection on one worker, eight parallel
checked bulk streams, and shutdown with no thread left, on SIGTERM and on a start that fails
after the workers are running.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import tests.netns.test_serve_director as base
from pylvs.testbed.topology import ServiceSpec, Topology
from tests.support.serve_harness import Srv, client, names, wait_log

WORKERS = 2


@pytest.fixture(autouse=True)
def two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every config rendered in this module asks for ``workers = 2``."""
    render = Topology.director_config

    def with_workers(self: Topology, services: Any = None, **kw: Any) -> str:
        opts = dict(kw.pop("director_options", None) or {})
        opts.setdefault("workers", WORKERS)
        return render(self, services, director_options=opts, **kw)

    monkeypatch.setattr(Topology, "director_config", with_workers)


# The scheduler semantics, again with two workers.
test_sh_sticks_per_client = base.test_sh_sticks_per_client
test_persistence_sticks_with_rr = base.test_persistence_sticks_with_rr
test_weight_zero_keeps_open_connections_and_takes_no_new = \
    base.test_weight_zero_keeps_open_connections_and_takes_no_new


def _worker_threads(pid: int) -> list[str]:
    names_: list[str] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="ascii") as fh:
                comm = fh.read().strip()
        except OSError:
            continue
        if comm.startswith("pylvs-w"):
            names_.append(comm)
    return sorted(names_)


def _per_worker_reads(log: str) -> list[int]:
    m = re.search(r"per worker reads \[([\d, ]*)\]", log)
    assert m is not None, log[-2000:]
    return [int(x) for x in m.group(1).split(",") if x.strip()]


def test_rr_exact_over_many_short_connections(srv: Srv) -> None:
    daemon = srv.serve(srv.config(ServiceSpec(scheduler="rr")))
    # The VIP can answer before the start-up summary is logged (health verdicts come first).
    wait_log(daemon, r"director started: .* 2 worker threads")
    assert _worker_threads(daemon.proc.pid) == ["pylvs-w0", "pylvs-w1"]
    got = names(srv.topo, 90)
    assert sorted(got[:3]) == ["rs1", "rs2", "rs3"]
    assert got == got[:3] * 30, got  # one flow at a time: the kernel's exact rotation
    assert daemon.stop() == 0
    reads = _per_worker_reads(daemon.log())
    assert len(reads) == WORKERS and sum(reads) > 90 * 5, reads
    assert "packet workers stopped: 0 thread(s) left" in daemon.log()


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def _forwarded_per_worker(sock: str) -> list[int]:
    conn = _UnixHTTP(sock)
    try:
        conn.request("GET", "/api/v1/status")
        dp = json.loads(conn.getresponse().read())["dataplane"]
    finally:
        conn.close()
    assert dp["steering"] is True, dp
    return [int(x) for x in dp["worker_forwarded"]]


def test_steering_sends_both_directions_of_a_connection_to_one_worker(srv: Srv) -> None:
    # One connection at a time (SYN ... FIN, both directions): the per-worker forwarded
    # counters must grow on exactly one worker.  The kernel's own flow hash puts the two
    # directions (different 5-tuples after NAT) on different queues about half the time.
    # The fast path off: it forwards an established connection's data in the kernel, so the
    # TUN would not see the 6 packets per connection counted here.
    toml = srv.topo.director_config([ServiceSpec(scheduler="rr")],
                                    director_options={"fastpath": "off"})
    sock = json.loads(re.search(r'(?m)^socket = (".*")$', toml).group(1))  # type: ignore[union-attr]
    daemon = srv.serve(toml)
    assert "steering program attached" in daemon.log()
    used, got = set(), []
    before = _forwarded_per_worker(sock)
    for i in range(15):
        got += names(srv.topo, 1)
        time.sleep(0.2)  # the last ACK reaches its worker, which publishes its counters
        after = _forwarded_per_worker(sock)
        grew = [w for w in range(WORKERS) if after[w] > before[w]]
        assert len(grew) == 1 and after[grew[0]] - before[grew[0]] >= 6, (i, before, after)
        used.add(grew[0])
        before = after
    assert used == set(range(WORKERS))  # 15 client ports hash to both queues
    assert got == got[:3] * 5, got
    assert daemon.stop() == 0


def test_eight_parallel_hashed_streams(srv: Srv) -> None:
    daemon = srv.serve(srv.config(ServiceSpec(scheduler="rr")))
    size = 64 << 20
    out = client(srv.topo, textwrap.dedent(f"""
        import threading
        results = [None] * 8
        def fetch(i):
            results[i] = fetch_checked({size})
        t = time.monotonic()
        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
        for th in threads: th.start()
        for th in threads: th.join(120)
        out["seconds"] = time.monotonic() - t
        out["results"] = results
    """), timeout=180)
    print(f"8 x 64 MB through 2 workers in {out['seconds']:.2f} s "
          f"({8 * size * 8 / out['seconds'] / 1e9:.2f} Gbit/s)")
    assert out["results"] == [[size, True]] * 8, out["results"]
    assert daemon.stop() == 0
    reads = _per_worker_reads(daemon.log())
    assert len(reads) == WORKERS, reads


def test_sigterm_and_failed_start_leave_no_thread(make_srv: Callable[..., Srv]) -> None:
    srv = make_srv()
    before = base._leftovers(srv.topo)
    daemon = srv.serve(srv.config(ServiceSpec(scheduler="rr")))
    assert len(_worker_threads(daemon.proc.pid)) == WORKERS
    assert Counter(names(srv.topo, 6)) == {"rs1": 2, "rs2": 2, "rs3": 2}
    assert daemon.stop() == 0
    assert "packet workers stopped: 0 thread(s) left" in daemon.log()
    assert base._leftovers(srv.topo) == before
    # A start that fails after the workers run (the API cannot create its socket: /proc/version
    # is a file): the director stops them, removes the network configuration and exits 1.
    toml = srv.config(ServiceSpec(scheduler="rr"))
    toml = re.sub(r'(?m)^socket = ".*"$', 'socket = "/proc/version/x.sock"', toml)
    path = srv.topo.write_director_config(toml)
    res = srv.topo.run(srv.topo.director.ns, [sys.executable, "-m", "pylvs", "serve", "-c", path],
                       check=False, timeout=60)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "2 worker threads" not in res.stderr  # it never finished starting
    assert "packet workers stopped: 0 thread(s) left" in res.stderr, res.stderr[-3000:]
    assert base._leftovers(srv.topo) == before
