"""SVG charts of the benchmark results, embedded in bench/RESULTS.md next to their tables.

The charts are drawn from what the benchmarks record: the raw per-round numbers in
``bench/results/*.json`` when a benchmark wrote them (``bench.network --record``,
``bench.failover --record`` and ``bench.cluster --record`` do), else the tables already in
RESULTS.md, whose cells hold the median and the min..max over the rounds.  Either way a bar is
the median and its whisker the range from the smallest to the largest round: nothing is
averaged that the table does not show.

    python3 -m bench.plots          # (re)draw every chart and refresh the embeds in RESULTS.md

Needs matplotlib (``pip install -e .[bench]``).  Each chart's embed sits in its own marker block
right after the section it belongs to, so a benchmark re-recording its section keeps it.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.results_md import RESULTS, network_columns

__all__ = [
    "cluster_charts",
    "draw_all",
    "draw_or_explain",
    "failover_chart",
    "main",
    "network_charts",
    "parse_failover_table",
    "parse_network_table",
    "refresh_embeds",
]

HERE = Path(__file__).resolve().parent
CHARTS = HERE / "charts"
RAW = HERE / "results"

Range = tuple[float, float, float]  # median, min, max
"""One table cell: the median over the rounds and their min and max."""

_CELL = re.compile(r"^\s*([-\d.]+)(?:\s*\(([-\d.]+)\.\.([-\d.]+)\))?\s*$")


def _cell(text: str) -> Range | None:
    m = _CELL.match(text)
    if not m:
        return None  # "n/a", "-", a failure
    med = float(m.group(1))
    return (med, float(m.group(2) or med), float(m.group(3) or med))


def _section(text: str, tag: str) -> str | None:
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0]


def _table(section: str) -> list[list[str]]:
    """The first Markdown table of *section*, header row first (separator row dropped)."""
    rows: list[list[str]] = []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
        elif rows:
            break
    return rows


def parse_network_table(text: str, tag: str) -> dict[str, dict[str, Range]]:
    """``{contender: {column label: (median, min, max)}}`` from a network section's table."""
    section = _section(text, tag)
    if section is None:
        return {}
    rows = _table(section)
    if not rows:
        return {}
    head, out = rows[0], {}
    for row in rows[1:]:
        cells = {h: r for h, r in zip(head[1:], row[1:], strict=False) if _cell(r)}
        out[row[0]] = {h: c for h, v in cells.items() if (c := _cell(v)) is not None}
    return out


def network_from_raw(doc: Mapping[str, Any]) -> dict[str, dict[str, Range]]:
    """The same shape from ``bench/results/network*.json`` (every round's metrics)."""
    rounds: Mapping[str, Sequence[Mapping[str, float]]] = doc["results"]
    keys = sorted({k for ms in rounds.values() for m in ms for k in m})
    out: dict[str, dict[str, Range]] = {}
    for name, ms in rounds.items():
        row: dict[str, Range] = {}
        for key, label, _ in network_columns(keys):
            vals = [m[key] for m in ms if key in m and m[key] == m[key]]
            if vals:
                row[label] = (statistics.median(vals), min(vals), max(vals))
        if row:
            out[name] = row
    return out


def parse_failover_table(text: str) -> list[dict[str, Any]]:
    """Per interval: its kill -9 median, worst and best (ms) and dead time bounds."""
    section = _section(text, "failover")
    if section is None:
        return []
    rows = _table(section)
    out = []
    for row in rows[1:]:
        nums = [re.findall(r"[\d.]+", c) for c in row]
        out.append({"interval": float(nums[0][0]), "bound_ms": [float(x) for x in nums[1]],
                    "median_ms": float(nums[3][0]), "worst_ms": float(nums[4][0]),
                    "best_ms": float(nums[5][0])})
    return out


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "pylvs", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.fonttype": "none"})
    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})  # no date: reproducible files
    _plt().close(fig)
    return path


