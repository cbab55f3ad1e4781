"""bench/plots.py: the charts read back exactly what the tables say, and embeds survive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import plots, results_md
from bench.network import Measurement

ROUNDS = {
    "pylvs": [{"close.c64.rps": 9000.0, "keepalive.rps": 40000.0, "bulk.P1.gbps": 11.0,
               "lat.keepalive.p50_ms": 0.13, "lat.keepalive.p99_ms": 0.3,
               "lat.close.p50_ms": 0.12, "lat.close.p99_ms": 0.33},
              {"close.c64.rps": 10000.0, "keepalive.rps": 48000.0, "bulk.P1.gbps": 12.5,
               "lat.keepalive.p50_ms": 0.14, "lat.keepalive.p99_ms": 0.5,
               "lat.close.p50_ms": 0.13, "lat.close.p99_ms": 0.31},
              {"close.c64.rps": 10200.0, "keepalive.rps": 47000.0, "bulk.P1.gbps": 12.0,
               "lat.keepalive.p50_ms": 0.135, "lat.keepalive.p99_ms": 0.4,
               "lat.close.p50_ms": 0.125, "lat.close.p99_ms": 0.32}],
    "haproxy": [{"close.c64.rps": 6100.0, "keepalive.rps": 41000.0, "bulk.P1.gbps": 7.0,
                 "lat.keepalive.p50_ms": 0.13, "lat.keepalive.p99_ms": 0.26,
                 "lat.close.p50_ms": 0.31, "lat.close.p99_ms": 0.55}],
}


def _section(variant: str = "") -> str:
    results = {n: [Measurement(n, metrics=dict(m)) for m in ms] for n, ms in ROUNDS.items()}
    return results_md.render_section("python3 -m bench.network --runs 3", results,
                                     {"nft": "no nft here"}, 10.0, variant)


def test_the_table_and_the_raw_rounds_give_the_same_numbers() -> None:
    text = _section()
    from_table = plots.parse_network_table(text, "network")
    from_raw = plots.network_from_raw({"results": ROUNDS})
    assert set(from_table) == {"pylvs", "haproxy"}  # the failed contender has no numbers
    assert from_table["pylvs"]["conn/s c64 (close)"] == (10000.0, 9000.0, 10200.0)
    assert from_table["haproxy"]["req/s keep-alive"] == (41000.0, 41000.0, 41000.0)
    for name, row in from_raw.items():
        for label, (med, lo, hi) in row.items():
            t = from_table[name][label]
            assert t == pytest.approx((med, lo, hi), rel=1e-3, abs=1e-3), (name, label)


def test_failover_table_parse() -> None:
    text = ("<!-- failover:begin -->\n| interval | dead time (prio 100 / 90) | kill -9 runs | "
            "median | worst | best | lost | term | flaps | near |\n|---|---|---|---|---|---|---"
            "|---|---|---|\n| 0.1 s | 361 / 365 ms | 20 | 367 ms | 446 ms | 306 ms | 344 | "
            "26 / 34 ms | 0 | 0 |\n\nmore text\n<!-- failover:end -->\n")
    assert plots.parse_failover_table(text) == [
        {"interval": 0.1, "bound_ms": [361.0, 365.0], "median_ms": 367.0, "worst_ms": 446.0,
         "best_ms": 306.0}]


def test_embeds_follow_their_section_and_are_replaced_not_repeated(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    text = ("# Benchmark results\n\n" + _section()
            + "\n<!-- engine:begin -->\nx\n<!-- engine:end -->\n")
    chart = tmp_path / "charts" / "network-throughput.svg"
    once = plots.refresh_embeds(text, "network", [chart], results)
    twice = plots.refresh_embeds(once, "network", [chart], results)
    assert once == twice
    assert once.count("![network-throughput](charts/network-throughput.svg)") == 1
    assert once.index("<!-- network:end -->") < once.index("network-charts:begin") < once.index(
        "<!-- engine:begin -->")
    # the benchmark re-records its section: the embed block is kept
    results.write_text(once)
    assert "network-charts:begin" in results.read_text()


def test_draw_all_writes_svgs_and_embeds(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n" + _section() + "\n" + _section(
        "veth offloads off"))
    raw = tmp_path / "results"
    raw.mkdir()
    (raw / "failover.json").write_text(json.dumps({
        "command": "python3 -m bench.failover --runs 2", "recorded": "today",
        "results": [{"interval": 0.1, "kill": [["dir1", 0.31], ["dir2", 0.35]],
                     "term": [["dir1", 0.02]], "lost": [300, 340],
                     "bound": {"dir1": 0.361, "dir2": 0.365}}]}))
    drawn = plots.draw_all(results, tmp_path / "charts", raw)
    names = sorted(p.name for p in drawn)
    assert names == ["failover-runs.svg", "network-latency.svg", "network-throughput.svg",
                     "network-veth-offloads-off-latency.svg",
                     "network-veth-offloads-off-throughput.svg"]
    svg = (tmp_path / "charts" / "network-throughput.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "haproxy" in svg and "pylvs" in svg
    text = results.read_text()
    assert "![failover-runs](charts/failover-runs.svg)" not in text  # no failover section
    assert "![network-veth-offloads-off-latency](charts/network-veth-offloads-off-latency.svg)" \
        in text
