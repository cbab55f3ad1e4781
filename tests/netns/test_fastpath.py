"""``pylvs serve`` with ``workers = 2`` and the fast path on: established connections forwarded
by the TC program in the kernel, the engine still deciding and counting.

Eight parallel hashed streams arrive intact while most of their bytes bypass the TUN; the
service's stats (after a fold) hold the bytes moved; a FIN brings the connection back to the
engine; removing the server or switching the fast path off stops
fast-pathing (its packets are the engine's again, which drops them as IPVS does); a
``kill -9`` detaches the program.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

from pylvs.api.client import ApiClient
from pylvs.testbed.topology import ServiceSpec
from tests.support.serve_harness import Srv, client, wait_log

SIZE = 16 << 20
STREAMS = 8


def _api(srv: Srv) -> ApiClient:
    return ApiClient(os.path.join(srv.topo.workdir, f"{srv.topo.director.name}.sock"))


def _config(srv: Srv, fastpath: str = "on", **kw: object) -> str:
    opts: dict[str, str | int | bool] = {"workers": 2, "fastpath": fastpath}
    return srv.topo.director_config([ServiceSpec(scheduler="rr")], director_options=opts,
                                    **kw)  # type: ignore[arg-type]


def _tcx_count(srv: Srv, ifname: str) -> int:
    code = ("import socket; from pylvs._core import lib; "
            f"print(lib.lvs_fastpath_tcx_count(socket.if_nametoindex({ifname!r})))")
    res = srv.topo.run(srv.topo.director.ns, [sys.executable, "-c", code], timeout=30)
    return int(res.stdout.strip())


def _service_bytes(api: ApiClient) -> tuple[int, int]:
    svc = api.request("GET", "/api/v1/services")["services"][0]
    st = svc["stats"]
    return int(st["inbytes"]), int(st["outbytes"])


STREAMS_CODE = textwrap.dedent(f"""
    import threading
    results = [None] * {STREAMS}
    def fetch(i):
        results[i] = fetch_checked({SIZE})
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range({STREAMS})]
    for th in threads: th.start()
    for th in threads: th.join(120)
    out["results"] = results
""")


def test_streams_bypass_the_tun_and_are_counted(srv: Srv) -> None:
    daemon = srv.serve(_config(srv))
    wait_log(daemon, r"ready: ")  # the VIP answers before the API is up
    api = _api(srv)
    fp = api.request("GET", "/api/v1/status")["fastpath"]
    assert fp["state"] == "attached" and fp["attached"] == ["eth0", "eth1"], fp
    assert _tcx_count(srv, "eth0") == 1 and _tcx_count(srv, "eth1") == 1
    before_tun = api.request("GET", "/api/v1/status")["dataplane"]["read_bytes"]
    out = client(srv.topo, STREAMS_CODE, timeout=180)
    assert out["results"] == [[SIZE, True]] * STREAMS, out["results"]
    status = api.request("GET", "/api/v1/status")
    tun = status["dataplane"]["read_bytes"] - before_tun
    fp = status["fastpath"]
    moved = STREAMS * SIZE
    assert fp["adds"] >= STREAMS and fp["bytes"] > moved * 0.8, fp
    assert tun < moved * 0.2, (tun, moved)  # most bytes never crossed the TUN
    # every conn closed with a FIN, which the engine saw: its entries are gone
    time.sleep(0.2)
    fp = api.request("GET", "/api/v1/status")["fastpath"]
    assert fp["entries"] == 0 and fp["dels"] >= STREAMS, fp
    conns = api.request("GET", "/api/v1/connections")["connections"]
    assert not [c for c in conns if c.get("state") == "ESTABLISHED"], conns
    # the service counted every byte: headers included, so a little more than the payload
    inbytes, outbytes = _service_bytes(api)
    assert moved <= outbytes <= moved * 1.06, (outbytes, moved)
    assert inbytes > 0
    # kill -9: the kernel closes the links, which detaches the program
    daemon.kill()
    deadline = time.monotonic() + 10
    while _tcx_count(srv, "eth0") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _tcx_count(srv, "eth0") == 0 and _tcx_count(srv, "eth1") == 0


KEEPALIVE_CODE = textwrap.dedent("""
    import threading
    s = socket.create_connection((VIP, 80), timeout=5)
    got = []
    for i in range(20):
        got.append(http(sock=s))
    out["first"] = got
    # the test removes the server now (a file written by the test ends the wait)
    import os
    for _ in range(200):
        if os.path.exists(FLAG):
            break
        time.sleep(0.05)
    try:
        s.settimeout(2.0)
        out["after"] = http(sock=s, timeout=2.0)
    except Exception as exc:
        out["after"] = type(exc).__name__
