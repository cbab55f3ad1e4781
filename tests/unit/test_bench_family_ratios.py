"""bench/network.py's IPv4/IPv6 pairing: twins run back to back, ratios taken per round."""

from __future__ import annotations

import random

from bench.network import Measurement, _round_order, family_ratios


def test_each_ipv6_twin_runs_next_to_its_ipv4_contender() -> None:
    names = ["direct", "nft", "nft6", "pylvs", "pylvs6", "haproxy6"]
    for seed in range(20):
        order = _round_order(names, random.Random(seed))
        assert sorted(order) == sorted(names)
        for base in ("nft", "pylvs"):
            assert abs(order.index(base) - order.index(f"{base}6")) == 1, order


def test_ratios_are_per_round_medians() -> None:
    def m(name: str, rps: float) -> Measurement:
        return Measurement(name, {"close.c64.rps": rps, "keepalive.rps": 100.0})

    # round 2 is loaded for both: the per-round ratio stays 0.9, the medians' ratio would not
    results = {"pylvs": [m("pylvs", 1000), m("pylvs", 500), m("pylvs", 1000)],
               "pylvs6": [m("pylvs6", 900), m("pylvs6", 450), m("pylvs6", 900)],
               "nft": [m("nft", 10)]}
    [line] = family_ratios(results)
    assert line.startswith("* pylvs6 / pylvs, per-round ratio median (min..max) over 3 rounds:")
    assert "conn/s c64 0.90 (0.90..0.90)" in line and "req/s keep-alive 1.00" in line
