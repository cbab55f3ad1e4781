"""The history sampler (issue 13): the same sample as the views give, from one C call, in
slices of the loop, and without building the status or listing the engine."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP

from pylvs import model
from pylvs.api import views
from pylvs.api.history import History
from pylvs.api.sampler import HistorySampler
from tests.support.mini_director import MiniDirector, base_config, service


def _site(tmp_path: Path) -> model.Config:
    checked = service("198.18.0.100:80", "198.19.0.11:80", "198.19.0.12:80", check="tcp")
    plain = service("198.18.0.100:81", "198.19.0.21:81", "198.19.0.22:81")
    quiet = dataclasses.replace(plain.real_servers[1], weight=0)  # quiesced
    plain = dataclasses.replace(plain, real_servers=(plain.real_servers[0], quiet))
    v6 = service("198.18.0.100:82", "198.19.0.31:82")
    return base_config(str(tmp_path / "s.sock"), (checked, plain, v6))


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("t", "services", "ha", "drops")}


async def test_the_sampler_records_what_the_views_record(tmp_path: Path) -> None:
    d = MiniDirector(_site(tmp_path))
    await d.start()
    try:
        # some traffic so the rates are not all zero (times ahead of the estimator's own)
        t0 = time.monotonic() + 1000.0
        d.engine.update_rates(t0)  # the estimator's first call only starts it
        for sport in range(30):
            syn = IP(src="198.18.0.50", dst="198.18.0.100") / TCP(sport=42000 + sport, dport=81,
                                                                  flags="S")
            assert d.engine.process(bytes(syn), now=t0) is not None
        d.engine.update_rates(t0 + 2.0)
        await asyncio.sleep(0.5)  # the tcp checks (nothing listens) gave their verdicts
        by_views, by_sampler = History(), History()
        sampler = HistorySampler(d, by_sampler)
        for i in range(3):
            at = 1000.0 + 2 * i
            by_views.record(at, views.services(d), views.engine_stats(d)["drops"], views.ha(d))
            await sampler.sample(at)
        assert _strip(by_sampler.as_json()) == _strip(by_views.as_json())
        doc = by_sampler.as_json()
        servers = doc["services"]["tcp/198.18.0.100:81"]["servers"]
        assert servers["198.19.0.22:81"]["states"][0][1] == "quiesced"
        assert max(servers["198.19.0.21:81"]["r"][0]) > 0  # all 30 went to the weighted one
        assert doc["services"]["tcp/198.18.0.100:81"]["r"][0][0] > 0
        checked = doc["services"]["tcp/198.18.0.100:80"]["servers"]["198.19.0.11:80"]
        key = d.config.virtual_servers[0].key
        healthy, reason = d.health_verdicts[(key, model.Endpoint.parse("198.19.0.11:80"))]
        assert checked["states"][-1][1:] == ["up" if healthy else "down", reason or None]
        # a server the engine no longer holds (health "remove"): zero rates, its verdict
        d.engine.remove_server(d._srv_keys[("tcp", model.Endpoint.parse("198.18.0.100:82"),
                                            model.Endpoint.parse("198.19.0.31:82"))])
        await sampler.sample(1010.0)
        gone = sampler.history.as_json(since=1009.0)["services"]["tcp/198.18.0.100:82"]
        assert gone["servers"]["198.19.0.31:82"]["r"][0] == [0]
    finally:
        await d.stop()


async def test_unchanged_rows_reuse_the_plan_and_record_what_the_views_record(
        tmp_path: Path) -> None:
    from pylvs.director import VerdictTable

    d = MiniDirector(_site(tmp_path))
    d.health_verdicts = VerdictTable()
    await d.start()
    try:
        by_views, by_sampler = History(), History()
        sampler = HistorySampler(d, by_sampler)
        key = d.config.virtual_servers[0].key
        checked = model.Endpoint.parse("198.19.0.11:80")
        plain = d._srv_keys[("tcp", model.Endpoint.parse("198.18.0.100:81"),
                             model.Endpoint.parse("198.19.0.21:81"))]

        async def both(at: float) -> None:
            by_views.record(at, views.services(d), views.engine_stats(d)["drops"], views.ha(d))
            await sampler.sample(at)

        d.health_verdicts[(key, checked)] = (True, "connected")
        t0 = time.monotonic() + 1000.0
        d.engine.update_rates(t0)
        await both(1000.0)
        for i in range(1, 3):  # nothing but the rates changed: the plan is reused
            for sport in range(40):
                syn = IP(src="198.18.0.50", dst="198.18.0.100") / TCP(
                    sport=43000 + 100 * i + sport, dport=81, flags="S")
                assert d.engine.process(bytes(syn), now=t0 + i) is not None
            d.engine.update_rates(t0 + 2.0 * i)
            await both(1000.0 + 2 * i)
        assert sampler.full_samples == 1
        d.health_verdicts[(key, checked)] = (False, "connection refused")  # a verdict
        await both(1006.0)
        d.engine.edit_server(plain, weight=0)  # a weight: quiesced
        await both(1008.0)
        await both(1010.0)
        assert sampler.full_samples == 3
        assert _strip(by_sampler.as_json()) == _strip(by_views.as_json())
        servers = by_sampler.as_json()["services"]["tcp/198.18.0.100:81"]["servers"]
        assert servers["198.19.0.21:81"]["states"][-1][1] == "quiesced"
        assert max(servers["198.19.0.21:81"]["r"][0]) > 0  # rates came by the fast path
    finally:
        await d.stop()


async def test_a_sample_never_lists_the_engine_nor_builds_the_status(tmp_path: Path) -> None:
    d = MiniDirector(_site(tmp_path))
    calls: list[str] = []

    def status() -> dict[str, Any]:
        calls.append("status")
        return {}

    def services() -> list[Any]:
        calls.append("services")
        return []

    d.status = status  # type: ignore[method-assign]
    d.engine.services = services  # type: ignore[method-assign]
    await HistorySampler(d, History()).sample(1000.0)
    assert calls == []


async def test_the_loop_lag_route_reads_that_section_alone(tmp_path: Path) -> None:
    import aiohttp

    from pylvs.api.server import ApiServer
    from pylvs.looplag import LoopLagMonitor

    monitor = LoopLagMonitor()
    monitor.histogram.observe(0.003)

    class LagDirector(MiniDirector):
        def status(self) -> dict[str, Any]:
            raise AssertionError("the whole status was built")

        def status_section(self, name: str) -> Any:
            return monitor.snapshot() if name == "loop_lag" else super().status_section(name)

    cfg = _site(tmp_path)
    d = LagDirector(cfg)
    server = ApiServer(d)
    await server.start()
    try:
        conn = aiohttp.UnixConnector(path=cfg.api.socket)
        async with (aiohttp.ClientSession(connector=conn) as session,
                    session.get("http://pylvs/api/v1/loop_lag") as resp):
            assert resp.status == 200
            doc = await resp.json()
        assert doc["count"] == 1 and doc["max_ever"] == 0.003
        assert doc["gc"]["full_passes"] >= 0
    finally:
        await server.stop()