""")


def test_removed_server_and_switch_off_stop_fast_pathing(srv: Srv) -> None:
    wait_log(srv.serve(_config(srv)), r"ready: ")
    api = _api(srv)
    flag = os.path.join(srv.topo.workdir, "removed")
    proc = srv.topo.popen(srv.topo.clients[0].ns, [
        sys.executable, "-c",
        "from tests.support.serve_harness import CLIENT_LIB\n"
        f"FLAG = {flag!r}\n"
        "exec(CLIENT_LIB + " + repr(KEEPALIVE_CODE) + " + '\\nprint(json.dumps(out))')"],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 20
    fp: dict[str, object] = {}
    while time.monotonic() < deadline:
        fp = api.request("GET", "/api/v1/status")["fastpath"]
        if int(fp["entries"]) == 2:  # type: ignore[call-overload]
            break
        time.sleep(0.1)
    assert fp["entries"] == 2, fp
    conns = [c for c in api.request("GET", "/api/v1/connections")["connections"]
             if c.get("state") == "ESTABLISHED"]
    assert len(conns) == 1, conns
    server = conns[0]["server"].rsplit(":", 1)[0]
    # remove that server: its connection's packets are dropped by the engine from now on, as
    # on the TUN path (IPVS drops a removed dest's packets), so its entries must go
    keep = tuple(i for i, rs in enumerate(srv.topo.real_servers) if rs.address != server)
    assert len(keep) == len(srv.topo.real_servers) - 1, (server, keep)
    cfg = srv.topo.director_config([ServiceSpec(scheduler="rr", servers=keep)],
                                   director_options={"workers": 2, "fastpath": "on"})
    srv.reload(cfg)
    deadline = time.monotonic() + 5
    while api.request("GET", "/api/v1/status")["fastpath"]["entries"] and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.request("GET", "/api/v1/status")["fastpath"]["entries"] == 0
    with open(flag, "w"):
        pass
    stdout, _ = proc.communicate(timeout=30)
    out = json.loads(stdout.strip().splitlines()[-1])
    assert len(out["first"]) == 20
    assert out["after"] == "TimeoutError", out  # dropped by the engine, not forwarded
    # switching it off: a reload with fastpath = "off" detaches
    srv.reload(_config(srv, fastpath="off"))
    deadline = time.monotonic() + 5
    while _tcx_count(srv, "eth0") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _tcx_count(srv, "eth0") == 0
    assert api.request("GET", "/api/v1/status")["fastpath"]["state"] == "off"


def test_ipv6_streams_take_the_fast_path(make_srv: Callable[..., Srv]) -> None:
    srv = make_srv(ipv6=True)
    opts: dict[str, str | int | bool] = {"workers": 2, "fastpath": "on"}
    daemon = srv.serve(srv.topo.director_config([ServiceSpec(scheduler="rr", family=6)],
                                                director_options=opts), wait_tcp_port=None)
    wait_log(daemon, r"ready: ")
    api = _api(srv)
    size = 8 << 20
    out = client(srv.topo, f"out['results'] = [fetch_checked({size}, host='2001:2::100') "
                           "for _ in range(3)]", timeout=120)
    assert out["results"] == [[size, True]] * 3, out["results"]
    fp = api.request("GET", "/api/v1/status")["fastpath"]
    assert fp["adds"] >= 3 and fp["bytes"] > 3 * size * 0.8, fp
