"""netconf against a real kernel: apply is idempotent, remove leaves nothing, a crash converges.

Each test runs a small Python program inside a fresh namespace (named ``srv<random>``) with two
veth interfaces standing in for the public and private sides and a real TUN device.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _ip(*argv: str) -> str:
    return subprocess.run(["ip", *argv], check=True, capture_output=True, text=True,
                          timeout=30).stdout


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[str]:
    name = "srv" + secrets.token_hex(4)
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "pub0", "type", "veth", "peer", "name", "pub1")
        _ip("-n", name, "link", "add", "priv0", "type", "veth", "peer", "name", "priv1")
        for dev, addr in (("pub0", "198.18.0.1/24"), ("priv0", "198.19.0.2/24")):
            _ip("-n", name, "addr", "add", addr, "dev", dev)
            _ip("-n", name, "link", "set", dev, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _run(ns: str, state: Path, body: str) -> dict[str, Any]:
    """Run ``body`` in ``ns`` with ``nc`` (a NetConf) and an open TUN; return its JSON output."""
    prog = textwrap.dedent("""
        import json, os, sys
        from ipaddress import IPv4Address as A, IPv4Interface as I
        from ipaddress import IPv6Address as A6, IPv6Interface as I6
        from pathlib import Path
        from pylvs.dataplane.tun import open_tun
        from pylvs.netconf import NetConf, NetPlan, Steer
        fd = open_tun("srvtun0", offload=True)
        nc = NetConf("pub0", "priv0", "srvtun0", state_dir=Path(sys.argv[1]))
        out = {}
    """) + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", prog, str(state)],
                         capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": SRC, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    return dict(json.loads(lines[-1])) if lines else {}


def _snapshot(ns: str) -> dict[str, str]:
    # The kernel adds "multicast ff00::/8" for an interface when it first gets an IPv6
    # address (a gateway on an interface whose peer is down) and keeps it: not pylvs's.
    routes = _ip("-n", ns, "route", "show", "table", "all").splitlines(keepends=True)
    return {
        "rules": _ip("-n", ns, "rule") + _ip("-n", ns, "-6", "rule"),
        "routes": "".join(r for r in routes if not r.startswith("multicast ff00::/8")),
        "proxy": _ip("-n", ns, "neigh", "show", "proxy"),
        "addrs": _ip("-n", ns, "-4", "addr") + _ip("-n", ns, "-6", "addr", "show", "scope",
                                                    "global"),
        "links": _ip("-n", ns, "-o", "link"),
    }


def _after_guardian(ns: str, state: Path) -> tuple[dict[str, str], list[Path]]:
    """The snapshot and the state files once a crashed run's guardian is done (bounded: 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        leftover = _snapshot(ns)
        files = list(state.glob("netconf-*"))
        if ("proxy" not in leftover["proxy"] and not files) or time.monotonic() > deadline:
            return leftover, files
        time.sleep(0.02)


PLAN = """
plan = NetPlan(vips=frozenset({A("198.18.0.100"), A("198.18.0.101")}),
               steering=frozenset({Steer("tcp", A("198.19.0.11"), 80),
                                   Steer("udp", A("198.19.0.12"), 5353)}),
               nat_routers=frozenset({I("198.19.0.1/24")}))
"""


