"""Load generators and backends for bench/network.py: wrk, iperf3 and HAProxy, run in namespaces.

Everything here parses the tools' own output; nothing is estimated.  Every run is bounded by
its duration plus a fixed timeout.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field

from pylvs.testbed.topology import Topology, TopologyError

__all__ = [
    "CpuSample",
    "IperfResult",
    "WrkResult",
    "backend_sessions",
    "cpu_sample",
    "haproxy_stat",
    "run_iperf",
    "run_wrk",
    "start_haproxy_backends",
    "start_haproxy_lb",
]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    """What one wrk run reported (latencies in milliseconds)."""

    requests: int
    seconds: float
    rps: float
    errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def error_total(self) -> int:
        """Socket errors plus non-2xx/3xx responses."""
        return sum(self.errors.values()) + self.non_2xx


@dataclass
class IperfResult:
    """iperf3's receiver-side throughput and the sender's retransmits."""

    gbps: float
    retransmits: int


@dataclass
class CpuSample:
    """Busy and total jiffies of all CPUs, from /proc/stat."""

    busy: int
    total: int

    def busy_cores(self, later: CpuSample, n_cpus: int) -> float:
        """Average number of busy cores between this sample and ``later``."""
        total = later.total - self.total
        return 0.0 if total <= 0 else n_cpus * (later.busy - self.busy) / total


def cpu_sample() -> CpuSample:
    """Read the aggregate ``cpu`` line of /proc/stat (the namespaces share the CPUs)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return CpuSample(busy=sum(fields[:8]) - idle, total=sum(fields[:8]))


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    """Parse wrk 4.1's text output."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise ValueError(f"cannot parse wrk output:\n{out}")
    res = WrkResult(requests=int(m.group(1)), seconds=_ms(m.group(2) + m.group(3)) / 1000,
                    rps=float(rps.group(1)))
    err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if err:
        res.errors = dict(zip(("connect", "read", "write", "timeout"),
                              map(int, err.groups()), strict=True))
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non:
        res.non_2xx = int(non.group(1))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        lat = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if lat:
            setattr(res, attr, _ms(lat.group(1)))
    return res


def run_wrk(topo: Topology, url: str, *, connections: int, seconds: int, close: bool,
            latency: bool = False, cpu: int | None = None) -> WrkResult:
    """Run ``wrk -t1`` from the client namespace against ``url`` and parse its report."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s"]
    if close:
        argv += ["-H", "Connection: close"]
    if latency:
        argv.append("--latency")
    argv.append(url)
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    out = topo.run(topo.client.ns, argv, timeout=seconds + 30).stdout
    return parse_wrk(out)


def run_iperf(topo: Topology, host: str, *, streams: int, seconds: int,
              cpu: int | None = None) -> IperfResult:
    """Run ``iperf3 -c host -P streams -t seconds -O 1 -J`` from the client namespace."""
    argv = ["iperf3", "-c", host, "-p", "5201", "-P", str(streams), "-t", str(seconds),
            "-O", "1", "-J"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    res = topo.run(topo.client.ns, argv, check=False, timeout=seconds + 30)
    data = json.loads(res.stdout or "{}")
    if res.returncode != 0 or "error" in data:
        raise TopologyError(f"iperf3 failed: {data.get('error', res.stderr.strip())}")
    end = data["end"]
    return IperfResult(gbps=end["sum_received"]["bits_per_second"] / 1e9,
                       retransmits=int(end["sum_sent"].get("retransmits", 0)))


def _haproxy(topo: Topology, ns: str, name: str, config: str,
             cpu: int | None = None) -> subprocess.Popen[str]:
    path = os.path.join(topo.workdir, f"{name}.haproxy.cfg")
    with open(path, "w", encoding="ascii") as fh:
        fh.write(config)
    argv = ["haproxy", "-db", "-f", path]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = topo.popen(ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sock = os.path.join(topo.workdir, f"{name}.sock")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise TopologyError(f"haproxy {name} exited {proc.returncode}: {err}")
        if os.path.exists(sock):
            return proc
        time.sleep(0.05)
    raise TopologyError(f"haproxy {name} did not start")


_GLOBAL = """global
  nbthread 1
  maxconn 9000
  stats socket {sock} mode 600 level admin
defaults
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  maxconn 9000
"""


def start_haproxy_backends(topo: Topology) -> None:
    """Run one ``nbthread 1`` HAProxy per real server answering ``rsN\\n`` on TCP 80.

    A C server keeps the backends from being the bottleneck that an aiohttp server would be;
    its stats socket counts the connections each real server got (the distribution gate).
    """
    for rs in topo.real_servers:
        sock = os.path.join(topo.workdir, f"{rs.name}.sock")
        bind = ":::80 v4v6" if topo.ipv6 else ":80"  # dual-stack for the IPv6 contenders
        cfg = _GLOBAL.format(sock=sock) + (
            f"frontend web\n  mode http\n  bind {bind} backlog 4096\n"
            f'  http-request return status 200 content-type "text/plain" string "{rs.name}\\n"\n'
        )
        _haproxy(topo, rs.ns, rs.name, cfg)


def start_haproxy_lb(topo: Topology, cpu: int | None,
                     ipv6: bool = False, threads: int = 1) -> subprocess.Popen[str]:
    """Run the HAProxy contender in the director: TCP mode, ``threads`` threads, round robin.

    With ``ipv6`` it listens on the IPv6 VIP and connects to the real servers over IPv6.
    """
    sock = os.path.join(topo.workdir, "lb.sock")

    def addr(v4: str, v6: str | None) -> str:
        return f"[{v6}]" if ipv6 and v6 else v4

    vip = addr(topo.vip, topo.vip6)
    servers = "".join(f"  server {rs.name} {addr(rs.address, rs.address6)}:80\n"
                      for rs in topo.real_servers)
    rs1 = topo.real_servers[0]
    glob = _GLOBAL.format(sock=sock).replace("nbthread 1", f"nbthread {threads}")
    cfg = glob + (
        f"frontend web\n  mode tcp\n  bind {vip}:80 backlog 4096\n  default_backend rs\n"
        f"backend rs\n  mode tcp\n  balance roundrobin\n{servers}"
        f"frontend bulk\n  mode tcp\n  bind {vip}:5201\n  default_backend bulk\n"
        f"backend bulk\n  mode tcp\n  server {rs1.name} {addr(rs1.address, rs1.address6)}:5201\n"
    )
    return _haproxy(topo, topo.director.ns, "lb", cfg, cpu)


def haproxy_stat(sock_path: str) -> list[dict[str, str]]:
    """``show stat`` on a HAProxy stats socket, as one dict per CSV row."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock_path)
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]


def backend_sessions(topo: Topology) -> dict[str, int]:
    """Total connections each real server's HAProxy accepted so far (its frontend ``stot``)."""
    out = {}
    for rs in topo.real_servers:
        rows = haproxy_stat(os.path.join(topo.workdir, f"{rs.name}.sock"))
        out[rs.name] = sum(int(r["stot"]) for r in rows if r.get("svname") == "FRONTEND")
    return out