def _bars(ax: Any, names: Sequence[str], series: Sequence[tuple[str, Sequence[Range | None]]],
          ylabel: str) -> None:
    """Grouped bars (median) with min..max whiskers; a missing value leaves a gap."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        med = [v[0] if v else 0.0 for v in values]
        err = [[v[0] - v[1] if v else 0.0 for v in values],
               [v[2] - v[0] if v else 0.0 for v in values]]
        ax.bar(xs, med, width * 0.9, yerr=err, capsize=2, label=label)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def network_charts(data: Mapping[str, Mapping[str, Range]], stem: str,
                   out_dir: Path = CHARTS) -> list[Path]:
    """Throughput (conn/s, req/s, Gbit/s) and latency percentiles per contender."""
    if not data:
        return []
    plt = _plt()
    names = list(data)
    labels = {k for row in data.values() for k in row}

    def col(label: str) -> list[Range | None]:
        return [data[n].get(label) for n in names]

    conn = sorted(k for k in labels if k.startswith("conn/s "))
    gbit = sorted(k for k in labels if k.startswith("Gbit/s "))
    panels = [(f"new connections/s, {k.split(' ')[1]}, Connection: close", [("", col(k))],
               "conn/s") for k in conn]
    panels.append(("requests/s, keep-alive", [("", col("req/s keep-alive"))], "req/s"))
    if gbit:
        panels.append(("bulk TCP (iperf3)", [(k.split(" ")[1], col(k)) for k in gbit],
                       "Gbit/s"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.2), squeeze=False)
    for ax, (title, series, unit) in zip(axes[0], panels, strict=True):
        _bars(ax, names, series, unit)
        ax.set_title(title)
        if len(series) > 1:
            ax.legend(title="streams", fontsize=8)
    fig.suptitle("median of the rounds, whiskers min..max", fontsize=8, y=0.02, va="bottom")
    paths = [_save(fig, out_dir / f"{stem}-throughput.svg")]

    lat = [k for k in ("p50 ms c1 k-a", "p99 ms c1 k-a", "p50 ms c1 close", "p99 ms c1 close")
           if k in labels]
    if lat:
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
        _bars(ax, names, [(k.replace(" ms c1", ","), col(k)) for k in lat], "ms")
        ax.set_title("latency, one client (c1): percentiles per contender, min..max whiskers")
        ax.legend(fontsize=8, ncols=2)
        paths.append(_save(fig, out_dir / f"{stem}-latency.svg"))
    return paths


def _failover_axes(ax: Any, intervals: Sequence[float], title: str, note: str) -> None:
    ax.set_xticks(range(len(intervals)), [f"{i} s" for i in intervals])
    ax.set_xlabel("heartbeat interval")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.figure.text(0.01, 0.01, note, fontsize=6, color="grey")


def failover_chart(rows: Sequence[Mapping[str, Any]], out_dir: Path = CHARTS) -> list[Path]:
    """The failover table: per interval the median kill -9 time with best..worst."""
    if not rows:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    med = [r["median_ms"] for r in rows]
    err = [[r["median_ms"] - r["best_ms"] for r in rows],
           [r["worst_ms"] - r["median_ms"] for r in rows]]
    ax.errorbar(range(len(rows)), med, yerr=err, fmt="o", capsize=4,
                label="kill -9: median, best..worst")
    ax.hlines([r["bound_ms"][0] for r in rows], [j - 0.35 for j in range(len(rows))],
              [j + 0.35 for j in range(len(rows))], colors="grey", linestyles="dashed",
              label="dead time (prio 100)")
    _failover_axes(ax, [r["interval"] for r in rows],
                   "failover (from kill -9 to the first packet forwarded)",
                   "the table above (its per-run numbers were not kept)")
    return [_save(fig, out_dir / "failover.svg")]


def failover_runs_chart(raw: Mapping[str, Any] | None, out_dir: Path = CHARTS) -> list[Path]:
    """Every run of a ``bench.failover --record``: kill -9 times and SIGTERM silences."""
    if not raw:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for j, r in enumerate(raw["results"]):
        times = [t * 1000 for _, t in r["kill"]]
        xs = [j - 0.25 + 0.5 * k / max(1, len(times) - 1) for k in range(len(times))]
        ax.scatter(xs, times, s=12, color="C0", zorder=3,
                   label="kill -9, one dot per run (in run order)" if j == 0 else None)
        ax.hlines(r["bound"]["dir1"] * 1000, j - 0.35, j + 0.35, colors="grey",
                  linestyles="dashed", label="dead time (prio 100)" if j == 0 else None)
        terms = [t * 1000 for _, t in r["term"]]
        if terms:
            ax.scatter([j + 0.35] * len(terms), terms, marker="x", s=14, color="black",
                       zorder=3, label="SIGTERM: longest silence" if j == 0 else None)
    _failover_axes(ax, [r["interval"] for r in raw["results"]],
                   "failover per run (from kill -9 to the first packet forwarded)",
                   f"recorded {raw.get('recorded', '?')}: {raw.get('command', '')}")
    return [_save(fig, out_dir / "failover-runs.svg")]


def cluster_charts(raw: Mapping[str, Any] | None, stem: str,
                   out_dir: Path = CHARTS) -> list[Path]:
    """A ``bench.cluster --record``: every failure's reroute times (router and the real
    servers' return route), and conn/s with 1, 2, 3 directors with their CPU per packet."""
    if not raw:
        return []
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    runs = raw.get("runs") or []
    for k, mode in enumerate(dict.fromkeys(r["mode"] for r in runs)):
        rs = [r for r in runs if r["mode"] == mode]
        for j, (key, marker) in enumerate((("router_ms", "o"), ("return_ms", "x"))):
            xs = [k + (j - 0.5) * 0.4 + 0.3 * n / max(1, len(rs) - 1) - 0.15
                  for n in range(len(rs))]
            left.scatter(xs, [r[key] for r in rs], s=12, marker=marker, color=f"C{j}",
                         label=("router", "return route")[j] if k == 0 else None, zorder=3)
    modes = list(dict.fromkeys(r["mode"] for r in runs))
    left.set_xticks(range(len(modes)), modes)
    left.axhline(1000, color="grey", linestyle="dashed", linewidth=0.8, label="goal: < 1 s")
    left.set_ylabel("ms")
    left.set_ylim(bottom=0)
    left.grid(axis="y", alpha=0.3)
    left.legend(fontsize=8)
    left.set_title("reroute after a failure, one dot per run")
    scale = sorted(raw.get("scale") or [], key=lambda s: s["directors"])
    if scale:
        pos = list(range(len(scale)))
        right.bar(pos, [s["rps"] for s in scale], 0.6, color="C2")
        for x, s in zip(pos, scale, strict=True):
            us = [p["us_per_packet"] for p in s["per_director"]]
            right.annotate(f"{statistics.median(us):.1f} µs/pkt", (x, s["rps"]),
                           ha="center", va="bottom", fontsize=8)
        right.set_xticks(pos, [f"{s['directors']} director{'s' if s['directors'] > 1 else ''}"
                                    for s in scale])
        right.set_ylabel("conn/s")
        right.grid(axis="y", alpha=0.3)
        right.set_title("conn/s (CPU per packet per director)")
    fig.text(0.01, 0.01, f"recorded {raw.get('recorded', '?')}: {raw.get('command', '')}",
             fontsize=6, color="grey")
    return [_save(fig, out_dir / f"{stem}.svg")]


