"""bench/network.py's ratios: IPv6 twins run back to back, ratios taken per round, and every
contender against nft of the same round."""

from __future__ import annotations

import random

from bench.network import Measurement, _round_order, family_ratios, kernel_ratios


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


def test_ratios_to_nft_pair_each_round() -> None:
    def m(name: str, rps: float, us: float | None = None) -> Measurement:
        metrics = {"close.c64.rps": rps}
        if us is not None:
            metrics["close.c64.lb_us_per_pkt"] = us
        return Measurement(name, metrics)

    results = {"nft": [m("nft", 10000), m("nft", 5000), m("nft", 8000)],
               "pylvs-w2": [m("pylvs-w2", 8000, 12), m("pylvs-w2", 4500, 12),
                            m("pylvs-w2", 6000, 12)],
               "haproxy2": []}
    [line] = kernel_ratios(results)  # nothing for nft itself, nor for a contender that failed
    assert line == ("* pylvs-w2 / nft, per-round ratio median (min..max) over 3 rounds: "
                    "conn/s c64 0.80 (0.75..0.90).")  # no LB us/pkt: nft has no process
    assert kernel_ratios({"pylvs": [m("pylvs", 1)]}) == []
