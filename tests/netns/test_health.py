"""Health checks through a running ``pylvs serve`` under client traffic, in namespaces.

One client, one director, four real servers (rs1..rs3 in the pool, rs4 the sorry server), HTTP
checks every 0.2 s; then a UDP service with a udp check, a SIGHUP reload, and an exec check
with a dynamic weight.  A load generator in the client namespace makes one request at a time
through the VIP for the whole test and records who answered and what failed; nft counters in
the real servers' namespaces count the SYNs that arrive from clients (not from the director's
probes), so "no new connection reaches it" is measured where it happens.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pylvs.testbed.serve import PylvsProcess, start_pylvs
from pylvs.testbed.topology import Host, Topology, child_env

INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.3, 3, 2
DETECT = FALL * INTERVAL + TIMEOUT  # worst case from the last good probe to "down"
SLACK = 0.6  # scheduling on a loaded 2-core machine, plus the failed probe's own I/O
CLIENT_NET = "198.18.0.0/24"

# One request at a time to the VIP; one JSON line per request.  Bounded in count and time.
# Every request uses a client port of its own: the kernel reuses a port soon after a refused
# connect, and what the engine does with a new SYN on an old entry is not what this tests.
LOADER = r"""
import json, socket, sys, time
vip, duration = sys.argv[1], float(sys.argv[2])
end = time.time() + duration
for port in range(20000, 60000):
    if time.time() >= end:
        break
    t = time.time()
    s = socket.socket()
    try:
        s.settimeout(1.0)
        s.bind(("0.0.0.0", port))
        s.connect((vip, 80))
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        body = data.split(b"\r\n\r\n", 1)[-1].strip().decode()
        ok = data.split(b"\r\n", 1)[0].endswith(b" 200 OK")
        out = body if ok else "bad:" + data[:40].decode()
    except OSError as exc:
        out = "fail:" + type(exc).__name__
    finally:
        s.close()
    print(json.dumps([t, out, port]), flush=True)
    time.sleep(0.005)
"""

# The same for a UDP service on port 53: one datagram, one reply within 0.5 s.
UDP_LOADER = r"""
import json, socket, sys, time
vip, duration = sys.argv[1], float(sys.argv[2])
end = time.time() + duration
for port in range(20000, 60000):
    if time.time() >= end:
        break
    t = time.time()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(0.5)
        s.bind(("0.0.0.0", port))
        s.connect((vip, 53))
        s.send(b"who")
        out = s.recv(100).decode().strip()
    except OSError as exc:
        out = "fail:" + type(exc).__name__
    finally:
        s.close()
    print(json.dumps([t, out, port]), flush=True)
    time.sleep(0.005)
"""

NFT_RULES = """
table inet hc {
  set blocked { type ipv4_addr; }
  chain input {
    type filter hook input priority 0; policy accept;
    ip saddr @blocked tcp dport 80 tcp flags & (syn|ack) == syn counter reject with tcp reset
    ip saddr CLIENT_NET tcp dport 80 tcp flags & (syn|ack) == syn counter
  }
}
""".replace("CLIENT_NET", CLIENT_NET)


@dataclass
class Load:
    """The running load generator and what it recorded so far."""

    proc: subprocess.Popen[str]
    records: list[tuple[float, str]]
    ports: list[int]
    thread: threading.Thread

    def since(self, t: float, until: float = float("inf")) -> list[str]:
        return [who for at, who in list(self.records) if t <= at < until]

    def wait(self, cond: Callable[[], bool], limit: float, what: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if cond():
                return time.monotonic() - start
            if self.proc.poll() is not None:
                raise AssertionError("the load generator stopped")
            time.sleep(0.02)
        raise AssertionError(f"not within {limit} s: {what}")


def reuse_report(load: Load, since: float) -> list[object]:
    """Failed requests after ``since``, each with the earlier uses of its client port."""
    recs, ports = list(load.records), list(load.ports)
    out: list[object] = []
    for i, (at, who) in enumerate(recs):
        if at >= since and not who.startswith("rs"):
            earlier = [(round(recs[j][0] - since, 2), recs[j][1]) for j in range(i)
                       if ports[j] == ports[i]]
            out.append((round(at - since, 2), who, ports[i], earlier))
    return out


def start_load(topo: Topology, duration: float, loader: str = LOADER) -> Load:
    proc = topo.popen(topo.client.ns, [sys.executable, "-c", loader, topo.vip, str(duration)],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    records: list[tuple[float, str]] = []
    ports: list[int] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            at, who, port = json.loads(line)
            records.append((float(at), str(who)))
            ports.append(int(port))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return Load(proc, records, ports, thread)


def start_real_server(topo: Topology, rs: Host) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "pylvs.testbed.realserver", "--name", rs.name, "--http", "80",
            "--udp", "53"]
    proc = topo.popen(rs.ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      env=child_env())
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(15) and proc.stdout.readline().strip() == "ready"
    return proc


def nft_counter(topo: Topology, rs: Host, marker: str) -> int:
    """Packets counted by the rule of ``rs``'s input chain whose text contains ``marker``."""
    out = topo.run(rs.ns, ["nft", "list", "chain", "inet", "hc", "input"]).stdout
    line = next(ln for ln in out.splitlines() if marker in ln)
    m = re.search(r"counter packets (\d+)", line)
    assert m is not None, line
    return int(m.group(1))


