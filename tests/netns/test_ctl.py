"""``pylvs ctl``, ``pylvs status``, the REST API and /metrics against a running ``pylvs serve``.

One topology (namespaces prefixed ``ctl``: a client, a director, three real servers answering
``rsN`` over HTTP) and one daemon serve every test in this module.  Each ctl command runs as a
real subprocess, and its output is compared with ipvsadm's layouts written out literally.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pylvs.api.client import ApiClient, ApiError
from pylvs.testbed.serve import PylvsProcess, start_pylvs, vip_answers, wait_until
from pylvs.testbed.topology import Topology, child_env

VIP = "198.18.0.100"
TOKEN = "ctl-netns-token-0123456789abcdef"
HEAD = [
    "IP Virtual Server version 1.2.1 (size={size})",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
]
DEST = re.compile(r"^  -> (?P<addr>\S+) +Masq    (?P<w>\d+) +(?P<a>\d+) +(?P<i>\d+) +$")


@pytest.fixture(scope="module")
def daemon() -> Iterator[tuple[Topology, PylvsProcess, str]]:
    topo = Topology("ctl", n_real_servers=3)
    proc: PylvsProcess | None = None
    try:
        topo.create()
        topo.start_http_servers()
        token_file = Path(topo.workdir) / "api.token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)  # the daemon refuses a token others can read
        toml = topo.director_config()
        sock_line = next(line for line in toml.splitlines() if line.startswith("socket = "))
        toml = toml.replace(sock_line, f'{sock_line}\nlisten = "198.18.0.1:9180"\n'
                                      f'token_file = "{token_file}"', 1)
        proc = start_pylvs(topo, toml)
        socket_path = json.loads(sock_line.partition("=")[2].strip())
        yield topo, proc, socket_path
    finally:
        if proc is not None and not proc.stopped:
            proc.stop()
        topo.destroy()


def ctl(sock: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylvs", "ctl", "--socket", sock, *args],
                          capture_output=True, text=True, timeout=30, input=stdin,
                          env=child_env())


def ok(sock: str, *args: str, stdin: str | None = None) -> str:
    res = ctl(sock, *args, stdin=stdin)
    assert res.returncode == 0, (args, res.stderr)
    return res.stdout


def _listing(out: str) -> tuple[list[str], list[tuple[str, int, int, int]]]:
    """Split ``-Ln`` output into its non-dest lines and parsed dest lines (checking widths)."""
    plain, dests = [], []
    for line in out.splitlines():
        m = DEST.match(line)
        if m is None:
            plain.append(line)
            continue
        assert len(line) == 70, repr(line)  # "  -> %-28s %-7s %-6d %-10u %-10u"
        assert line.index("Masq") == 34 and line[41:48].strip() == m["w"]
        dests.append((m["addr"], int(m["w"]), int(m["a"]), int(m["i"])))
    return plain, dests


def _size(out: str) -> str:
    m = re.match(r"IP Virtual Server version 1\.2\.1 \(size=(\d+)\)\n", out)
    assert m, out
    return m.group(1)


def test_list_numeric(daemon: Any) -> None:
    _, _, sock = daemon
    out = ok(sock, "-Ln")
    plain, dests = _listing(out)
    assert plain == [*(h.format(size=_size(out)) for h in HEAD), f"TCP  {VIP}:80 rr"]
    assert [(a, w) for a, w, _, _ in dests] == [
        ("198.19.0.11:80", 1), ("198.19.0.12:80", 1), ("198.19.0.13:80", 1)]
    assert ok(sock).startswith("IP Virtual Server version 1.2.1")  # no arguments: -L


def test_service_and_server_commands(daemon: Any) -> None:
    _, _, sock = daemon
    ok(sock, "-A", "-u", f"{VIP}:53", "-s", "sh", "-b", "sh-port")
    # like ipvsadm, -A makes an unchecked service: the listing shows the configured weights
    ok(sock, "-a", "-u", f"{VIP}:53", "-r", "198.19.0.12", "-m", "-w", "3")
    ok(sock, "-a", "-u", f"{VIP}:53", "-r", "198.19.0.11:53", "-w", "2", "-x", "10", "-y", "5")
    out = ok(sock, "-L", "-n", "-u", f"{VIP}:53")
    plain, dests = _listing(out)
    assert plain == [HEAD[1], HEAD[2], f"UDP  {VIP}:53 sh (sh-port)"]  # ipvsadm prints flags
    assert [(a, w) for a, w, _, _ in dests] == [("198.19.0.11:53", 2), ("198.19.0.12:53", 3)]
    thr = ok(sock, "-L", "-n", "-u", f"{VIP}:53", "--thresholds").splitlines()
    assert thr[3] == "  -> 198.19.0.11:53               10         5          0          0         "

    ok(sock, "-E", "-u", f"{VIP}:53", "-s", "wrr", "-p", "120", "-M", "255.255.255.0")
    ok(sock, "-e", "-u", f"{VIP}:53", "-r", "198.19.0.12:53", "-w", "7")
    out = ok(sock, "-Ln", "-u", f"{VIP}:53")
    plain, dests = _listing(out)
    assert plain[-1] == f"UDP  {VIP}:53 wrr persistent 120 mask 255.255.255.0"
    assert ("198.19.0.12:53", 7) in [(a, w) for a, w, _, _ in dests]

    ok(sock, "-d", "-u", f"{VIP}:53", "-r", "198.19.0.12:53")
    _, dests = _listing(ok(sock, "-Ln", "-u", f"{VIP}:53"))
    assert [a for a, *_ in dests] == ["198.19.0.11:53"]
    ok(sock, "-D", "-u", f"{VIP}:53")
    res = ctl(sock, "-Ln", "-u", f"{VIP}:53")
    assert res.returncode == 1 and "no such service" in res.stderr


def test_save_clear_restore_round_trip(daemon: Any) -> None:
    topo, _, sock = daemon
    saved = ok(sock, "-Sn")
    assert saved == (
        f"-A -t {VIP}:80 -s rr\n"
        f"-a -t {VIP}:80 -r 198.19.0.11:80 -m -w 1\n"
        f"-a -t {VIP}:80 -r 198.19.0.12:80 -m -w 1\n"
        f"-a -t {VIP}:80 -r 198.19.0.13:80 -m -w 1\n"
    )
    ok(sock, "-C")
    assert ok(sock, "-Sn") == ""
    ok(sock, "-R", stdin="ipvsadm " + saved.replace("\n", "\nipvsadm ", 2))
    assert ok(sock, "-Sn") == saved
    wait_until(lambda: vip_answers(topo), 10, "the VIP to answer after restore", 0.2)
    # a restore with one bad line applies nothing
    res = ctl(sock, "-R", stdin=f"-A -t {VIP}:81 -s rr\n-a -t {VIP}:81 -r 198.19.0.11 -w x\n")
    assert res.returncode == 2 and "line 2: illegal weight specified" in res.stderr
    res = ctl(sock, "-R", stdin=f"-A -t {VIP}:81 -s rr\n-A -t {VIP}:81 -s wlc\n")
    assert res.returncode == 1 and "already exists" in res.stderr
    assert ok(sock, "-Sn") == saved


def test_stats_rate_connections_and_zero(daemon: Any) -> None:
    topo, _, sock = daemon
    for _ in range(6):
        assert vip_answers(topo)
    stats = ok(sock, "-Ln", "--stats").splitlines()
    assert stats[1] == ("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes"
                        " OutBytes")
    assert stats[2] == "  -> RemoteAddress:Port"
    svc = stats[3]
    assert svc.startswith(f"TCP  {VIP}:80 ") and len(svc) == 33 + 45
    conns, inpkts, outpkts, inbytes, outbytes = (int(svc[33 + 9 * i: 42 + 9 * i])
                                                 for i in range(5))
    assert conns >= 6 and inpkts >= 3 * conns and outpkts >= 2 * conns
    assert inbytes >= 40 * inpkts and outbytes > 0
    rate = ok(sock, "-Ln", "--rate").splitlines()
    assert rate[1] == ("Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS"
                       "   OutBPS")
    assert all(len(line) == 78 for line in rate[3:]), rate

    table = ok(sock, "-Lnc").splitlines()
    assert table[:2] == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
    ]
    row = re.compile(r"^TCP (\d\d):(\d\d)  (\S+) +198\.18\.0\.2:\d+ +198\.18\.0\.100:80 +"
                     r"198\.19\.0\.1[123]:80$")
    # the six connections closed at once; those still in CLOSE/TIME_WAIT are listed
    assert len(table) >= 3 and all(row.match(line) for line in table[2:]), table

    ok(sock, "-Z", "-t", f"{VIP}:80")
    zeroed = ok(sock, "-Ln", "--stats").splitlines()[3]
    assert zeroed == f"{'TCP  ' + VIP + ':80':<33}" + "        0" * 5
    ok(sock, "-Z")


def test_timeouts(daemon: Any) -> None:
    _, _, sock = daemon
    assert ok(sock, "-L", "--timeout") == "Timeout (tcp tcpfin udp): 900 120 300\n"
    ok(sock, "--set", "600", "0", "60")
    assert ok(sock, "-L", "--timeout") == "Timeout (tcp tcpfin udp): 600 120 60\n"
    ok(sock, "--set", "900", "120", "300")


def test_refused_options(daemon: Any) -> None:
    _, _, sock = daemon
    for flag, word in (("-g", "direct routing"), ("-i", "IPIP")):
        res = ctl(sock, "-a", "-t", f"{VIP}:80", "-r", "198.19.0.14", flag)
        assert res.returncode == 2 and word in res.stderr and "use -m" in res.stderr


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "field"),
    [
        ("POST", "/api/v1/services", {"address": "198.18.0.300:80"}, 400, "address"),
        ("POST", "/api/v1/services", {"address": f"{VIP}:81", "scheduler": "best"}, 400,
         "scheduler"),
        ("POST", f"/api/v1/services/tcp/{VIP}:80/servers",
         {"address": "198.19.0.14:80", "weight": -1}, 400, "weight"),
        ("POST", "/api/v1/services", {"address": f"{VIP}:80"}, 409, "already exists"),
    ],
)
def test_rest_validation_leaves_state_unchanged(
    daemon: Any, method: str, url: str, body: Any, status: int, field: str
) -> None:
    _, _, sock = daemon
    before = ok(sock, "-Sn")
    with pytest.raises(ApiError) as info:
        ApiClient(sock).request(method, url, body)
    assert info.value.status == status and field in info.value.message
    assert ok(sock, "-Sn") == before


def _http_from_client(topo: Topology, url: str, token: str | None) -> tuple[int, str]:
    code = (
        "import sys, urllib.request, urllib.error\n"
        f"req = urllib.request.Request({url!r})\n"
        + (f"req.add_header('Authorization', 'Bearer {token}')\n" if token else "")
        + "try:\n"
        "    r = urllib.request.urlopen(req, timeout=5)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    res = topo.run(topo.client.ns, [sys.executable, "-c", code], timeout=20)
    status, _, text = res.stdout.partition("\n")
    return int(status), text


def test_tcp_listener_requires_the_token(daemon: Any) -> None:
    topo, _, _ = daemon
    url = "http://198.18.0.1:9180/api/v1/services"
    assert _http_from_client(topo, url, None)[0] == 401
    assert _http_from_client(topo, url, "wrong-token-wrong-token-wrong")[0] == 401
    status, text = _http_from_client(topo, url, TOKEN)
    assert status == 200 and json.loads(text)["services"][0]["address"] == f"{VIP}:80"
    status, text = _http_from_client(topo, "http://198.18.0.1:9180/metrics", TOKEN)
    assert status == 200 and "pylvs_ipvs_backend_weight" in text


def _scrape(sock: str) -> dict[str, Any]:
    """GET /metrics over the Unix socket, parsed by prometheus_client."""
    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(sock)

    conn = Conn("localhost", timeout=10)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    text = resp.read().decode()
    assert resp.status == 200
    assert resp.getheader("Content-Type", "").startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_scrape_parses(daemon: Any) -> None:
    topo, _, sock = daemon
    assert vip_answers(topo)
    families = _scrape(sock)
    weights = {s.labels["remote_address"]: s.value
               for s in families["pylvs_ipvs_backend_weight"].samples}
    assert weights == {"198.19.0.11": 1, "198.19.0.12": 1, "198.19.0.13": 1}
    conns = sum(s.value for s in families["pylvs_ipvs_service_connections"].samples
                if s.name.endswith("_total"))
    assert conns >= 1
    assert "pylvs_engine_drops" in families and "pylvs_ha_role" in families


def test_history_records_the_estimator_under_real_traffic(daemon: Any) -> None:
    """The status page's history, fed by the director's 2 s rate estimator in ``pylvs serve``."""
    topo, _, sock = daemon
    api = ApiClient(sock)
    svc = f"tcp/{VIP}:80"
    cps: list[int] = []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:  # connections for at least two estimator steps
        assert vip_answers(topo)
        doc = api.get("/api/v1/history")
        cps = [c for c in doc["services"].get(svc, {}).get("r", [[]])[0] if c >= 0]
        if len(cps) >= 2 and max(cps) > 0:
            break
    assert len(cps) >= 2 and max(cps) > 0, cps
    assert doc["step"] == 2.0 and doc["rate_keys"][0] == "cps"
    assert doc["ha"][-1][1] == "ACTIVE"
    assert set(doc["services"][svc]["servers"]) == {"198.19.0.11:80", "198.19.0.12:80",
                                                    "198.19.0.13:80"}
    times = doc["t"]
    assert all(1.0 < b - a < 3.5 for a, b in itertools.pairwise(times)), times
    assert api.get(f"/api/v1/history?since={times[-1]}")["t"] == []


def test_status_summary(daemon: Any) -> None:
    _, _, sock = daemon
    # -R re-created the service with the default (tcp) check; "none" means "always up".
    ApiClient(sock).patch(f"/api/v1/services/tcp/{VIP}:80", {"check": {"type": "none"}})
    res = subprocess.run([sys.executable, "-m", "pylvs", "status", "--socket", sock],
                         capture_output=True, text=True, timeout=30, env=child_env())
    assert res.returncode == 0, res.stderr
    assert "role ACTIVE" in res.stdout
    assert f"TCP {VIP}:80  rr" in res.stdout
    for rs in ("198.19.0.11:80", "198.19.0.12:80", "198.19.0.13:80"):
        assert re.search(rf"^  {re.escape(rs)} +up +weight 1/1 ", res.stdout, re.M), res.stdout


def _status(sock: str) -> str:
    res = subprocess.run([sys.executable, "-m", "pylvs", "status", "--socket", sock],
                         capture_output=True, text=True, timeout=30, env=child_env())
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_status_and_metrics_follow_ha_roles() -> None:
    from pylvs.testbed.hapair import HaPair

    with HaPair(prefix="ctl", ha={"interval": 0.1}) as pair:
        socks = [str(Path(pair.topo.workdir) / f"{d.name}.sock") for d in pair.topo.directors]
        pair.start(0)
        pair.wait(lambda: pair.owns_vip(0), 15, "the primary to own the VIP")
        pair.start(1)
        pair.wait(lambda: pair.is_backup(1), 15, "the backup to run as BACKUP")
        pair.wait(lambda: "peer dir2 backup alive" in _status(socks[0]), 10,
                  "the primary to see the backup")
        first = _status(socks[0]).splitlines()[0]
        assert "node dir1  role ACTIVE  peer dir2 backup alive" in first
        second = _status(socks[1]).splitlines()[0]
        assert "node dir2  role BACKUP  peer dir1 active alive" in second
        assert ok(socks[0], "-L", "--daemon") == "master sync daemon (mcast=eth0, syncid=0)\n"
        assert ok(socks[1], "-L", "--daemon") == "backup sync daemon (mcast=eth0, syncid=0)\n"

        pair.kill(0)
        pair.wait(lambda: pair.owns_vip(1), 10, "the backup to take over")
        pair.wait(lambda: "role ACTIVE" in _status(socks[1]), 10, "dir2 to report ACTIVE")
        families = _scrape(socks[1])
        roles = {s.labels["role"]: s.value for s in families["pylvs_ha_role"].samples}
        assert roles["active"] == 1 and roles["backup"] == 0
        [transitions] = families["pylvs_ha_transitions"].samples
        assert transitions.value >= 2  # INIT -> BACKUP -> ACTIVE


def test_sighup_after_runtime_changes_says_what_it_removes(
        daemon: tuple[Topology, PylvsProcess, str]) -> None:
    # A server added with ctl is not in the file: the reload removes it, and says so loudly.
    _, proc, sock = daemon

    def reload() -> str:
        start = len(proc.log())
        proc.reload()
        wait_until(lambda: "SIGHUP: reloaded" in proc.log()[start:], 10, "the reload")
        return proc.log()[start:]

    reload()  # back to the file, whatever the tests before did
    ok(sock, "-a", "-t", f"{VIP}:80", "-r", "198.19.0.99:80", "-w", "4")
    assert "198.19.0.99:80" in ok(sock, "-Ln")
    log = reload()
    assert "does not have 1 change(s) made at run time with pylvs ctl or the API" in log
    assert f"real server 198.19.0.99:80 of tcp {VIP}:80 (added at run time)" in log
    assert "pylvs ctl --save-config" in log
    assert "198.19.0.99:80" not in ok(sock, "-Ln")
