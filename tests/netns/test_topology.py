"""The namespace topology itself: addressing, routing through the director, and cleanup."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from pylvs.testbed.topology import Topology, list_namespaces


def _http_get(topo: Topology, ns: str, url: str) -> subprocess.CompletedProcess[str]:
    code = ("import urllib.request as u; "
            f"print(u.urlopen({url!r}, timeout=3).read().decode(), end='')")
    return topo.run(ns, [sys.executable, "-c", code], check=False, timeout=15)


def _udp_ask(topo: Topology, ns: str, addr: str, port: int) -> str:
    code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.settimeout(3); s.sendto(b'hi', ({addr!r}, {port})); "
            "print(s.recv(100).decode(), end='')")
    return topo.run(ns, [sys.executable, "-c", code], timeout=15).stdout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_client_reaches_each_real_server_through_the_director(topology: Topology) -> None:
    for rs in topology.real_servers:
        res = _http_get(topology, topology.client.ns, f"http://{rs.address}/")
        assert res.returncode == 0, res.stderr
        assert res.stdout == f"{rs.name}\n"
        assert _udp_ask(topology, topology.client.ns, rs.address, 53) == f"{rs.name}\n"
    # The path really is routed by the director: without forwarding it must break.
    topology.run(topology.director.ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    res = _http_get(topology, topology.client.ns, f"http://{topology.real_servers[0].address}/")
    assert res.returncode != 0


def test_addresses_routes_and_sysctls(topology: Topology) -> None:
    d = topology.director
    addrs = topology.run(d.ns, ["ip", "-o", "-4", "addr", "show"]).stdout
    assert "eth0    inet 198.18.0.1/24" in addrs
    assert "eth1    inet 198.19.0.2/24" in addrs
    assert "eth1    inet 198.19.0.1/24" in addrs  # the static nat_router of a single director
    sysctl = topology.run(d.ns, ["sysctl", "-n", "net.ipv4.ip_forward",
                                 "net.ipv4.conf.all.rp_filter"]).stdout.split()
    assert sysctl == ["1", "0"]
    for rs in topology.real_servers:
        route = topology.run(rs.ns, ["ip", "route", "show", "default"]).stdout
        assert "via 198.19.0.1 dev eth0" in route
    lo = topology.run(topology.client.ns, ["ip", "-o", "link", "show", "lo"]).stdout
    assert "UP" in lo
    # The VIP is nobody's address: the director (pylvs, nft, HAProxy) decides how to own it.
    assert topology.vip not in addrs
    assert 'private_interface = "eth1"' in topology.director_config()


def test_two_directors_share_both_segments(make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(n_directors=2, n_clients=2, n_real_servers=2, servers=False)
    assert [h.address for h in topo.clients] == ["198.18.0.2", "198.18.0.4"]
    d1, d2 = topo.directors
    assert (d2.address, d2.private_address) == ("198.18.0.3", "198.19.0.3")
    for target in (d2.address, d2.private_address, topo.real_servers[1].address):
        assert target is not None
        topo.run(d1.ns, ["ping", "-c1", "-W2", target])
    topo.run(topo.clients[1].ns, ["ping", "-c1", "-W2", d2.address])
    # With two directors the nat_router floats with HA: not assigned, but rendered.
    addrs = topo.run(d1.ns, ["ip", "-o", "-4", "addr", "show", "eth1"]).stdout
    assert "198.19.0.1/" not in addrs
    cfg = topo.director_config(director=1)
    assert 'nat_router = "198.19.0.1/24"' in cfg and 'peer_public = "198.18.0.1"' in cfg
    assert "priority = 90" in cfg


def test_cleanup_after_exception_kills_processes_and_namespaces() -> None:
    topo = Topology("ptc")
    with pytest.raises(RuntimeError, match="boom"), topo:
        names = topo.namespaces
        assert all(n in list_namespaces(topo.tag) for n in names)
        topo.start_http_servers()
        # A process the topology did not start itself must not keep anything alive either.
        topo.run(topo.real_servers[0].ns, ["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])
        pids = [int(p) for ns in names
                for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                        text=True, check=True).stdout.split()]
        assert len(pids) >= 4  # three real servers and the sleep
        raise RuntimeError("boom")
    assert list_namespaces(topo.tag) == []
    assert [pid for pid in pids if _alive(pid)] == []


def test_cleanup_after_keyboard_interrupt() -> None:
    topo = Topology("ptk", n_real_servers=1)
    with pytest.raises(KeyboardInterrupt), topo:
        raise KeyboardInterrupt
    assert list_namespaces(topo.tag) == []
    topo.destroy()  # idempotent


async def test_async_context_manager() -> None:
    async with Topology("pta", n_real_servers=1) as topo:
        tag = topo.tag
        topo.start_http_servers(udp_port=0)
        code = ("import urllib.request as u; "
                "b = u.urlopen('http://198.19.0.11/bytes/1000', timeout=3).read(); "
                "assert b == bytes(i % 251 for i in range(1000)), b[:20]")
        topo.run(topo.client.ns, [sys.executable, "-c", code], timeout=15)
    assert list_namespaces(tag) == []


def test_offloads_can_be_switched_off_everywhere(make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(n_real_servers=1, servers=False)

    def tso(ns: str, ifname: str) -> str:
        out = topo.run(ns, ["ethtool", "-k", ifname]).stdout
        return out.split("tcp-segmentation-offload: ", 1)[1].split()[0]

    ends = [(topo.client.ns, "eth0"), (topo.director.ns, "eth1"), (topo.switch_ns, "r1")]
    assert {tso(ns, i) for ns, i in ends} == {"on"}
    topo.set_offloads(False)
    assert {tso(ns, i) for ns, i in ends} == {"off"}
