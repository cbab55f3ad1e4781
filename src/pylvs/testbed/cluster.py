"""An active-active cluster in network namespaces: a BGP router, N directors, real servers.

::

                            ┌─ eth0 [dir1 + BIRD] eth1 ─┐
    cli ── eth1 [rtr + BIRD] eth0 ── br-pub ─┼─ eth0 [dir2 + BIRD] eth1 ─┼─ br-priv ─ rs1..M
       (many sources)        (ECMP, L4 hash) └─ eth0 [dir3 + BIRD] eth1 ─┘   (BIRD: return route)

* ``rtr``: BIRD with one eBGP session (AS 65000 to AS 65010) and one BFD session per
  director; its kernel protocol merges the directors' equal routes into one multipath route
  (``merge paths``), which the kernel hashes by 4-tuple (``fib_multipath_hash_policy = 1``).
* ``cli``: 198.18.1.2 and ``n_sources`` more addresses from 198.18.1.10, behind ``rtr``.
* directors: ``eth0`` 198.18.0.1, .2, … (default route via ``rtr``), ``eth1`` 198.19.0.2, .3,
  …; each runs ``pylvs serve`` with ``[cluster] mode = "active-active"``, whose BIRD announces
  the VIP 198.18.2.100 (on no link: only the BGP routes lead to it).  The directors list each
  other as ``members`` (hellos; connection sync unless ``sync=False``).
* real servers: ``eth0`` 198.19.0.11, …; an echo server (:mod:`pylvs.testbed.streams`) on port
  9000 and BIRD with the return route of :func:`pylvs.cluster.birdconf.real_server_config`.

Teardown kills every process and deletes every namespace, as :class:`Topology` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from ipaddress import IPv4Address
from types import TracebackType
from typing import Any

from pylvs.api.client import ApiClient
from pylvs.cluster.birdconf import real_server_config
from pylvs.testbed.serve import wait_until
from pylvs.testbed.topology import TopologyError, _wait_ready, child_env, release

__all__ = ["VIP", "ClusterLab"]

VIP = "198.18.2.100"
PORT = 9000
ROUTER = "198.18.0.254"
ROUTER_ASN = 65000
DIRECTOR_ASN = 65010


class ClusterLab:
    """The namespaces above; a context manager like :class:`pylvs.testbed.topology.Topology`."""

    def __init__(self, prefix: str, n_directors: int = 3, n_real_servers: int = 3,
                 n_sources: int = 40, drain_time: float = 1.0, router_asn: int = ROUTER_ASN,
                 bfd_interval: float = 0.1, http: bool = False, scheduler: str = "mh",
                 sync: bool = True) -> None:
        if not 1 <= n_directors <= 8 or not 1 <= n_real_servers <= 50 or \
                not 1 <= n_sources <= 200:
            raise ValueError("need 1..8 directors, 1..50 real servers, 1..200 sources")
        self.tag = prefix + secrets.token_hex(3)
        self.vip, self.port = VIP, PORT
        self.drain_time = drain_time
        self.router_asn = router_asn  # what the directors are told (a wrong one is a test)
        self.bfd_interval = bfd_interval
        self.http = http  # also VIP:80, answered by one HAProxy per real server (benchmarks)
        self.scheduler = scheduler  # of VIP:9000
        self.sync = sync  # connection sync among the directors
        self.directors = [f"198.18.0.{1 + i}" for i in range(n_directors)]
        self.privates = [f"198.19.0.{2 + i}" for i in range(n_directors)]
        self.real_servers = [f"198.19.0.{11 + i}" for i in range(n_real_servers)]
        self.sources = [f"198.18.1.{10 + i}" for i in range(n_sources)]
        self.ns_sw, self.ns_rtr, self.ns_cli = (f"{self.tag}-{r}" for r in ("sw", "rtr", "cli"))
        self.ns_dir = [f"{self.tag}-dir{i + 1}" for i in range(n_directors)]
        self.ns_rs = [f"{self.tag}-rs{i + 1}" for i in range(n_real_servers)]
        self.workdir = ""
        self.daemons: dict[int, subprocess.Popen[str]] = {}
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[str]] = []

    @property
    def namespaces(self) -> list[str]:
        """Every namespace, switch first."""
        return [self.ns_sw, self.ns_rtr, self.ns_cli, *self.ns_dir, *self.ns_rs]

    # -- build -------------------------------------------------------------------------------
    def create(self) -> ClusterLab:
        """Build the namespaces and links, start the router's BIRD and the real servers."""
        try:
            self.workdir = tempfile.mkdtemp(prefix=f"pylvs-{self.tag}-")
            secret = os.path.join(self.workdir, "cluster.secret")
            with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w",
                      encoding="ascii") as fh:
                fh.write(secrets.token_hex(16))
            for ns in self.namespaces:
                self._ip(["netns", "add", ns])
                self._created.append(ns)
                self._sysctl(ns, {"net.ipv6.conf.all.disable_ipv6": "1",
                                  "net.ipv6.conf.default.disable_ipv6": "1"})
                self._ip(["-n", ns, "link", "set", "lo", "up"])
            self.run(self.ns_sw, ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"],
                     check=False)
            for br in ("br-pub", "br-priv"):
                self._ip(["-n", self.ns_sw, "link", "add", br, "type", "bridge",
                          "forward_delay", "0", "mcast_snooping", "0"])
                self._ip(["-n", self.ns_sw, "link", "set", br, "up"])
            self._plug(self.ns_rtr, "rtr", "br-pub", "eth0", ROUTER)
            self._ip(["-n", self.ns_rtr, "link", "add", "eth1", "type", "veth", "peer", "name",
                      "eth0", "netns", self.ns_cli])
            self._addr(self.ns_rtr, "eth1", ["198.18.1.1"])
            self._addr(self.ns_cli, "eth0", ["198.18.1.2", *self.sources])
            self._ip(["-n", self.ns_cli, "route", "add", "default", "via", "198.18.1.1"])
            self._sysctl(self.ns_rtr, {"net.ipv4.ip_forward": "1",
                                       "net.ipv4.fib_multipath_hash_policy": "1"})
            for i, ns in enumerate(self.ns_dir):
                self._sysctl(ns, {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
                                  "net.ipv4.conf.default.rp_filter": "0"})
                self._plug(ns, f"d{i + 1}pub", "br-pub", "eth0", self.directors[i])
                self._plug(ns, f"d{i + 1}priv", "br-priv", "eth1", self.privates[i])
                self._ip(["-n", ns, "route", "add", "default", "via", ROUTER])
            self._bird(self.ns_rtr, "rtr", self._router_config())
            for i, ns in enumerate(self.ns_rs):
                self._plug(ns, f"r{i + 1}", "br-priv", "eth0", self.real_servers[i])
                self._sysctl(ns, {"net.ipv4.fib_multipath_hash_policy": "1"})
                self._bird(ns, f"rs{i + 1}", real_server_config(
                    [IPv4Address(p) for p in self.privates],
                    router_id=IPv4Address(self.real_servers[i]), bfd_interval=self.bfd_interval))
                proc = self.popen(ns, [sys.executable, "-m", "pylvs.testbed.streams", "serve",
                                       "--port", str(PORT)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=child_env())
                _wait_ready(f"rs{i + 1}", proc)
                if self.http:
                    self._http_server(i)
        except BaseException:
            self.destroy()
            raise
        return self

    def _http_server(self, i: int) -> None:
        # A C server, so the real servers are not what limits connections per second.
        cfg = os.path.join(self.workdir, f"rs{i + 1}-haproxy.cfg")
        with open(cfg, "w", encoding="ascii") as fh:
            fh.write("global\n  nbthread 1\n  maxconn 9000\ndefaults\n  mode http\n"
                     "  timeout client 30s\n  timeout connect 5s\n  timeout server 30s\n"
                     "frontend web\n  bind :80 backlog 4096\n"
                     f'  http-request return status 200 content-type "text/plain" '
                     f'string "rs{i + 1}\\n"\n')
        self.popen(self.ns_rs[i], ["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)

        def listening() -> bool:
            out = self.run(self.ns_rs[i], ["ss", "-Hltn", "sport = :80"], check=False).stdout
            return bool(out.strip())
        wait_until(listening, 10.0, f"HAProxy on rs{i + 1}")

    def _router_config(self) -> str:
        ms = f"{round(self.bfd_interval * 1000)} ms"
        out = [f"router id {ROUTER};", "protocol device { scan time 10; }",
               f'protocol bfd {{ interface "*" {{ interval {ms}; multiplier 3; }}; }}',
               # one multipath route out of the directors' equal routes
               "protocol kernel { ipv4 { export all; import none; }; merge paths on; }"]
        for i, d in enumerate(self.directors):
            out.append(f"protocol bgp dir{i + 1} {{ local as {ROUTER_ASN}; neighbor {d} as "
                       f"{DIRECTOR_ASN}; bfd on; hold time 9; connect retry time 1; "
                       "error wait time 1, 5; ipv4 { import all; export none; }; }")
        return "\n".join(out) + "\n"

    def _bird(self, ns: str, name: str, text: str) -> None:
        conf = os.path.join(self.workdir, f"{name}-bird.conf")
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write(text)
        sock = os.path.join(self.workdir, f"{name}-bird.ctl")
        self.popen(ns, ["bird", "-f", "-c", conf, "-s", sock,
                        "-P", os.path.join(self.workdir, f"{name}-bird.pid")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(sock), 10.0, f"BIRD of {name}")

    def birdc(self, name: str, command: str) -> str:
        """Run ``birdc`` against the BIRD of ``rtr`` or ``rsN``."""
        sock = os.path.join(self.workdir, f"{name}-bird.ctl")
        res = subprocess.run(["birdc", "-s", sock, *command.split()], capture_output=True,
                             text=True, timeout=10, check=False)
        return res.stdout

    # -- directors ---------------------------------------------------------------------------
    def director_config(self, i: int) -> str:
        """The TOML of director ``i`` (0-based)."""
        servers = "\n".join(f'[[virtual_server.real_server]]\naddress = "{rs}:{PORT}"\n'
                            for rs in self.real_servers)
        if self.http:
            servers += '\n[[virtual_server]]\naddress = "' + VIP + ':80"\nscheduler = "mh"\n\n' + \
                "\n".join(f'[[virtual_server.real_server]]\naddress = "{rs}:80"\n'
                          for rs in self.real_servers)
        return f"""[director]
public_interface = "eth0"
private_interface = "eth1"
log_level = "info"

[api]
socket = "{self.workdir}/dir{i + 1}.sock"

[cluster]
mode = "active-active"
asn = {DIRECTOR_ASN}
router_id = "{self.directors[i]}"
drain_time = {self.drain_time}
bfd_interval = {self.bfd_interval}
state_dir = "{self.workdir}/bird-dir{i + 1}"
members = [{", ".join(f'"{p}"' for p in self.privates)}]
secret_file = "{self.workdir}/cluster.secret"
sync = {"true" if self.sync else "false"}

[[cluster.router]]
address = "{ROUTER}"
asn = {self.router_asn}

[[virtual_server]]
address = "{VIP}:{PORT}"
scheduler = "{self.scheduler}"

[virtual_server.check]
type = "tcp"
interval = 0.5
timeout = 0.5
rise = 1
fall = 2

{servers}"""

    def start_director(self, i: int, wait: bool = True, timeout: float = 20.0) -> None:
        """Start ``pylvs serve`` on director ``i``; wait until the router routes through it."""
        path = os.path.join(self.workdir, f"dir{i + 1}.toml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.director_config(i))
        with open(self.log_path(i), "a", encoding="utf-8") as log:
            self.daemons[i] = self.popen(
                self.ns_dir[i], [sys.executable, "-m", "pylvs", "serve", "-c", path],
                stdout=log, stderr=subprocess.STDOUT, env=child_env())
        if wait:
            def up() -> bool:
                if self.daemons[i].poll() is not None:
                    raise TopologyError(f"pylvs on dir{i + 1} exited:\n{self.log(i)}")
                return self.directors[i] in self.nexthops()
            wait_until(up, timeout, f"the router to route the VIP through dir{i + 1}")

    def log_path(self, i: int) -> str:
        """Where director ``i``'s output goes."""
        return os.path.join(self.workdir, f"dir{i + 1}.log")

    def log(self, i: int) -> str:
        """Director ``i``'s output so far."""
        with open(self.log_path(i), encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def kill(self, i: int) -> float:
        """``kill -9`` the pylvs of director ``i`` (its BIRD dies with it); returns when."""
        at = time.time()
        os.kill(self.daemons[i].pid, signal.SIGKILL)
        self.daemons[i].wait(10)
        return at

    def terminate(self, i: int) -> float:
        """SIGTERM director ``i`` (it drains); returns when it was sent."""
        at = time.time()
        os.kill(self.daemons[i].pid, signal.SIGTERM)
        return at

    def status(self, i: int) -> str:
        """``pylvs status`` of director ``i``."""
        sock = os.path.join(self.workdir, f"dir{i + 1}.sock")
        res = subprocess.run([sys.executable, "-m", "pylvs", "status", "--socket", sock],
                             capture_output=True, text=True, timeout=20, env=child_env(),
                             check=False)
        return res.stdout + res.stderr

    # -- load ------------------------------------------------------------------------------
    def start_load(self, streams: int, rate: float, duration: float,
                   tick: float = 0.02) -> tuple[subprocess.Popen[str], list[tuple[str, int]]]:
        """Start :mod:`pylvs.testbed.streams` ``load`` in the client; wait for every stream.

        Returns the process (see :meth:`load_report`) and each stream's (source, port).
        """
        proc = self.popen(self.ns_cli, [
            sys.executable, "-m", "pylvs.testbed.streams", "load", "--vip", VIP, "--port",
            str(PORT), "--sources", ",".join(self.sources), "--streams", str(streams),
            "--rate", str(rate), "--duration", str(duration), "--tick", str(tick)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ready "):
            err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None \
                else ""
            raise TopologyError(f"load did not start: {line.strip()} {err.strip()[-2000:]}")
        return proc, [(src, int(port)) for src, port in json.loads(line[6:])]

    @staticmethod
    def load_report(proc: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the load to end and return its JSON report."""
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise TopologyError(f"load failed ({proc.returncode}): {err.strip()[-2000:]}")
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return report

    # -- routes ------------------------------------------------------------------------------
    def nexthops(self) -> set[str]:
        """The directors the router's route to the VIP leads to now."""
        out = self.run(self.ns_rtr, ["ip", "route", "show", f"{VIP}/32"], check=False).stdout
        return set(re.findall(r"via (\d+\.\d+\.\d+\.\d+)", out))

    def rs_nexthops(self, rs: int = 0) -> set[str]:
        """The directors real server ``rs``'s default route leads to now."""
        out = self.run(self.ns_rs[rs], ["ip", "route", "show", "default"], check=False).stdout
        return set(re.findall(r"via (\d+\.\d+\.\d+\.\d+)", out))

    def flows(self) -> dict[tuple[str, int], tuple[str, str]]:
        """(client address, port) -> (director that receives its packets, real server).

        Read from the directors' tables: the director whose entry counted the most packets
        from the client (an entry installed by sync holds the sync threshold, 3; one made
        from replies only, 0).  (``ip route get`` on the router cannot tell: the kernel hashes
        a forwarded packet by the hash the client's socket gave it, not by its headers.)
        """
        best: dict[tuple[str, int], tuple[int, str, str]] = {}
        for i, proc in self.daemons.items():
            if proc.poll() is not None:
                continue
            sock = os.path.join(self.workdir, f"dir{i + 1}.sock")
            with contextlib.suppress(OSError, ValueError):
                for row in ApiClient(sock, timeout=5).get("/api/v1/connections")["connections"]:
                    host, _, port = str(row["client"]).rpartition(":")
                    key, server = (host, int(port)), str(row["server"]).rpartition(":")[0]
                    pkts = int(row.get("in_pkts", 0))
                    if key not in best or pkts > best[key][0]:
                        best[key] = (pkts, self.directors[i] if pkts > 3 else "?", server)
        return {key: (via, server) for key, (_, via, server) in best.items()}

    def server_sockets(self) -> dict[tuple[str, int], tuple[str, int]]:
        """(client address, port) -> (real server, bytes it received) of every established
        connection to the echo port, read on the real servers themselves (``ss``)."""
        out: dict[tuple[str, int], tuple[str, int]] = {}
        for rs, ns in zip(self.real_servers, self.ns_rs, strict=True):
            text = self.run(ns, ["ss", "-Htin", "state", "established", "sport", "=",
                                 f":{PORT}"], check=False).stdout
            for m in re.finditer(r"\S+:\d+\s+(\d+\.\d+\.\d+\.\d+):(\d+)\s*\n(.*)", text):
                got = re.search(r"bytes_received:(\d+)", m.group(3))
                out[(m.group(1), int(m.group(2)))] = (rs, int(got.group(1)) if got else 0)
        return out

    def paths(self, source: str, sport: int,
              flows: dict[tuple[str, int], tuple[str, str]]) -> tuple[str, str]:
        """(director of the client's packets, director of the replies) of one stream now.

        ``flows`` is :meth:`flows`; the reply side is the real server's own route lookup
        (``ip route get`` for a locally sent packet hashes its ports, as the socket does).
        """
        via_in, server = flows.get((source, sport), ("?", "?"))
        via_out = "?"
        if server in self.real_servers:
            i = self.real_servers.index(server)
            back = self.run(self.ns_rs[i], ["ip", "route", "get", source, "from", server,
                                            "ipproto", "tcp", "sport", str(PORT), "dport",
                                            str(sport)], check=False).stdout
            m = re.search(r"via (\S+)", back)
            via_out = m.group(1) if m else "?"
        return via_in, via_out

    # -- plumbing ----------------------------------------------------------------------------
    def run(self, ns: str, argv: Sequence[str], *, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``ns`` and wait."""
        res = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise TopologyError(f"[{ns}] {' '.join(argv)}: {res.stderr.strip()}")
        return res

    def popen(self, ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        """Start ``argv`` in ``ns`` in its own session; teardown kills it."""
        opts: dict[str, object] = {"stdin": subprocess.DEVNULL, "text": True,
                                   "start_new_session": True}
        opts.update(kwargs)
        proc: subprocess.Popen[str] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], **opts)  # type: ignore[call-overload]
        self._procs.append(proc)
        return proc

    def _ip(self, argv: Sequence[str]) -> None:
        res = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30,
                             check=False)
        if res.returncode != 0:
            raise TopologyError(f"ip {' '.join(argv)}: {res.stderr.strip()}")

    def _sysctl(self, ns: str, values: dict[str, str]) -> None:
        self.run(ns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())])

    def _addr(self, ns: str, ifname: str, addresses: Sequence[str]) -> None:
        cmds = [f"addr add {a}/24 dev {ifname}" for a in addresses] + [f"link set {ifname} up"]
        res = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(cmds) + "\n",
                             capture_output=True, text=True, timeout=30, check=False)
        if res.returncode != 0:
            raise TopologyError(f"[{ns}] addresses: {res.stderr.strip()}")

    def _plug(self, ns: str, port: str, bridge: str, ifname: str, address: str) -> None:
        self._ip(["-n", self.ns_sw, "link", "add", port, "type", "veth", "peer", "name", ifname,
                  "netns", ns])
        self._ip(["-n", self.ns_sw, "link", "set", port, "master", bridge, "up"])
        self._addr(ns, ifname, [address])

    def destroy(self) -> None:
        """Kill everything started here, delete the namespaces and the work directory."""
        release(self._procs, self._created, self.workdir)
        self.workdir = ""

    def __enter__(self) -> ClusterLab:
        return self.create()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        with contextlib.suppress(Exception):
            self.destroy()
