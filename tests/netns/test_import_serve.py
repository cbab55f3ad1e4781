"""Round trip: an imported lvs.cf and keepalived.conf served by ``pylvs serve`` in namespaces.

The inputs (tests/data/import/*.testbed) describe the testbed's site as piranha and keepalived
would: wrr with weights 3/2/1 on TCP 80 and a UDP 53 service.  After the import the director
must serve exactly that: every server passes its imported health check, and 60 requests through
the VIP split 30/20/10.  A piranha primary/backup pair, imported once per node, must fail over
as pulse would: the backup serves the VIP after the primary dies.
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


def _imported(topo: Topology, name: str, node: str = "primary", secret: str = "") -> str:
    opts = ImportOptions(node=node, secret_file=secret or "/nonexistent")
    result = import_file(DATA / name, options=opts)
    assert not result.dropped, [n.line() for n in result.dropped]
    sock = Path(topo.workdir) / f"import-{node}.sock"
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
    got = client(srv.topo, "out['n'] = [udp(53) for _ in range(8)]")["n"]
    assert sorted(set(got)) == ["rs1", "rs2"] and Counter(got) == {"rs1": 4, "rs2": 4}, got


def test_imported_piranha_pair_fails_over(
        make_topology: Callable[..., Topology],
        pylvs_serve: Callable[..., PylvsProcess]) -> None:
    topo = make_topology(n_directors=2)
    secret = Path(topo.workdir) / "ha.key"
    secret.write_text("5f" * 32 + "\n")
    secret.chmod(0o600)
    name = "lvs.cf.testbed-pair"
    primary = pylvs_serve(topo, _imported(topo, name, "primary", str(secret)), director=0)
    backup = pylvs_serve(topo, _imported(topo, name, "backup", str(secret)), director=1,
                         wait_tcp_port=None, wait_routed=False)
    _until_all_up(topo, 3)
    claimed = "ha: addresses claimed"
    assert claimed not in backup.log()  # the backup heard the primary and stayed backup
    primary.kill()
    # deadtime = 3: the backup takes the VIP and the gateway, then serves every real server
    _until_all_up(topo, 3, timeout=15.0)
    assert claimed in backup.log()
