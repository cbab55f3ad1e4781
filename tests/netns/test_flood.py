"""A bounded spoofed SYN flood through ``pylvs serve`` with a small table (issue 11,
docs/ipvs.md#flood-defence): fresh clients still get in and a long stream keeps flowing.

The flooder (bench/flooder.c, built with gcc) sends SYNs from 198.18.128.0/17 out of the
client namespace; the director has no route back to that range, so the real servers' SYN-ACKs
leave the director and vanish, as they would on the internet.  With a table of 4,000 entries
and 10,000 spoofed SYN/s the table is full within half a second; without eviction every new
client would then be dropped as ``table_full``.  With it a half-open entry lives about
4,000 / 10,000 = 0.4 s before the flood pushes it out, far longer than a real handshake takes.
That test turns ``[defense] syncookies`` off, which would keep the flood out of the table; the
second runs the default, where syncookies engages within the first 400 SYNs (a tenth of the
table) and the XDP program answers the rest: no spoofed SYN reaches a real server after that.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.flood import build_flooder, flooder_argv
from pylvs.api.client import ApiClient
from pylvs.testbed.topology import Topology
from tests.netns.conftest import PylvsProcess
from tests.netns.test_synproxy import FLOOD_NET, _read_counter, _syn_counters

MAX = 4000
FRESH = 20

CLIENT_RUN = textwrap.dedent("""
    import json, socket, subprocess, sys, time
    VIP = "198.18.0.100"
    flood_argv, fresh = json.loads(sys.argv[1])

    def get(sock):
        sock.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        n = int([l.split(b":")[1] for l in head.split(b"\\r\\n")
                 if l.lower().startswith(b"content-length")][0])
        while len(body) < n:
            body += sock.recv(4096)
        return body.strip().decode()

    stream = socket.create_connection((VIP, 80), timeout=2)
    out = {"stream_ok": 0, "stream_err": [], "fresh_ok": 0, "fresh_err": []}
    get(stream)
    flood = subprocess.Popen(flood_argv, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the table is full by now
    for i, src in enumerate(fresh):
        try:
            s = socket.socket()
            s.settimeout(1.0)
            s.bind((src, 0))
            s.connect((VIP, 80))
            get(s)
            s.close()
            out["fresh_ok"] += 1
        except OSError as exc:
            out["fresh_err"].append(f"{src}: {exc}")
        try:
            get(stream)
            out["stream_ok"] += 1
        except OSError as exc:
            out["stream_err"].append(str(exc))
        time.sleep(0.05)
    out["flood"] = json.loads(flood.communicate(timeout=60)[0])
    get(stream)
    out["stream_ok"] += 1
    print(json.dumps(out))
""")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the flooder is built with gcc")
def test_fresh_clients_get_in_during_a_syn_flood(
        topology: Topology, pylvs_serve: Callable[..., PylvsProcess], tmp_path: Path) -> None:
    topo = topology
    daemon = pylvs_serve(topo, topo.director_config(director_options={"max_connections": MAX},
                                                    extra="[defense]\nsyncookies = 0\n"))
    flooder = build_flooder(tmp_path)
    fresh = [f"198.18.0.{30 + i}" for i in range(FRESH)]
    for addr in fresh:
        topo.run(topo.clients[0].ns, ["ip", "addr", "add", f"{addr}/24", "dev", "eth0"])
    argv = flooder_argv(flooder, topo.vip, 80, rate=10_000, count=45_000, seconds=5.0)
    res = topo.run(topo.clients[0].ns, [sys.executable, "-c", CLIENT_RUN,
                                        json.dumps([argv, fresh])], timeout=60)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["flood"]["sent"] > 5 * MAX, out["flood"]
    assert out["fresh_ok"] == FRESH, out["fresh_err"]
    assert out["stream_err"] == [] and out["stream_ok"] == FRESH + 1
    api = ApiClient(str(Path(topo.workdir) / f"{topo.directors[0].name}.sock"))
    dfn = api.request("GET", "/api/v1/defense")
    stats = api.request("GET", "/api/v1/stats")
    assert stats["connections"] <= MAX
    assert dfn["entries_dropped"]["evict_embryonic"] > 3 * MAX, dfn
    assert stats["drops"].get("table_full", 0) == 0, stats["drops"]
    del daemon


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the flooder is built with gcc")
def test_syncookies_keep_the_flood_from_the_table_and_the_servers(
        topology: Topology, pylvs_serve: Callable[..., PylvsProcess], tmp_path: Path) -> None:
    """The default defence: syncookies engages on the flood's first embryonic entries (the
    service has no synproxy), XDP answers the flood from then on, fresh clients get in through
    cookies, the kept-alive stream keeps flowing, and the real servers' SYN counters do not move
    for a spoofed source once it is engaged."""
    topo = topology
    _syn_counters(topo)
    pylvs_serve(topo, topo.director_config(director_options={"max_connections": MAX}))
    api = ApiClient(str(Path(topo.workdir) / f"{topo.directors[0].name}.sock"))
    flooder = build_flooder(tmp_path)
    fresh = [f"198.18.0.{30 + i}" for i in range(FRESH)]
    for addr in fresh:
        topo.run(topo.clients[0].ns, ["ip", "addr", "add", f"{addr}/24", "dev", "eth0"])
    argv = flooder_argv(flooder, topo.vip, 80, rate=10_000, count=40_000, seconds=4.0)
    run = topo.popen(topo.clients[0].ns, [sys.executable, "-c", CLIENT_RUN,
                                          json.dumps([argv, fresh])], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 5
    while not api.request("GET", "/api/v1/defense")["syncookies"]["engaged"]:
        assert time.monotonic() < deadline, "syncookies never engaged"
        time.sleep(0.05)
    time.sleep(0.3)  # SYNs forwarded before it engaged are still on their way
    spoofed_at_engage = _read_counter(topo, "syn_spoofed")
    stdout, _ = run.communicate(timeout=60)
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["flood"]["sent"] > 30_000, out["flood"]
    assert out["fresh_ok"] == FRESH, out["fresh_err"]
    assert out["stream_err"] == [] and out["stream_ok"] == FRESH + 1
    # at most the threshold's worth of spoofed SYNs got through, none after it engaged
    assert spoofed_at_engage <= MAX // 10 + 50
    assert _read_counter(topo, "syn_spoofed") == spoofed_at_engage, \
        f"spoofed SYNs from {FLOOD_NET} reached the servers after it engaged"
    dfn = api.request("GET", "/api/v1/defense")
    sc = dfn["syncookies"]
    assert sc["engaged"] and sc["times_engaged"] == 1, sc  # no flapping
    assert sc["acks_accepted"] >= FRESH, sc
    xdp = api.request("GET", "/api/v1/status")["xdp_synproxy"]
    assert xdp["attached"] == {"eth0": "generic"} and xdp["syncookies_engaged"], xdp
    assert sc["syns_xdp"] > 20_000 and sc["syns_engine"] < sc["syns_xdp"], sc
    stats = api.request("GET", "/api/v1/stats")
    assert stats["connections"] <= MAX // 10 + 2 * FRESH + 10, stats["connections"]
