"""IPv6 through ``pylvs serve``: IPv6 clients to IPv6 real servers, dual-stack, HA, PMTU.

Every address is from the IPv6 benchmarking range 2001:2::/48 (the topology's ``ipv6=True``):
clients 2001:2::2…, the VIP 2001:2::100, real servers 2001:2:1::11…, the nat_router
2001:2:1::1.  Namespaces are made and removed by :class:`pylvs.testbed.topology.Topology`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from pylvs.testbed.serve import start_pylvs, wait_until
from pylvs.testbed.topology import ServiceSpec, Topology, child_env
from tests.support.serve_harness import Srv, client

VIP6 = "2001:2::100"

# Added to the client library: HTTP and UDP to the IPv6 VIP.
V6 = f"""
VIP6 = "{VIP6}"
def http6(port=80, path="/", timeout=5.0):
    with socket.create_connection((VIP6, port), timeout=timeout) as s:
        s.sendall(f"GET {{path}} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    assert b" 200 " in head.split(b"\\r\\n")[0], head[:80]
    return body.decode("latin-1").strip()

def udp6(port=53, timeout=2.0):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(b"who", (VIP6, port))
        return s.recv(100).decode().strip()
"""


@pytest.fixture
def srv6(make_srv: Callable[..., Srv]) -> Srv:
    """One client, one director, three real servers, dual-stack."""
    return make_srv(ipv6=True)


def _serve6(srv: Srv, *services: ServiceSpec) -> None:
    srv.serve(srv.config(*services), wait_tcp_port=None)
    wait_until(lambda: _answers6(srv.topo), 20, "the IPv6 VIP to answer", interval=0.2)


def _answers6(topo: Topology, client_index: int = 0) -> bool:
    code = (f"import socket; s = socket.create_connection(('{VIP6}', 80), timeout=1);"
            "s.settimeout(1); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); assert s.recv(100)")
    return topo.run(topo.clients[client_index].ns, [sys.executable, "-c", code], check=False,
                    timeout=5).returncode == 0


def _ctl(topo: Topology, *argv: str, director: int = 0) -> str:
    sock = f"{topo.workdir}/{topo.directors[director].name}.sock"
    res = topo.run(topo.directors[director].ns,
                   [sys.executable, "-m", "pylvs", "ctl", *argv, "--socket", sock], check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_ipv6_client_reaches_ipv6_real_servers(srv6: Srv) -> None:
    _serve6(srv6, ServiceSpec(scheduler="rr", family=6),
            ServiceSpec(port=5300, protocol="udp", scheduler="rr", real_port=53, family=6))
    out = client(srv6.topo, V6 + "out['tcp'] = [http6() for _ in range(9)]\n"
                 "out['udp'] = [udp6(5300) for _ in range(6)]")
    assert sorted(out["tcp"][:3]) == ["rs1", "rs2", "rs3"] and out["tcp"] == out["tcp"][:3] * 3
    assert sorted(out["udp"][:3]) == ["rs1", "rs2", "rs3"] and out["udp"] == out["udp"][:3] * 2
    listing = _ctl(srv6.topo, "-Ln")
    assert "TCP  [2001:2::100]:80 rr\n" in listing
    assert re.search(r"^  -> \[2001:2:1::11\]:80 +Masq +1 ", listing, re.M), listing
    assert "UDP  [2001:2::100]:5300 rr\n" in listing
    conns = _ctl(srv6.topo, "-Lnc")
    assert re.search(r"^TCP .* \[2001:2::2\]:\d+ +\[2001:2::100\]:80 +\[2001:2:1::1[123]\]:80$",
                     conns, re.M), conns
    saved = _ctl(srv6.topo, "-Sn")
    assert "-A -t [2001:2::100]:80 -s rr\n" in saved
    assert "-a -u [2001:2::100]:5300 -r [2001:2:1::11]:53 -m -w 1\n" in saved


def test_dual_stack_services_at_once(srv6: Srv) -> None:
    _serve6(srv6, ServiceSpec(scheduler="rr"), ServiceSpec(scheduler="rr", family=6))
    out = client(srv6.topo, V6 + "out['mix'] = [(http(), http6()) for _ in range(6)]")
    v4 = [a for a, _ in out["mix"]]
    v6 = [b for _, b in out["mix"]]
    # Each service rotates on its own: the other family's connections do not disturb it.
    assert sorted(v4[:3]) == ["rs1", "rs2", "rs3"] and v4 == v4[:3] * 2, v4
    assert sorted(v6[:3]) == ["rs1", "rs2", "rs3"] and v6 == v6[:3] * 2, v6
    listing = _ctl(srv6.topo, "-Ln").splitlines()
    services = [line for line in listing if line.startswith("TCP")]
    assert services == ["TCP  198.18.0.100:80 rr", "TCP  [2001:2::100]:80 rr"]  # IPv4 first


def test_pmtu_discovery_through_the_director(srv6: Srv) -> None:
    # The public side is the narrow link: the real servers send full 1500-byte segments, the
    # director cannot forward them towards the client and its kernel answers Packet Too Big to
    # the packet's source, the VIP; the engine turns that into a PTB about the real server's
    # connection, the server lowers its path MTU, and the large response arrives.
    topo = srv6.topo
    topo.run(topo.director.ns, ["ip", "link", "set", "eth0", "mtu", "1280"])
    topo.set_offloads(False)  # no GRO/TSO: every packet is one wire packet
    _serve6(srv6, ServiceSpec(scheduler="rr", family=6, servers=(0,)))
    out = client(topo, V6 + "out['n'] = len(http6(path='/bytes/200000', timeout=10))")
    assert out["n"] == 200000
    cached = topo.run(topo.real_servers[0].ns, ["ip", "-6", "route", "get", "2001:2::2"]).stdout
    assert "mtu 1280" in cached, cached


@pytest.fixture
def ha6() -> Iterator[Topology]:
    topo = Topology("ha6", n_real_servers=2, n_directors=2, ipv6=True)
    with topo:
        topo.start_http_servers()
        yield topo


def _neigh_mac(topo: Topology) -> str | None:
    out = topo.run(topo.client.ns, ["ip", "-6", "neigh", "show", VIP6]).stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return m.group(1) if m else None


def _mac(topo: Topology, director: int, ifname: str = "eth0") -> str:
    return topo.run(topo.directors[director].ns,
                    ["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()


def _gateway_macs(topo: Topology) -> list[str | None]:
    """Each real server's neighbour entry for the IPv6 gateway 2001:2:1::1 (its MAC)."""
    out = []
    for rs in topo.real_servers:
        text = topo.run(rs.ns, ["ip", "-6", "neigh", "show", "2001:2:1::1"]).stdout
        m = re.search(r"lladdr ([0-9a-f:]{17})", text)
        out.append(m.group(1) if m else None)
    return out


def test_ha_takeover_of_an_ipv6_vip_moves_the_client_neighbour_cache(ha6: Topology) -> None:
    topo = ha6
    services = [ServiceSpec(scheduler="rr", family=6)]
    # Heartbeats over the IPv6 peer addresses; the IPv6 gateway floats with the VIP.
    dirs = [start_pylvs(topo, topo.director_config(services, director=i, peer_family=6),
                        director=i, wait_tcp_port=None, wait_routed=False) for i in (0, 1)]
    try:
        wait_until(lambda: _answers6(topo), 20, "the IPv6 VIP to answer", interval=0.2)
        client(topo, V6 + "out['n'] = [http6() for _ in range(4)]")  # rr: both servers
        assert _neigh_mac(topo) == _mac(topo, 0)
        assert _gateway_macs(topo) == [_mac(topo, 0, "eth1")] * 2
        dirs[0].kill()
        t0 = time.monotonic()
        # The backup takes over after its dead time (~0.36 s) and sends unsolicited NAs with
        # Override for the VIP (public side) and the gateway (private side): the existing
        # entries move to director 2 without a solicitation and without new traffic.
        wait_until(lambda: _neigh_mac(topo) == _mac(topo, 1), 3.0,
                   "the client's neighbour entry for the VIP to move to director 2",
                   interval=0.02)
        moved = time.monotonic() - t0
        print(f"client neighbour entry moved {moved * 1000:.0f} ms after the kill")
        assert moved < 2.0, moved  # the failover goal: well under the 3 s a TCP SYN retry costs
        wait_until(lambda: _gateway_macs(topo) == [_mac(topo, 1, "eth1")] * 2, 2.0,
                   "the real servers' gateway entries to move to director 2", interval=0.02)
        wait_until(lambda: _answers6(topo), 10, "the IPv6 VIP to answer via director 2",
                   interval=0.1)
        assert "BACKUP -> ACTIVE" in dirs[1].log()
    finally:
        for d in dirs:
            if not d.stopped:
                d.stop()


def test_ctl_on_a_running_dual_stack_director(srv6: Srv) -> None:
    _serve6(srv6, ServiceSpec(scheduler="rr", family=6))
    topo = srv6.topo
    _ctl(topo, "-A", "-t", "[2001:2::100]:8080", "-s", "sh", "-p", "120", "-M", "64")
    _ctl(topo, "-a", "-t", "[2001:2::100]:8080", "-r", "[2001:2:1::12]:80", "-m", "-w", "2")
    listing = _ctl(topo, "-Ln", "-t", "[2001:2::100]:8080")
    assert "TCP  [2001:2::100]:8080 sh persistent 120 mask 64\n" in listing
    # A service added by ctl gets the default TCP check: its server enters the pool (weight 2)
    # once the probes over IPv6 have passed `rise` times.
    wait_until(lambda: re.search(r"^  -> \[2001:2:1::12\]:80 +Masq +2 ",
                                 _ctl(topo, "-Ln", "-t", "[2001:2::100]:8080"), re.M) is not None,
               15, "the TCP check over IPv6 to put the server in the pool", interval=0.5)
    assert "-a -t [2001:2::100]:8080 -r [2001:2:1::12]:80 -m -w 2\n" in _ctl(topo, "-Sn")
    res = subprocess.run(
        ["ip", "netns", "exec", topo.director.ns, sys.executable, "-m", "pylvs", "ctl", "-a",
         "-t", "[2001:2::100]:8080", "-r", "198.19.0.11:80",
         "--socket", f"{topo.workdir}/{topo.director.name}.sock"],
        capture_output=True, text=True, env=child_env(), timeout=30)
    assert res.returncode != 0 and "IPv6" in res.stderr, res.stderr
    metrics = topo.run(topo.director.ns, ["curl", "-s", "--unix-socket",
                                          f"{topo.workdir}/{topo.director.name}.sock",
                                          "http://pylvs/metrics"]).stdout
    assert re.search(r'pylvs_ipvs_backend_weight\{local_address="2001:2::100",local_port="8080",'
                     r'proto="TCP",local_mark="",remote_address="2001:2:1::12",'
                     r'remote_port="80"\} 2', metrics), metrics[:2000]