def syn_count(topo: Topology, rs: Host) -> int:
    """SYNs from the client network that reached ``rs`` (not the director's probes)."""
    return nft_counter(topo, rs, CLIENT_NET)


def rejected_probes(topo: Topology, rs: Host) -> int:
    """Probe SYNs that ``rs`` answered with a reset while the director was blocked."""
    return nft_counter(topo, rs, "@blocked")


def director_toml(topo: Topology) -> str:
    """The ``[director]`` and ``[api]`` sections for this topology."""
    return f"""
[director]
public_interface = "{topo.public_interface}"
private_interface = "{topo.private_interface}"
dataplane = "tun"

[api]
socket = "{os.path.join(topo.workdir, 'dir1.sock')}"
"""


def check_toml(type_lines: str) -> str:
    """A ``[virtual_server.check]`` table with this test's timing."""
    return f"""
  [virtual_server.check]
  {type_lines}
  interval = {INTERVAL}
  timeout = {TIMEOUT}
  rise = {RISE}
  fall = {FALL}
"""


def config(topo: Topology, hosts: list[Host] | None = None,
           check: str = 'type = "http"\n  path = "/health"') -> str:
    """HTTP service VIP:80 over ``hosts`` (default rs1..rs3) with rs4 as its sorry server."""
    servers = real_servers(topo.real_servers[:3] if hosts is None else hosts, 80)
    return f"""{director_toml(topo)}
[[virtual_server]]
address = "{topo.vip}:80"
protocol = "tcp"
scheduler = "rr"
sorry_server = "{topo.real_servers[3].address}:80"
{check_toml(check)}{servers}"""


def logged_at(log: str, pattern: str, after: float) -> float | None:
    """Wall time of the first daemon log line matching ``pattern`` stamped after ``after``."""
    for line in log.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", line)
        if m and re.search(pattern, line):
            at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1e3
            if at >= after - 0.001:
                return at
    return None


def pylvs_status(topo: Topology) -> str:
    """What ``pylvs status`` prints for the daemon of this topology."""
    sock = os.path.join(topo.workdir, "dir1.sock")
    res = subprocess.run([sys.executable, "-m", "pylvs", "status", "--socket", sock],
                         capture_output=True, text=True, timeout=30, env=child_env())
    assert res.returncode == 0, res.stderr
    return res.stdout


def real_servers(hosts: list[Host], port: int) -> str:
    return "".join(
        f'\n  [[virtual_server.real_server]]\n  address = "{rs.address}:{port}"\n  weight = 1\n'
        for rs in hosts
    )


def udp_config(topo: Topology) -> str:
    """UDP service VIP:53 over rs1 and rs2 with a udp send/expect check."""
    check = check_toml('type = "udp"\n  send = "health?"\n  expect = "rs"')
    return f"""{director_toml(topo)}
[[virtual_server]]
address = "{topo.vip}:53"
protocol = "udp"
scheduler = "rr"
{check}{real_servers(topo.real_servers[:2], 53)}"""


def serve(topo: Topology, text: str) -> PylvsProcess:
    # Any answer will do for "ready": the sorry server answers before the first probes pass.
    return start_pylvs(topo, text, 0, wait_tcp_port=80, timeout=30)


def serve_udp(topo: Topology, text: str) -> PylvsProcess:
    return start_pylvs(topo, text, 0, wait_tcp_port=None, timeout=30)


@pytest.fixture
def topo() -> Iterator[Topology]:
    t = Topology("hc", n_real_servers=4)
    try:
        t.create()
        yield t
    finally:
        t.destroy()


