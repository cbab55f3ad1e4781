"""SYN-flood benchmark (issue 11): how each director copes with a spoofed SYN flood.

Run as root from the repository root, under the bench lock:
``flock /tmp/pylvs-bench.lock python3 -m bench.flood --record``.  Every contender gets a fresh
:class:`pylvs.testbed.topology.Topology`; the flooder (bench/flooder.c, built here with gcc)
sends SYNs from 198.18.128.0/17, which has no route back, so SYN-ACKs vanish as on the
internet.  For each contender and flood rate: real-client conn/s before and during the flood,
how many of 80 fresh addresses get an answer within 1 s during it, and the balancer's CPU and
memory.  Results: bench/RESULTS.md (flood section).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.netbench_tools import cpu_sample, run_wrk, start_haproxy_backends, start_haproxy_lb
from bench.network import _nft_setup, _proc_cpu_seconds
from pylvs.api.client import ApiClient
from pylvs.dataplane.tun import default_workers
from pylvs.testbed.serve import PylvsProcess, start_pylvs, vip_answers, wait_until
from pylvs.testbed.topology import ServiceSpec, Topology, TopologyError

HERE = Path(__file__).resolve().parent
FLOODER_SRC = HERE / "flooder.c"
FLOOD_NET = "198.18.128.0"  # spoofed sources: 198.18.128.0/17, no route back, SYN-ACKs vanish
FLOOD_PREFIX = 17


def build_flooder(out_dir: Path) -> Path:
    """Compile bench/flooder.c into ``out_dir``; returns the executable."""
    exe = out_dir / "flooder"
    subprocess.run(["gcc", "-O2", "-std=gnu11", "-Wall", "-Wextra", str(FLOODER_SRC), "-o",
                    str(exe)], check=True)
    return exe


def flooder_argv(exe: Path, vip: str, port: int, rate: int, count: int,
                 seconds: float) -> list[str]:
    """The flooder's command line: SYNs from 198.18.128.0/17 to vip:port."""
    return [str(exe), vip, str(port), FLOOD_NET, str(FLOOD_PREFIX), str(rate), str(count),
            str(seconds)]


# ---- the benchmark --------------------------------------------------------------------------

CONTENDERS = ("pylvs-off", "pylvs-kernel", "pylvs-evict", "pylvs-auto", "pylvs-auto-tun",
              "pylvs-synproxy", "pylvs-synproxy-tun", "nft", "nft-synproxy", "haproxy")
LB_CPU, LOAD_CPU = 1, 0  # as bench/network.py: the balancer on CPU1, wrk and the flooder on CPU0
MAX_CONNECTIONS = 100_000  # the issue's setup
FRESH = 80
WARM = 4.0  # seconds of flood before measuring: 100,000 slots fill in 3.3 s at 30k SYN/s
BEGIN, END = "<!-- flood:begin -->", "<!-- flood:end -->"
RESULTS = HERE / "RESULTS.md"

# pylvs's [defense] per contender: off = no defence at all (pylvs before issue 11); kernel =
# the three automatic defences of IPVS alone; evict = eviction alone (syncookies off); auto =
# every automatic defence: the three, eviction and syncookies = 1 (the default), its cookies
# answered in XDP while engaged (the default xdp_synproxy = "auto"); auto-tun = the same with
# xdp_synproxy = "off", the cookies answered by the engine through the TUN; synproxy = evict
# plus the SYN proxy on the service (VIP:80), its SYNs answered in XDP; synproxy-tun = the
# same with xdp_synproxy = "off"
_AUTO = "drop_entry = 1\ndrop_packet = 1\nsecure_tcp = 1\n"
DEFENSE = {
    "pylvs-off": "[defense]\nevict_embryonic = false\nsyncookies = 0\n",
    "pylvs-kernel": f"[defense]\n{_AUTO}evict_embryonic = false\nsyncookies = 0\n",
    "pylvs-evict": "[defense]\nevict_embryonic = true\nsyncookies = 0\n",
    "pylvs-auto": f"[defense]\n{_AUTO}evict_embryonic = true\nsyncookies = 1\n",
    "pylvs-auto-tun": f"[defense]\n{_AUTO}evict_embryonic = true\nsyncookies = 1\n",
    "pylvs-synproxy": "[defense]\nevict_embryonic = true\n",
    "pylvs-synproxy-tun": "[defense]\nevict_embryonic = true\n",
}


