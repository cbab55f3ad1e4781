"""bench/network.py's parsers: wrk's text report and the RESULTS.md section rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import netbench_tools, results_md

WRK = """Running 2s test @ http://198.18.0.100/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   120.50us   50.10us   2.00ms   90.00%
    Req/Sec     7.50k   300.00     8.00k    70.00%
  Latency Distribution
     50%  110.00us
     75%  130.00us
     90%  150.00us
     99%    1.20ms
  15000 requests in 2.00s, 1.50MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:   7500.00
Transfer/sec:    750.00KB
"""


def test_parse_wrk_with_latency_errors_and_non_2xx() -> None:
    res = netbench_tools.parse_wrk(WRK)
    assert (res.requests, res.seconds, res.rps) == (15000, 2.0, 7500.0)
    assert res.errors == {"connect": 0, "read": 3, "write": 0, "timeout": 1}
    assert res.non_2xx == 2 and res.error_total == 6
    assert res.p50_ms == pytest.approx(0.11) and res.p99_ms == pytest.approx(1.2)


def test_parse_wrk_clean_run_and_garbage() -> None:
    clean = "\n".join(line for line in WRK.splitlines()
                      if not line.lstrip().startswith(("Socket", "Non-2xx", "50%", "99%")))
    res = netbench_tools.parse_wrk(clean)
    assert res.error_total == 0 and res.p50_ms is None
    with pytest.raises(ValueError):
        netbench_tools.parse_wrk("unable to connect to 198.18.0.100:80 Connection refused")


def test_section_is_replaced_in_place_and_others_kept(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## engine\nkeep me\n")
    monkeypatch.setattr(results_md, "RESULTS", str(path))
    first = f"{results_md.BEGIN}\n## network\nold\n{results_md.END}\n"
    results_md.write_section(first)
    path.write_text(path.read_text() + "\n## failover\nkeep me too\n")
    results_md.write_section(f"{results_md.BEGIN}\n## network\nnew\n{results_md.END}\n")
    text = path.read_text()
    assert "old" not in text and text.count("## network") == 1
    assert text.index("## engine") < text.index("new") < text.index("## failover")
    assert text.count("keep me") == 2