def _sysctl(ns: str, key: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", key], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_apply_is_idempotent_and_remove_restores(ns: str, tmp_path: Path) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0",
                    "net.ipv4.conf.all.rp_filter=1"], check=True)
    before = _snapshot(ns)
    out = _run(ns, tmp_path, PLAN + """
nc.setup(); nc.apply(plan)
import subprocess
def snap():
    return {k: subprocess.run(["ip", *a], capture_output=True, text=True).stdout
            for k, a in {"rules": ["rule"], "routes": ["route", "show", "table", "all"],
                         "proxy": ["neigh", "show", "proxy"], "addrs": ["-4", "addr"]}.items()}
first = snap()
nc.setup(); nc.apply(plan); nc.apply(plan)
out["same"] = snap() == first
out["applied"] = first
out["forward"] = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
out["rp"] = Path("/proc/sys/net/ipv4/conf/srvtun0/rp_filter").read_text().strip()
out["local"] = Path("/proc/sys/net/ipv4/conf/srvtun0/accept_local").read_text().strip()
out["delay"] = Path("/proc/sys/net/ipv4/neigh/pub0/proxy_delay").read_text().strip()
out["v6off"] = Path("/proc/sys/net/ipv6/conf/srvtun0/disable_ipv6").read_text().strip()
out["state_files"] = os.listdir(sys.argv[1])
nc.remove()
out["after_files"] = os.listdir(sys.argv[1])
""")
    assert out["same"] is True
    applied = out["applied"]
    rules = applied["rules"]
    assert "from 198.19.0.11 iif priv0 ipproto tcp sport 80 lookup 201" in rules
    assert "from 198.19.0.12 iif priv0 ipproto udp sport 5353 lookup 201" in rules
    assert rules.count("lookup 201") == 2
    assert "198.18.0.100 dev srvtun0 proto 201" in applied["routes"]
    assert "198.18.0.101 dev srvtun0 proto 201" in applied["routes"]
    assert "default dev srvtun0 table 201 proto 201" in applied["routes"]
    assert "198.18.0.100 dev pub0 proxy" in applied["proxy"]
    assert "inet 198.19.0.1/24" in applied["addrs"]
    assert (out["forward"], out["rp"], out["delay"]) == ("1", "2", "0")  # all.rp_filter is 1
    assert out["local"] == "0"  # loose rp_filter checks the source anyway: keep martians out
    assert out["v6off"] == "1"
    # the state file and the lock of the guardian that watches this run; nothing after remove
    assert sorted(f.rsplit(".", 1)[1] for f in out["state_files"]) == ["guard", "json"]
    assert out["after_files"] == []
    after = _snapshot(ns)
    assert after == before  # the TUN is gone too: the program exited
    assert _sysctl(ns, "net.ipv4.ip_forward") == "0"


def test_diff_apply_and_ha_steps(ns: str, tmp_path: Path) -> None:
    out = _run(ns, tmp_path, PLAN + """
import subprocess
ip = lambda *a: subprocess.run(["ip", *a], capture_output=True, text=True).stdout
nc.setup(); nc.apply(plan)
conf = Path("/proc/sys/net/ipv4/conf/srvtun0")
out["rp"] = [(conf / k).read_text().strip() for k in ("rp_filter", "accept_local")]
nc.apply(NetPlan(vips=frozenset({A("198.18.0.100")}),
                 steering=frozenset({Steer("tcp", A("198.19.0.13"), 8080)})))
out["rules"] = ip("rule"); out["routes"] = ip("route"); out["proxy"] = ip("neigh", "show", "proxy")
out["addrs"] = ip("-4", "addr", "show", "priv0")
nc.remove_vips([A("198.18.0.100")]); out["released"] = ip("route") + ip("neigh", "show", "proxy")
nc.add_vips([A("198.18.0.102")]); nc.add_nat_router(I("198.19.0.1/24"))
out["taken"] = ip("route") + ip("neigh", "show", "proxy") + ip("-4", "addr", "show", "priv0")
nc.remove()
""")
    # all.rp_filter is 0 here: no reverse-path lookup per packet written into the TUN
    assert out["rp"] == ["0", "1"]
    assert "198.19.0.11" not in out["rules"] and "198.19.0.12" not in out["rules"]
    assert "from 198.19.0.13 iif priv0 ipproto tcp sport 8080 lookup 201" in out["rules"]
    assert "198.18.0.101" not in out["routes"] + out["proxy"]
    assert "198.18.0.100 dev srvtun0" in out["routes"]
    assert "198.19.0.1/24" not in out["addrs"]
    assert "198.18.0.100" not in out["released"]
    assert "198.18.0.102 dev srvtun0" in out["taken"]
    assert "198.18.0.102 dev pub0 proxy" in out["taken"]
    assert "198.19.0.1/24" in out["taken"]


