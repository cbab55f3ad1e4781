"""HealthManager against real TCP servers on 127.0.0.1: timing, dedup, reloads, snapshot."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest

from pylvs.errors import ConfigError
from pylvs.health import HealthEvent, HealthManager, ServerEvent, SorryEvent
from pylvs.model import (
    CheckConfig,
    Config,
    DirectorConfig,
    Endpoint,
    RealServerConfig,
    VirtualServerConfig,
)
from tests.support.tcp_backend import LOCAL, Backend

VIP = IPv4Address("198.18.0.100")


def vs(
    port: int,
    backends: list[Backend],
    *,
    sorry: Endpoint | None = None,
    check: CheckConfig | None = None,
    quorum: int = 1,
) -> VirtualServerConfig:
    return VirtualServerConfig(
        address=Endpoint(VIP, port),
        scheduler="rr",
        sorry_server=sorry,
        quorum=quorum,
        check=check or CheckConfig(type="tcp", interval=0.1, timeout=0.2, rise=2, fall=2),
        real_servers=tuple(RealServerConfig(address=b.endpoint) for b in backends),
    )


def config(*services: VirtualServerConfig) -> Config:
    return Config(
        director=DirectorConfig(public_interface="lo", private_interface="lo"),
        virtual_servers=services,
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, HealthEvent]] = []

    def __call__(self, event: HealthEvent) -> None:
        self.events.append((time.monotonic(), event))

    def server(self, ep: Endpoint) -> list[ServerEvent]:
        return [e for _, e in self.events if isinstance(e, ServerEvent) and e.endpoint == ep]

    async def wait(self, cond: Callable[[], bool], limit: float = 5.0) -> float:
        start = time.monotonic()
        for _ in range(int(limit / 0.01)):
            if cond():
                return time.monotonic() - start
            await asyncio.sleep(0.01)
        raise AssertionError(f"condition not met within {limit:.1f}s")


async def test_down_within_fall_interval_timeout_up_after_rise_then_sorry() -> None:
    a, b = await Backend().start(), await Backend().start()
    sorry = Endpoint(LOCAL, 9)
    rec = Recorder()
    mgr = HealthManager(config(vs(80, [a, b], sorry=sorry)), rec, jitter=0.5)
    try:
        await mgr.start()
        # Initial publication: sorry server in, both servers out (start down).
        first = [e for _, e in rec.events]
        assert isinstance(first[0], SorryEvent) and first[0].active
        assert {(e.endpoint, e.in_pool) for e in first[1:] if isinstance(e, ServerEvent)} == {
            (a.endpoint, False), (b.endpoint, False)
        }
        # First success brings each one in at once (<= jittered first run + one probe).
        took = await rec.wait(lambda: all(rec.server(x.endpoint)[-1].in_pool for x in (a, b)))
        assert took < 0.1 * 0.5 + 0.2 + 0.1
        # The first server up meets quorum 1: the sorry server stands down.
        assert any(isinstance(e, SorryEvent) and not e.active for _, e in rec.events)

        await b.stop()
        stopped = time.monotonic()
        await rec.wait(lambda: not rec.server(b.endpoint)[-1].in_pool)
        down = rec.server(b.endpoint)[-1]
        # fall x interval + timeout, plus scheduling slack.
        assert rec.events[-1][0] - stopped < 2 * 0.1 + 0.2 + 0.3
        assert not down.healthy and down.reason == "refused"
        assert mgr.service(vs(80, []).key).server(b.endpoint).counters.went_down == 1

        await b.start()
        back = time.monotonic()
        await rec.wait(lambda: rec.server(b.endpoint)[-1].in_pool)
        # rise = 2 successes: at least one interval, at most about two.
        assert 0.05 < rec.events[-1][0] - back < 2 * 0.1 + 0.2 + 0.3

        await a.stop()
        await b.stop()
        await rec.wait(lambda: any(
            isinstance(e, SorryEvent) and e.active for _, e in rec.events[-3:]
        ))
        assert mgr.service(vs(80, []).key).sorry_active
    finally:
        await mgr.stop()
        await a.stop()
        await b.stop()


async def test_identical_probes_across_services_run_once() -> None:
    a = await Backend().start()
    rec = Recorder()
    check = CheckConfig(type="tcp", interval=0.05, timeout=0.2, rise=1, fall=1)
    other = CheckConfig(type="tcp", interval=0.05, timeout=0.2, rise=4, fall=9)  # same probe
    slower = CheckConfig(type="tcp", interval=0.2, timeout=0.2)
    cfg = config(vs(80, [a], check=check), vs(81, [a], check=other))
    mgr = HealthManager(cfg, rec, jitter=0)
    try:
        assert mgr.probe_count == 1
        await mgr.start()
        await asyncio.sleep(0.52)
        # ~11 probes in 0.52 s at 0.05 s; two independent probes would give ~22.
        assert 6 <= a.accepts <= 15, a.accepts
        # Both services got the result.
        assert {e.service.port for _, e in rec.events if isinstance(e, ServerEvent) and e.in_pool}\
            == {80, 81}
        await mgr.apply_config(config(vs(80, [a], check=check), vs(81, [a], check=slower)))
        assert mgr.probe_count == 2
    finally:
        await mgr.stop()
        await a.stop()


async def test_apply_config_keeps_state_and_stops_removed_probes() -> None:
    a, b = await Backend().start(), await Backend().start()
    rec = Recorder()
    mgr = HealthManager(config(vs(80, [a])), rec, jitter=0)
    try:
        await mgr.start()
        await rec.wait(lambda: bool(rec.server(a.endpoint)) and rec.server(a.endpoint)[-1].in_pool)
        before = len(rec.server(a.endpoint))
        await mgr.apply_config(config(vs(80, [a, b])))
        # a keeps its state (no new event); b is published at once as out of the pool.
        assert len(rec.server(a.endpoint)) == before
        assert [e.in_pool for e in rec.server(b.endpoint)] == [False]
        await rec.wait(lambda: rec.server(b.endpoint)[-1].in_pool)
        await mgr.apply_config(config(vs(80, [b])))
        assert mgr.probe_count == 1
        seen = a.accepts
        await asyncio.sleep(0.3)
        assert a.accepts == seen  # a's probe was stopped
        snap = mgr.snapshot()
        json.dumps(snap)
        services = snap["services"]
        assert isinstance(services, list)
        servers = services[0]["servers"]
        assert list(servers) == [str(b.endpoint)]
        srv = servers[str(b.endpoint)]
        assert srv["healthy"] and srv["in_pool"] and srv["counters"]["checks"] >= 2
        assert srv["last_result"]["reason"] == "ok"
        probes = snap["probes"]
        assert isinstance(probes, list) and probes[0]["stale"] is False
    finally:
        await mgr.stop()
        await a.stop()
        await b.stop()


async def test_stop_ends_probing_and_bad_callback_does_not() -> None:
    a = await Backend().start()
    calls = 0

    def bad(event: HealthEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("consumer bug")

    check = CheckConfig(type="tcp", interval=0.05, timeout=0.2, rise=1, fall=1)
    mgr = HealthManager(config(vs(80, [a], check=check)), bad, jitter=0)
    try:
        await mgr.start()
        await asyncio.sleep(0.2)
        await a.stop()
        await asyncio.sleep(0.2)
        # The initial event, the up, then the down: the handler raised each time and the
        # checks went on.
        assert calls >= 3
        await a.start()
        await mgr.stop()
        seen = a.accepts
        await asyncio.sleep(0.2)
        assert a.accepts == seen and not mgr.running
    finally:
        await mgr.stop()
        await a.stop()


async def test_check_none_is_always_up_without_a_probe() -> None:
    rec = Recorder()
    ep = Endpoint(IPv4Address("198.19.0.11"), 80)
    cfg = Config(
        director=DirectorConfig(public_interface="lo", private_interface="lo"),
        virtual_servers=(
            VirtualServerConfig(
                address=Endpoint(VIP, 80),
                check=CheckConfig(type="none"),
                real_servers=(RealServerConfig(address=ep),),
            ),
        ),
    )
    mgr = HealthManager(cfg, rec)
    await mgr.start()
    await mgr.stop()
    assert mgr.probe_count == 0
    assert [(e.endpoint, e.in_pool) for _, e in rec.events if isinstance(e, ServerEvent)] == [
        (ep, True)
    ]


async def test_first_runs_are_spread_over_the_interval() -> None:
    backends = [await Backend().start() for _ in range(8)]
    firsts: dict[int, float] = {}
    check = CheckConfig(type="tcp", interval=0.5, timeout=0.2, rise=1, fall=1)

    def on_event(event: HealthEvent) -> None:
        if isinstance(event, ServerEvent) and event.healthy:
            firsts.setdefault(event.endpoint.port, time.monotonic())

    mgr = HealthManager(config(vs(80, backends, check=check)), on_event, jitter=1.0)
    started = time.monotonic()
    try:
        await mgr.start()
        rec = Recorder()
        await rec.wait(lambda: len(firsts) == len(backends), 3.0)
    finally:
        await mgr.stop()
        for b in backends:
            await b.stop()
    offsets = sorted(t - started for t in firsts.values())
    # All within the first interval, and not all at once (8 uniform draws in 0.5 s).
    assert offsets[-1] < 0.5 + 0.2, offsets
    assert offsets[-1] - offsets[0] > 0.1, offsets


async def test_a_bad_reload_changes_nothing() -> None:
    a = await Backend().start()
    mgr = HealthManager(config(vs(80, [a])), None, jitter=0)
    try:
        bad_check = CheckConfig(type="exec", command=None)
        bad = vs(81, [a], check=bad_check)
        with pytest.raises(ConfigError):
            await mgr.apply_config(config(vs(80, []), bad))
        assert [s["service"] for s in mgr.snapshot()["services"]] == [  # type: ignore[attr-defined]
            "tcp 198.18.0.100:80"
        ]
        assert mgr.service(vs(80, []).key).endpoints == [a.endpoint]
        assert mgr.probe_count == 1
    finally:
        await mgr.stop()
        await a.stop()


async def test_a_server_added_at_run_time_is_probed_at_once() -> None:
    # `pylvs ctl -a` on a checked service: the new server must not wait a random part of a
    # long interval (here 30 s) before its first probe.
    a, b = await Backend().start(), await Backend().start()
    rec = Recorder()
    check = CheckConfig(type="tcp", interval=30.0, timeout=0.5, rise=2, fall=2)
    mgr = HealthManager(config(vs(80, [a], check=check)), rec, jitter=1.0)
    try:
        await mgr.start()
        await mgr.apply_config(config(vs(80, [a, b], check=check)))
        took = await rec.wait(lambda: bool(rec.server(b.endpoint))
                              and rec.server(b.endpoint)[-1].in_pool, limit=2.0)
        assert took < 0.5
    finally:
        await mgr.stop()
        await a.stop()
        await b.stop()
