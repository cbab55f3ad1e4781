"""Markdown for bench/network.py: the results table and the network section of RESULTS.md.

Other benchmarks own other sections of bench/RESULTS.md; this module only replaces the text
between its own markers (or appends them), re-reading the file right before writing.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

__all__ = ["name_failed", "network_columns", "raw_path", "render_section", "write_marked",
           "write_raw", "write_section", "write_tagged"]

BEGIN, END = "<!-- network:begin -->", "<!-- network:end -->"


def _markers(variant: str) -> tuple[str, str]:
    if not variant:
        return BEGIN, END
    tag = "network-" + "-".join(variant.split())
    return f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


class _Measurement(Protocol):
    contender: str
    metrics: dict[str, float]
    errors: list[str]
    notes: list[str]


def _cell(values: Sequence[float], fmt: str) -> str:
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return "n/a"
    med = format(statistics.median(vals), fmt)
    if len(vals) == 1:
        return med
    return f"{med} ({format(min(vals), fmt)}..{format(max(vals), fmt)})"


def _tool_versions() -> str:
    def first_line(argv: list[str]) -> str:
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        except OSError:
            return "?"
        return (res.stdout or res.stderr).strip().splitlines()[0]

    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return "; ".join([
        f"kernel {platform.release()}", f"{os.cpu_count()} CPUs", f"load average {load} at the end",
        first_line(["haproxy", "-v"]).split(" - ")[0],
        first_line(["wrk", "-v"]).split(" Copyright")[0],
        first_line(["iperf3", "-v"]).split(" (")[0],
        first_line(["nft", "--version"]),
    ])


def network_columns(keys: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(metric key, column label, format)`` of the table's measured columns for *keys*."""
    close_keys = sorted((k for k in keys if k.startswith("close.") and k.endswith(".rps")),
                        key=lambda k: int(k.split(".")[1][1:]))
    bulk_keys = sorted(k for k in keys if k.startswith("bulk.") and k.endswith(".gbps"))
    cols = [(k, f"conn/s {k.split('.')[1]} (close)", ".0f") for k in close_keys]
    cols.append(("keepalive.rps", "req/s keep-alive", ".0f"))
    cols += [(k, f"Gbit/s {k.split('.')[1]}", ".2f") for k in bulk_keys]
    cols += [("lat.keepalive.p50_ms", "p50 ms c1 k-a", ".3f"),
             ("lat.keepalive.p99_ms", "p99 ms c1 k-a", ".3f"),
             ("lat.close.p50_ms", "p50 ms c1 close", ".3f"),
             ("lat.close.p99_ms", "p99 ms c1 close", ".3f")]
    if close_keys:
        first = close_keys[0].rsplit(".", 1)[0]
        cols += [(f"{first}.spread", f"rr spread ({first})", ".0f"),
                 (f"{first}.kpps", f"kpps via director ({first})", ".1f"),
                 (f"{first}.lb_cpu", f"LB cores ({first})", ".2f"),
                 (f"{first}.lb_us_per_pkt", f"LB us/pkt ({first})", ".2f"),
                 (f"{first}.busy_cores", f"busy cores ({first})", ".2f")]
    return cols


