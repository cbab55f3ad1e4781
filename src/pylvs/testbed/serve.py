"""Run ``pylvs serve`` inside a director namespace of a :class:`pylvs.testbed.topology.Topology`.

Shared by ``pylvs demo``, the netns test fixtures and the network benchmark: start the daemon
with a TOML file, wait until it is ready, and stop it with SIGTERM.  "Ready" means the daemon
routes the VIP somewhere other than the public interface (its TUN device) — or, for a director
that is not expected to own the VIP (an HA backup: ``wait_routed=False``), that its control
socket exists — and, when asked, a TCP connection from the client to ``VIP:port`` gets an
answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field

from pylvs.model import ApiConfig
from pylvs.testbed.topology import Topology, TopologyError, child_env

__all__ = ["PylvsProcess", "start_pylvs", "vip_answers", "wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; raise :class:`TopologyError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TopologyError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class PylvsProcess:
    """A ``pylvs serve`` started by :func:`start_pylvs`; output goes to :attr:`log_path`."""

    topo: Topology
    director: int
    config_path: str
    log_path: str
    proc: subprocess.Popen[str]
    stopped: bool = field(default=False)

    @property
    def ns(self) -> str:
        """The director's namespace."""
        return self.topo.directors[self.director].ns

    def log(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def reload(self, toml: str | None = None) -> None:
        """Optionally rewrite the config file, then send SIGHUP."""
        if toml is not None:
            with open(self.config_path, "w", encoding="utf-8") as fh:
                fh.write(toml)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout``); return the exit status."""
        self.stopped = True
        return self.topo.stop(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL the daemon at once (a crash, for failover tests)."""
        self.proc.kill()
        self.proc.wait(5)
        self.stopped = True


def _vip_routed(topo: Topology, director: int) -> bool:
    # Either VIP will do: a dual-stack topology may serve only IPv6 services.
    for vip in (topo.vip, *([topo.vip6] if topo.vip6 else [])):
        res = topo.run(topo.directors[director].ns, ["ip", "-o", "route", "get", vip],
                       check=False)
        if res.returncode == 0 and " dev " in res.stdout and " dev eth0 " not in res.stdout:
            return True
    return False


def vip_answers(topo: Topology, port: int = 80, client: int = 0, *,
                vip: str | None = None) -> bool:
    """True if an HTTP/1.0 request from a client to ``VIP:port`` gets any answer within 1 s.

    ``vip`` picks another address (the topology's IPv6 VIP) than the IPv4 one.
    """
    code = (f"import socket; s = socket.create_connection(('{vip or topo.vip}', {port}), "
            "timeout=1);"
            "s.settimeout(1); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); assert s.recv(100)")
    return topo.run(topo.clients[client].ns, [sys.executable, "-c", code], check=False,
                    timeout=5).returncode == 0


def start_pylvs(topo: Topology, toml: str | None = None, director: int = 0,
                wait_tcp_port: int | None = 80, timeout: float = 20.0,
                argv_prefix: tuple[str, ...] = (), wait_routed: bool = True) -> PylvsProcess:
    """Write ``toml`` (default: :meth:`Topology.director_config`) and start ``pylvs serve``.

    Waits until the VIP is routed by the daemon and, unless ``wait_tcp_port`` is None, until the
    VIP answers on that TCP port; with ``wait_routed=False`` (an HA backup) it waits for the
    control socket instead of the VIP route.  ``argv_prefix`` wraps the command (e.g.
    ``("taskset", "-c", "1")``).  On failure the daemon is stopped and the error carries its
    output.
    """
    text = toml if toml is not None else topo.director_config(director=director)
    path = topo.write_director_config(text, director)
    log_path = path.removesuffix(".toml") + ".log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = topo.popen(topo.directors[director].ns,
                          [*argv_prefix, sys.executable, "-m", "pylvs", "serve", "-c", path],
                          stdout=log, stderr=subprocess.STDOUT, env=child_env())
    daemon = PylvsProcess(topo, director, path, log_path, proc)

    sock = tomllib.loads(text).get("api", {}).get("socket", ApiConfig().socket)

    def ready() -> bool:
        if proc.poll() is not None:
            raise TopologyError(f"pylvs serve exited with status {proc.returncode}")
        return _vip_routed(topo, director) if wait_routed else os.path.exists(sock)

    try:
        what = "pylvs serve to route the VIP" if wait_routed else f"the control socket {sock}"
        wait_until(ready, timeout, what)
        if wait_tcp_port is not None:
            wait_until(lambda: vip_answers(topo, wait_tcp_port), timeout,
                       f"the VIP to answer on TCP {wait_tcp_port}", interval=0.2)
    except BaseException as exc:
        daemon.stop()
        if isinstance(exc, TopologyError):
            raise TopologyError(f"{exc}\n--- pylvs serve output ---\n{daemon.log()}") from exc
        raise
    return daemon
