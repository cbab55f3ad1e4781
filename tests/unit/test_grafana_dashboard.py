"""examples/grafana-pylvs.json against a real ``/metrics`` scrape, so the dashboard cannot rot.

Every query of the dashboard (panel targets, template variables, annotations) must name metrics
that ``/metrics`` exports and, in its selectors, ``by (…)`` clauses and legends, labels those
metrics carry (or the ``instance``/``job`` labels Prometheus adds to every scraped sample).  And
every metric ``/metrics`` exports must appear in some panel: a new metric gets a panel too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP

from pylvs.dataplane.tun import TunStats
from pylvs.looplag import LagHistogram
from tests.support.mini_director import MiniDirector, base_config, service

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana-pylvs.json"
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped sample
_METRIC = re.compile(r"\b(pylvs_[A-Za-z0-9_]+)\b")
_SELECTOR = re.compile(r"\b(pylvs_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*(pylvs_\w+)[^,]*,\s*(\w+)\s*\)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class _DataplaneDirector(MiniDirector):
    """The unit-test director plus the dataplane and loop-lag sections a TUN director reports.

    A real TUN device needs root, so its counters come from a real ``TunStats`` snapshot: the
    same object ``Director.status()`` turns into this section.  The loop lag is a real
    ``LagHistogram`` snapshot, as ``Director.status()`` reports it.
    """

    def status(self) -> dict[str, Any]:
        out = super().status()
        stats = TunStats(reads=10, read_bytes=1000, writes=9, write_bytes=900, forwarded=9,
                         passed=0, replies=0, dropped=1, write_eagain=0, write_errors=0,
                         read_errors=0, short_reads=0, csum_partial=0, gso_packets=0,
                         batches=3, empty_wakeups=0, max_batch=4, batch_hist=(1, 1, 1) + (0,) * 9,
                         queue_dropped=0)
        out["dataplane"] = stats.as_dict()
        lag = LagHistogram()
        for seconds in (0.001, 0.004, 0.2):
            lag.observe(seconds)
        out["loop_lag"] = lag.snapshot()
        return out


async def _scrape(tmp_path: Path) -> dict[str, set[str]]:
    """``{sample name: label names}`` of a real /metrics response over the Unix socket."""
    from pylvs.api.server import ApiServer

    sock = str(tmp_path / "g.sock")
    director = _DataplaneDirector(base_config(sock, (service("198.18.0.100:80", "198.19.0.11:80",
                                                             "198.19.0.12:80"),)))
    await director.start()
    server = ApiServer(director)
    await server.start()
    try:
        syn = IP(src="198.18.0.50", dst="198.18.0.100") / TCP(sport=40000, dport=80, flags="S")
        assert director.engine.process(bytes(syn), now=1.0) is not None
        async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as http,
                    http.get("http://pylvs/metrics") as resp):
            assert resp.status == 200
            text = await resp.text()
    finally:
        await server.stop()
        await director.stop()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def _queries(dash: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(where, expr, legend)`` for every query in the dashboard."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            yield f"panel {p['title']!r} {t['refId']}", t["expr"], t.get("legendFormat", "")
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            yield f"variable {v['name']}", q, ""
    for a in dash.get("annotations", {}).get("list", []):
        if "expr" in a:
            yield f"annotation {a['name']!r}", a["expr"], a.get("textFormat", "")


def _problems(expr: str, legend: str, exported: dict[str, set[str]]) -> list[str]:
    bad: list[str] = []
    metrics = _METRIC.findall(expr)
    if not metrics:
        bad.append("names no pylvs metric")
    for m in metrics:
        if m not in exported:
            bad.append(f"{m} is not exported by /metrics")
    for m, body in _SELECTOR.findall(expr):
        for label in _MATCHER.findall(body):
            if label not in exported.get(m, set()) | TARGET_LABELS:
                bad.append(f"{m} has no label {label!r}")
    common = set.intersection(*(exported.get(m, set()) for m in metrics)) if metrics else set()
    for group in _GROUPING.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            if label not in common | TARGET_LABELS:
                bad.append(f"by ({label}): not a label of {sorted(set(metrics))}")
    for m, label in _LABEL_VALUES.findall(expr):
        if label not in exported.get(m, set()) | TARGET_LABELS:
            bad.append(f"label_values: {m} has no label {label!r}")
    for label in _LEGEND.findall(legend):
        if label not in common | TARGET_LABELS:
            bad.append(f"legend {{{{{label}}}}}: not a label of {sorted(set(metrics))}")
    return bad


async def test_every_dashboard_query_names_exported_metrics_and_labels(tmp_path: Path) -> None:
    exported = await _scrape(tmp_path)
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = list(_queries(dash))
    assert len(queries) > 30
    problems = [f"{where}: {p}" for where, expr, legend in queries
                for p in _problems(expr, legend, exported)]
    assert problems == []


async def test_every_exported_metric_has_a_panel(tmp_path: Path) -> None:
    exported = await _scrape(tmp_path)
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {m for _, expr, _ in _queries(dash) for m in _METRIC.findall(expr)}
    # a histogram is shown through its buckets; _sum and _count add nothing to a panel
    families = {n for n in exported if not n.endswith(("_sum", "_count"))}
    missing = sorted(families - used)
    assert missing == [], f"add a panel for these to {DASHBOARD.name}"


def test_the_checker_catches_a_wrong_name_or_label() -> None:
    exported = {"pylvs_backend_up": {"local_address", "remote_address"}}
    assert _problems('pylvs_backend_up{remote_address="x"}', "{{remote_address}}",
                     exported) == []
    assert _problems("pylvs_backend_down", "", exported) == [
        "pylvs_backend_down is not exported by /metrics"]
    assert _problems('pylvs_backend_up{server="x"}', "", exported) == [
        "pylvs_backend_up has no label 'server'"]
    assert _problems("sum by (reason) (pylvs_backend_up)", "{{reason}}", exported) == [
        "by (reason): not a label of ['pylvs_backend_up']",
        "legend {{reason}}: not a label of ['pylvs_backend_up']"]
    assert _problems("label_values(pylvs_backend_up, port)", "", exported) == [
        "label_values: pylvs_backend_up has no label 'port'"]