@dataclass
class Result:
    """One contender at one flood rate."""

    contender: str
    rate: int  # requested SYN/s, 0 = as fast as the flooder goes
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _nft_synproxy_setup(topo: Topology) -> None:
    """nftables DNAT behind the kernel's synproxy: SYNs to the VIP are not tracked and are
    answered with cookies in input; the validated connection is opened locally and DNATed."""
    d = topo.director.ns
    topo.run(d, ["ip", "addr", "add", f"{topo.vip}/32", "dev", "lo"])
    topo.run(d, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0",
                 "net.ipv4.tcp_syncookies=2", "net.ipv4.tcp_timestamps=1"])
    rs = ", ".join(f"{i} : {r.address}" for i, r in enumerate(topo.real_servers))
    n = len(topo.real_servers)
    vip = topo.vip
    proxy = "synproxy mss 1460 wscale 7 timestamp sack-perm"
    ruleset = textwrap.dedent(f"""\
        table ip bench {{
          chain raw {{
            type filter hook prerouting priority raw;
            ip daddr {vip} tcp dport 80 tcp flags syn notrack
          }}
          chain in {{
            type filter hook input priority filter;
            ip daddr {vip} tcp dport 80 ct state invalid,untracked {proxy}
            ip daddr {vip} tcp dport 80 ct state invalid drop
          }}
          chain pre {{
            type nat hook prerouting priority dstnat;
            ip daddr {vip} tcp dport 80 dnat to numgen inc mod {n} map {{ {rs} }}
          }}
          chain out {{
            type nat hook output priority -100;
            ip daddr {vip} tcp dport 80 dnat to numgen inc mod {n} map {{ {rs} }}
          }}
        }}
        """)
    topo.run(d, ["nft", "-f", "-"], input=ruleset)


def _setup(name: str, topo: Topology,
           workers: int | None) -> tuple[int | None, PylvsProcess | None]:
    """Configure the contender; return (the balancer's pid, the pylvs daemon)."""
    if name == "nft":
        _nft_setup(topo)
        return None, None
    if name == "nft-synproxy":
        _nft_synproxy_setup(topo)
        return None, None
    if name == "haproxy":
        topo.run(topo.director.ns, ["ip", "addr", "add", f"{topo.vip}/32", "dev", "lo"])
        return start_haproxy_lb(topo, LB_CPU).pid, None
    options: dict[str, str | int | bool] = {"max_connections": MAX_CONNECTIONS}
    if workers is not None:
        options["workers"] = workers
    if name.endswith("-tun"):
        options["xdp_synproxy"] = "off"
    spec = ServiceSpec(port=80, scheduler="rr", synproxy=name.startswith("pylvs-synproxy"))
    toml = topo.director_config([spec], director_options=options, extra=DEFENSE[name])
    # workers unset: the serve default, one packet thread per CPU (both CPUs here, unpinned);
    # one packet thread shares the LB CPU as the other balancers do
    pinned = workers is not None and workers <= 1
    prefix = ("taskset", "-c", str(LB_CPU)) if pinned else ()
    daemon = start_pylvs(topo, toml, argv_prefix=prefix)
    return daemon.proc.pid, daemon


FRESH_CLIENTS = textwrap.dedent("""
    import json, socket, sys, threading
    VIP, addrs = sys.argv[1], json.loads(sys.argv[2])
    ok = []
    def one(src):
        try:
            s = socket.socket()
            s.settimeout(1.0)
            s.bind((src, 0))
            s.connect((VIP, 80))
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            if s.recv(100).startswith(b"HTTP/1."):
                ok.append(src)
            s.close()
        except OSError:
            pass
    threads = [threading.Thread(target=one, args=(a,)) for a in addrs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(len(ok))
""")


def _fresh_clients(topo: Topology, addrs: list[str]) -> int:
    """Connect once from each address (1 s timeout, as ``curl -m 1``); how many answered."""
    res = topo.run(topo.client.ns, ["taskset", "-c", str(LOAD_CPU), sys.executable, "-c",
                                    FRESH_CLIENTS, topo.vip, json.dumps(addrs)], timeout=30)
    return int(res.stdout.strip().splitlines()[-1])


