"""Work proportional to the change (issue 13): engine calls are counted, not timed.

A health verdict, a weight change, a slow-start step, a server add or remove must cost the
same number of engine calls on a director with 10 servers as on one with 2,000; a reload applies
only the difference; a large reload gives the event loop a turn while it works.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest

from pylvs import engine as engine_mod
from pylvs.director import Director
from pylvs.engine import Engine, ServerKey
from pylvs.looplag import BUCKETS, LagHistogram, LoopLagMonitor
from pylvs.model import (
    CheckConfig,
    Config,
    DirectorConfig,
    Endpoint,
    RealServerConfig,
    VirtualServerConfig,
)

SIZES = (1, 200)  # services of 10 servers: 10 and 2,000 real servers


class CountingEngine:
    """Wraps an Engine and counts every public method call by name."""

    def __init__(self, inner: Engine) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def site(services: int, per_service: int = 10, *, slow_start: float = 0.0,
         down_action: str = "quiesce", weight: int = 1) -> Config:
    vss = []
    for s in range(services):
        vss.append(VirtualServerConfig(
            address=Endpoint(IPv4Address("198.18.0.100") + s // 200, 1000 + s % 200),
            scheduler="wlc", slow_start=slow_start, down_action=down_action,  # type: ignore[arg-type]
            check=CheckConfig(type="none"),
            real_servers=tuple(
                RealServerConfig(address=Endpoint(IPv4Address("198.19.0.0") + s * 16 + r, 80),
                                 weight=weight)
                for r in range(per_service))))
    return Config(director=DirectorConfig(public_interface="eth0", private_interface="eth1"),
                  virtual_servers=tuple(vss))


def counted_director(cfg: Config, clock: Callable[[], float] | None = None) -> tuple[
        Director, CountingEngine]:
    d = Director(cfg) if clock is None else Director(cfg, clock=clock)
    d._sync_engine(d.config)
    counting = CountingEngine(d.engine)
    d.engine = counting  # type: ignore[assignment]
    return d, counting


def last_server(d: Director) -> tuple[Any, Endpoint]:
    vs = d.config.virtual_servers[-1]
    return vs.key, vs.real_servers[-1].address


@pytest.mark.parametrize("services", SIZES)
def test_a_health_verdict_is_one_engine_call(services: int) -> None:
    d, eng = counted_director(site(services))
    key, ep = last_server(d)
    d.set_server_state(key, ep, healthy=False)
    assert eng.calls == {"edit_server": 1}
    d.set_server_state(key, ep, healthy=True)
    d.set_server_state(key, ep, load_weight=7)
    assert eng.calls == {"edit_server": 3}
    d.set_server_state(key, ep, load_weight=7)  # no change: no call
    assert eng.calls == {"edit_server": 3}
    assert d.engine.server(ServerKey(key, str(ep.address), ep.port)).weight == 7


@pytest.mark.parametrize("services", SIZES)
def test_down_action_remove_is_one_engine_call(services: int) -> None:
    d, eng = counted_director(site(services, down_action="remove"))
    key, ep = last_server(d)
    d.set_server_state(key, ep, healthy=False)
    assert eng.calls == {"remove_server": 1}
    d.set_server_state(key, ep, healthy=True)
    assert eng.calls == {"remove_server": 1, "add_server": 1}


@pytest.mark.parametrize("services", SIZES)
def test_a_slow_start_step_touches_only_the_ramping_server(services: int) -> None:
    now = [100.0]
    d, eng = counted_director(site(services, slow_start=10.0, weight=21), clock=lambda: now[0])
    key, ep = last_server(d)
    d.set_server_state(key, ep, healthy=False)
    d.set_server_state(key, ep, healthy=True)  # ramps from 1 at t=100
    eng.calls.clear()
    for t in (101.0, 105.0, 111.0, 112.0, 113.0):
        now[0] = t
        d._tick(t)
    # one expire per tick; one edit per step that moves the weight, none once the ramp is over
    assert eng.calls == {"expire": 5, "edit_server": 3}
    assert d.engine.server(ServerKey(key, str(ep.address), ep.port)).weight == 21
    assert not d._ramping


@pytest.mark.parametrize("services", SIZES)
async def test_a_reload_applies_only_the_difference(services: int) -> None:
    d, eng = counted_director(site(services))
    cfg = d.config
    vs = cfg.virtual_servers[-1]
    rs = dataclasses.replace(vs.real_servers[0], weight=5)
    extra = RealServerConfig(address=Endpoint(IPv4Address("198.19.200.1"), 80))
    changed = dataclasses.replace(vs, real_servers=(rs, *vs.real_servers[2:], extra))
    await d.apply_config(dataclasses.replace(
        cfg, virtual_servers=(*cfg.virtual_servers[:-1], changed)))
    assert eng.calls == {"edit_server": 1, "remove_server": 1, "add_server": 1}


@pytest.mark.parametrize("services", SIZES)
def test_engine_edits_do_not_list(services: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Engine.edit_server and edit_service look one entry up by key in the core.
    d, _ = counted_director(site(services))
    key, ep = last_server(d)
    calls: Counter[str] = Counter()
    real = engine_mod._lib

    class CountingLib:
        def __getattr__(self, name: str) -> Any:
            attr = getattr(real, name)
            if not callable(attr):
                return attr

            def counted(*args: Any) -> Any:
                calls[name] += 1
                return attr(*args)

            return counted

    monkeypatch.setattr(engine_mod, "_lib", CountingLib())
    d.engine.edit_server(ServerKey(key, str(ep.address), ep.port), weight=3)
    d.engine.edit_service(key, scheduler="rr")
    listing = ("lvs_svc_count", "lvs_svc_info_get", "lvs_dest_info_list")
    assert [calls[name] for name in listing] == [0, 0, 0]
    assert [calls[name] for name in ("lvs_dest_info_find", "lvs_dest_edit",
                                     "lvs_svc_info_find", "lvs_svc_edit")] == [1, 1, 1, 1]


async def test_a_large_reload_gives_the_loop_turns() -> None:
    d = Director(site(1))
    d._sync_engine(d.config)
    turns = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    # a verdict arriving while the reload is applied in slices is applied after it, on top
    big = site(300)
    key, ep = big.virtual_servers[0].key, big.virtual_servers[0].real_servers[0].address

    async def verdict() -> None:
        while d._pending is None:
            await asyncio.sleep(0)
        d.set_server_state(key, ep, healthy=False)

    racing = asyncio.create_task(verdict())
    await d.apply_config(big)
    await racing
    stop.set()
    await task
    assert turns - before > 2
    assert sum(len(s.servers) for s in d.engine.services()) == 3000
    assert d.engine.server(ServerKey(key, str(ep.address), ep.port)).weight == 0


def test_lag_histogram_buckets_and_percentiles() -> None:
    h = LagHistogram(window=100)
    for lag in [0.0005] * 98 + [0.03, 0.2]:
        h.observe(lag)
    snap = h.snapshot()
    assert snap["count"] == 100 and snap["max"] == 0.2 and snap["p50"] == 0.0005
    assert snap["p99"] == 0.03
    cumulative = dict((str(b), n) for b, n in snap["buckets"])
    assert cumulative[str(BUCKETS[0])] == 98 and cumulative["0.05"] == 99
    assert cumulative["+Inf"] == 100


async def test_loop_lag_monitor_sees_a_stall() -> None:
    import time

    mon = LoopLagMonitor(interval=0.01)
    task = asyncio.create_task(mon.run())
    await asyncio.sleep(0.05)
    time.sleep(0.15)  # a stall of the loop
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert mon.histogram.max >= 0.1


def test_loop_lag_in_metrics_and_status() -> None:
    from pylvs.api import metrics, views
    from pylvs.cli.status import render_status

    d = Director(site(1))
    d._sync_engine(d.config)
    for lag in (0.0004, 0.003, 0.04):
        d.loop_lag.histogram.observe(lag)
    text = metrics.render(d)
    assert "# TYPE pylvs_loop_lag_seconds histogram" in text
    assert 'pylvs_loop_lag_seconds_bucket{le="0.001"} 1' in text
    assert 'pylvs_loop_lag_seconds_bucket{le="0.05"} 3' in text
    assert 'pylvs_loop_lag_seconds_bucket{le="+Inf"} 3' in text
    assert "pylvs_loop_lag_seconds_count 3" in text
    line = next(x for x in render_status(views.status(d)).splitlines() if "loop lag" in x)
    assert "p99 40.0 ms" in line and "max 40.0 ms" in line


def test_reply_steering_covers_exactly_the_real_servers_in_few_rules() -> None:
    from ipaddress import IPv4Network

    from pylvs.netconf import plan_from_config

    cfg = site(100)  # 1,000 servers in 100 blocks of 10 (198.19.0.0 + 16 * s + r)
    steering = plan_from_config(cfg).steering
    covered = {addr for st in steering
               for addr in IPv4Network(f"{st.address}/{st.prefixlen}")}
    wanted = {rs.address.address for vs in cfg.virtual_servers for rs in vs.real_servers}
    assert covered == wanted
    assert {(st.protocol, st.port) for st in steering} == {("tcp", 80)}
    assert len(steering) == 200  # a /29 and a /31 per block of ten, not 1,000 rules


def test_reply_steering_aggregates_each_address_family_on_its_own() -> None:
    from ipaddress import IPv4Address, IPv6Address, ip_network

    from pylvs.netconf import Steer, aggregate_steering

    v4 = [IPv4Address("198.19.0.8") + i for i in range(8)]  # 198.19.0.8/29
    v6 = [IPv6Address("2001:2::10") + i for i in range(16)] + [IPv6Address("2001:2::21")]
    sources = [("tcp", a, 80) for a in v4 + v6] + [("udp", v6[0], 53)]
    steering = aggregate_steering(sources)
    assert steering == {
        Steer("tcp", IPv4Address("198.19.0.8"), 80, 29),
        Steer("tcp", IPv6Address("2001:2::10"), 80, 124),
        Steer("tcp", IPv6Address("2001:2::21"), 80, 128),
        Steer("udp", IPv6Address("2001:2::10"), 53, 128),
    }
    covered = {(st.protocol, a, st.port) for st in steering
               for a in ip_network(f"{st.address}/{st.prefixlen}")}
    assert covered == set(sources)
    # the rules sort (IPv4 before IPv6) and a bare address is a host rule of its family
    assert sorted(steering)[0].address.version == 4
    assert Steer("tcp", IPv6Address("2001:2::1"), 80).prefixlen == 128
    assert Steer("tcp", IPv4Address("198.19.0.1"), 80).prefixlen == 32


def test_the_fast_dotted_quad_reads_what_ipaddress_reads() -> None:
    from ipaddress import ip_address
    from itertools import product

    from pylvs.model import parse_address

    parts = ("0", "1", "9", "10", "99", "100", "199", "249", "250", "255", "256", "01", "")
    texts = [".".join(p) for p in product(parts, repeat=4)]
    texts += ["1.2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4\n", "::1", "2001:2::1", "1.2.3.4/32"]
    for text in texts:
        try:
            want: object = ip_address(text)
        except ValueError:
            want = ValueError
        try:
            got: object = parse_address(text)
        except ValueError:
            got = ValueError
        assert got == want and type(got) is type(want), text


def test_cached_key_and_hash_stay_out_of_fields_equality_and_pickles() -> None:
    import pickle

    from pylvs.api import codec

    vs = VirtualServerConfig(address=Endpoint(IPv4Address("198.18.0.100"), 80),
                             real_servers=(RealServerConfig(
                                 address=Endpoint(IPv4Address("198.19.0.11"), 80)),))
    assert vs.key is vs.key  # built once
    ep = vs.real_servers[0].address
    assert hash(ep) == hash(Endpoint(IPv4Address("198.19.0.11"), 80))
    assert "_key" not in codec.encode(vs) and "_hash" not in codec.encode(ep)
    assert [f.name for f in dataclasses.fields(vs)][-1] == "real_servers"
    copy = pickle.loads(pickle.dumps(vs))
    assert copy == vs and copy.key == vs.key and hash(copy.real_servers[0].address) == hash(ep)
    assert dataclasses.replace(vs, protocol="udp").key.protocol == "udp"  # not the cached one


def test_components_marked_so_stop_together_the_others_alone() -> None:
    from pylvs.director import _stop_groups

    class Alone:
        async def start(self) -> None:
            pass

        async def stop(self, *, handover: bool = True) -> None:
            pass

    class Together(Alone):
        stops_with_others = True

    api, health, loadmon, drain, other = Together(), Together(), Together(), Alone(), Alone()
    assert _stop_groups([api, health, loadmon, drain]) == [[drain], [loadmon, health, api]]
    assert _stop_groups([api, other, health]) == [[health], [other], [api]]

    from pylvs.ha.node import HaComponent
    assert getattr(HaComponent, "stops_with_others", False)  # its handover is sent first


async def test_the_services_listing_is_built_in_slices_and_one_service_alone() -> None:
    from pylvs.api import views

    d, counting = counted_director(site(200, down_action="remove"))
    key, endpoint = last_server(d)
    d.set_server_state(key, endpoint, healthy=False)  # taken out of the engine
    counting.calls.clear()
    whole = views.services(d)
    assert counting.calls["services"] == 1  # the synchronous view lists the engine once

    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    counting.calls.clear()
    sliced = await views.services_sliced(d, budget=0.0)  # a turn after every service
    other.cancel()
    assert sliced == whole
    assert counting.calls["services"] == 0 and counting.calls["service"] == 200
    assert turns - before >= 199, "the loop had no turn while the listing was built"
    one = views.one_service(d, d.config.virtual_servers[-1])
    assert one == whole[-1] and not one["real_servers"][-1]["in_engine"]
