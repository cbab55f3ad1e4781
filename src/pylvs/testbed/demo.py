"""``pylvs demo``: the two-tier LVS-NAT topology in network namespaces, shown working.

As root it builds a client, one director and three real servers (aiohttp servers that answer
with their name), dual-stack, prints the director's TOML, starts ``pylvs serve`` with it inside
the director namespace, sends requests from the client to the VIP (HTTP and UDP) and to the IPv6
VIP (HTTP), prints how the director spread them and its statistics, and removes everything it
made — also on error or Ctrl-C.  The exit status is
0 only if every request got an answer from a real server.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

from pylvs.model import SCHEDULERS
from pylvs.testbed.serve import PylvsProcess, start_pylvs
from pylvs.testbed.topology import ServiceSpec, Topology, TopologyError, child_env

__all__ = ["main"]

# The help text, without the docstring's reST markup.
_DESCRIPTION = (
    "Build the two-tier LVS-NAT topology in network namespaces and show it working: a client, "
    "one director (pylvs serve) and three real servers; requests go to the VIP and the "
    "director's spread and statistics are printed. Needs root; everything made is removed "
    "afterwards. Exit status 0 only if every request got an answer from a real server."
)

# Runs in the client namespace: one fresh TCP connection per request (so the scheduler decides
# every time), one UDP datagram per request to the UDP service, and one TCP connection per
# request to the IPv6 VIP; prints a JSON summary.
_CLIENT = r"""
import json, socket, sys
vip, n, vip6 = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tcp, udp, tcp6, errors = [], [], [], []
def get(address, into, what, i):
    try:
        with socket.create_connection((address, 80), timeout=3) as s:
            s.settimeout(3)
            s.sendall(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
            raise ValueError("bad reply %r" % head[:40])
        into.append(body.decode().strip())
    except Exception as exc:
        errors.append("%s #%d: %s" % (what, i + 1, exc))
for i in range(n):
    get(vip, tcp, "tcp", i)
    get(vip6, tcp6, "tcp6", i)
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(2)
        u.sendto(b"who?", (vip, 53))
        udp.append(u.recv(100).decode().strip())
        u.close()
    except Exception as exc:
        errors.append("udp #%d: %s" % (i + 1, exc))
print(json.dumps({"tcp": tcp, "udp": udp, "tcp6": tcp6, "errors": errors}))
"""


def _bar(count: int, total: int, width: int = 30) -> str:
    return "#" * round(width * count / total) if total else ""


def _print_spread(title: str, names: Sequence[str], servers: Sequence[str]) -> None:
    counts = Counter(names)
    print(f"\n{title}: {len(names)} answered")
    for rs in servers:
        print(f"  {rs:<4} {counts.get(rs, 0):>4}  {_bar(counts.get(rs, 0), len(names))}")
    strangers = sorted(set(counts) - set(servers))
    if strangers:
        print(f"  unexpected answers: {strangers}")


def _show_stats(socket_path: str) -> None:
    argv = [sys.executable, "-m", "pylvs", "ctl", "-L", "-n", "--stats", "--socket", socket_path]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=15, env=child_env())
    print("\n$ pylvs ctl -L -n --stats")
    print(res.stdout.rstrip() if res.returncode == 0 else
          f"(pylvs ctl failed with status {res.returncode}: {res.stderr.strip()})")


def _run(args: argparse.Namespace) -> int:
    with Topology("demo", n_real_servers=3, ipv6=True) as topo:
        assert topo.vip6 is not None
        print(f"Namespaces: {', '.join(topo.namespaces)}", flush=True)
        print(f"client {topo.client.address} -> VIP {topo.vip} -> director eth0 "
              f"{topo.director.address} / eth1 {topo.nat_router} -> real servers "
              + ", ".join(f"{rs.name} {rs.address}" for rs in topo.real_servers))
        print(f"IPv6: client {topo.client.address6} -> VIP {topo.vip6} -> real servers "
              + ", ".join(f"{rs.name} {rs.address6}" for rs in topo.real_servers))
        topo.start_http_servers()
        services = [ServiceSpec(port=80, scheduler=args.scheduler),
                    ServiceSpec(port=53, protocol="udp", scheduler=args.scheduler),
                    ServiceSpec(port=80, scheduler=args.scheduler, family=6)]
        toml = topo.director_config(services)
        print(f"\nDirector configuration ({topo.director.ns}):\n")
        print(toml)
        daemon: PylvsProcess = start_pylvs(topo, toml, timeout=args.timeout)
        try:
            res = topo.run(topo.client.ns, [sys.executable, "-c", _CLIENT, topo.vip,
                                            str(args.requests), topo.vip6],
                           timeout=30 + 9 * args.requests)
            report = json.loads(res.stdout)
            names = [rs.name for rs in topo.real_servers]
            _print_spread(f"HTTP through {topo.vip}:80 ({args.scheduler})", report["tcp"], names)
            _print_spread(f"UDP through {topo.vip}:53 ({args.scheduler})", report["udp"], names)
            _print_spread(f"HTTP through [{topo.vip6}]:80 ({args.scheduler})", report["tcp6"],
                          names)
            for err in report["errors"][:10]:
                print(f"  error: {err}")
            sock = os.path.join(topo.workdir, f"{topo.director.name}.sock")
            _show_stats(sock)
        finally:
            status = daemon.stop()
            if args.verbose or status not in (0, -15):
                print(f"\n--- pylvs serve output (exit status {status}) ---\n{daemon.log()}")
        totals = [line.split(": ", 1)[-1] for line in daemon.log().splitlines()
                  if "totals" in line]
        if totals:
            print("\npylvs serve, on exit: " + "\n".join(totals))
        failed = len(report["errors"]) + sum(
            1 for n in [*report["tcp"], *report["udp"], *report["tcp6"]] if n not in names)
        print(f"\n{3 * args.requests - failed}/{3 * args.requests} requests answered; "
              "removing the namespaces.")
    return 0 if failed == 0 else 1


def main(argv: Sequence[str]) -> int:
    """Entry point of ``pylvs demo``; returns the exit status."""
    p = argparse.ArgumentParser(prog="pylvs demo", description=_DESCRIPTION)
    p.add_argument("-n", "--requests", type=int, default=30,
                   help="requests per service (HTTP, UDP, HTTP over IPv6), 1..1000 (default 30)")
    p.add_argument("-s", "--scheduler", default="rr", choices=SCHEDULERS,
                   help="scheduler of the demo services (default rr)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for the director to answer (default 20)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the daemon's log")
    args = p.parse_args(list(argv))
    if not 1 <= args.requests <= 1000:
        p.error("--requests must be 1..1000")
    if os.geteuid() != 0:
        print("pylvs demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything the demo made has been removed", file=sys.stderr)
        return 130
    except (TopologyError, subprocess.TimeoutExpired, ValueError) as exc:
        print(f"pylvs demo: {exc}", file=sys.stderr)
        return 1