def render_section(command: str, results: Mapping[str, Sequence[_Measurement]],
                   failures: Mapping[str, str], elapsed: float, variant: str = "",
                   extra: Sequence[str] = ()) -> str:
    """The network section: command, environment, one table row per contender, gate notes;
    ``extra`` lines (e.g. the IPv6/IPv4 ratios) follow the table."""
    keys = sorted({k for ms in results.values() for m in ms for k in m.metrics})
    cols = network_columns(keys)
    begin, end = _markers(variant)
    title = "## network (bench/network.py)" + (f", {variant}" if variant else "")
    lines = [begin, title, "",
             f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"whole run {elapsed:.0f} s. Command (as root, from the repository root):", "",
             f"    {command}", "", f"Environment: {_tool_versions()}.", "",
             "| contender | " + " | ".join(c[1] for c in cols) + " | gates |",
             "|---|" + "---|" * (len(cols) + 1)]
    for name, ms in results.items():
        if name in failures or not ms:
            why = failures.get(name, "no result")
            lines.append(f"| {name} | " + " | ".join("-" for _ in cols) + f" | FAILED: {why} |")
            continue
        cells = [_cell([m.metrics.get(k, float("nan")) for m in ms], fmt) for k, _, fmt in cols]
        errs = [e for m in ms for e in m.errors]
        gate = "ok" if not errs else "FAIL: " + "; ".join(errs)[:300]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {gate} |")
    direct = results.get("direct", ())
    lines.append("")
    if extra:
        lines += [*extra, ""]
    for key, label in (("lat.keepalive.p50_ms", "keep-alive"), ("lat.close.p50_ms", "close")):
        base = [m.metrics.get(key, float("nan")) for m in direct]
        if not base or name_failed(failures, "direct"):
            break
        ref = statistics.median(base)
        added = [f"{n} {1000 * (statistics.median([m.metrics[key] for m in ms]) - ref):+.0f} us"
                 for n, ms in results.items() if n != "direct" and ms and n not in failures]
        lines.append(f"* Added p50 latency vs direct, c1 {label}: " + ", ".join(added) + ".")
    notes = [f"{name} round {i + 1}: {note}" for name, ms in results.items()
             for i, m in enumerate(ms) for note in m.notes]
    if notes:
        lines += ["", "Director-side counters at exit:", ""] + [f"* {n}" for n in notes]
    lines += ["", "Cells: median (min..max) over the rounds. \"LB cores\": CPU time of the "
              "balancer process per wall second (n/a for the kernel paths, whose work is "
              "softirq); \"kpps via director\": packets the director received on eth0 and "
              "eth1 per second; \"LB us/pkt\": balancer process CPU per such packet; "
              "\"busy cores\": all CPUs from /proc/stat (of 2); \"rr spread\": "
              "most minus fewest connections a real server accepted in that run (by "
              "construction for direct). Everything shares 2 cores with the client and the "
              "three real servers, and with whatever else runs on the machine.", end]
    return "\n".join(lines) + "\n"


def name_failed(failures: Mapping[str, str], name: str) -> bool:
    """True if contender ``name`` failed to run."""
    return name in failures


def raw_path(variant: str = "") -> str:
    """Where the raw per-round numbers of a network section are kept (plotted by bench.plots)."""
    tag = _markers(variant)[0].removeprefix("<!-- ").removesuffix(":begin -->")
    return os.path.join(os.path.dirname(RESULTS), "results", f"{tag}.json")


def write_raw(command: str, results: Mapping[str, Sequence[_Measurement]],
              failures: Mapping[str, str], variant: str = "") -> str:
    """Keep every round's metrics next to the table (the table shows median and range only)."""
    path = raw_path(variant)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    doc = {"command": command, "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "results": {name: [m.metrics for m in ms] for name, ms in results.items()},
           "failures": dict(failures)}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return path


def write_section(text: str, variant: str = "") -> None:
    """Replace the network section of bench/RESULTS.md (or append it)."""
    write_marked(text, *_markers(variant))


def write_tagged(text: str, tag: str) -> None:
    """Replace the section between ``<!-- tag:begin -->`` and ``<!-- tag:end -->`` (which
    ``text`` holds too) of bench/RESULTS.md, or append it."""
    write_marked(text, f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->")


def write_marked(text: str, begin: str, end: str) -> None:
    """Replace what lies between the markers ``begin`` and ``end`` (``text`` holds them too) in
    bench/RESULTS.md, re-read right before writing, or append ``text``."""
    old = ""
    if os.path.exists(RESULTS):
        with open(RESULTS, encoding="utf-8") as fh:
            old = fh.read()
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "# Benchmark results\n\n") + text
    with open(RESULTS, "w", encoding="utf-8") as fh:
        fh.write(new)