def test_down_up_sorry_and_flapping_under_traffic(topo: Topology) -> None:
    rs1, rs2, rs3, rs4 = topo.real_servers
    procs = {rs.name: start_real_server(topo, rs) for rs in topo.real_servers}
    for rs in topo.real_servers:
        topo.run(rs.ns, ["nft", "-f", "-"], input=NFT_RULES)
    daemon = serve(topo, config(topo))
    load = start_load(topo, duration=60.0)
    try:
        pool = {"rs1", "rs2", "rs3"}
        load.wait(lambda: set(load.since(time.time() - 1.0)) == pool, 15,
                  "all three real servers answering")

        # 1. rs2 stops: after fall x interval + timeout no client SYN reaches it, and no
        #    request fails.
        # Measured from the moment the stop begins: the listener may close before the
        # process has finished exiting, never before this.
        stopped = time.time()
        topo.stop(procs["rs2"])
        cutoff = stopped + DETECT + SLACK
        time.sleep(cutoff - time.time())
        syn_at_cutoff = syn_count(topo, rs2)
        time.sleep(3.0)
        after = load.since(cutoff)
        assert syn_count(topo, rs2) == syn_at_cutoff, (
            "a new connection reached the dead rs2", reuse_report(load, cutoff))
        assert len(after) > 50, f"too little traffic to judge: {len(after)} requests"
        assert not [w for w in after if not w.startswith("rs")], after
        assert set(after) == {"rs1", "rs3"}
        lost = [w for w in load.since(stopped, cutoff) if not w.startswith("rs")]
        status = pylvs_status(topo)
        assert re.search(rf"^  {rs2.address}:80 +down ", status, re.M), status
        assert re.search(rf"^  {rs1.address}:80 +up ", status, re.M), status
        down_at = logged_at(daemon.log(), rf"{rs2.address}:80: DOWN", stopped)
        assert down_at is not None and down_at - stopped <= DETECT + SLACK
        print(f"rs2 stopped: out of the pool after {down_at - stopped:.2f} s (bound {DETECT:.2f}"
              f" s); {len(lost)} requests failed before that")

        # 2. rs2 back: traffic again after rise successful probes, not before.
        launched = time.time()
        procs["rs2"] = start_real_server(topo, rs2)
        back = time.time()
        took = load.wait(lambda: "rs2" in load.since(back), 10, "rs2 answering again")
        first = min(at for at, who in list(load.records) if who == "rs2" and at >= back)
        # rise successes in a row take (rise - 1) intervals after the first one, which cannot
        # come before the server process was even launched.
        assert first - launched >= (RISE - 1) * INTERVAL - 0.02, first - launched
        assert first - back <= RISE * INTERVAL + TIMEOUT + SLACK + 0.5, first - back
        print(f"rs2 back in the pool {first - back:.2f} s after it listened (took {took:.2f})")
        assert not [w for w in load.since(back) if not w.startswith("rs")]

        # 3. rs3 flaps for its probes only (the director's address is rejected in short
        #    windows): never `fall` failures in a row, so it never leaves the pool.
        flap_start = time.time()
        director_ip = topo.director.private_address
        assert director_ip is not None
        for _ in range(12):
            topo.run(rs3.ns, ["nft", "add", "element", "inet", "hc", "blocked",
                              "{ " + director_ip + " }"])
            time.sleep(0.08)
            topo.run(rs3.ns, ["nft", "delete", "element", "inet", "hc", "blocked",
                              "{ " + director_ip + " }"])
            time.sleep(0.45)
        assert rejected_probes(topo, rs3) >= 3, "the flapping never hit a probe"
        during = load.since(flap_start)
        assert "rs3" in during[-20:] and not [w for w in during if not w.startswith("rs")]
        went_down = re.findall(rf"{rs3.address}:80: DOWN, out of pool \((?!initial)", daemon.log())
        assert not went_down, daemon.log()[-3000:]

        # 4. All down: the sorry server answers.
        all_down = time.time()
        for name in ("rs1", "rs2", "rs3"):
            topo.stop(procs[name])
        load.wait(lambda: load.since(time.time() - 0.5)[-5:] == ["rs4"] * 5, 10,
                  "the sorry server answering")
        sorry_cutoff = all_down + DETECT + SLACK
        time.sleep(max(0.0, sorry_cutoff + 1.5 - time.time()))
        after = load.since(sorry_cutoff)
        assert after and set(after) == {"rs4"}, after
        assert "sorry server" in daemon.log()

        # 5. One server back: the pool takes over from the sorry server again.
        procs["rs1"] = start_real_server(topo, rs1)
        back = time.time()
        load.wait(lambda: load.since(time.time() - 0.5)[-5:] == ["rs1"] * 5, 10,
                  "rs1 taking over from the sorry server")
        failed = [(at - back, w, load.ports[i], load.ports.index(load.ports[i]) < i)
                  for i, (at, w) in enumerate(list(load.records))
                  if at >= back and not w.startswith("rs")]
        assert not failed, (time.strftime("%H:%M:%S", time.localtime(back)), back % 60, failed)
        assert syn_count(topo, rs4) > 0
    finally:
        topo.stop(load.proc)
        if daemon.proc.poll() is None:
            daemon.stop()
        print(daemon.log()[-4000:])


