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


SID, SRV = f"tcp/{VIP}", "198.19.0.11:80"


def test_samples_hold_rates_states_reasons_roles_and_drop_rates() -> None:
    h = History()
    h.record(1000.0, [_svc(cps=5)], {"no_service": 10}, HA)
    h.record(1002.0, [_svc("down", 0, 0, "connect: refused")],
             {"no_service": 16, "table_full": 2},
             {"role": "backup", "peer": {"role": "active", "alive": True}})
    # a zeroing makes a counter go backwards: no negative rate
    h.record(1004.0, [_svc("down", 0, 0, "connect: refused")], {"no_service": 0}, HA)
    doc = h.as_json()
    assert doc["t"] == [1000.0, 1002.0, 1004.0]
    svc = doc["services"][SID]
    assert [col[0] for col in svc["r"]] == [5, 10, 10, 500, 4500]
    srv = svc["servers"][SRV]
    assert srv["r"][0] == [5, 0, 0]
    assert srv["states"] == [[1000.0, "up", None], [1002.0, "down", "connect: refused"]]
    # no previous count to take a rate from at the first sample: -1, "not known"
    assert doc["drops"] == {"no_service": [-1.0, 3.0, 0.0], "table_full": [-1.0, 1.0, -1.0]}
    assert doc["ha"] == [[1000.0, "ACTIVE", "none", None], [1002.0, "BACKUP", "alive", "ACTIVE"],
                         [1004.0, "ACTIVE", "none", None]]
    # only what is newer: the state in force is repeated at the first time returned
    newer = h.as_json(since=1002.0)
    assert newer["t"] == [1004.0]
    assert newer["services"][SID]["servers"][SRV]["states"] == [
        [1004.0, "down", "connect: refused"]]
    assert newer["ha"] == [[1004.0, "ACTIVE", "none", None]]


def test_a_server_that_comes_and_goes_has_gaps() -> None:
    h = History()
    two = _svc()
    two["real_servers"] = [*two["real_servers"], {**two["real_servers"][0],
                                                  "address": "198.19.0.12:80"}]
    for i, svcs in enumerate(([_svc(cps=1)], [two], [_svc(cps=1)])):
        h.record(10.0 + 2 * i, svcs, {}, HA)
    servers = h.as_json()["services"][SID]["servers"]
    assert servers["198.19.0.12:80"]["r"][0] == [-1, 0, -1]
    assert servers[SRV]["r"][0] == [1, 0, 1]


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
        h.record(i * STEP, [_svc(cps=i)], {}, HA)
    assert len(h) == n
    doc = h.as_json()
    assert doc["t"][0] == 10 * STEP and doc["t"][-1] == (n + 9) * STEP and len(doc["t"]) == n
    assert doc["services"][SID]["r"][0] == list(range(10, n + 10))  # in time order
    assert h.as_json(since=(n + 7) * STEP)["t"] == [(n + 8) * STEP, (n + 9) * STEP]
    empty = h.as_json(since=1e12)
    assert empty["t"] == [] and empty["services"] == {} and empty["step"] == STEP
    assert empty["rate_keys"] == ["cps", "inpps", "outpps", "inbps", "outbps"]
    # the wall clock stepped back: start again rather than draw a zigzag timeline
    h.record(5.0, [], {}, HA)
    assert h.as_json()["t"] == [5.0]


def test_a_large_configuration_stays_small_and_quick() -> None:
    import time as clock
    import tracemalloc

    services = []
    for i in range(50):
        svc = _svc(cps=1000 + i)
        svc["id"] = f"tcp/198.18.0.{i}:80"
        svc["real_servers"] = [{**svc["real_servers"][0], "address": f"198.19.{i}.{j}:80"}
                               for j in range(20)]
        services.append(svc)
    tracemalloc.start()
    h = History()
    for i in range(3):  # every ring is allocated whole on first sight: this is the full size
        h.record(1000.0 + 2 * i, services, {"no_service": i}, HA)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < 30e6  # 1000 servers x 5 rates x 450 samples of 8 bytes is 18 MB
    for i in range(3, 450):
        h.record(1000.0 + 2 * i, services, {"no_service": i}, HA)
    start = clock.perf_counter()
    doc = h.as_json()
    took = clock.perf_counter() - start
    assert len(doc["services"]) == 50 and len(doc["t"]) == 450
    assert took < 1.0, took  # it runs on the event loop


