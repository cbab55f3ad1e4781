"""Fixtures for the network-namespace tests (root only; see tests/conftest.py).

* ``topology``: a fresh :class:`pylvs.topology.Topology` (1 client, 1 director, 3 real servers)
  with the real servers' aiohttp/UDP name servers already running; removed after the test.
* ``make_topology(**kwargs)``: the same with other sizes (``n_real_servers``, ``n_directors``,
  ``n_clients``, ``static_nat_router``) and ``servers=False`` / ``iperf=True``.
* ``pylvs_serve(topo, toml=None, director=0)``: starts ``pylvs serve -c <file>`` inside a
  director namespace, waits until its TUN device routes the VIP (and, when the config has a TCP
  service on port 80, until the VIP answers from the client), and returns a :class:`Serve`.
  At teardown it is stopped with SIGTERM; when the test failed its stderr is printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pylvs.topology import Topology, TopologyError

__all__ = ["Serve", "wait_for"]

READY_TIMEOUT = 20.0


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Serve:
    """A running ``pylvs serve`` in a director namespace."""

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
        """Everything the daemon wrote to stderr so far."""
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
    res = topo.run(topo.directors[director].ns, ["ip", "-o", "route", "get", topo.vip],
                   check=False)
    return res.returncode == 0 and " dev eth0 " not in res.stdout and "dev" in res.stdout


def _vip_answers(topo: Topology, port: int) -> bool:
    code = (f"import socket; s = socket.create_connection(('{topo.vip}', {port}), timeout=1);"
            "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); assert s.recv(100)")
    return topo.run(topo.client.ns, [sys.executable, "-c", code], check=False,
                    timeout=5).returncode == 0


def start_serve(topo: Topology, toml: str | None = None, director: int = 0,
                wait_vip: bool | None = None, timeout: float = READY_TIMEOUT) -> Serve:
    """Start ``pylvs serve`` for ``topo`` (see the module docstring) and wait until ready."""
    text = toml if toml is not None else topo.director_config(director=director)
    path = topo.write_director_config(text, director)
    log_path = path[: -len(".toml")] + ".stderr"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(os.path.dirname(__file__), "..", "..", "src"),
                    env.get("PYTHONPATH", "")) if p)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = topo.popen(topo.directors[director].ns,
                          [sys.executable, "-m", "pylvs", "serve", "-c", path],
                          stdout=log, stderr=subprocess.STDOUT, env=env)
    serve = Serve(topo, director, path, log_path, proc)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pylvs serve exited {proc.returncode}:\n{serve.log()}")
        return _vip_routed(topo, director)

    try:
        wait_for(ready, timeout, "pylvs serve to route the VIP")
        if wait_vip is None:
            wait_vip = f'address = "{topo.vip}:80"' in text and "protocol = \"tcp\"" in text
        if wait_vip:
            wait_for(lambda: _vip_answers(topo, 80), timeout, "the VIP to answer on TCP 80")
    except (AssertionError, TopologyError) as exc:
        raise AssertionError(f"{exc}\n--- pylvs serve output ---\n{serve.log()}") from exc
    return serve


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def make_topology(request: pytest.FixtureRequest) -> Iterator[Callable[..., Topology]]:
    """Factory: ``make_topology(n_real_servers=3, ..., servers=True, iperf=False)``."""
    made: list[Topology] = []

    def make(servers: bool = True, iperf: bool = False, **kwargs: Any) -> Topology:
        topo = Topology("pt", **kwargs)
        made.append(topo)
        topo.create()
        if servers:
            topo.start_http_servers(iperf=iperf)
        return topo

    try:
        yield make
    finally:
        for topo in reversed(made):
            topo.destroy()


@pytest.fixture
def topology(make_topology: Callable[..., Topology]) -> Topology:
    """One client, one director, three real servers answering ``rsN`` on TCP 80 and UDP 53."""
    return make_topology()


@pytest.fixture
def pylvs_serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., Serve]]:
    """Factory: ``pylvs_serve(topo, toml=None, director=0, wait_vip=None) -> Serve``."""
    started: list[Serve] = []

    def start(topo: Topology, toml: str | None = None, director: int = 0,
              wait_vip: bool | None = None, timeout: float = READY_TIMEOUT) -> Serve:
        serve = start_serve(topo, toml, director, wait_vip, timeout)
        started.append(serve)
        return serve

    yield start
    for serve in reversed(started):
        if not serve.stopped:
            serve.stop()
        if _failed(request):
            print(f"--- pylvs serve ({serve.ns}) output ---\n{serve.log()}")
