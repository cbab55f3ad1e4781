"""Side-by-side network benchmark: direct path, nft DNAT, HAProxy (TCP, 1 thread) and pylvs.

``pylvs`` and ``pylvs-plain`` pump on the event loop (``workers = 0``, pinned to one CPU, as
before issue 14); ``pylvs-w1`` runs one C worker thread pinned to that CPU; ``pylvs-w2`` two
worker threads on every CPU, beside ``haproxy2`` (``nbthread 2``, unpinned);
``pylvs-w2-nice0`` is ``pylvs-w2`` with ``worker_nice = 0``: the workers not favoured over the
client and servers that share this machine's CPUs with them.  These rows run the TUN path
alone (``fastpath = "off"``); ``pylvs-w1-fast`` and ``pylvs-w2-fast`` are the same with the
established-flow fast path on (``fastpath = "on"``: established connections forwarded by the TC
program in the kernel, docs/performance.md "The fast path"); ``-nice0`` adds ``worker_nice = 0``
and ``-a8`` ``fastpath_after_packets = 8`` (short connections stay on the TUN).  The fast
path's forwarding runs in
the kernel's softirq, charged to whichever thread sent the packet, not to the pylvs process: its
"LB us/pkt" counts only what is left in pylvs (the handshakes, the folds).

The ``6`` contenders (``nft6``, ``haproxy6``, ``pylvs6``) run the same measurements over IPv6
(a dual-stack topology: the client to the IPv6 VIP, the balancer to the real servers' IPv6
addresses); a run with any of them is recorded in its own "IPv6" section.  A contender and its
IPv6 twin run back to back in every round (in a random order), and the section adds the
median of their per-round ratios: on a shared machine the load drifts between rounds, so the
IPv6/IPv4 ratio of one round is steadier than the ratio of two medians (``nft6``/``nft`` is the
kernel's own ratio, the control for ``pylvs6``/``pylvs``).

Run as root from the repository root: ``python3 -m bench.network`` (``--help`` for durations and
contenders).  Every contender gets a freshly built :class:`pylvs.testbed.topology.Topology` (client,
director, three real servers), so no state (conntrack entries, nft tables, local VIPs) leaks from
one into the next; see bench/README.md for the method and the pitfalls it guards against.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from bench.netbench_tools import (
    WrkResult,
    backend_sessions,
    cpu_sample,
    run_iperf,
    run_wrk,
    start_haproxy_backends,
    start_haproxy_lb,
)
from bench.plots import draw_or_explain
from bench.results_md import render_section, write_raw, write_section
from pylvs.testbed.serve import PylvsProcess, start_pylvs, vip_answers, wait_until
from pylvs.testbed.topology import ServiceSpec, Topology, TopologyError

__all__ = ["Measurement", "family_ratios", "kernel_ratios", "main"]

CONTENDERS = ("direct", "nft", "haproxy", "pylvs", "pylvs-plain", "pylvs-synproxy", "nft6",
              "haproxy6", "pylvs6", "haproxy2", "pylvs-w1", "pylvs-w2", "pylvs-w2-nice0",
              "pylvs-w1-fast", "pylvs-w2-fast", "pylvs-w2-fast-nice0", "pylvs-w2-fast-a8")
DEFAULT_CONTENDERS = CONTENDERS[:6]
LB_CPU, LOAD_CPU = 1, 0  # the balancer on CPU1, wrk/iperf3 on CPU0 (real servers float)


@dataclass
class Measurement:
    """Everything measured for one contender in one round."""

    contender: str
    metrics: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _nft_setup(topo: Topology, ipv6: bool = False) -> None:
    d = topo.director.ns
    vip = topo.vip6 if ipv6 and topo.vip6 else topo.vip
    family = "ip6" if ipv6 else "ip"
    _local_vip(topo, vip)
    addrs = [(r.address6 or "") if ipv6 else r.address for r in topo.real_servers]
    rs = ", ".join(f"{i} : {a}" for i, a in enumerate(addrs))
    n = len(topo.real_servers)
    ruleset = (
        f"table {family} bench {{\n  chain pre {{\n"
        "    type nat hook prerouting priority dstnat;\n"
        f"    {family} daddr {vip} tcp dport 80 dnat to numgen inc mod {n} map {{ {rs} }}\n"
        f"    {family} daddr {vip} tcp dport 5201 dnat to {addrs[0]}\n"
        "  }\n}\n"
    )
    topo.run(d, ["nft", "-f", "-"], input=ruleset)


def _local_vip(topo: Topology, vip: str) -> None:
    """The VIP as a local address of the director, for the kernel and HAProxy contenders.

    IPv4 on lo (ARP answers for any local address); IPv6 on the public interface, because
    neighbour discovery answers only for addresses of the interface a solicitation came in on.
    """
    if ":" in vip:
        topo.run(topo.director.ns, ["ip", "addr", "add", f"{vip}/128", "dev",
                                    topo.public_interface, "nodad"])
    else:
        topo.run(topo.director.ns, ["ip", "addr", "add", f"{vip}/32", "dev", "lo"])


def _pylvs_setup(topo: Topology, offload: bool, family: int = 4,
                 synproxy: bool = False, workers: int = 0,
                 worker_nice: int | None = None, fastpath: str = "off",
                 fastpath_after: int | None = None) -> PylvsProcess:
    services = [ServiceSpec(port=80, scheduler="rr", family=family, synproxy=synproxy),
                ServiceSpec(port=5201, scheduler="rr", servers=(0,), family=family)]
    options: dict[str, str | int | bool] = {"offload": offload, "workers": workers,
                                            "fastpath": fastpath}
    if worker_nice is not None:
        options["worker_nice"] = worker_nice
    if fastpath_after is not None:
        options["fastpath_after_packets"] = fastpath_after
    toml = topo.director_config(services, director_options=options)
    # One packet thread (the loop's or a worker) shares the LB CPU; two workers get both CPUs.
    prefix = ("taskset", "-c", str(LB_CPU)) if workers <= 1 else ()
    return start_pylvs(topo, toml, argv_prefix=prefix,
                       wait_tcp_port=80 if family == 4 else None)


def _setup(name: str, topo: Topology) -> tuple[str | None, int | None, PylvsProcess | None]:
    """Configure the contender; return (wrk and iperf3 target host, the LB's pid, pylvs)."""
    ipv6 = name.endswith("6")
    vip = topo.vip6 if ipv6 and topo.vip6 else topo.vip
    if name == "direct":
        return None, None, None
    if name in ("nft", "nft6"):
        _nft_setup(topo, ipv6)
        return vip, None, None
    if name in ("haproxy", "haproxy6", "haproxy2"):
        _local_vip(topo, vip)
        threads = 2 if name == "haproxy2" else 1
        lb = start_haproxy_lb(topo, LB_CPU if threads == 1 else None, ipv6, threads)
        return vip, lb.pid, None
    if name.startswith("pylvs-w"):
        count, _, variant = name[len("pylvs-w"):].partition("-")
        tokens = set(variant.split("-"))  # e.g. {"fast", "nice0"}, {"fast", "a8"}
        after = next((int(t[1:]) for t in tokens if t[:1] == "a" and t[1:].isdigit()), None)
        daemon = _pylvs_setup(topo, offload=True, workers=int(count),
                              worker_nice=0 if "nice0" in tokens else None,
                              fastpath="on" if "fast" in tokens else "off",
                              fastpath_after=after)
        return vip, daemon.proc.pid, daemon
    if name.startswith("pylvs"):
        # pylvs-synproxy: as pylvs (offloads on) with the SYN proxy on the HTTP service
        daemon = _pylvs_setup(topo, offload=name != "pylvs-plain", family=6 if ipv6 else 4,
                              synproxy=name == "pylvs-synproxy")
        return vip, daemon.proc.pid, daemon
    raise ValueError(name)


def _proc_cpu_split(pid: int | None) -> tuple[float, float]:
    """(user, kernel) CPU seconds of ``pid``, all its threads."""
    if pid is None:
        return 0.0, 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / 100.0, int(fields[12]) / 100.0  # utime, stime in clock ticks


def _proc_cpu_seconds(pid: int | None) -> float:
    return sum(_proc_cpu_split(pid))


def _director_rx_packets(topo: Topology) -> int:
    """Packets the director received on both sides: every packet that crossed it, once."""
    out = topo.run(topo.director.ns, ["ip", "-s", "-j", "link", "show"]).stdout
    return sum(int(link["stats64"]["rx"]["packets"]) for link in json.loads(out)
               if link["ifname"] in (topo.public_interface, topo.private_interface))


def _wrk_direct(topo: Topology, conns: int, seconds: int, close: bool) -> WrkResult:
    """The no-balancer baseline: one wrk per real server, the connections split evenly."""
    urls = [f"http://{rs.address}/" for rs in topo.real_servers]
    share = max(1, conns // len(urls))
    with ThreadPoolExecutor(len(urls)) as pool:
        parts = list(pool.map(lambda u: run_wrk(topo, u, connections=share, seconds=seconds,
                                                close=close, cpu=LOAD_CPU), urls))
    total = WrkResult(requests=sum(p.requests for p in parts), seconds=parts[0].seconds,
                      rps=sum(p.rps for p in parts), non_2xx=sum(p.non_2xx for p in parts))
    for p in parts:
        for k, v in p.errors.items():
            total.errors[k] = total.errors.get(k, 0) + v
    return total


def _measure(name: str, args: argparse.Namespace) -> Measurement:
    m = Measurement(name)
    with Topology("bn", n_real_servers=3, ipv6=name.endswith("6")) as topo:
        if args.veth_offloads == "off":
            topo.set_offloads(False)
        start_haproxy_backends(topo)
        for rs in topo.real_servers:
            topo.popen(rs.ns, ["iperf3", "-s", "-p", "5201"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
            topo.wait_listening(rs.ns, 5201)
        target, lb_pid, daemon = _setup(name, topo)
        if target is not None:
            wait_until(lambda: vip_answers(topo, 80, vip=target), 10, "the VIP to answer")
        host = target or topo.real_servers[0].address
        url = f"http://[{host}]/" if ":" in host else f"http://{host}/"
        bulk_host = target or topo.real_servers[0].address

        def wrk(conns: int, close: bool, seconds: int, latency: bool = False) -> WrkResult:
            if target is None and not latency:
                return _wrk_direct(topo, conns, seconds, close)
            return run_wrk(topo, url, connections=conns, seconds=seconds, close=close,
                           latency=latency, cpu=LOAD_CPU)

        def timed(key: str, fn: Callable[[], WrkResult]) -> WrkResult:
            cpu0, lb0, rx0 = cpu_sample(), _proc_cpu_seconds(lb_pid), _director_rx_packets(topo)
            user0 = _proc_cpu_split(lb_pid)[0]
            res = fn()
            cpu1, lb1, rx1 = cpu_sample(), _proc_cpu_seconds(lb_pid), _director_rx_packets(topo)
            user1 = _proc_cpu_split(lb_pid)[0]
            secs = max(res.seconds, 1e-9)
            m.metrics[f"{key}.busy_cores"] = cpu0.busy_cores(cpu1, 2)
            m.metrics[f"{key}.kpps"] = (rx1 - rx0) / secs / 1000
            if lb_pid is not None:
                m.metrics[f"{key}.lb_cpu"] = (lb1 - lb0) / secs
                if lb1 > lb0:  # where the balancer's CPU goes: user (engine, Python) vs kernel
                    m.metrics[f"{key}.lb_user_share"] = (user1 - user0) / (lb1 - lb0)
                if rx1 > rx0:
                    m.metrics[f"{key}.lb_us_per_pkt"] = 1e6 * (lb1 - lb0) / (rx1 - rx0)
            if res.error_total:
                m.errors.append(f"{key}: {res.error_total} errors {res.errors} "
                                f"non-2xx {res.non_2xx} of {res.requests}")
            return res

        if args.warmup:
            wrk(args.connections[0], True, args.warmup)
        for conns in args.connections:
            before = backend_sessions(topo)
            res = timed(f"close.c{conns}", partial(wrk, conns, True, args.duration))
            m.metrics[f"close.c{conns}.rps"] = res.rps
            got = {k: v - before[k] for k, v in backend_sessions(topo).items()}
            spread = max(got.values()) - min(got.values())
            m.metrics[f"close.c{conns}.spread"] = spread
            if target is not None and spread > max(2, 0.005 * statistics.mean(got.values())):
                m.errors.append(f"close.c{conns}: uneven round robin {got}")
        res = timed("keepalive", lambda: wrk(args.connections[-1], False, args.duration))
        m.metrics["keepalive.rps"] = res.rps
        for close, key in ((False, "lat.keepalive"), (True, "lat.close")):
            res = timed(key, partial(wrk, 1, close, args.duration, latency=True))
            m.metrics[f"{key}.p50_ms"] = res.p50_ms or float("nan")
            m.metrics[f"{key}.p99_ms"] = res.p99_ms or float("nan")
        for streams in args.streams:
            bulk = run_iperf(topo, bulk_host, streams=streams, seconds=args.bulk_duration,
                             cpu=LOAD_CPU)
            m.metrics[f"bulk.P{streams}.gbps"] = bulk.gbps
            m.metrics[f"bulk.P{streams}.retr"] = bulk.retransmits
        if daemon is not None:
            # Its drop counters: a TUN queue overflow shows here, not as a wrk error.
            daemon.stop()
            m.notes += [line.split(": ", 1)[-1] for line in daemon.log().splitlines()
                        if "totals" in line]
    return m


def _round_order(names: Sequence[str], rng: random.Random) -> list[str]:
    """The contenders of one round, shuffled, each IPv6 twin next to its IPv4 contender."""
    units: list[list[str]] = []
    for name in names:
        if name.endswith("6") and name[:-1] in names:
            continue  # goes with its IPv4 contender
        unit = [name, f"{name}6"] if f"{name}6" in names else [name]
        rng.shuffle(unit)
        units.append(unit)
    rng.shuffle(units)
    return [name for unit in units for name in unit]


_RATIO_KEYS = (("close.c64.rps", "conn/s c64"), ("keepalive.rps", "req/s keep-alive"),
               ("bulk.P1.gbps", "Gbit/s P1"), ("bulk.P4.gbps", "Gbit/s P4"),
               ("close.c64.lb_us_per_pkt", "LB us/pkt"))


def _ratio_cells(ms: Sequence[Measurement], ref: Sequence[Measurement]) -> list[str]:
    """Per-round ratios ``ms`` / ``ref`` (round i against round i), median (min..max)."""
    cells = []
    for key, label in _RATIO_KEYS:
        ratios = [b.metrics[key] / a.metrics[key] for a, b in zip(ref, ms, strict=False)
                  if a.metrics.get(key) and b.metrics.get(key)]
        if ratios:
            cells.append(f"{label} {statistics.median(ratios):.2f} "
                         f"({min(ratios):.2f}..{max(ratios):.2f})")
    return cells


def family_ratios(results: dict[str, list[Measurement]]) -> list[str]:
    """Markdown lines: for each contender measured with its IPv6 twin, the median (min..max)
    of the per-round IPv6/IPv4 ratios."""
    lines = []
    for name, ms in results.items():
        twin = results.get(f"{name}6")
        if not twin or not ms:
            continue
        cells = _ratio_cells(twin, ms)
        if cells:
            lines.append(f"* {name}6 / {name}, per-round ratio median (min..max) over "
                         f"{min(len(ms), len(twin))} rounds: " + ", ".join(cells) + ".")
    return lines


def kernel_ratios(results: dict[str, list[Measurement]], ref: str = "nft") -> list[str]:
    """Markdown lines: each contender against ``ref`` (nft DNAT) measured in the same round,
    median (min..max) of the per-round ratios: steadier than a ratio of medians when the
    machine's load drifts between rounds (issue 14's goals are such ratios)."""
    base = results.get(ref)
    if not base:
        return []
    lines = []
    for name, ms in results.items():
        cells = _ratio_cells(ms, base) if name != ref and ms else []
        if cells:
            lines.append(f"* {name} / {ref}, per-round ratio median (min..max) over "
                         f"{min(len(ms), len(base))} rounds: " + ", ".join(cells) + ".")
    return lines


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table; with ``--record`` update bench/RESULTS.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS),
                   help=f"comma-separated subset of {','.join(CONTENDERS)}")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--bulk-duration", type=int, default=5, help="seconds per iperf3 run")
    p.add_argument("--warmup", type=int, default=1, help="warm-up seconds before measuring")
    p.add_argument("--connections", type=_int_list, default=[64],
                   help="wrk -c values for the Connection: close runs, e.g. 16,64,256")
    p.add_argument("--streams", type=_int_list, default=[1, 4], help="iperf3 -P values")
    p.add_argument("--veth-offloads", choices=("on", "off"), default="on",
                   help="TSO/GSO/GRO on every veth (off: the levelled per-MSS comparison)")
    p.add_argument("--runs", type=int, default=1, help="rounds; contenders shuffled per round")
    p.add_argument("--record", action="store_true", help="write the network section of "
                   "bench/RESULTS.md")
    p.add_argument("--seed", type=int, default=None, help="seed for the contender order")
    args = p.parse_args(argv)
    names = [n for n in args.contenders.split(",") if n]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contenders: {sorted(unknown)}")
    rng = random.Random(args.seed)
    results: dict[str, list[Measurement]] = {n: [] for n in names}
    failures: dict[str, str] = {}
    started = time.time()
    try:
        for rnd in range(args.runs):
            for name in _round_order(names, rng):
                if name in failures:
                    continue
                print(f"[round {rnd + 1}/{args.runs}] {name} ...", file=sys.stderr, flush=True)
                try:
                    results[name].append(_measure(name, args))
                except (TopologyError, ValueError, OSError) as exc:
                    failures[name] = " ".join(str(exc).split())[:300]
                    print(f"  {name} failed: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; the namespaces of the running contender were removed",
              file=sys.stderr)
        return 130
    command = "python3 -m bench.network " + " ".join(shlex.quote(a) for a in
                                                     (argv if argv is not None else sys.argv[1:]))
    variant = "veth offloads off" if args.veth_offloads == "off" else ""
    if any(n.endswith("6") for n in names):
        variant = ", ".join(v for v in ("IPv6", variant) if v)
    text = render_section(command, results, failures, time.time() - started, variant,
                          extra=family_ratios(results) + kernel_ratios(results))
    print(text)
    if args.record:
        write_section(text, variant)
        write_raw(command, results, failures, variant)
        draw_or_explain()
    gates_ok = not failures and all(not m.errors for ms in results.values() for m in ms)
    return 0 if gates_ok else 1


if __name__ == "__main__":
    sys.exit(main())
