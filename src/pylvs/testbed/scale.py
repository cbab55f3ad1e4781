"""A large site in namespaces: thousands of real servers for the control-plane bench and tests.

The real servers are *addresses*, all answered by one namespace: real server 1 of a
:class:`~pylvs.testbed.topology.Topology` gets an AnyIP route (``ip route add local
198.19.64.0/18 dev lo``) and one TCP listener on ``0.0.0.0:80`` that accepts and closes, so a
health check of any of the 16,382 addresses is a real TCP handshake across the private segment.
Each director routes 198.19.64.0/18 to that namespace.  What is measured is the director's
control plane (probes, verdicts, reloads, restores), not a real server's work.

Usage::

    with Topology("ctl", n_real_servers=1) as topo:
        serve_servers(topo)                              # route + listener
        text = site_toml(services=1000, per_service=10)  # [[virtual_server]] sections
        lines = restore_lines(services=1000, per_service=10)   # for `pylvs ctl -R`
"""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network

from pylvs.testbed.topology import VIP, Topology

__all__ = ["SERVER_NET", "restore_lines", "serve_servers", "server_address", "site_toml"]

SERVER_NET = IPv4Network("198.19.64.0/18")
FIRST_PORT = 10000  # service i listens on VIP:FIRST_PORT+i

_LISTENER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""


def server_address(n: int) -> str:
    """The address of real server ``n`` (0-based)."""
    if not 0 <= n < SERVER_NET.num_addresses - 2:
        raise ValueError(f"real server {n} is outside {SERVER_NET}")
    return str(SERVER_NET.network_address + 1 + n)


def serve_servers(topo: Topology) -> subprocess.Popen[str]:
    """Make real server 1 answer every address of :data:`SERVER_NET` on TCP 80."""
    rs = topo.real_servers[0]
    topo.run(rs.ns, ["ip", "route", "add", "local", str(SERVER_NET), "dev", "lo"])
    for d in topo.directors:
        topo.run(d.ns, ["ip", "route", "add", str(SERVER_NET), "via", rs.address])
    proc = topo.popen(rs.ns, [sys.executable, "-c", _LISTENER], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the real-server listener did not start")
    return proc


def site_toml(services: int, per_service: int, *, interval: float = 2.0, weight: int = 1,
              vip: str = VIP) -> str:
    """``[[virtual_server]]`` sections: TCP checks on every server every ``interval`` s."""
    out = []
    for s in range(services):
        out.append(f'[[virtual_server]]\naddress = "{vip}:{FIRST_PORT + s}"\n'
                   f'scheduler = "wlc"\n  [virtual_server.check]\n  type = "tcp"\n'
                   f"  port = 80\n  interval = {interval}\n  timeout = 1.0\n")
        for r in range(per_service):
            out.append(f'  [[virtual_server.real_server]]\n'
                       f'  address = "{server_address(s * per_service + r)}:80"\n'
                       f"  weight = {weight}\n")
    return "".join(out)


def restore_lines(services: int, per_service: int, *, weight: int = 1,
                  vip: str = VIP) -> str:
    """The same site as ``ipvsadm -S`` lines, for ``pylvs ctl -R``."""
    out = []
    for s in range(services):
        svc = f"{vip}:{FIRST_PORT + s}"
        out.append(f"-A -t {svc} -s wlc\n")
        for r in range(per_service):
            out.append(f"-a -t {svc} -r {server_address(s * per_service + r)}:80 -m "
                       f"-w {weight}\n")
    return "".join(out)


def vip_address() -> IPv4Address:
    """The VIP every service of the site shares."""
    return IPv4Address(VIP)
