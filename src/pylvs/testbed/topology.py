"""The two-tier LVS-NAT topology in network namespaces, for the demo, the tests and the bench.

::

    client(s) ─┐                       ┌─ eth0 [director 1] eth1 ─┐                ┌─ rs1
               ├─ br-pub ──────────────┤                          ├── br-priv ─────┼─ rs2
               │  (switch namespace)   └─ eth0 [director 2] eth1 ─┘                └─ rs3

* A *switch* namespace holds the bridges ``br-pub`` (198.18.0.0/24) and ``br-priv``
  (198.19.0.0/24), so two directors can share both segments and a test can cut one link.
* Clients: ``eth0`` 198.18.0.2, then .4, .5, …; default route via director 1 (198.18.0.1), so a
  client also reaches the real servers directly when the director forwards (the "direct" path).
* Directors: ``eth0`` on the public segment (198.18.0.1, .3); ``eth1`` — the
  ``private_interface`` of the TOML — on the private segment (198.19.0.2, .3). ``ip_forward=1``
  and ``rp_filter=0``. With one director the topology also puts the ``nat_router`` address
  198.19.0.1/24 on its ``eth1`` (``static_nat_router``); with two it is left to HA, which floats
  it, and :meth:`Topology.director_config` renders it as ``nat_router`` instead.
* Real servers: ``eth0`` 198.19.0.11, .12, …; default route via the nat_router 198.19.0.1.

IPv6 is disabled in every namespace (no DAD or router-solicitation noise), unless the topology
is built with ``ipv6=True``: then every host gets an address of 2001:2::/48 as well (the IPv6
benchmarking range), without duplicate address detection or router solicitations: the public
segment is 2001:2::/64 (clients 2001:2::2, ::4 …, directors 2001:2::1 and ::3, the VIP
2001:2::100), the private one 2001:2:1::/64 (directors ::2 and ::3, the nat_router 2001:2:1::1,
real servers 2001:2:1::11 and up), with default routes as for IPv4. Every namespace is
named ``<prefix><random suffix>-<role>`` (roles ``sw``, ``cli1``, ``dir1``, ``rs1`` …) so that
several people can build topologies on one machine at once.  Teardown kills every process the
topology started and every process still inside its namespaces, then deletes the namespaces,
also when the body raised or the user pressed Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from pylvs.testbed.config import ServiceSpec, render_director_config

__all__ = [
    "NAT_ROUTER",
    "NAT_ROUTER6",
    "PRIVATE_INTERFACE",
    "PUBLIC_INTERFACE",
    "VIP",
    "VIP6",
    "Host",
    "ServiceSpec",
    "Topology",
    "TopologyError",
    "child_env",
    "list_namespaces",
    "release",
]

VIP = "198.18.0.100"
NAT_ROUTER = "198.19.0.1"
VIP6 = "2001:2::100"
NAT_ROUTER6 = "2001:2:1::1"
PUBLIC_INTERFACE = "eth0"
PRIVATE_INTERFACE = "eth1"
_SERVER_READY_TIMEOUT = 15.0
_NO_IPV6_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": "1",
                    "net.ipv6.conf.default.disable_ipv6": "1"}
# IPv6 on, quietly: no DAD (addresses usable at once), no router solicitations or RAs.
_IPV6_SYSCTLS = {f"net.ipv6.conf.{dev}.{key}": value for dev in ("all", "default")
                 for key, value in (("accept_dad", "0"), ("dad_transmits", "0"),
                                    ("router_solicitations", "0"), ("accept_ra", "0"))}


class TopologyError(RuntimeError):
    """A command that builds or uses the topology failed (its stderr is in the message)."""


@dataclass(frozen=True, slots=True)
class Host:
    """One namespace of the topology: its role name, namespace name and addresses."""

    name: str  # "cli1", "dir1", "rs1"
    ns: str  # the network namespace
    address: str  # the main address (public for clients/directors, private for real servers)
    private_address: str | None = None  # directors only
    address6: str | None = None  # IPv6 topologies only
    private_address6: str | None = None


def list_namespaces(prefix: str = "") -> list[str]:
    """Return the names of existing network namespaces that start with ``prefix``."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def _ip(argv: Sequence[str], stdin: str | None = None) -> None:
    res = subprocess.run(["ip", *argv], input=stdin, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise TopologyError(f"ip {' '.join(argv)} failed: {res.stderr.strip()}")


class Topology:
    """Client(s), director(s) and real servers in namespaces; a (async) context manager.

    ``with Topology("t", n_real_servers=3) as topo:`` builds everything on entry and removes
    everything on exit.  :meth:`create` and :meth:`destroy` do the same by hand;
    :meth:`destroy` is idempotent and never raises.
    """

    def __init__(
        self,
        prefix: str,
        n_real_servers: int = 3,
        n_directors: int = 1,
        n_clients: int = 1,
        static_nat_router: bool | None = None,
        ipv6: bool = False,
    ) -> None:
        if not 1 <= n_real_servers <= 200 or not 1 <= n_directors <= 2:
            raise ValueError("need 1..200 real servers and 1..2 directors")
        if not 1 <= n_clients <= 90:
            raise ValueError("need 1..90 clients")
        self.prefix = prefix
        self.tag = prefix + secrets.token_hex(3)
        if static_nat_router is None:
            static_nat_router = n_directors == 1
        self.static_nat_router = static_nat_router
        self.ipv6 = ipv6
        self.vip = VIP
        self.nat_router = NAT_ROUTER
        self.vip6 = VIP6 if ipv6 else None
        self.nat_router6 = NAT_ROUTER6 if ipv6 else None
        self.public_interface = PUBLIC_INTERFACE
        self.private_interface = PRIVATE_INTERFACE
        self.switch_ns = f"{self.tag}-sw"
        client_ips = ["198.18.0.2"] + [f"198.18.0.{4 + i}" for i in range(n_clients - 1)]
        def v6(text: str) -> str | None:
            return text if ipv6 else None

        self.clients = [Host(f"cli{i + 1}", f"{self.tag}-cli{i + 1}", ip,
                             address6=v6(ip.replace("198.18.0.", "2001:2::")))
                        for i, ip in enumerate(client_ips)]
        self.directors = [
            Host(f"dir{i + 1}", f"{self.tag}-dir{i + 1}", f"198.18.0.{1 + 2 * i}",
                 f"198.19.0.{2 + i}", address6=v6(f"2001:2::{1 + 2 * i}"),
                 private_address6=v6(f"2001:2:1::{2 + i}"))
            for i in range(n_directors)
        ]
        self.real_servers = [Host(f"rs{i + 1}", f"{self.tag}-rs{i + 1}", f"198.19.0.{11 + i}",
                                  address6=v6(f"2001:2:1::{11 + i}"))
                             for i in range(n_real_servers)]
        self.workdir = ""  # a private temp directory (configs, sockets, secrets); made by create
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[str]] = []

    # -- convenience -----------------------------------------------------------------------
    @property
    def client(self) -> Host:
        """The first client."""
        return self.clients[0]

    @property
    def director(self) -> Host:
        """The first (primary) director."""
        return self.directors[0]

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of this topology, switch first."""
        hosts = [*self.clients, *self.directors, *self.real_servers]
        return [self.switch_ns, *(h.ns for h in hosts)]

    # -- build and tear down ---------------------------------------------------------------
    def create(self) -> Topology:
        """Build every namespace, bridge, veth pair, address, route and sysctl."""
        try:
            self.workdir = tempfile.mkdtemp(prefix=f"pylvs-{self.tag}-")
            for ns in self.namespaces:
                _ip(["netns", "add", ns])
                self._created.append(ns)
                self._sysctl(ns, _IPV6_SYSCTLS if self.ipv6 else _NO_IPV6_SYSCTLS)
                _ip(["-n", ns, "link", "set", "lo", "up"])
            self._build_switch()
            for i, cli in enumerate(self.clients):
                self._plug(cli.ns, f"c{i + 1}", "br-pub", PUBLIC_INTERFACE, cli.address,
                           cli.address6)
                _ip(["-n", cli.ns, "route", "add", "default", "via", self.director.address])
                if cli.address6 is not None and self.director.address6 is not None:
                    _ip(["-n", cli.ns, "-6", "route", "add", "default", "via",
                         self.director.address6])
            for i, d in enumerate(self.directors):
                forwarding = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
                              "net.ipv4.conf.default.rp_filter": "0"}
                if self.ipv6:
                    forwarding["net.ipv6.conf.all.forwarding"] = "1"
                self._sysctl(d.ns, forwarding)
                self._plug(d.ns, f"d{i + 1}pub", "br-pub", PUBLIC_INTERFACE, d.address,
                           d.address6)
                assert d.private_address is not None
                self._plug(d.ns, f"d{i + 1}priv", "br-priv", PRIVATE_INTERFACE, d.private_address,
                           d.private_address6)
            if self.static_nat_router:
                _ip(["-n", self.director.ns, "addr", "add", f"{self.nat_router}/24",
                     "dev", PRIVATE_INTERFACE])
                if self.nat_router6 is not None:
                    _ip(["-n", self.director.ns, "addr", "add", f"{self.nat_router6}/64",
                         "dev", PRIVATE_INTERFACE, "nodad"])
            for i, rs in enumerate(self.real_servers):
                self._plug(rs.ns, f"r{i + 1}", "br-priv", "eth0", rs.address, rs.address6)
                _ip(["-n", rs.ns, "route", "add", "default", "via", self.nat_router])
                if self.nat_router6 is not None:
                    _ip(["-n", rs.ns, "-6", "route", "add", "default", "via", self.nat_router6])
        except BaseException:
            self.destroy()
            raise
        return self

    def _sysctl(self, ns: str, values: dict[str, str]) -> None:
        argv = ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())]
        self.run(ns, argv)

    def _build_switch(self) -> None:
        sw = self.switch_ns
        # Bridged frames must not meet netfilter if br_netfilter happens to be loaded: IPv4,
        # IPv6 and ARP alike (each defaults to 1 in a new namespace; with only the IPv4 one off,
        # every IPv6 frame took br_netfilter's IPv6 path at each bridge, a cost the IPv4
        # contenders did not pay).
        self.run(sw, ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0",
                      "net.bridge.bridge-nf-call-ip6tables=0",
                      "net.bridge.bridge-nf-call-arptables=0"], check=False)
        cmds = []
        for br in ("br-pub", "br-priv"):
            cmds += [f"link add {br} type bridge forward_delay 0 mcast_snooping 0",
                     f"link set {br} up"]
        _ip(["-n", sw, "-batch", "-"], "\n".join(cmds) + "\n")

    def _plug(self, ns: str, port: str, bridge: str, ifname: str, address: str,
              address6: str | None = None) -> None:
        sw = self.switch_ns
        _ip(["-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns])
        _ip(["-n", sw, "link", "set", port, "master", bridge, "up"])
        v6 = f"addr add {address6}/64 dev {ifname} nodad\n" if address6 else ""
        _ip(["-n", ns, "-batch", "-"],
            f"addr add {address}/24 dev {ifname}\n{v6}link set {ifname} up\n")

    def destroy(self) -> None:
        """Kill every process started here or left in the namespaces, delete the namespaces."""
        release(self._procs, self._created, self.workdir)
        self.workdir = ""

    def __enter__(self) -> Topology:
        return self.create()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()

    async def __aenter__(self) -> Topology:
        # Synchronous on purpose (a fraction of a second): a create() still running in a worker
        # thread after a cancellation would race the cleanup and leak namespaces.
        return self.create()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        # Not in a thread: cancellation of the caller must never skip the cleanup.
        self.destroy()

    # -- processes -------------------------------------------------------------------------
    def run(self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside namespace ``ns`` and wait; raise TopologyError if it fails."""
        res = subprocess.run(["ip", "netns", "exec", ns, *argv], input=input,
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise TopologyError(f"[{ns}] {' '.join(argv)} exited {res.returncode}: "
                                f"{res.stderr.strip() or res.stdout.strip()}")
        return res

    def popen(self, ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        """Start ``argv`` inside ``ns`` in its own session; teardown kills it.

        Keyword arguments go to :class:`subprocess.Popen` (default: stdin closed, text mode).
        """
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", ns, *argv], start_new_session=True, text=True, **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], timeout: float = 5.0) -> int:
        """Stop one process started by :meth:`popen` (SIGTERM, then SIGKILL); its status."""
        _terminate(proc, timeout)
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode

    def start_http_servers(self, http_port: int = 80, udp_port: int = 53,
                           iperf: bool = False) -> list[subprocess.Popen[str]]:
        """Start :mod:`pylvs.testbed.realserver` in every real server and wait until all listen.

        Each answers HTTP on ``http_port`` and UDP on ``udp_port`` with its name (``rs1\\n``);
        with ``iperf`` an ``iperf3 -s`` listens on 5201 as well.
        """
        procs = []
        for rs in self.real_servers:
            argv = [sys.executable, "-m", "pylvs.testbed.realserver", "--name", rs.name,
                    "--http", str(http_port), "--udp", str(udp_port),
                    *(["--ipv6"] if self.ipv6 else [])]
            procs.append(self.popen(rs.ns, argv, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=child_env()))
            if iperf:
                self.popen(rs.ns, ["iperf3", "-s", "-p", "5201"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        for rs, proc in zip(self.real_servers, procs, strict=True):
            _wait_ready(rs.name, proc)
        if iperf:
            for rs in self.real_servers:
                self.wait_listening(rs.ns, 5201)
        return procs

    def wait_listening(self, ns: str, port: int, timeout: float = 10.0) -> None:
        """Wait until something listens on TCP ``port`` in ``ns``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(ns, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise TopologyError(f"[{ns}] nothing listens on TCP {port} after {timeout} s")

    def set_offloads(self, enabled: bool) -> None:
        """Switch TSO, GSO and GRO on or off on every veth end of the topology (ethtool).

        With them off, every path pays per MSS-sized packet: the levelled comparison of the
        benchmark method (docs/performance.md#pitfalls, pitfall 1).
        """
        state = "on" if enabled else "off"
        ends = [(h.ns, "eth0") for h in [*self.clients, *self.directors, *self.real_servers]]
        ends += [(d.ns, PRIVATE_INTERFACE) for d in self.directors]
        out = self.run(self.switch_ns, ["ip", "-o", "link", "show", "type", "veth"]).stdout
        ends += [(self.switch_ns, line.split(": ")[1].split("@")[0])
                 for line in out.splitlines()]
        for ns, ifname in ends:
            self.run(ns, ["ethtool", "-K", ifname, "tso", state, "gso", state, "gro", state])

    # -- configuration ---------------------------------------------------------------------
    def director_config(self, services: Sequence[ServiceSpec] | None = None, *,
                        director: int = 0, ha: bool | None = None, extra: str = "",
                        director_options: Mapping[str, str | int | bool] | None = None,
                        peer_family: int = 4) -> str:
        """Render a ``pylvs serve`` TOML for director ``director`` (0-based) of this topology.

        ``services`` defaults to one TCP service VIP:80, ``rr``, over every real server on :80
        with health checks off.  ``director_options`` adds keys to ``[director]``
        (e.g. ``{"offload": False}``).  The control socket lives in :attr:`workdir` (unique per
        topology).  ``ha`` (default: when there are two directors) adds an ``[ha]`` section
        with the peer's addresses (IPv6 ones with ``peer_family=6``) and a shared secret file.
        ``extra`` is appended verbatim.
        """
        if ha is None:
            ha = len(self.directors) == 2
        me = self.directors[director]
        peer = self.directors[1 - director] if ha and len(self.directors) == 2 else None
        secret = ""
        if ha:
            secret = os.path.join(self.workdir, "ha.secret")
            if not os.path.exists(secret):
                with open(secret, "w", encoding="ascii") as fh:
                    fh.write(secrets.token_hex(32) + "\n")
                os.chmod(secret, 0o600)
        return render_director_config(
            services=list(services) if services is not None else [ServiceSpec()],
            vip=self.vip, real_servers=[rs.address for rs in self.real_servers],
            public_interface=PUBLIC_INTERFACE, private_interface=PRIVATE_INTERFACE,
            nat_router=None if self.static_nat_router else f"{self.nat_router}/24",
            nat_router6=(None if self.static_nat_router or self.nat_router6 is None
                         else f"{self.nat_router6}/64"),
            vip6=self.vip6, real_servers6=[rs.address6 or "" for rs in self.real_servers],
            socket=os.path.join(self.workdir, f"{me.name}.sock"),
            ha_node=me.name if ha else None, ha_priority=100 - 10 * director,
            peer_public=(peer.address6 if peer_family == 6 else peer.address) if peer else None,
            peer_private=((peer.private_address6 if peer_family == 6 else peer.private_address)
                          if peer else None),
            secret_file=secret or None, director_options=director_options, extra=extra)

    def write_director_config(self, text: str, director: int = 0) -> str:
        """Write ``text`` to ``<workdir>/<dirN>.toml`` and return the path."""
        path = os.path.join(self.workdir, f"{self.directors[director].name}.toml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return path


def release(procs: list[subprocess.Popen[str]], namespaces: list[str], workdir: str) -> None:
    """Tear a lab down: terminate ``procs`` (last started first), kill whatever is left in
    ``namespaces``, delete them (last created first) and remove ``workdir`` (if any); both
    lists are emptied."""
    blocked = False
    if hasattr(signal, "pthread_sigmask"):
        # A second Ctrl-C must not leave namespaces behind: hold it until cleanup is done.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        blocked = True
    try:
        for proc in reversed(procs):
            _terminate(proc)
        procs.clear()
        for ns in reversed(namespaces):
            _kill_namespace_pids(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        namespaces.clear()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def child_env() -> dict[str, str]:
    """The environment for child Pythons: they must import this very pylvs (source checkout)."""
    env = dict(os.environ)
    # this file is src/pylvs/testbed/topology.py: three levels up is the directory holding pylvs
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _wait_ready(name: str, proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if sel.select(_SERVER_READY_TIMEOUT) and proc.stdout.readline().strip() == "ready":
            return
    err = ""
    if proc.poll() is not None and proc.stderr is not None:
        err = proc.stderr.read()
    raise TopologyError(f"real server {name} did not become ready: {err.strip()[-2000:]}")


def _terminate(proc: subprocess.Popen[str], timeout: float = 3.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _kill_namespace_pids(ns: str) -> None:
    res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    for pid in res.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
