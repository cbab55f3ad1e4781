"""Two directors running ``pylvs serve`` with HA, in namespaces: the failover tests' and
benchmark's testbed.

:class:`HaPair` builds the two-director topology (:mod:`pylvs.testbed.topology`: shared public
and private segments), starts the echo servers of :mod:`pylvs.testbed.drill` on the real servers
(and, when asked, :mod:`pylvs.testbed.realserver` answering its name on :80), starts, kills, stops
and restarts ``pylvs serve`` on either director, tells which one owns the VIP (the ground truth:
who routes it into its TUN device), cuts links at the switch, and runs drill programs on the
clients.  Root only.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pylvs.testbed.drill import ECHO_PORT

__all__ = ["HaPair"]


@dataclass
class HaPair:
    """Two directors running ``pylvs serve`` with HA; echo servers on three real servers.

    ``ha`` holds extra ``[ha]`` keys (``{"interval": 0.1, "preempt": False}``).  With
    ``ipv6`` the topology is dual-stack, the heartbeats run over the IPv6 peer addresses, the
    IPv6 gateway floats beside the IPv4 one, and :attr:`vip` (what :meth:`owns_vip`,
    :meth:`ask` and :meth:`client` use) is the IPv6 VIP of the names service on :80 (the
    echo services stay IPv4).  Use as a context manager; everything is removed on exit.
    """

    ha: dict[str, Any] = field(default_factory=dict)
    n_real_servers: int = 3
    n_clients: int = 1
    names: bool = False  # also run testbed.realserver (HTTP :80 answers its name), VIP:80 sticky
    prefix: str = "ha"
    synproxy: bool = False  # the TCP echo service behind the director's SYN proxy
    ipv6: bool = False  # dual-stack; the names service (and vip) IPv6
    topo: Any = None
    procs: dict[int, subprocess.Popen[str]] = field(default_factory=dict)
    logs: dict[int, str] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)

    def __enter__(self) -> HaPair:
        from pylvs.testbed.topology import Topology

        self.topo = Topology(self.prefix, n_real_servers=self.n_real_servers, n_directors=2,
                             n_clients=self.n_clients, ipv6=self.ipv6)
        try:
            self.topo.create()
            self._start_echo()
            if self.names:
                self.topo.start_http_servers(http_port=80, udp_port=0)
        except BaseException:
            self.topo.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.topo.destroy()

    @property
    def vip(self) -> str:
        """The VIP the pair is checked by: the IPv6 one with :attr:`ipv6`."""
        vip: str = self.topo.vip6 if self.ipv6 else self.topo.vip
        return vip

    def _start_echo(self) -> None:
        from pylvs.testbed.topology import child_env

        procs = [self.topo.popen(rs.ns, [sys.executable, "-m", "pylvs.testbed.drill", "echo"],
                                 stdout=subprocess.PIPE, env=child_env())
                 for rs in self.topo.real_servers]
        for p in procs:
            assert p.stdout is not None
            sel = selectors.DefaultSelector()
            sel.register(p.stdout, selectors.EVENT_READ)
            if not sel.select(15) or p.stdout.readline().strip() != "ready":
                raise RuntimeError("echo server did not start")

    def config(self, i: int) -> str:
        """The TOML of director ``i``: TCP and UDP echo services, HA with :attr:`ha`."""
        from pylvs.testbed.topology import ServiceSpec

        services = [ServiceSpec(port=ECHO_PORT, protocol="tcp", scheduler="rr",
                                synproxy=self.synproxy),
                    ServiceSpec(port=ECHO_PORT, protocol="udp", scheduler="rr")]
        if self.names:
            services.append(ServiceSpec(port=80, protocol="tcp", scheduler="rr",
                                        persistence=300, family=6 if self.ipv6 else 4))
        text: str = self.topo.director_config(services, director=i,
                                              peer_family=6 if self.ipv6 else 4)
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.ha.items())
        return text.replace("[ha]\n", "[ha]\n" + lines, 1)

    def start(self, i: int) -> None:
        """Start ``pylvs serve`` on director ``i`` (0 = primary, priority 100; 1 = 90)."""
        from pylvs.testbed.topology import child_env

        path = self.topo.write_director_config(self.config(i), i)
        self.logs[i] = path + ".log"
        self.offsets[i] = os.path.getsize(self.logs[i]) if os.path.exists(self.logs[i]) else 0
        with open(self.logs[i], "a", encoding="utf-8") as log:
            self.procs[i] = self.topo.popen(
                self.topo.directors[i].ns, [sys.executable, "-m", "pylvs", "serve", "-c", path],
                stdout=log, stderr=subprocess.STDOUT, env=child_env())

    def log(self, i: int, current: bool = False) -> str:
        """Director ``i``'s output so far (``current``: only since its latest start)."""
        with open(self.logs[i], encoding="utf-8", errors="replace") as fh:
            if current:
                fh.seek(self.offsets.get(i, 0))
            return fh.read()

    def owns_vip(self, i: int) -> bool:
        """True if director ``i`` routes the VIP into its TUN device (it is ACTIVE)."""
        res = self.topo.run(self.topo.directors[i].ns, ["ip", "-o", "route", "get", self.vip],
                            check=False)
        return res.returncode == 0 and " dev eth0 " not in res.stdout and " dev " in res.stdout

    def is_backup(self, i: int) -> bool:
        """True if director ``i`` runs, does not own the VIP, and has logged BACKUP."""
        p = self.procs.get(i)
        return (p is not None and p.poll() is None and not self.owns_vip(i)
                and "-> BACKUP" in self.log(i, current=True))

    def wait(self, pred: Any, timeout: float, what: str) -> float:
        """Poll ``pred`` (bounded); return the monotonic time it became true."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return time.monotonic()
            time.sleep(0.01)
        logs = "\n".join(f"--- dir{i + 1} ---\n{self.log(i)[-3000:]}" for i in self.logs)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")

    def kill(self, i: int) -> float:
        """SIGKILL director ``i``; return the monotonic time of the kill."""
        p = self.procs.pop(i)
        t = time.monotonic()
        p.kill()
        p.wait(5)
        return t

    def terminate(self, i: int) -> float:
        """SIGTERM director ``i`` (clean stop, hands over); return when the signal went."""
        p = self.procs.pop(i)
        t = time.monotonic()
        p.terminate()
        p.wait(15)
        return t

    def client(self, cmd: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
        """Start ``drill <cmd>`` against the VIP in the client namespace (stdout piped)."""
        from pylvs.testbed.topology import child_env

        argv = [sys.executable, "-m", "pylvs.testbed.drill", cmd, "--host", self.vip, *args]
        proc: subprocess.Popen[str] = self.topo.popen(self.topo.client.ns, argv,
                                                      stdout=subprocess.PIPE, env=child_env(),
                                                      **kw)
        return proc

    def ask(self, client: int = 0) -> str:
        """``GET /`` on VIP:80 from client ``client``; the name of the real server that answered."""
        code = (f"import socket; s = socket.create_connection(('{self.vip}', 80), timeout=5);"
                "s.settimeout(5); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); d = b''\n"
                "while (c := s.recv(4096)): d += c\n"
                "print(d.split(b'\\r\\n\\r\\n', 1)[1].decode().strip())")
        res = self.topo.run(self.topo.clients[client].ns, [sys.executable, "-c", code],
                            timeout=20)
        name: str = res.stdout.strip()
        return name

    def cut(self, i: int, network: str, up: bool = False) -> None:
        """Take director ``i``'s link on ``network`` ("public"/"private") down or up."""
        port = f"d{i + 1}{'pub' if network == 'public' else 'priv'}"
        self.topo.run(self.topo.switch_ns, ["ip", "link", "set", port, "up" if up else "down"])
