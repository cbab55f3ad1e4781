"""Fixtures for the network-namespace tests (root only; see tests/conftest.py).

* ``topology``: a fresh :class:`pylvs.testbed.topology.Topology` (1 client, 1 director, 3 real
  servers) with the real servers' name servers already running (HTTP ``rsN\\n`` on TCP 80, UDP 53);
  removed after the test, also when it fails.
* ``make_topology(**kwargs)``: the same with other sizes (``n_real_servers``, ``n_directors``,
  ``n_clients``, ``static_nat_router``) and ``servers=False`` / ``iperf=True``.
* ``pylvs_serve(topo, toml=None, director=0, wait_tcp_port=80)``: starts ``pylvs serve -c
  <file>`` inside a director namespace (:func:`pylvs.testbed.serve.start_pylvs`), waits until
  it routes the VIP and the VIP answers on ``wait_tcp_port`` (None: do not wait for that), and
  returns a :class:`pylvs.testbed.serve.PylvsProcess` (``.reload()``, ``.stop()``, ``.kill()``,
  ``.log()``).  For an HA backup pass ``wait_routed=False, wait_tcp_port=None``: it then waits
  for the control socket only.  At teardown it gets SIGTERM; when the test failed its output
  is printed.
* ``make_srv(**kwargs)`` / ``srv``: a :class:`tests.support.serve_harness.Srv` (a topology named
  ``srv``, real servers up; ``srv.serve(toml)`` starts ``pylvs serve``), removed after the test
  with the daemon's output printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pylvs.testbed.serve import PylvsProcess, start_pylvs, wait_until
from pylvs.testbed.topology import Topology
from tests.support.serve_harness import Srv

__all__ = ["PylvsProcess", "wait_until"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def make_topology() -> Iterator[Callable[..., Topology]]:
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
def pylvs_serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., PylvsProcess]]:
    """Factory: ``pylvs_serve(topo, toml=None, director=0, wait_tcp_port=80, wait_routed=True)``."""
    started: list[PylvsProcess] = []

    def start(topo: Topology, toml: str | None = None, director: int = 0,
              wait_tcp_port: int | None = 80, timeout: float = 20.0,
              wait_routed: bool = True) -> PylvsProcess:
        daemon = start_pylvs(topo, toml, director, wait_tcp_port, timeout,
                             wait_routed=wait_routed)
        started.append(daemon)
        return daemon

    yield start
    for daemon in reversed(started):
        if not daemon.stopped:
            daemon.stop()
        if _failed(request):
            print(f"--- pylvs serve ({daemon.ns}) output ---\n{daemon.log()}")


@pytest.fixture
def make_srv() -> Iterator[Callable[..., Srv]]:
    """Factory for :class:`Srv` topologies (kwargs go to :class:`Topology`)."""
    made: list[Srv] = []

    def make(**kwargs: Any) -> Srv:
        topo = Topology("srv", **kwargs)
        srv = Srv(topo)
        made.append(srv)
        topo.create()
        topo.start_http_servers()
        return srv

    try:
        yield make
    finally:
        for srv in reversed(made):
            try:
                if srv.daemon is not None and not srv.daemon.stopped:
                    srv.daemon.stop()
                    print(f"--- pylvs serve output ---\n{srv.daemon.log()[-5000:]}")
            finally:
                srv.topo.destroy()


@pytest.fixture
def srv(make_srv: Callable[..., Srv]) -> Srv:
    """One client, one director, three real servers."""
    return make_srv()