async def test_history_route_serves_real_engine_rates(tmp_path: Path,
                                                      running_api: ApiStarter) -> None:
    sock = str(tmp_path / "h.sock")
    director, server = await running_api(base_config(sock, (service(VIP, "198.19.0.11:80"),)))
    # the API registered its recorder on the director's 2 s estimator
    assert server.sampler.on_rates in director.rate_listeners
    t0 = time.monotonic() + 1000.0  # ahead of the fixture's own estimator ticks
    for step in range(3):
        for sport in range(20):
            syn = IP(src="198.18.0.50", dst="198.18.0.100") / TCP(
                sport=41000 + step * 100 + sport, dport=80, flags="S")
            assert director.engine.process(bytes(syn), now=t0 + step * STEP) is not None
        director.engine.update_rates(t0 + (step + 1) * STEP)
        # what the listener starts, awaited (wall-clock times after the fixture's samples)
        await server.sampler.sample(time.time() + 1000.0 + step * STEP)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session:
        async with session.get("http://pylvs/api/v1/history") as resp:
            assert resp.status == 200
            doc = await resp.json()
        last = doc["t"][-1]
        async with session.get(f"http://pylvs/api/v1/history?since={last}") as resp:
            assert (await resp.json())["t"] == []
        async with session.get("http://pylvs/api/v1/history?since=soon") as resp:
            assert resp.status == 400
    assert len(doc["t"]) >= 3
    cps = doc["services"][f"tcp/{VIP}"]["r"][0]
    assert max(cps) > 0  # the estimator saw 10 new connections per second
    srv = doc["services"][f"tcp/{VIP}"]["servers"]["198.19.0.11:80"]
    assert srv["states"][-1][1] == "up" and srv["r"][1][-1] > 0
    await server.stop()
    assert server.sampler.on_rates not in director.rate_listeners


def test_idle_servers_have_no_column_yet_and_read_the_same() -> None:
    """Random runs of absent, idle (all-zero) and busy samples and of state changes, put one
    by one and in bulk, across ring wraps: the served columns and state changes are what an
    eager record of every sample says (idle columns made late, states pruned when due)."""
    from array import array
    from random import Random

    rng = Random(13)
    keys = [("tcp/a", None), ("tcp/a", "s1"), ("tcp/a", "s2"), ("tcp/b", "s3")]
    h = History(step=2.0, span=20.0)  # 10 samples held
    truth: list[dict[tuple[str, str | None], list[int] | None]] = []
    states: dict[tuple[str, str | None], list[tuple[int, str]]] = {k: [] for k in keys}
    for n in range(60):
        h.begin(1000.0 + 2 * n)
        sample: dict[tuple[str, str | None], list[int] | None] = {}
        bulk_keys, bulk = [], array("q")
        for key in keys:
            roll = rng.random()
            rates = None if roll < 0.15 else [0] * 5 if roll < 0.7 else [
                rng.randrange(1, 9) for _ in range(5)]
            sample[key] = rates
            if rates is None:
                continue
            if rng.random() < 0.5:
                state = None if key[1] is None else rng.choice(("up", "up", "down"))
                h.put(key[0], key[1], rates, None if state is None else (state, None))
                if state is not None and (not states[key] or states[key][-1][1] != state):
                    states[key].append((n, state))
            else:
                bulk_keys.append(key)
                bulk.extend(rates)
        h.put_rates(bulk_keys, bulk, 0, 5)
        h.end({}, HA)
        truth.append(sample)
        for since in (None, 1000.0 + 2 * n - 7):
            doc = h.as_json(since)
            times = doc["t"]
            held = [truth[round((t - 1000.0) / 2)] for t in times]
            for key in keys:
                want = [[-1 if s[key] is None else s[key][k] for s in held] for k in range(5)]
                svc = doc["services"].get(key[0], {"servers": {}})
                got = svc.get("r") if key[1] is None else svc["servers"].get(key[1], {}).get("r")
                if all(v == -1 for v in want[0]):
                    assert got is None, (n, key)
                    continue
                assert got == want, (n, since, key)
                if key[1] is not None:
                    first = round((times[0] - 1000.0) / 2)
                    in_force = [c for c in states[key] if c[0] <= first][-1:]
                    want_states = [[1000.0 + 2 * max(i, first), st, None]
                                   for i, st in in_force + [c for c in states[key]
                                                            if c[0] > first]]
                    assert svc["servers"][key[1]]["states"] == want_states, (n, since, key)
    # pruned as due: nothing older than the change in force at the window's first sample
    first_held = 60 - len(h)
    for key in keys[1:]:
        held = [c for c in states[key] if c[0] > first_held]
        assert len(h._states[key].at) <= 1 + len(held), key