def refresh_embeds(text: str, tag: str, paths: Sequence[Path], results: Path) -> str:
    """*text* with the image embeds for section *tag* placed right after its end marker."""
    begin, end = f"<!-- {tag}-charts:begin -->", f"<!-- {tag}-charts:end -->"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head.rstrip("\n") + rest.split(end, 1)[1]
    if not paths:
        return text
    section_end = f"<!-- {tag}:end -->"
    if section_end not in text:
        return text
    rel = [os.path.relpath(p, results.parent) for p in paths]
    block = "\n".join([begin, "", *(f"![{Path(r).stem}]({r})" for r in rel), "", end])
    head, rest = text.split(section_end, 1)
    return f"{head}{section_end}\n\n{block}{rest}"


def _load(path: Path) -> Any:
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def draw_all(results: Path | None = None, charts: Path | None = None,
             raw: Path | None = None) -> list[Path]:
    """Draw every chart the recorded data allows and refresh the embeds in *results*.

    Defaults: bench/RESULTS.md, bench/charts/ and bench/results/.
    """
    results = results or Path(RESULTS)
    charts = charts or CHARTS
    raw = raw or RAW
    text = results.read_text(encoding="utf-8")
    drawn: list[Path] = []
    for tag in re.findall(r"<!-- (network[\w-]*):begin -->", text):
        if tag.endswith("-charts"):
            continue
        doc = _load(raw / f"{tag}.json")
        data = network_from_raw(doc) if doc else parse_network_table(text, tag)
        paths = network_charts(data, tag, charts)
        text = refresh_embeds(text, tag, paths, results)
        drawn += paths
    for tag in re.findall(r"<!-- (cluster[\w-]*):begin -->", text):
        if tag.endswith("-charts"):
            continue
        paths = cluster_charts(_load(raw / f"{tag}.json"), tag, charts)
        text = refresh_embeds(text, tag, paths, results)
        drawn += paths
    paths = failover_chart(parse_failover_table(text), charts)
    runs = failover_runs_chart(_load(raw / "failover.json"), charts)
    # The per-run chart goes with the section that tells about that run, when there is one.
    if "<!-- failover-runs:begin -->" in text:
        text = refresh_embeds(text, "failover-runs", runs, results)
        drawn += runs
    else:
        paths += runs
    text = refresh_embeds(text, "failover", paths, results)
    drawn += paths
    results.write_text(text, encoding="utf-8")
    return drawn


def draw_or_explain() -> None:
    """Redraw after a benchmark recorded its numbers; without matplotlib say how to get it."""
    try:
        for path in draw_all():
            print(f"chart: {path.relative_to(HERE.parent)}", file=sys.stderr)
    except ImportError as exc:
        print(f"charts not drawn ({exc}): pip install -e '.[bench]'", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw the charts; print what was written."""
    del argv
    for path in draw_all():
        print(path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
