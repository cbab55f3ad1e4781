"""The director's config diff and weight inputs, against a real engine (no network, no root).

Before ``start()`` the director touches neither the kernel nor the loop, so ``apply_config``
and ``set_server_state`` can be driven here and checked through ``engine.services()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import IP, TCP

from pylvs import config
from pylvs.director import Director
from pylvs.errors import ConfigError
from pylvs.model import Config, Endpoint, ServiceKey

BASE = """\
[director]
public_interface = "eth0"
private_interface = "eth1"

[[virtual_server]]
address = "198.18.0.100:80"
scheduler = "rr"
  [virtual_server.check]
  type = "none"
  [[virtual_server.real_server]]
  address = "198.19.0.11:80"
  [[virtual_server.real_server]]
  address = "198.19.0.12:80"
  weight = 2
"""


def _servers(d: Director) -> dict[str, dict[str, int]]:
    return {
        f"{s.key.protocol} {s.key.address}:{s.key.port} {s.scheduler}": {
            f"{r.key.address}:{r.key.port}": r.weight for r in s.servers
        }
        for s in d.engine.services()
    }


def _cfg(text: str = BASE) -> Config:
    return config.parse(text, "t.toml")


async def test_initial_services_and_live_diff() -> None:
    d = Director(_cfg())
    d._sync_engine(d.config)  # what start() does first
    assert _servers(d) == {"tcp 198.18.0.100:80 rr": {"198.19.0.11:80": 1, "198.19.0.12:80": 2}}
    new = BASE.replace('weight = 2', 'weight = 5').replace('scheduler = "rr"', 'scheduler = "wrr"')
    new += '  [[virtual_server.real_server]]\n  address = "198.19.0.13:80"\n'
    new += '\n[[virtual_server]]\naddress = "198.18.0.100:53"\nprotocol = "udp"\n'
    new += '  [[virtual_server.real_server]]\n  address = "198.19.0.11:5353"\n'
    await d.apply_config(_cfg(new))
    assert _servers(d) == {
        "tcp 198.18.0.100:80 wrr": {"198.19.0.11:80": 1, "198.19.0.12:80": 5,
                                    "198.19.0.13:80": 1},
        "udp 198.18.0.100:53 wlc": {"198.19.0.11:5353": 1},
    }
    await d.apply_config(_cfg(BASE.replace('  [[virtual_server.real_server]]\n  address = '
                                           '"198.19.0.11:80"\n', "")))
    assert _servers(d) == {"tcp 198.18.0.100:80 rr": {"198.19.0.12:80": 2}}


async def test_bad_config_changes_nothing() -> None:
    d = Director(_cfg())
    d._sync_engine(d.config)
    before = _servers(d)
    good = _cfg()
    vs = dataclasses.replace(good.virtual_servers[0], scheduler="nope")
    with pytest.raises(ConfigError, match="scheduler"):
        await d.apply_config(dataclasses.replace(good, virtual_servers=(vs,)))
    moved = dataclasses.replace(good.director, tun_name="other0")
    with pytest.raises(ConfigError, match=r"director\.tun_name: cannot change"):
        await d.apply_config(dataclasses.replace(good, director=moved))
    assert _servers(d) == before and d.config.virtual_servers[0].scheduler == "rr"


async def test_reload_keeps_connections() -> None:
    d = Director(_cfg())
    d._sync_engine(d.config)
    syn = bytes(IP(src="198.18.0.2", dst="198.18.0.100") / TCP(sport=40000, dport=80, flags="S"))
    out = d.engine.process(syn, now=1.0)
    assert out is not None and IP(out).dst in ("198.19.0.11", "198.19.0.12")
    await d.apply_config(_cfg(BASE.replace("weight = 2", "weight = 0")))
    conns = [c for c in d.engine.connections() if not c.template]
    assert [(c.client_port, c.server_address) for c in conns] == [(40000, IP(out).dst)]


async def test_health_verdicts_quiesce_or_remove() -> None:
    d = Director(_cfg())
    d._sync_engine(d.config)
    key = d.config.virtual_servers[0].key
    rs2 = Endpoint(IPv4Address("198.19.0.12"), 80)
    d.set_server_state(key, rs2, healthy=False)
    assert _servers(d)["tcp 198.18.0.100:80 rr"]["198.19.0.12:80"] == 0
    d.set_server_state(key, rs2, healthy=True, load_weight=1)
    assert _servers(d)["tcp 198.18.0.100:80 rr"]["198.19.0.12:80"] == 1
    await d.apply_config(_cfg(BASE.replace('scheduler = "rr"',
                                           'scheduler = "rr"\ndown_action = "remove"')))
    d.set_server_state(key, rs2, healthy=False)
    assert _servers(d) == {"tcp 198.18.0.100:80 rr": {"198.19.0.11:80": 1}}
    d.set_server_state(key, rs2, healthy=True)
    assert "198.19.0.12:80" in _servers(d)["tcp 198.18.0.100:80 rr"]
    with pytest.raises(ConfigError):
        d.set_server_state(ServiceKey("udp", "198.18.0.100", 9), rs2, healthy=True)


async def test_slow_start_ramps_on_the_timer() -> None:
    now = [100.0]
    text = BASE.replace('scheduler = "rr"', 'scheduler = "wrr"\nslow_start = 10.0')
    d = Director(_cfg(text.replace("weight = 2", "weight = 21")), clock=lambda: now[0])
    d._sync_engine(d.config)
    key = d.config.virtual_servers[0].key
    rs2 = Endpoint(IPv4Address("198.19.0.12"), 80)

    def weight() -> int:
        return _servers(d)["tcp 198.18.0.100:80 wrr"]["198.19.0.12:80"]

    assert weight() == 21  # present from the start: no ramp
    d.set_server_state(key, rs2, healthy=False)
    assert weight() == 0
    d.set_server_state(key, rs2, healthy=True)  # recovered at t=100: ramps from 1
    assert weight() == 1
    now[0] = 105.0
    d._tick(now[0])
    assert weight() == 11
    now[0] = 111.0
    d._tick(now[0])
    assert weight() == 21


async def test_reload_sets_timeouts() -> None:
    d = Director(_cfg(BASE + "\n[timeouts]\ntcp = 100\n"))
    assert d.engine.timeouts().tcp == 100
    await d.apply_config(_cfg(BASE + "\n[timeouts]\ntcp = 200\nudp = 30\n"))
    t = d.engine.timeouts()
    assert (t.tcp, t.tcpfin, t.udp) == (200, 120, 30)


async def test_load_monitor_readings_reach_the_engine() -> None:
    import asyncio

    from pylvs.components import LoadMonitors

    text = BASE.replace('  type = "none"\n', '  type = "none"\n  [virtual_server.load_monitor]\n'
                        '  type = "exec"\n  command = "echo 50%"\n  interval = 0.05\n')
    d = Director(_cfg(text.replace("weight = 2", "weight = 8")))
    d._sync_engine(d.config)
    monitors = LoadMonitors(d)
    await monitors.start()
    try:
        for _ in range(100):
            if _servers(d)["tcp 198.18.0.100:80 rr"] == {"198.19.0.11:80": 1,
                                                         "198.19.0.12:80": 4}:
                break
            await asyncio.sleep(0.05)
        assert _servers(d)["tcp 198.18.0.100:80 rr"] == {"198.19.0.11:80": 1,
                                                         "198.19.0.12:80": 4}
        # A reload that drops the monitor stops it; weights follow the config again.
        await d.apply_config(_cfg(BASE))
        assert not monitors._running
        assert _servers(d)["tcp 198.18.0.100:80 rr"] == {"198.19.0.11:80": 1,
                                                         "198.19.0.12:80": 2}
    finally:
        await asyncio.wait_for(monitors.stop(), 10)


async def test_an_edit_racing_a_reload_builds_on_the_reload() -> None:
    # The API edits through edit_config; a SIGHUP reload applying at the same moment must not
    # be undone by an edit computed from the config as it was before the reload.
    d = Director(_cfg())
    d._sync_engine(d.config)
    reload_in_progress, let_reload_finish = asyncio.Event(), asyncio.Event()

    async def slow_listener(cfg: Config) -> None:
        if len(cfg.virtual_servers) == 2 and not let_reload_finish.is_set():
            reload_in_progress.set()
            await let_reload_finish.wait()

    d.config_listeners.append(slow_listener)
    reloaded = BASE + '\n[[virtual_server]]\naddress = "198.18.0.100:443"\n' \
        '  [[virtual_server.real_server]]\n  address = "198.19.0.11:443"\n'
    reload = asyncio.create_task(d.apply_config(_cfg(reloaded)))
    await reload_in_progress.wait()
    edit = asyncio.create_task(d.edit_config(
        lambda cur: dataclasses.replace(cur, timeouts=dataclasses.replace(cur.timeouts, tcp=60))))
    await asyncio.sleep(0)
    let_reload_finish.set()
    await asyncio.wait_for(asyncio.gather(reload, edit), 5)
    assert len(d.config.virtual_servers) == 2  # the reload's service survived the edit
    assert d.config.timeouts.tcp == 60
    assert d.engine.timeouts().tcp == 60


async def test_stop_passes_handover_to_the_components(monkeypatch: pytest.MonkeyPatch) -> None:
    # Director.stop(handover=False) must reach the HA component (a crash rehearsal: the peer
    # notices the silence), not be dropped on the way.
    d = Director(_cfg())
    monkeypatch.setattr(d.netconf, "remove", lambda: None)  # never touch this host's network
    seen: list[bool] = []

    class Recorder:
        async def start(self) -> None:
            pass

        async def stop(self, *, handover: bool = True) -> None:
            seen.append(handover)

    d.components.append(Recorder())
    await d.stop(handover=False)
    await d.stop()
    assert seen == [False, True]