def test_growing_block_never_leaves_a_server_unsteered(ns: str, tmp_path: Path) -> None:
    # Adding .13 beside .11 and .12 turns the rule for .12/32 into one for .12/31.  Every
    # state the rule list passes through must still send .11's and .12's replies to the TUN:
    # a gap lost a SYN-ACK in a reload that added a server (test_health's reload test).
    out = _run(ns, tmp_path, """
import contextlib, subprocess
ip = lambda *a: subprocess.run(["ip", *a], capture_output=True, text=True).stdout
tcp80 = lambda *hosts: NetPlan(vips=frozenset({A("198.18.0.100")}), steering=frozenset(
    Steer("tcp", net.network_address, 80, net.prefixlen)
    for net in __import__("ipaddress").collapse_addresses(A(h) for h in hosts)))
nc.setup(); nc.apply(tcp80("198.19.0.11", "198.19.0.12"))
states = []
class Spy:
    def __init__(self, ipr):
        self.ipr = ipr
    def __getattr__(self, name):
        return getattr(self.ipr, name)
    def rule(self, command, *a, **kw):
        res = self.ipr.rule(command, *a, **kw)
        if command in ("add", "del"):
            states.append(ip("rule"))
        return res
opened = nc._ipr
@contextlib.contextmanager
def spied():
    with opened() as ipr:
        yield Spy(ipr)
nc._ipr = spied
nc.apply(tcp80("198.19.0.11", "198.19.0.12", "198.19.0.13"))
nc._ipr = opened
out["states"] = states
out["final"] = ip("rule")
nc.remove()
""")
    def covered(rules: str) -> set[str]:
        nets = [ip_network(m) for m in re.findall(r"from (\S+) iif priv0 .*lookup 201", rules)]
        return {h for h in ("198.19.0.11", "198.19.0.12", "198.19.0.13")
                if any(ip_address(h) in n for n in nets)}

    assert out["states"], "the apply changed no rule"
    for state in out["states"]:
        assert {"198.19.0.11", "198.19.0.12"} <= covered(state), state
    assert covered(out["final"]) == {"198.19.0.11", "198.19.0.12", "198.19.0.13"}
    assert out["final"].count("lookup 201") == 2, out["final"]  # .11/32 and .12/31


def test_crash_then_restart_converges(ns: str, tmp_path: Path) -> None:
    before = _snapshot(ns)
    # A run that applies and "crashes" (exits without remove): rules, proxies, address remain.
    _run(ns, tmp_path, PLAN + "nc.setup(); nc.apply(plan)\nos._exit(0)\n")
    # Its guardian takes back what answers for the node (proxy ARP, the gateway address) and
    # the state file; the steering rules and blackholes stay for the next run to converge.
    leftover, files = _after_guardian(ns, tmp_path)
    assert "lookup 201" in leftover["rules"]
    assert "proxy" not in leftover["proxy"] and "198.19.0.1/24" not in leftover["addrs"]
    assert files == []  # no state file, no guard lock
    # The next run starts from there without an error and converges to its own, smaller plan.
    out = _run(ns, tmp_path, """
import subprocess
nc.setup()
nc.apply(NetPlan(vips=frozenset({A("198.18.0.100")})))
out["rules"] = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
out["proxy"] = subprocess.run(["ip", "neigh", "show", "proxy"], capture_output=True,
                              text=True).stdout
nc.remove()
""")
    assert "lookup 201" not in out["rules"]
    assert "198.18.0.101" not in out["proxy"]
    assert _snapshot(ns) == before


PLAN6 = """
plan = NetPlan(vips=frozenset({A("198.18.0.100"), A6("2001:2::100")}),
               steering=frozenset({Steer("tcp", A("198.19.0.11"), 80),
                                   Steer("tcp", A6("2001:2:1::11"), 80),
                                   Steer("udp", A6("2001:2:1::12"), 0)}),
               nat_routers=frozenset({I("198.19.0.1/24"), I6("2001:2:1::1/64")}))
"""


