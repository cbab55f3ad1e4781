"""Round trip: an imported lvs.cf and keepalived.conf served by ``pylvs serve`` in namespaces.

The inputs (tests/data/import/*.testbed) describe the testbed's site as piranha and keepalived
would: wrr with weights 3/2/1 on TCP 80 and a UDP 53 service.  After the import the director
must serve exactly that: every server passes its imported health check, and 60 requests through
the VIP split 30/20/10.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pylvs.importers import import_file
from tests.support.serve_harness import Srv, client, names

DATA = Path(__file__).resolve().parent.parent / "data" / "import"


def _imported(srv: Srv, name: str) -> str:
    result = import_file(DATA / name)
    assert not result.dropped, [n.line() for n in result.dropped]
    sock = Path(srv.topo.workdir) / "import.sock"
    return result.render() + f'\n[api]\nsocket = "{sock}"\n'


def _until_all_up(srv: Srv, want: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(set(names(srv.topo, 6))) == want:
            return
        time.sleep(0.5)
    raise AssertionError("not every real server passed its imported health check")


@pytest.mark.parametrize(("name", "static"), [("lvs.cf.testbed", False),
                                              ("keepalived.conf.testbed", True)])
def test_imported_config_serves_the_same_services(make_srv: Callable[..., Srv], name: str,
                                                  static: bool) -> None:
    # lvs.cf names the real servers' gateway (nat_router), so pylvs brings it up itself.
    srv = make_srv(static_nat_router=static)
    srv.serve(_imported(srv, name))
    _until_all_up(srv, 3)
    counts = Counter(names(srv.topo, 60))
    assert counts == {"rs1": 30, "rs2": 20, "rs3": 10}, counts
    got = client(srv.topo, "out['n'] = [udp(53) for _ in range(8)]")["n"]
    assert sorted(set(got)) == ["rs1", "rs2"] and Counter(got) == {"rs1": 4, "rs2": 4}, got
