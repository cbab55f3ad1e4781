"""Round trip: an imported lvs.cf and keepalived.conf served by ``pylvs serve`` in namespaces.

The inputs (tests/data/import/*.testbed) describe the testbed's site as piranha and keepalived
would: wrr with weights 3/2/1 on TCP 80 and a UDP 53 service.  After the import the director
must serve exactly that: every server passes its imported health check, and 60 requests through
the VIP split 30/20/10.  A piranha primary/backup pair and a keepalived pair (one file, ``-i``),
imported once per node, must fail over: the backup serves the VIP after the primary dies.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pylvs.importers import ImportOptions, import_file
from pylvs.testbed.serve import PylvsProcess
from pylvs.testbed.topology import Topology
from tests.support.serve_harness import Srv, client, names

DATA = Path(__file__).resolve().parent.parent / "data" / "import"


def _imported(topo: Topology, name: str, opts: ImportOptions | None = None) -> str:
    result = import_file(DATA / name, options=opts)
    assert not result.dropped, [n.line() for n in result.dropped]
    sock = Path(topo.workdir) / f"import-{result.config.ha.node_id}.sock"
    return result.render() + f'\n[api]\nsocket = "{sock}"\n'


def _until_all_up(topo: Topology, want: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(set(names(topo, 6))) == want:
                return
        except AssertionError:
            pass  # no answer yet (a takeover in progress)
        time.sleep(0.5)
    raise AssertionError(f"the VIP did not answer from {want} real servers in {timeout} s")


@pytest.mark.parametrize(("name", "static"), [("lvs.cf.testbed", False),
                                              ("keepalived.conf.testbed", True)])
def test_imported_config_serves_the_same_services(make_srv: Callable[..., Srv], name: str,
                                                  static: bool) -> None:
    # lvs.cf names the real servers' gateway (nat_router), so pylvs brings it up itself.
    srv = make_srv(static_nat_router=static)
    srv.serve(_imported(srv.topo, name))
    _until_all_up(srv.topo, 3)
    counts = Counter(names(srv.topo, 60))
    assert counts == {"rs1": 30, "rs2": 20, "rs3": 10}, counts
    # The UDP service's own checks may bring rs2 up a moment after the TCP ones: wait for
    # both, then the rotation must be exact.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = client(srv.topo, "out['n'] = [udp(53) for _ in range(8)]")["n"]
        if set(got) == {"rs1", "rs2"}:
            break
        time.sleep(0.5)
    got = client(srv.topo, "out['n'] = [udp(53) for _ in range(8)]")["n"]
    assert sorted(set(got)) == ["rs1", "rs2"] and Counter(got) == {"rs1": 4, "rs2": 4}, got


@pytest.mark.parametrize(("name", "nodes"), [
    ("lvs.cf.testbed-pair", ({"node": "primary"}, {"node": "backup"})),
    ("keepalived.conf.testbed-pair", ({"config_id": "lb1"}, {"config_id": "lb2"})),
])
def test_imported_pair_fails_over(
        make_topology: Callable[..., Topology], pylvs_serve: Callable[..., PylvsProcess],
        name: str, nodes: tuple[dict[str, str], dict[str, str]]) -> None:
    topo = make_topology(n_directors=2)
    secret = Path(topo.workdir) / "ha.key"
    secret.write_text("5f" * 32 + "\n")
    secret.chmod(0o600)
    tomls = [_imported(topo, name, ImportOptions(secret_file=str(secret), **kw)) for kw in nodes]
    primary = pylvs_serve(topo, tomls[0], director=0)
    backup = pylvs_serve(topo, tomls[1], director=1, wait_tcp_port=None, wait_routed=False)
    _until_all_up(topo, 3)
    claimed = "ha: addresses claimed"
    assert claimed not in backup.log()  # the backup heard the primary and stayed backup
    primary.kill()
    # dead time ~3 s: the backup takes the VIP and the gateway, then serves every real server
    _until_all_up(topo, 3, timeout=15.0)
    assert claimed in backup.log()