def _tun_drops(topo: Topology) -> int:
    """Packets the kernel dropped on their way into pylvs (the TUN's TX queue was full)."""
    res = topo.run(topo.director.ns, ["ip", "-s", "-j", "link", "show", "dev", "pylvs0"],
                   check=False)
    if res.returncode != 0:
        return -1
    return int(json.loads(res.stdout)[0]["stats64"]["tx"]["dropped"])


def _rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    total = 0
    # the daemon and its children (haproxy runs as one process)
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _start_perf(out_dir: str | None, tag: str,
                seconds: int) -> subprocess.Popen[bytes] | None:
    """With ``--perf DIR``: a system-wide call-graph profile of the flood's measured seconds
    (every process: the flooder, wrk, the balancer, the real servers, the kernel)."""
    if not out_dir:
        return None
    os.makedirs(out_dir, exist_ok=True)
    return subprocess.Popen(["perf", "record", "-q", "-a", "-g", "-F", "999", "-o",
                             os.path.join(out_dir, f"{tag}.data"), "--", "sleep",
                             str(seconds)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _finish_perf(proc: subprocess.Popen[bytes], out_dir: str, tag: str) -> None:
    """Wait for the profile and write two flat reports beside it: by command and symbol
    (self time), and the balancer's threads alone by symbol."""
    proc.wait(timeout=60)
    data = os.path.join(out_dir, f"{tag}.data")
    balancer = "python3," + ",".join(f"pylvs-w{i}" for i in range(8))  # the worker threads' names
    for suffix, extra in (("", []), ("-pylvs", ["--comms", balancer])):
        with open(os.path.join(out_dir, f"{tag}{suffix}.txt"), "w", encoding="utf-8") as fh:
            subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "-g",
                            "none", "--percent-limit", "0.5", "--sort", "comm,dso,sym", *extra],
                           stdout=fh, stderr=subprocess.DEVNULL, check=False, timeout=300)


def _measure(name: str, rate: int, args: argparse.Namespace, flooder: Path) -> Result:
    r = Result(name, rate)
    with Topology("fl", n_real_servers=3) as topo:
        start_haproxy_backends(topo)
        pid, daemon = _setup(name, topo, args.workers)
        wait_until(lambda: vip_answers(topo, 80), 10, "the VIP to answer")
        fresh = [f"198.18.0.{150 + i}" for i in range(FRESH)]
        for a in fresh:
            topo.run(topo.client.ns, ["ip", "addr", "add", f"{a}/24", "dev", "eth0"])
        url = f"http://{topo.vip}/"
        base = run_wrk(topo, url, connections=64, seconds=args.duration, close=True,
                       cpu=LOAD_CPU)
        r.metrics["base_cps"] = base.rps
        r.metrics["base_fresh"] = _fresh_clients(topo, fresh[:10]) * FRESH / 10
        seconds = WARM + args.duration + 6
        count = rate * int(seconds + 1) if rate else 50_000_000
        argv = ["taskset", "-c", str(LOAD_CPU),
                *flooder_argv(flooder, topo.vip, 80, rate, count, seconds)]
        flood = topo.popen(topo.client.ns, argv, stdout=subprocess.PIPE)
        time.sleep(WARM)
        perf = _start_perf(args.perf, f"{name}-{rate or 'max'}", args.duration)
        cpu0, lb0 = cpu_sample(), _proc_cpu_seconds(pid)
        during = run_wrk(topo, url, connections=64, seconds=args.duration, close=True,
                         cpu=LOAD_CPU)
        cpu1, lb1 = cpu_sample(), _proc_cpu_seconds(pid)
        if perf is not None:
            _finish_perf(perf, args.perf, f"{name}-{rate or 'max'}")
        r.metrics["flood_cps"] = during.rps
        r.metrics["ratio"] = during.rps / base.rps if base.rps else float("nan")
        r.metrics["fresh"] = _fresh_clients(topo, fresh)
        r.metrics["busy_cores"] = cpu0.busy_cores(cpu1, 2)
        if pid is not None:
            r.metrics["lb_cpu"] = (lb1 - lb0) / max(during.seconds, 1e-9)
        r.metrics["rss_mib"] = _rss_mib(pid)
        if daemon is not None:
            r.notes.append(f"TUN drops {_tun_drops(topo)}")
            sock = os.path.join(topo.workdir, f"{topo.director.name}.sock")
            api = ApiClient(sock)
            stats = api.request("GET", "/api/v1/stats")
            dfn = api.request("GET", "/api/v1/defense")
            r.metrics["entries"] = stats["connections"]
            r.metrics["evicted"] = dfn["entries_dropped"]["evict_embryonic"]
            r.metrics["table_full"] = stats["drops"].get("table_full", 0)
            r.notes.append("modes " + ",".join(f"{k}={v}" for k, v in dfn["mode"].items()))
            sc = dfn.get("syncookies") or {}
            if sc.get("mode"):
                r.notes.append(f"syncookies {'engaged' if sc.get('engaged') else 'idle'} "
                               f"(engaged {sc.get('times_engaged', 0)}x), cookie SYNs "
                               f"{sc.get('syns_engine', 0):,} engine + "
                               f"{sc.get('syns_xdp', 0):,} XDP, ACKs ok "
                               f"{sc.get('acks_accepted', 0):,}")
            xdp = api.request("GET", "/api/v1/status").get("xdp_synproxy") or {}
            if xdp.get("attached"):
                r.notes.append(f"XDP ({', '.join(xdp['attached'].values())}) SYN-ACKs "
                               f"{xdp['synproxy_xdp_syn']:,}, engine SYN-ACKs "
                               f"{stats['events'].get('synproxy_syn', 0):,}")
        else:
            res = topo.run(topo.director.ns, ["cat", "/proc/sys/net/netfilter/"
                                              "nf_conntrack_count"], check=False)
            if res.returncode == 0 and res.stdout.strip():
                r.metrics["entries"] = int(res.stdout.strip())
        out, _ = flood.communicate(timeout=seconds + 30)
        sent = json.loads(out.strip().splitlines()[-1])
        r.metrics["syn_rate"] = sent["sent"] / max(sent["seconds"], 1e-9)
        if during.error_total:
            r.notes.append(f"wrk errors {during.errors}")
        if daemon is not None:
            # the TUN queue drops show here, not as wrk errors
            daemon.stop()
            r.notes += [line.split("totals: ", 1)[-1].split(", batches")[0].replace(
                "partial csum", "csum") for line in daemon.log().splitlines() if "totals" in line]
    return r


