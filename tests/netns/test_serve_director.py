"""``pylvs serve`` as a real process in a director namespace, clients and real servers around it.

Every request is answered by a real server's name (``rs1``..``rs3``), so each test can check that
the server the scheduler should pick is the one that answered.  Namespaces are named
``srv<random>-<role>`` and removed after every test, also when it fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from pylvs.testbed.serve import wait_until
from pylvs.testbed.topology import ServiceSpec, Topology
from tests.support.serve_harness import CLIENT_LIB, VIP, Srv, client, names, wait_log


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_rr_exact_rotation_tcp(srv: Srv, loop: str) -> None:
    toml = srv.config(ServiceSpec(scheduler="rr"))
    daemon = srv.serve(toml.replace('dataplane = "tun"', f'dataplane = "tun"\nloop = "{loop}"'))
    assert f", {loop} loop" in daemon.log()
    got = names(srv.topo, 12)
    assert sorted(got[:3]) == ["rs1", "rs2", "rs3"]
    assert got == got[:3] * 4, got


def test_udp_service_with_port_translation(srv: Srv) -> None:
    toml = srv.config(ServiceSpec(scheduler="rr"),
                      ServiceSpec(port=5300, protocol="udp", scheduler="rr", real_port=53))
    srv.serve(toml)
    out = client(srv.topo, "out['n'] = [udp(5300) for _ in range(9)]")
    got = out["n"]
    assert sorted(got[:3]) == ["rs1", "rs2", "rs3"] and got == got[:3] * 3, got


def test_tcp_port_translation(srv: Srv) -> None:
    srv.serve(srv.config(ServiceSpec(port=8080, scheduler="rr", real_port=80)),
              wait_tcp_port=8080)
    got = names(srv.topo, 6, port=8080)
    assert sorted(got[:3]) == ["rs1", "rs2", "rs3"] and got == got[:3] * 2


def test_wrr_proportions(srv: Srv) -> None:
    srv.serve(srv.config(ServiceSpec(scheduler="wrr", weights=(3, 2, 1))))
    counts = Counter(names(srv.topo, 60))
    assert counts == {"rs1": 30, "rs2": 20, "rs3": 10}, counts


def test_sh_sticks_per_client(make_srv: Callable[..., Srv]) -> None:
    srv = make_srv(n_clients=3)
    srv.serve(srv.config(ServiceSpec(scheduler="sh")))
    for i in range(3):
        got = names(srv.topo, 8, index=i)
        assert len(set(got)) == 1, (i, got)


def test_persistence_sticks_with_rr(make_srv: Callable[..., Srv]) -> None:
    srv = make_srv(n_clients=2)
    srv.serve(srv.config(ServiceSpec(scheduler="rr", persistence=60)))
    first = names(srv.topo, 9, index=0)
    second = names(srv.topo, 9, index=1)
    assert len(set(first)) == 1 and len(set(second)) == 1, (first, second)
    assert first[0] != second[0]  # rr gave the second client's template the next server


def test_weight_zero_keeps_open_connections_and_takes_no_new(srv: Srv) -> None:
    srv.serve(srv.config(ServiceSpec(scheduler="rr")))
    out = _keepalive_across_reload(srv, zero_weight=True)
    assert out["again"] == [out["first"]] * 3, out
    assert out["first"] not in out["new"] and len(set(out["new"])) == 2, out


def _keepalive_across_reload(srv: Srv, zero_weight: bool) -> dict[str, Any]:
    """Open a keep-alive connection, reload (weight 0 or removal of its server), reuse it."""
    assert srv.daemon is not None
    code = CLIENT_LIB + textwrap.dedent("""
        s = socket.create_connection((VIP, 80), timeout=5)
        out["first"] = http(sock=s)
        print(out["first"], flush=True)
        sys.stdin.readline()
        try:
            s.settimeout(1.5)
            out["again"] = [http(sock=s) for _ in range(3)]
        except OSError as exc:
            out["again"] = type(exc).__name__
        s.close()
        out["new"] = [http() for _ in range(12)]
        print(json.dumps(out), flush=True)
    """)
    proc = srv.topo.popen(srv.topo.client.ns, [sys.executable, "-c", code],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline().strip()
        assert re.fullmatch(r"rs[123]", first), first
        idx = int(first[2:]) - 1
        weights = [1, 1, 1]
        servers = [0, 1, 2]
        if zero_weight:
            weights[idx] = 0
        else:
            servers.remove(idx)
            weights = [1, 1]
        reloads = len(re.findall("SIGHUP: reloaded", srv.daemon.log()))
        srv.reload(srv.config(ServiceSpec(scheduler="rr", servers=tuple(servers),
                                          weights=tuple(weights))), reloads + 1)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        return dict(json.loads(out.strip().splitlines()[-1]))
    finally:
        srv.topo.stop(proc)


def test_removed_server_takes_no_new_connections(srv: Srv) -> None:
    srv.serve(srv.config(ServiceSpec(scheduler="rr")))
    out = _keepalive_across_reload(srv, zero_weight=False)
    # As in IPVS, packets of a connection whose server was removed are dropped silently
    # (drain with weight 0 first, see the test above); new connections avoid it.
    assert out["again"] == "TimeoutError", out
    assert out["first"] not in out["new"] and len(set(out["new"])) == 2, out
    assert srv.daemon is not None
    wait_log(srv.daemon, rf"server 198\.19\.0\.1{out['first'][2]}:80 removed")


def test_sighup_under_traffic_and_bad_file_keeps_state(srv: Srv) -> None:
    daemon = srv.serve(srv.config(ServiceSpec(scheduler="rr", servers=(0, 1))))
    code = CLIENT_LIB + textwrap.dedent("""
        from collections import Counter
        errors, seen, t0 = [], Counter(), time.monotonic()
        while time.monotonic() - t0 < 6.0 and sum(seen.values()) < 3000:
            try:
                seen[http(timeout=2)] += 1
            except Exception as exc:
                errors.append(repr(exc))
        out["seen"] = dict(seen); out["errors"] = errors[:20]; out["n_errors"] = len(errors)
        print(json.dumps(out), flush=True)
    """)
    proc = srv.topo.popen(srv.topo.client.ns, [sys.executable, "-c", code],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.8)
        srv.reload(srv.config(ServiceSpec(scheduler="rr")), 1)  # rs3 joins
        time.sleep(0.8)
        srv.reload(srv.config(ServiceSpec(scheduler="wrr", weights=(1, 2, 3))), 2)
        time.sleep(0.5)
        daemon.reload("[director]\npublic_interface = 1\n")  # a broken file
        wait_log(daemon, r"reload refused, keeping the running configuration")
        time.sleep(0.5)
        srv.reload(srv.config(ServiceSpec(scheduler="rr", servers=(1, 2))), 3)  # rs1 leaves
        out, err = proc.communicate(timeout=30)
    finally:
        srv.topo.stop(proc)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n_errors"] == 0, result["errors"]
    assert set(result["seen"]) == {"rs1", "rs2", "rs3"}
    assert sum(result["seen"].values()) > 100
    assert "public_interface: expected a string" in daemon.log()
    # After the last reload only rs2 and rs3 take new connections.
    assert sorted(names(srv.topo, 4)) == ["rs2", "rs2", "rs3", "rs3"]


def _leftovers(topo: Topology) -> dict[str, str]:
    ns = topo.director.ns
    run: Callable[..., str] = lambda *a: topo.run(ns, ["ip", *a]).stdout  # noqa: E731
    return {
        "links": run("-o", "link", "show", "pylvs0") if "pylvs0" in run("-o", "link") else "",
        "rules": "\n".join(line for line in run("rule").splitlines() if "lookup 201" in line),
        "routes": run("route", "show", "table", "all", "proto", "201"),
        "proxy": run("neigh", "show", "proxy"),
        "nat_router": "\n".join(line for line in run("-4", "addr").splitlines()
                                if "198.19.0.1/24" in line),
    }


def test_clean_exit_leaves_nothing_behind(make_srv: Callable[..., Srv]) -> None:
    srv = make_srv(static_nat_router=False)  # pylvs itself adds the nat_router address
    before = _leftovers(srv.topo)
    assert not any(before.values()), before
    daemon = srv.serve(srv.config(ServiceSpec(scheduler="rr"),
                                  ServiceSpec(port=53, protocol="udp")))
    during = _leftovers(srv.topo)
    assert during["links"] and during["proxy"] and during["nat_router"], during
    # three servers per protocol, steered as 198.19.0.11 and 198.19.0.12/31 (issue 13 merges
    # adjacent servers into one rule)
    for proto, port in (("tcp", 80), ("udp", 53)):
        for src in ("198.19.0.11", "198.19.0.12/31"):
            assert f"from {src} iif eth1 ipproto {proto} sport {port} lookup 201" \
                in during["rules"], during["rules"]
    assert during["rules"].count("lookup 201") == 4, during["rules"]
    assert sorted(names(srv.topo, 3)) == ["rs1", "rs2", "rs3"]
    assert daemon.stop() == 0
    assert _leftovers(srv.topo) == before
    assert "network configuration removed" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_crash_and_restart_converges(srv: Srv) -> None:
    before = _leftovers(srv.topo)  # the topology's own nat_router address is there
    daemon = srv.serve(srv.config(ServiceSpec(scheduler="rr")))
    daemon.kill()
    # its guardian took back the proxy ARP entry (and the state file) at once ...
    wait_until(lambda: "pylvs guardian: director pid" in daemon.log(), 5, "the guardian")
    assert "proxy" not in srv.topo.run(srv.topo.director.ns, ["ip", "neigh", "show",
                                                              "proxy"]).stdout
    # ... and left what only drops traffic: the steering rules and the blackhole routes
    assert "lookup 201" in srv.topo.run(srv.topo.director.ns, ["ip", "rule"]).stdout
    # the dead node drops VIP packets silently instead of routing them on without pylvs
    vip_routes = srv.topo.run(srv.topo.director.ns, ["ip", "route", "show", "198.18.0.100/32"])
    assert vip_routes.stdout.split()[:2] == ["blackhole", "198.18.0.100"], vip_routes.stdout
    toml = srv.config(ServiceSpec(scheduler="rr", servers=(0,)))
    toml = toml.replace('dataplane = "tun"', 'dataplane = "tun"\nlog_format = "json"')
    again = srv.serve(toml)
    logged = [json.loads(line) for line in again.log().splitlines()]
    assert all(doc["level"] != "error" for doc in logged), logged
    assert names(srv.topo, 3) == ["rs1"] * 3  # the old run's rules and routes converged
    assert again.stop() == 0
    assert _leftovers(srv.topo) == before


def test_check_command_reports_errors_without_network(tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[director]\npublic_interface = "eth0"\nprivate_interface = "eth1"\n'
                   '[[virtual_server]]\naddress = "198.18.0.100:80"\nschedulr = "rr"\n')
    res = subprocess.run([sys.executable, "-m", "pylvs", "check", "-c", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert f"{bad}: virtual_server[0].schedulr: unknown key (did you mean 'scheduler'?)" \
        in res.stderr


def test_conntrack_in_the_director_sees_no_invalid_packets(srv: Srv) -> None:
    # A gateway host often runs a stateful firewall.  Rewritten packets re-enter the stack from
    # the TUN; conntrack must see consistent flows (two per connection), never INVALID.
    srv.topo.run(srv.topo.director.ns, ["nft", "-f", "-"], input=textwrap.dedent("""
        table inet srvct {
          chain forwardchk {
            type filter hook forward priority 0; policy accept;
            ct state invalid counter drop
          }
        }
    """))
    srv.serve(srv.config(ServiceSpec(scheduler="rr")))
    out = client(srv.topo, "out['n'] = [len(http(path='/bytes/200000')) for _ in range(30)]")
    assert out["n"] == [200000] * 30
    rules = srv.topo.run(srv.topo.director.ns, ["nft", "list", "table", "inet", "srvct"]).stdout
    assert "counter packets 0 bytes 0 drop" in rules, rules


def test_losing_the_tun_device_exits_nonzero_and_cleans_up(srv: Srv) -> None:
    before = _leftovers(srv.topo)
    daemon = srv.serve(srv.config(ServiceSpec(scheduler="rr")))
    srv.topo.run(srv.topo.director.ns, ["ip", "link", "del", "pylvs0"])
    assert daemon.proc.wait(15) == 1
    daemon.stopped = True
    assert "dataplane stopped" in daemon.log()
    assert _leftovers(srv.topo) == before


def test_strict_rp_filter_on_the_host(srv: Srv) -> None:
    # Many hosts run with rp_filter = 1.  Rewritten client packets enter from the TUN with the
    # client's source address; pylvs must make that pass (loose mode on its device).
    srv.topo.run(srv.topo.director.ns, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1",
                                        "net.ipv4.conf.eth0.rp_filter=1",
                                        "net.ipv4.conf.eth1.rp_filter=1"])
    srv.serve(srv.config(ServiceSpec(scheduler="rr"),
                         ServiceSpec(port=53, protocol="udp", scheduler="rr")))
    assert sorted(names(srv.topo, 3)) == ["rs1", "rs2", "rs3"]
    assert sorted(client(srv.topo, "out['n'] = [udp(53) for _ in range(3)]")["n"]) == \
        ["rs1", "rs2", "rs3"]


def test_missing_interface_fails_cleanly(srv: Srv) -> None:
    before = _leftovers(srv.topo)
    toml = srv.config(ServiceSpec(scheduler="rr")).replace('public_interface = "eth0"',
                                                          'public_interface = "nosuch0"')
    path = srv.topo.write_director_config(toml)
    res = srv.topo.run(srv.topo.director.ns, [sys.executable, "-m", "pylvs", "serve", "-c", path],
                       check=False, timeout=30)
    assert res.returncode == 1, res.stderr
    assert "start failed: interface 'nosuch0' does not exist" in res.stderr
    assert _leftovers(srv.topo) == before


def test_start_announces_the_vips_with_gratuitous_arp(srv: Srv) -> None:
    topo = srv.topo
    topo.run(topo.client.ns, ["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
    srv.serve(srv.config(ServiceSpec(scheduler="rr")), wait_tcp_port=None)  # no traffic yet
    mac = topo.run(topo.director.ns, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    deadline = time.monotonic() + 5
    neigh = ""
    while time.monotonic() < deadline and mac not in neigh:
        neigh = topo.run(topo.client.ns, ["ip", "neigh", "show", VIP]).stdout
        time.sleep(0.05)
    assert f"lladdr {mac}" in neigh, neigh