def test_dual_stack_apply_is_idempotent_and_remove_restores(ns: str, tmp_path: Path) -> None:
    keys = ("net.ipv6.conf.all.forwarding", "net.ipv6.conf.pub0.proxy_ndp",
            "net.ipv6.neigh.pub0.proxy_delay")
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{keys[0]}=0", f"{keys[1]}=0"],
                   check=True)
    sysctls_before = [_sysctl(ns, k) for k in keys]
    before = _snapshot(ns)
    out = _run(ns, tmp_path, PLAN6 + """
import subprocess
def snap():
    return {k: subprocess.run(["ip", *a], capture_output=True, text=True).stdout
            for k, a in {"rules6": ["-6", "rule"],
                         "routes6": ["-6", "route", "show", "table", "all", "proto", "201"],
                         "proxy6": ["-6", "neigh", "show", "proxy"],
                         "addrs6": ["-6", "addr", "show", "priv0"],
                         "tun6": ["-6", "addr", "show", "srvtun0"],
                         "rules": ["rule"], "proxy": ["neigh", "show", "proxy"]}.items()}
nc.setup()
out["v6_before"] = Path("/proc/sys/net/ipv6/conf/srvtun0/disable_ipv6").read_text().strip()
nc.apply(plan)
first = snap()
nc.setup(); nc.apply(plan); nc.apply(plan)
out["second"] = snap()
out["applied"] = first
out["sysctls"] = [Path("/proc/sys/net/ipv6/" + p).read_text().strip() for p in (
    "conf/all/forwarding", "conf/pub0/proxy_ndp", "neigh/pub0/proxy_delay",
    "conf/srvtun0/disable_ipv6")]
# HA steps with IPv6: release the IPv6 VIP, take another, drop the IPv6 gateway.
ip = lambda *a: subprocess.run(["ip", *a], capture_output=True, text=True).stdout
nc.remove_vips([A6("2001:2::100")]); nc.add_vips([A6("2001:2::101")])
nc.update(lambda p: NetPlan(vips=p.vips, steering=p.steering,
                            nat_routers=frozenset({I("198.19.0.1/24")})))
out["moved"] = ip("-6", "route") + ip("-6", "neigh", "show", "proxy")
out["moved_addrs"] = ip("-6", "addr", "show", "priv0")
nc.remove()
""")
    assert out["v6_before"] == "1"  # IPv6 stays off on the TUN until a plan needs it
    assert out["second"] == out["applied"]
    a = out["applied"]
    assert "from 2001:2:1::11 iif priv0 ipproto tcp sport 80 lookup 201" in a["rules6"]
    assert "from 2001:2:1::12 iif priv0 ipproto udp lookup 201" in a["rules6"]
    assert a["rules6"].count("lookup 201") == 2
    assert "from 198.19.0.11 iif priv0 ipproto tcp sport 80 lookup 201" in a["rules"]
    assert a["rules"].count("lookup 201") == 1  # the IPv4 dump shows no IPv6 rule
    # (shown with "proto 201" as the filter, so ip leaves the word out)
    assert "2001:2::100 dev srvtun0 metric" in a["routes6"]
    assert "blackhole 2001:2::100 dev lo metric 4294967295" in a["routes6"]
    assert "default dev srvtun0 table 201 metric" in a["routes6"]
    assert "blackhole default dev lo table 201 metric 4294967295" in a["routes6"]
    assert "2001:2::100 dev pub0 proxy" in a["proxy6"]
    assert "198.18.0.100 dev pub0 proxy" in a["proxy"]
    assert "inet6 2001:2:1::1/64 scope global nodad" in a["addrs6"]
    assert "inet6" not in a["tun6"]  # no link-local address: nothing of its own into the pump
    assert out["sysctls"] == ["1", "1", "0", "0"]
    assert "2001:2::100" not in out["moved"]
    assert "2001:2::101 dev srvtun0" in out["moved"]
    assert "2001:2::101 dev pub0 proxy" in out["moved"]
    assert "2001:2:1::1/64" not in out["moved_addrs"]
    assert _snapshot(ns) == before
    assert [_sysctl(ns, k) for k in keys] == sysctls_before


def test_dual_stack_crash_then_restart_converges(ns: str, tmp_path: Path) -> None:
    before = _snapshot(ns)
    _run(ns, tmp_path, PLAN6 + "nc.setup(); nc.apply(plan)\nos._exit(0)\n")
    # The guardian takes back the proxy NDP and ARP entries and both gateways; the IPv6
    # steering rules stay (and the state file that said IPv6 was on is gone).
    leftover, files = _after_guardian(ns, tmp_path)
    assert "from 2001:2:1::11 iif priv0 ipproto tcp sport 80 lookup 201" in leftover["rules"]
    assert "proxy" not in leftover["proxy"]
    assert "2001:2:1::1/64" not in leftover["addrs"] and "198.19.0.1/24" not in leftover["addrs"]
    assert files == []
    out = _run(ns, tmp_path, """
import subprocess
nc.setup()
nc.apply(NetPlan(vips=frozenset({A("198.18.0.100")})))
out["rules6"] = subprocess.run(["ip", "-6", "rule"], capture_output=True, text=True).stdout
out["proxy"] = subprocess.run(["ip", "neigh", "show", "proxy"], capture_output=True,
                              text=True).stdout
nc.remove()
""")
    assert "lookup 201" not in out["rules6"]
    assert "2001:2::100" not in out["proxy"]
    assert _snapshot(ns) == before
