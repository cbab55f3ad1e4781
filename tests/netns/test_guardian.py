"""kill -9 of the active ``pylvs serve``: its guardian takes back what answers for it (root).

Two directors with HA (pylvs.testbed.hapair).  After ``kill -9`` of the active one, within
100 ms its namespace holds neither the real servers' gateway address (the ``nat_router``) nor
a proxy-ARP entry for the VIP, so no ARP request is answered by the dead node; a real server
that re-resolves the gateway then reaches the new active node, and clients are served.  A
clean stop stands the guardian down instead (it leaves no message and no process), and the
state directory is left empty either way.  The IPv6 variant runs the kill -9 test on a
dual-stack pair (heartbeats over IPv6): the IPv6 gateway and the proxy-NDP entry of the IPv6
VIP go as well, and a real server re-resolving the IPv6 gateway (neighbour solicitation)
reaches the new active node.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.testbed.hapair import HaPair

pytestmark = pytest.mark.netns

GATEWAY = "198.19.0.1"
GATEWAY6 = "2001:2:1::1"


def _ip_json(ns: str, *argv: str) -> list[dict[str, object]]:
    res = subprocess.run(["ip", "-n", ns, "-j", *argv], capture_output=True, text=True,
                         check=True, timeout=10)
    out: list[dict[str, object]] = json.loads(res.stdout or "[]")
    return out


def _gateway(pair: HaPair) -> str:
    return GATEWAY6 if pair.ipv6 else GATEWAY


def _claims(pair: HaPair, i: int) -> tuple[bool, bool]:
    """(holds a gateway address, holds a proxy-ARP/NDP entry for a VIP) on director ``i``;
    on a dual-stack pair either family counts."""
    ns = pair.topo.directors[i].ns
    gateways = {GATEWAY, GATEWAY6}
    vips = {pair.topo.vip, pair.vip}
    addrs = _ip_json(ns, "addr", "show", "dev", "eth1")
    gateway = any(a.get("local") in gateways for link in addrs
                  for a in link.get("addr_info", []))  # type: ignore[attr-defined]
    proxies = _ip_json(ns, "neigh", "show", "proxy")
    if pair.ipv6:
        proxies += _ip_json(ns, "-6", "neigh", "show", "proxy")
    proxy = any(n.get("dst") in vips for n in proxies)
    return gateway, proxy


def _guardians(pair: HaPair, i: int) -> list[int]:
    res = subprocess.run(["ip", "netns", "pids", pair.topo.directors[i].ns],
                         capture_output=True, text=True, check=False)
    out = []
    for pid in res.stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pylvs.guardian" in cmd:
            out.append(int(pid))
    return out


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The directors inherit the environment: their netconf state (and guard locks) go here.
    path = tmp_path / "state"
    monkeypatch.setenv("PYLVS_STATE_DIR", str(path))
    return path


@pytest.fixture
def ha_pair(state_dir: Path) -> Iterator[HaPair]:
    with HaPair(ha={"preempt": False}, prefix="gd") as pair:
        yield pair


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def any_pair(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[HaPair]:
    """An IPv4 pair, then a dual-stack one serving its names on the IPv6 VIP."""
    ipv6 = request.param == 6
    with HaPair(ha={"preempt": False}, prefix="gd", ipv6=ipv6, names=ipv6) as pair:
        yield pair


def _up(pair: HaPair) -> None:
    pair.start(0)
    pair.wait(lambda: pair.owns_vip(0), 15, "the primary to own the VIP")
    pair.start(1)
    pair.wait(lambda: pair.is_backup(1), 15, "the backup to run as BACKUP")


def _served(pair: HaPair) -> None:
    """The service works through the new active node (IPv6: the names service on :80)."""
    if pair.ipv6:
        assert pair.ask() in {rs.name for rs in pair.topo.real_servers}
        return
    proc = pair.client("stream", "--duration", "1", "--gap", "0.01")
    out, _ = proc.communicate(timeout=30)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["error"] is None and result["verified"] == result["sent"] > 0


def test_kill9_leaves_nothing_that_answers_for_the_dead_node(any_pair: HaPair,
                                                              state_dir: Path) -> None:
    pair = any_pair
    _up(pair)
    assert _claims(pair, 0) == (True, True)
    assert _claims(pair, 1) == (False, False)
    assert len(_guardians(pair, 0)) == 1

    rss = int(Path(f"/proc/{pair.procs[0].pid}/statm").read_text().split()[1]) * 4096 >> 20
    t_kill = pair.kill(0)  # CLOCK_MONOTONIC just before SIGKILL
    pair.wait(lambda: _claims(pair, 0) == (False, False), 2,
              "the dead node to drop the gateway and proxy ARP")
    # The guardian logs when it finished, on the same system-wide monotonic clock: polling
    # from here with `ip` (a process per look) would measure the poll, not the cleanup.
    [line] = [ln for ln in pair.log(0).splitlines() if "pylvs guardian:" in ln]
    done = float(re.search(r"\.\. ([0-9.]+)\)", line).group(1))  # type: ignore[union-attr]
    print(f"claims removed {1000 * (done - t_kill):.1f} ms after the kill of a {rss} MB "
          f"process: {line}")
    assert done - t_kill < 0.1, f"{1000 * (done - t_kill):.0f} ms: {line}"
    pair.wait(lambda: not _guardians(pair, 0), 2, "the guardian to exit")
    assert "pylvs guardian: director pid" in pair.log(0)
    assert f"nat_router {GATEWAY}/24" in pair.log(0)
    if pair.ipv6:
        assert f"nat_router {GATEWAY6}/64" in pair.log(0), pair.log(0)
    # The dead node's state file went with its claims; the survivor's is the only one left.
    assert len(list(state_dir.glob("netconf-*.json"))) == 1

    pair.wait(lambda: pair.owns_vip(1), 5, "the backup to take over")
    pair.wait(lambda: _claims(pair, 1) == (True, True), 5, "the new active to claim")
    # A real server forgets the gateway and asks again (ARP, or a neighbour solicitation for
    # the IPv6 gateway): only the new active node answers.
    rs, gateway = pair.topo.real_servers[0].ns, _gateway(pair)
    subprocess.run(["ip", "-n", rs, "neigh", "flush", "dev", "eth0"], check=True, timeout=10)
    if pair.ipv6:
        subprocess.run(["ip", "-n", rs, "-6", "neigh", "flush", "dev", "eth0"], check=True,
                       timeout=10)
    subprocess.run(["ip", "netns", "exec", rs, "ping", "-c", "1", "-W", "2", gateway],
                   check=True, capture_output=True, timeout=10)
    [entry] = [n for n in _ip_json(rs, "neigh", "show", gateway, "dev", "eth0")
               if n.get("lladdr")]
    mac = "/sys/class/net/eth1/address"  # read inside director 1's namespace below
    res = subprocess.run(["ip", "netns", "exec", pair.topo.directors[1].ns, "cat", mac],
                         capture_output=True, text=True, check=True, timeout=10)
    assert entry["lladdr"] == res.stdout.strip()
    _served(pair)


def test_clean_stop_stands_the_guardian_down(ha_pair: HaPair, state_dir: Path) -> None:
    pair = ha_pair
    pair.start(0)
    pair.wait(lambda: pair.owns_vip(0), 15, "the director to own the VIP")
    assert len(_guardians(pair, 0)) == 1
    pair.terminate(0)
    assert not _guardians(pair, 0)
    assert "pylvs guardian" not in pair.log(0)
    assert _claims(pair, 0) == (False, False)
    assert list(state_dir.iterdir()) == []  # no state file, no guard lock