def median_result(runs: list[Result]) -> Result:
    """One row from several rounds: each metric's median over the rounds that measured it;
    with more than one round the notes say the ratio's and fresh count's range, then the last
    round's own notes."""
    out = Result(runs[0].contender, runs[0].rate)
    keys = {k for r in runs for k in r.metrics}
    for k in sorted(keys):
        vals = [r.metrics[k] for r in runs if k in r.metrics and r.metrics[k] == r.metrics[k]]
        if vals:
            out.metrics[k] = statistics.median(vals)
    if len(runs) > 1:
        for k, spec in (("ratio", ".2f"), ("fresh", ".0f")):
            vals = [r.metrics[k] for r in runs if k in r.metrics]
            if vals:
                out.notes.append(f"{k} {min(vals):{spec}}..{max(vals):{spec}} over "
                                 f"{len(vals)} runs")
    out.notes += runs[-1].notes
    return out


def _fmt(v: float | None, spec: str) -> str:
    if v is None or v != v:
        return "n/a"
    return format(v, spec)


def render(results: list[Result], command: str, elapsed: float, workers: int | None,
           runs: int = 1) -> str:
    """The flood section of bench/RESULTS.md."""
    threads = (f"`workers = {workers}`" if workers is not None else
               f"`workers` unset (the serve default: one per CPU, {default_workers()} here, "
               "unpinned)")
    lines = [
        BEGIN,
        "## SYN flood (bench/flood.py, issue 11)",
        "",
        f"`{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{elapsed:.0f} s, kernel {os.uname().release}, {os.cpu_count()} CPUs).",
        "",
        "Seed topology (client, director, three HAProxy real servers). The flooder "
        "(bench/flooder.c) sends SYNs from random addresses of 198.18.128.0/17 out of the "
        "client namespace; the director has no route back, so SYN-ACKs vanish. conn/s: "
        "`wrk -t1 -c64` with `Connection: close`, before and during the flood (after "
        f"{WARM:.0f} s of flood). fresh: {FRESH} new client addresses connect once each with a "
        f"1 s timeout during the flood. pylvs runs with `max_connections = 100000` and "
        f"{threads}; `pylvs-auto` is every automatic defence: drop_entry, drop_packet and "
        "secure_tcp at 1, eviction, and `syncookies = 1` (the default: SYN cookies for every "
        "TCP service while a flood is detected, answered in XDP when attached), "
        "`pylvs-auto-tun` the same with `xdp_synproxy = \"off\"`; `pylvs-off`, "
        "`pylvs-kernel` and `pylvs-evict` have `syncookies = 0`; "
        "`pylvs-synproxy` is `pylvs-evict` with `synproxy = true` on the service, "
        "its SYNs answered in XDP on the public interface (`xdp_synproxy = \"auto\"`, the "
        "default), `pylvs-synproxy-tun` the same with `xdp_synproxy = \"off\"`. "
        "CPU: the balancer process (cores), busy: both cores of the machine; memory: the "
        "balancer's RSS; entries: pylvs table entries or conntrack entries at the end."
        + (f" Cells: median over {runs} rounds (the notes give the ratio's and fresh's "
           "range, then the last round's counters)." if runs > 1 else ""),
        "",
        "| contender | SYN/s sent | conn/s before | conn/s during | ratio | fresh | "
        "balancer CPU | busy cores | RSS MiB | entries | evicted | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.metrics
        lines.append(
            f"| {r.contender} | {_fmt(m.get('syn_rate'), ',.0f')} | "
            f"{_fmt(m.get('base_cps'), ',.0f')} | {_fmt(m.get('flood_cps'), ',.0f')} | "
            f"{_fmt(m.get('ratio'), '.2f')} | {_fmt(m.get('fresh'), '.0f')}/{FRESH} | "
            f"{_fmt(m.get('lb_cpu'), '.2f')} | {_fmt(m.get('busy_cores'), '.2f')} | "
            f"{_fmt(m.get('rss_mib'), '.0f')} | {_fmt(m.get('entries'), ',.0f')} | "
            f"{_fmt(m.get('evicted'), ',.0f')} | {'; '.join(r.notes)} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace the flood section of bench/RESULTS.md (or append it)."""
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m bench.flood [--contenders ...] [--rates 30000,0] [--record]`` (root)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--rates", default="30000,0",
                   help="SYN/s per run, comma-separated; 0 = as fast as the flooder goes")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--workers", type=int, default=None,
                   help="pylvs [director] workers (default: unset, the serve default of one "
                   "per CPU, unpinned; 0 or 1 pin pylvs to the balancer CPU)")
    p.add_argument("--runs", type=int, default=1,
                   help="rounds; each cell is the median over them (ratio and fresh also "
                   "show min..max)")
    p.add_argument("--perf", metavar="DIR", default=None,
                   help="profile the flood's measured seconds system-wide with perf into DIR")
    p.add_argument("--record", action="store_true", help="write the flood section of "
                   "bench/RESULTS.md")
    args = p.parse_args(argv)
    names = [n for n in args.contenders.split(",") if n]
    if set(names) - set(CONTENDERS):
        p.error(f"unknown contenders: {sorted(set(names) - set(CONTENDERS))}")
    rates = [int(x) for x in args.rates.split(",") if x]
    started = time.time()
    rounds: dict[tuple[str, int], list[Result]] = {(n, r): [] for r in rates for n in names}
    with tempfile.TemporaryDirectory(prefix="pylvs-flood-") as tmp:
        flooder = build_flooder(Path(tmp))
        for round_no in range(args.runs):
            for rate in rates:
                for name in names:
                    print(f"round {round_no + 1}: {name} at {rate or 'max'} SYN/s ...",
                          file=sys.stderr, flush=True)
                    try:
                        one = _measure(name, rate, args, flooder)
                    except (TopologyError, OSError, ValueError,
                            subprocess.SubprocessError) as exc:
                        one = Result(name, rate)
                        one.notes.append("failed: " + " ".join(str(exc).split())[:200])
                    rounds[(name, rate)].append(one)
                    print(f"  {one}", file=sys.stderr, flush=True)
    results = [median_result(runs) for runs in rounds.values()]
    command = "python3 -m bench.flood " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    text = render(results, command, time.time() - started, args.workers, args.runs)
    print(text)
    if args.record:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