def test_udp_service_drops_a_dead_server(topo: Topology) -> None:
    rs1, rs2 = topo.real_servers[:2]
    procs = {rs.name: start_real_server(topo, rs) for rs in (rs1, rs2)}
    daemon = serve_udp(topo, udp_config(topo))
    load = start_load(topo, duration=30.0, loader=UDP_LOADER)
    try:
        load.wait(lambda: set(load.since(time.time() - 1.0)) == {"rs1", "rs2"}, 15,
                  "both UDP servers answering")
        topo.stop(procs["rs1"])
        # The UDP probe hears ICMP port unreachable from rs1 at once: "refused".
        cutoff = time.time() + DETECT + SLACK
        time.sleep(cutoff + 2.0 - time.time())
        after = load.since(cutoff)
        assert len(after) > 30 and set(after) == {"rs2"}, after
        assert re.search(rf"{rs1.address}:53: DOWN, out of pool \(refused", daemon.log())
        procs["rs1"] = start_real_server(topo, rs1)
        back = time.time()
        load.wait(lambda: "rs1" in load.since(back), 10, "rs1 answering UDP again")
        assert not [w for w in load.since(back) if not w.startswith("rs")]
    finally:
        topo.stop(load.proc)
        if daemon.proc.poll() is None:
            daemon.stop()


def test_reload_keeps_health_state(topo: Topology) -> None:
    rs1, rs2, rs3, _ = topo.real_servers
    for rs in topo.real_servers:
        start_real_server(topo, rs)
    daemon = serve(topo, config(topo, [rs1, rs2]))
    load = start_load(topo, duration=30.0)
    try:
        load.wait(lambda: set(load.since(time.time() - 1.0)) == {"rs1", "rs2"}, 15,
                  "rs1 and rs2 answering")
        log_before = len(daemon.log().splitlines())
        reloaded = time.time()
        daemon.reload(config(topo, [rs1, rs2, rs3]))
        took = load.wait(lambda: "rs3" in load.since(reloaded), 10, "rs3 answering after reload")
        time.sleep(1.0)
        assert not [w for w in load.since(reloaded) if not w.startswith("rs")]
        new_lines = "\n".join(daemon.log().splitlines()[log_before:])
        # The servers that stayed keep their verdicts: nothing is re-published for them, and
        # the sorry server is not called in while the new one is checked.
        for rs in (rs1, rs2):
            assert f"{rs.address}:80: " not in new_lines, new_lines
        assert "sorry server" not in new_lines, new_lines
        assert f"{rs3.address}:80: UP" in new_lines, new_lines
        print(f"reload: rs3 in service {took:.2f} s after SIGHUP")
    finally:
        topo.stop(load.proc)
        if daemon.proc.poll() is None:
            daemon.stop()


EXEC_CHECK = """#!/bin/bash
# A check program as an operator would write one: is the port open (bash's /dev/tcp)?  rs2
# also reports a dynamic weight (exit 5 = weight 3, keepalived's misc_dynamic).
(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null || exit 1
[ "$1" = "198.19.0.12" ] && exit 5
exit 0
"""


def test_exec_check_with_dynamic_weight(topo: Topology) -> None:
    rs1, rs2 = topo.real_servers[:2]
    procs = {rs.name: start_real_server(topo, rs) for rs in (rs1, rs2)}
    program = os.path.join(topo.workdir, "check.sh")
    with open(program, "w", encoding="ascii") as fh:
        fh.write(EXEC_CHECK)
    os.chmod(program, 0o755)
    text = config(topo, [rs1, rs2],
                  f'type = "exec"\n  command = "{program} %h %p"\n  dynamic_weight = true')
    assert 'type = "exec"' in text
    daemon = serve(topo, text)
    try:
        def status_has(pattern: str) -> bool:
            return re.search(pattern, pylvs_status(topo), re.M) is not None

        weighted = rf"^  {rs2.address}:80 +up +weight 3/"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not status_has(weighted):
            time.sleep(0.1)
        status = pylvs_status(topo)
        assert re.search(rf"^  {rs1.address}:80 +up +weight 1/1 ", status, re.M), (
            status, daemon.log()[-3000:])
        assert re.search(rf"^  {rs2.address}:80 +up +weight 3/1 ", status, re.M), status
        stopped = time.time()
        topo.stop(procs["rs1"])
        while time.monotonic() < deadline + 10 and not status_has(rf"^  {rs1.address}:80 +down "):
            time.sleep(0.1)
        down_at = logged_at(daemon.log(), rf"{rs1.address}:80: DOWN", stopped)
        assert down_at is not None and down_at - stopped <= DETECT + SLACK, daemon.log()[-2000:]
        assert re.search(rf"{rs1.address}:80: DOWN, out of pool \(exit status: exit 1",
                         daemon.log())
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
