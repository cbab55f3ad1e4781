"""Scheduler picks per second: every IPVS scheduler in C against the Python reference model.

For each scheduler and 3, 100 and 1000 real servers (weights cycling 1..5) it measures

* **C loop**: picks made by a C loop inside ``_schedtest.c`` (``lvs_st_bench``), so no
  Python or cffi overhead is counted; keys vary per pick (source address and port, and the
  destination address over 256 values for lblc/lblcr);
* **C via cffi**: one ``lib.lvs_st_schedule`` call per pick from a Python loop;
* **Python model**: ``tests/support/sched_model.py``, one ``Service.schedule`` per pick.

No connection is bound, so the least-connection schedulers see constant counters: this is the
cost of one decision, not of a traffic mix.  Rates are picks per second of wall-clock time and,
because the benchmark machine is shared, also per CPU second of this process
(``time.process_time``).  Run from the repository root::

    python -m bench.sched              # print the table
    python -m bench.sched --record     # ... and rewrite the schedulers section of RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pylvs._core import lib
from tests.support.sched_harness import CSched
from tests.support.sched_model import MODELS, Key, Service

__all__ = ["Row", "main", "measure"]

SIZES = (3, 100, 1000)
STATELESS = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "dh", "sh", "mh")
GOAL = 5_000_000  # picks/s with 3 servers, stateless schedulers, C loop
BEGIN, END = "<!-- schedulers:begin -->", "<!-- schedulers:end -->"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Row:
    """One scheduler at one server count."""

    name: str
    servers: int
    c_wall: float
    c_cpu: float
    cffi_wall: float
    model_wall: float


def _timed(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn(n)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn(n)
    return time.perf_counter() - w0, time.process_time() - c0


def _rate(fn: Callable[[int], object], budget: float) -> tuple[float, float]:
    """Grow n until one run takes about `budget` seconds; return (picks/wall s, picks/CPU s)."""
    n = 1000
    while True:
        wall, cpu = _timed(fn, n)
        if wall >= budget or n >= 1 << 30:
            return n / wall, n / max(cpu, 1e-9)
        n = int(n * min(max(budget / max(wall, 1e-6), 2.0), 50.0))


def _servers(n: int) -> list[tuple[int, int]]:
    return [(0xC6130000 + 11 + i, 1 + i % 5) for i in range(n)]


def measure(name: str, servers: int, budget: float) -> Row:
    """Measure one scheduler with `servers` real servers."""
    c = CSched("wlc", mh_table_size=0)
    m = Service("wlc")
    for addr, weight in _servers(servers):
        c.add(addr, 80, weight)
        m.add(addr, 80, weight)
    # build table schedulers once, from the full list (as a scheduler change does)
    c.set_scheduler(name)
    m.set_scheduler(name)

    c_wall, c_cpu = _rate(lambda n: c.bench(n), budget)

    t = c._t
    schedule = lib.lvs_st_schedule

    def via_cffi(n: int) -> None:
        for i in range(n):
            schedule(
                t,
                0xC6000000 + (i * 2654435761 & 0xFFFFFF),
                0xC6120000 + (i & 0xFF),
                1024 + (i & 0x7FFF),
                80,
                6,
                0.0,
            )

    cffi_wall, _ = _rate(via_cffi, budget)

    keys = [
        Key(0xC6000000 + (i * 2654435761 & 0xFFFFFF), 0xC6120000 + (i & 0xFF), 1024 + i, 80)
        for i in range(4096)
    ]

    def via_model(n: int) -> None:
        for i in range(n):
            m.schedule(keys[i & 4095], 0.0)

    model_wall, _ = _rate(via_model, budget)
    return Row(name, servers, c_wall, c_cpu, cffi_wall, model_wall)


def mh_rebuild_ms(servers: int, size: int, edits: int = 20) -> float:
    """Milliseconds of one mh table rebuild (an upd_dest) with `servers` servers."""
    c = CSched("wlc", mh_table_size=size)  # the size waits in the service's parameters
    ids = [c.add(addr, 80, w) for addr, w in _servers(servers)]
    c.set_scheduler("mh")
    t0 = time.process_time()
    for i in range(edits):
        c.edit(ids[i % len(ids)], 1 + (i % 7))
    return (time.process_time() - t0) / edits * 1e3


def _fmt(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def render(
    rows: list[Row], command: str, elapsed: float, rebuild: dict[tuple[int, int], float]
) -> str:
    """The schedulers section of RESULTS.md."""
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    out = [
        BEGIN,
        "## schedulers (bench/sched.py)",
        "",
        f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, whole run "
        f"{elapsed:.0f} s, on {os.cpu_count()} shared CPUs ({platform.machine()}, load average "
        f"{load} at the end: other developers' suites were running, so wall-clock rates "
        'undercount; "C loop /CPU s" divides by this process\'s CPU time). Command (from the '
        "repository root):",
        "",
        f"    {command}",
        "",
        "Picks per second; servers weighted 1..5; keys vary per pick; no connection is bound "
        "(one decision's cost). \"C loop\": a C loop in `_schedtest.c` calling the scheduler's "
        '`schedule` callback; "C via cffi": one `lvs_st_schedule` call per pick from Python; '
        '"Python model": `tests/support/sched_model.py`.',
        "",
        "| scheduler | servers | C loop /wall s | C loop /CPU s | C via cffi | Python model | "
        "C loop / model |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.name} | {r.servers} | {_fmt(r.c_wall)} | {_fmt(r.c_cpu)} | "
            f"{_fmt(r.cffi_wall)} | {_fmt(r.model_wall)} | {r.c_wall / r.model_wall:,.0f}x |"
        )
    three = [r for r in rows if r.servers == 3 and r.name in STATELESS]
    worst = min(three, key=lambda r: r.c_cpu) if three else None
    if worst is not None:
        ok = "met" if worst.c_cpu >= GOAL else "NOT met"
        out += [
            "",
            f"Goal >= 5 M picks/s with 3 servers for the stateless schedulers: {ok} per CPU "
            f"second (slowest: {worst.name}, {_fmt(worst.c_cpu)}/CPU s, "
            f"{_fmt(worst.c_wall)}/wall s).",
        ]
    out += [
        "Growth with the server count: lc, wlc, sed, fo, ovf and twos scan every server per "
        "pick (a few ns a server: a pointer chase through the kernel-style linked list), so "
        "they slow down linearly; rr, wrr and nq stop at the first fit (nq returns the first "
        "idle server, and no connection is bound here); dh, sh and mh look up a table and stay "
        "flat (mh's cost is its SipHash); lblc and lblcr hit their cache, flat while the "
        "cached server is not above its weight.",
        "",
        "mh table rebuild (every add, edit or removal of a server; CPU ms, in C on the event "
        "loop's thread): "
        + "; ".join(f"{n} servers, M = {m}: {ms:.2f} ms" for (n, m), ms in rebuild.items())
        + ".",
        END,
    ]
    return "\n".join(out) + "\n"


def write_section(text: str) -> None:
    """Replace (or append) our section, re-reading RESULTS.md right before writing."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + text.rstrip("\n") + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new)


def main(argv: list[str] | None = None) -> int:
    """Run every scheduler at every size; print, and record with --record."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=0.2, help="seconds per measurement")
    ap.add_argument("--schedulers", default=",".join(MODELS), help="comma-separated subset")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--record", action="store_true", help="rewrite our RESULTS.md section")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    for name in args.schedulers.split(","):
        for n in map(int, args.sizes.split(",")):
            row = measure(name, n, args.budget)
            rows.append(row)
            print(
                f"{name:6} {n:5} servers: C loop {_fmt(row.c_wall):>9}/s "
                f"({_fmt(row.c_cpu):>9}/CPU s), cffi {_fmt(row.cffi_wall):>9}/s, "
                f"model {_fmt(row.model_wall):>9}/s",
                flush=True,
            )
    rebuild = {(n, m): mh_rebuild_ms(n, m) for n in (100, 1000) for m in (4093, 131071)}
    command = "python -m bench.sched" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    text = render(rows, command, time.perf_counter() - t0, rebuild)
    print(text)
    if args.record:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
