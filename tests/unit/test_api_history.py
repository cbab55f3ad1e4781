"""The status page's history: the ring buffer (sans-IO) and ``GET /api/v1/history`` live."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
from scapy.layers.inet import IP, TCP

from pylvs.api.history import SPAN, STEP, History, server_state
from tests.support.mini_director import ApiStarter, base_config, service

VIP = "198.18.0.100:80"


def _svc(health: str = "up", weight: int = 1, cps: int = 0, reason: str | None = None,
         in_engine: bool = True) -> dict[str, Any]:
    rs = {"address": "198.19.0.11:80", "health": health, "health_reason": reason,
          "in_engine": in_engine, "effective_weight": weight,
          "rates": {"cps": cps, "inpps": 2 * cps, "outpps": 2 * cps, "inbps": 100 * cps,
                    "outbps": 900 * cps}}
    return {"id": f"tcp/{VIP}", "rates": rs["rates"], "real_servers": [rs]}


HA = {"role": "ACTIVE", "peer": None}


def test_a_sample_holds_rates_state_reason_role_and_drop_rates() -> None:
    h = History()
    first = h.record(1000.0, [_svc(cps=5)], {"no_service": 10}, HA)
    assert first["drops"] == {}  # no previous count to take a rate from
    s = h.record(1002.0, [_svc("down", 0, 0, "connect: refused")],
                 {"no_service": 16, "table_full": 2},
                 {"role": "backup", "peer": {"role": "active", "alive": True}})
    srv = s["services"][f"tcp/{VIP}"]["servers"]["198.19.0.11:80"]
    assert srv == {"r": [0, 0, 0, 0, 0], "s": "down", "why": "connect: refused"}
    assert first["services"][f"tcp/{VIP}"]["r"] == [5, 10, 10, 500, 4500]
    assert s["drops"] == {"no_service": 3.0, "table_full": 1.0}
    assert s["ha"] == {"role": "BACKUP", "peer": {"state": "alive", "role": "ACTIVE"}}
    assert first["ha"]["peer"] == {"state": "none", "role": None}
    # a zeroing makes a counter go backwards: no negative rate
    assert h.record(1004.0, [], {"no_service": 0}, HA)["drops"] == {"no_service": 0.0}


def test_server_states() -> None:
    assert server_state({"health": "up", "in_engine": True, "effective_weight": 3}) == "up"
    assert server_state({"health": "up", "in_engine": True, "effective_weight": 0}) == "quiesced"
    assert server_state({"health": "down", "in_engine": True, "effective_weight": 0}) == "down"
    assert server_state({"health": "unknown", "in_engine": False}) == "unknown"
    assert server_state({"health": "sorry", "in_engine": True, "effective_weight": 1}) == "sorry"


def test_the_ring_keeps_fifteen_minutes_and_serves_what_is_newer() -> None:
    h = History()
    n = round(SPAN / STEP)
    assert n == 450
    for i in range(n + 10):
        h.record(i * STEP, [_svc()], {}, HA)
    assert len(h) == n
    times = [s["t"] for s in h.samples()]
    assert times[0] == 10 * STEP and times[-1] == (n + 9) * STEP
    assert [s["t"] for s in h.samples(since=(n + 7) * STEP)] == [(n + 8) * STEP,
                                                                    (n + 9) * STEP]
    doc = h.as_json(since=1e12)
    assert doc["samples"] == [] and doc["step"] == STEP
    assert doc["rate_keys"] == ["cps", "inpps", "outpps", "inbps", "outbps"]
    # the wall clock stepped back: start again rather than draw a zigzag timeline
    h.record(5.0, [], {}, HA)
    assert [s["t"] for s in h.samples()] == [5.0]


async def test_history_route_serves_real_engine_rates(tmp_path: Path,
                                                      running_api: ApiStarter) -> None:
    sock = str(tmp_path / "h.sock")
    director, server = await running_api(base_config(sock, (service(VIP, "198.19.0.11:80"),)))
    # the API registered its recorder on the director's 2 s estimator
    assert server._record in director.rate_listeners
    t0 = time.monotonic() + 1000.0  # ahead of the fixture's own estimator ticks
    for step in range(3):
        for sport in range(20):
            syn = IP(src="198.18.0.50", dst="198.18.0.100") / TCP(
                sport=41000 + step * 100 + sport, dport=80, flags="S")
            assert director.engine.process(bytes(syn), now=t0 + step * STEP) is not None
        director.engine.update_rates(t0 + (step + 1) * STEP)
        for listener in director.rate_listeners:
            listener(t0 + (step + 1) * STEP)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session:
        async with session.get("http://pylvs/api/v1/history") as resp:
            assert resp.status == 200
            doc = await resp.json()
        last = doc["samples"][-1]["t"]
        async with session.get(f"http://pylvs/api/v1/history?since={last}") as resp:
            assert (await resp.json())["samples"] == []
        async with session.get("http://pylvs/api/v1/history?since=soon") as resp:
            assert resp.status == 400
    assert len(doc["samples"]) >= 3
    cps = [s["services"][f"tcp/{VIP}"]["r"][0] for s in doc["samples"]]
    assert max(cps) > 0  # the estimator saw 10 new connections per second
    srv = doc["samples"][-1]["services"][f"tcp/{VIP}"]["servers"]["198.19.0.11:80"]
    assert srv["s"] == "up" and srv["r"][1] > 0
    await server.stop()
    assert server._record not in director.rate_listeners
