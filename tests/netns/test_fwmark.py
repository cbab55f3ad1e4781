"""Multi-port services through ``pylvs serve``: a firewall-mark service (docs/ipvs.md#fwmark)
and a ``ports`` list.

The director's own nftables rule marks HTTP on :80 and :8080 to the VIP with mark 80; one
persistent ``fwmark = 80`` service takes both ports, so each client reaches one real server on
both, and two clients are spread by the scheduler.  A port the rule does not mark is not the
service's.  ``ports = [80, 8080]`` does the same without nftables.  The IPv6 variant runs the
same over a dual-stack topology: an ``ip6`` rule marks, the service is mark 80's IPv6 one
(``FWM  80 IPv6``, ``-f 80 -6``), and its packets reach the mark's TUN through the IPv6 rule.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from pylvs.api.client import ApiClient
from pylvs.testbed.topology import VIP6, child_env
from tests.support.serve_harness import VIP, Srv, client

NFT_RULES = """
table {family} pylvs_test {{
    chain pre {{
        type filter hook prerouting priority mangle; policy accept;
        {family} daddr {vip} tcp dport {{ 80, 8080 }} meta mark set 80
    }}
}}
"""


def _vip(srv: Srv) -> str:
    return VIP6 if srv.topo.ipv6 else VIP


def _fwmark_config(srv: Srv, key: str = "fwmark = 80") -> str:
    v6 = srv.topo.ipv6
    servers = "".join(f'\n  [[virtual_server.real_server]]\n  address = '
                      f'"{rs.address6 if v6 else rs.address}"\n'
                      for rs in srv.topo.real_servers)
    service = (f'\n[[virtual_server]]\n{key}\naddress = "{_vip(srv)}"\nscheduler = "rr"\n'
               f'persistence = 300\n\n  [virtual_server.check]\n  type = "none"\n{servers}')
    return srv.topo.director_config([], extra=service)


def _two_port_topology(make_srv: Callable[..., Srv], ipv6: bool = False) -> Srv:
    srv = make_srv(n_clients=2, ipv6=ipv6)
    topo = srv.topo
    for rs in topo.real_servers:  # a second HTTP port on every real server
        topo.popen(rs.ns, [sys.executable, "-m", "pylvs.testbed.realserver", "--name", rs.name,
                           "--http", "8080", "--udp", "5354", *(["--ipv6"] if ipv6 else [])],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
        topo.wait_listening(rs.ns, 8080)
    return srv


def _one_server_per_client(srv: Srv) -> None:
    # the client library's http() connects to the global VIP: the family's VIP here
    body = f"VIP = {_vip(srv)!r}\nout['n'] = [http(p) for p in (80, 8080) * 4]"
    first = client(srv.topo, body, index=0)["n"]
    second = client(srv.topo, body, index=1)["n"]
    assert len(set(first)) == 1, first  # one template for the service, whatever the port
    assert len(set(second)) == 1, second
    assert first[0] != second[0]  # rr spread the two clients' templates


def _unlisted_port_unanswered(srv: Srv) -> None:
    out = client(srv.topo, f"""
        VIP = {_vip(srv)!r}
        try:
            http(9090, timeout=1.0)
            out['r'] = 'answered'
        except OSError as exc:
            out['r'] = type(exc).__name__
    """)
    assert out["r"] in ("TimeoutError", "timeout"), out


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_one_service_one_persistence_across_marked_ports(make_srv: Callable[..., Srv],
                                                         ipv6: bool) -> None:
    srv = _two_port_topology(make_srv, ipv6)
    topo = srv.topo
    family = "ip6" if ipv6 else "ip"
    topo.run(topo.director.ns, ["nft", "-f", "-"],
             input=NFT_RULES.format(family=family, vip=_vip(srv)))
    srv.serve(_fwmark_config(srv), wait_tcp_port=None if ipv6 else 80)
    _one_server_per_client(srv)
    sock = f"{topo.workdir}/{topo.director.name}.sock"
    ctl = [sys.executable, "-m", "pylvs", "ctl", "--socket", sock]
    listing = topo.run(topo.director.ns, [*ctl, "-Ln"]).stdout
    name, switch = ("FWM  80 IPv6", "-f 80 -6") if ipv6 else ("FWM  80", "-f 80")
    assert f"{name} rr persistent 300" in listing.splitlines(), listing
    saved = topo.run(topo.director.ns, [*ctl, "-Sn"]).stdout
    assert saved.startswith(f"-A {switch} -s rr -p 300\n"), saved
    templates = [c for c in ApiClient(sock).get("/api/v1/connections")["connections"]
                 if c.get("template")]
    assert len(templates) == 2, templates  # one per client, covering both ports
    if ipv6:  # the mark's IPv6 rule and route lead to the mark's own TUN device
        rules = topo.run(topo.director.ns, ["ip", "-6", "rule", "show"]).stdout
        assert "fwmark 0x50 lookup" in rules, rules
    before = ApiClient(sock).get("/api/v1/stats")["drops"]["no_service"]
    # an unmarked port to the VIP is dropped by the engine, not looped back into the TUN
    _unlisted_port_unanswered(srv)
    assert ApiClient(sock).get("/api/v1/stats")["drops"]["no_service"] > before
    assert srv.daemon is not None
    srv.daemon.stop()  # a clean stop takes the mark's rules of both families away
    for family in ("-4", "-6") if ipv6 else ("-4",):
        rules = topo.run(topo.director.ns, ["ip", family, "rule", "show"]).stdout
        assert "fwmark" not in rules, rules


def test_ports_list_without_nftables(make_srv: Callable[..., Srv]) -> None:
    srv = _two_port_topology(make_srv)
    srv.serve(_fwmark_config(srv, key="ports = [80, 8080]"))
    _one_server_per_client(srv)
    _unlisted_port_unanswered(srv)
