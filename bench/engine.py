"""Engine throughput: the C batch path against a pure-Python loop doing the same NAT rewrite.

Measures, in one run:
* new connections/s: batches of distinct TCP SYNs to a VIP (each one scheduled, a table
  entry created, DNAT + checksums) through ``lvs_engine_process_batch``;
* established packets/s: random packets of the established flows, half client->VIP, half
  server->client, through the same C function.  Rewriting is in place, so every batch is
  restored from a pristine copy before each call; the restore is timed on its own and both
  the gross and the net rate are printed;
* the same two numbers for a pure-Python loop (struct parse, dict lookup, rr pick, RFC 1624
  update) on a smaller sample;
* ``Engine.process_batch`` (the Python API, which copies packets in and out) for reference;
* bytes per connection entry;
* the C rows again for IPv6 (84-byte packets: the same TCP payload behind a 40-byte header),
  unless ``--no-ipv6``;
* with ``--threads 1,2``: established packets/s of T threads sharing one engine through the
  packet workers' call (``lvs_engine_process_batch_shared``: established packets under the
  shared engine lock, core/lock.h), steered (each thread the flows the TUN steering program
  gives its queue, both directions) and unsteered (any flow on any thread); each thread runs
  its whole loop in one C call (``lvs_workers_bench``), holding no GIL, as a worker does.

Run from the repository root: ``python -m bench.engine`` (``--help`` for sizes).  Everything is
bounded in count.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import random
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pylvs import Engine
from pylvs._core import ffi, lib

__all__ = ["main"]

VIP = "198.18.0.100"
VIP6 = "2001:2::100"
STRIDE = 256
PKT_LEN = 64
PKT_LEN6 = PKT_LEN + 20


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _ip_csum(hdr: bytes) -> int:
    return ~_fold(sum(struct.unpack("!10H", hdr))) & 0xFFFF


def tcp_packet(src: int, dst: int, sport: int, dport: int, flags: int) -> bytes:
    """A 64-byte IPv4/TCP packet with valid IP and TCP checksums."""
    payload = b"\x00" * (PKT_LEN - 40)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = struct.pack("!IIBBH", src, dst, 0, 6, len(tcp))
    data = pseudo + tcp
    csum = ~_fold(sum(struct.unpack(f"!{len(data) // 2}H", data))) & 0xFFFF
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, PKT_LEN, 0, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _ip_csum(ip)) + ip[12:]
    return ip + tcp


def tcp6_packet(src: int, dst: int, sport: int, dport: int, flags: int) -> bytes:
    """An 84-byte IPv6/TCP packet (the IPv4 packet's TCP segment) with a valid TCP checksum."""
    payload = b"\x00" * (PKT_LEN - 40)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload
    addrs = src.to_bytes(16, "big") + dst.to_bytes(16, "big")
    data = addrs + struct.pack("!IxxxB", len(tcp), 6) + tcp
    csum = ~_fold(sum(struct.unpack(f"!{len(data) // 2}H", data))) & 0xFFFF
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    return struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + addrs + tcp


class Batch:
    """A prebuilt lvs_batch over one contiguous buffer, plus a pristine copy to restore."""

    def __init__(self, packets: list[bytes]) -> None:
        n = len(packets)
        self.n = n
        self.data = ffi.new("uint8_t[]", n * STRIDE)
        self.pristine = ffi.new("uint8_t[]", n * STRIDE)
        self.lens = ffi.new("uint32_t[]", n)
        self.lens0 = ffi.new("uint32_t[]", n)
        self.meta = ffi.new("uint8_t[]", n)
        self.verdict = ffi.new("uint8_t[]", n)
        for i, p in enumerate(packets):
            ffi.memmove(self.pristine + i * STRIDE, p, len(p))
            self.lens0[i] = len(p)
        self.b = ffi.new("lvs_batch *")
        self.b.count = n
        self.b.stride = STRIDE
        self.b.data = self.data
        self.b.len = self.lens
        self.b.meta = self.meta
        self.b.verdict = self.verdict
        self.restore()

    def restore(self) -> None:
        """Copy the pristine packets and lengths back over the rewritten ones."""
        ffi.memmove(self.data, self.pristine, self.n * STRIDE)
        ffi.memmove(self.lens, self.lens0, self.n * 4)

    def verdicts(self) -> list[int]:
        """The verdicts of the last call."""
        return list(ffi.unpack(self.verdict, self.n))


def build_engine(max_conns: int, servers: int, v6: bool = False) -> tuple[Engine, list[int]]:
    """An engine with one rr TCP service on the VIP and *servers* real servers."""
    eng = Engine(max_connections=max_conns)
    svc = eng.add_service("tcp", VIP6 if v6 else VIP, 80, scheduler="rr")
    rips = []
    for i in range(servers):
        rip = f"2001:2:1::{11 + i}" if v6 else f"198.19.0.{11 + i}"
        eng.add_server(svc, rip, 8080)
        rips.append(int(ipaddress.ip_address(rip)))
    return eng, rips


def client(i: int, v6: bool = False) -> tuple[int, int]:
    """Distinct (client address, port) for flow i, inside 198.18.0.0/15 (or 2001:2::/64)."""
    if v6:
        return int(ipaddress.IPv6Address("2001:2::1000")) + (i >> 14), 1024 + (i & 0x3FFF)
    return 0xC6120000 + 0x1000 + (i >> 14), 1024 + (i & 0x3FFF)


def _syn(i: int, vip: int, v6: bool = False) -> bytes:
    caddr, cport = client(i, v6)
    return (tcp6_packet if v6 else tcp_packet)(caddr, vip, cport, 80, 0x02)


# Every timing returns (wall seconds by perf_counter, CPU seconds of this process).  On a shared
# machine the wall clock also counts time spent descheduled; the CPU figure does not.
Timing = tuple[float, float]


def time_c(e: Any, batches: list[Batch], now: float, restore: bool) -> Timing:
    """Run every batch through the C function (restoring each first when asked)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        if restore:
            b.restore()
        lib.lvs_engine_process_batch(e, b.b, now)
    return time.perf_counter() - t0, time.process_time() - c0


def time_restore(batches: list[Batch]) -> Timing:
    """The restore copies alone, to subtract from the gross timing."""
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        b.restore()
    return time.perf_counter() - t0, time.process_time() - c0


# ---- the pure-Python loop ----------------------------------------------------------------

class PyNat:
    """The same job in Python: parse, look up or rr-schedule, rewrite, RFC 1624 update."""

    def __init__(self, vip: int, rips: list[int]) -> None:
        self.vip = vip
        self.rips = rips
        self.rr = 0
        self.inmap: dict[tuple[int, int, int, int, int], tuple[int, int]] = {}
        self.outmap: dict[tuple[int, int, int, int, int], tuple[int, int]] = {}

    @staticmethod
    def _csum_update(buf: bytearray, off: int, old: int, new: int, width: int) -> None:
        hc = struct.unpack_from("!H", buf, off)[0]
        s = (~hc & 0xFFFF)
        if width == 32:
            s += (~old >> 16 & 0xFFFF) + (~old & 0xFFFF) + (new >> 16) + (new & 0xFFFF)
        else:
            s += (~old & 0xFFFF) + new
        struct.pack_into("!H", buf, off, ~_fold(s) & 0xFFFF)

    def process(self, buf: bytearray) -> bool:
        """Rewrite one packet in place; False when it is not forwarded."""
        src, dst = struct.unpack_from("!II", buf, 12)
        sport, dport = struct.unpack_from("!HH", buf, 20)
        flags = buf[33]
        if dst == self.vip:
            key = (6, src, sport, dst, dport)
            ent = self.inmap.get(key)
            if ent is None:
                if not flags & 0x02:
                    return False
                rip = self.rips[self.rr % len(self.rips)]
                self.rr += 1
                ent = (rip, 8080)
                self.inmap[key] = ent
                self.outmap[(6, rip, 8080, src, sport)] = (dst, dport)
            rip, rport = ent
            struct.pack_into("!I", buf, 16, rip)
            self._csum_update(buf, 10, dst, rip, 32)
            self._csum_update(buf, 36, dst, rip, 32)
            struct.pack_into("!H", buf, 22, rport)
            self._csum_update(buf, 36, dport, rport, 16)
            return True
        back = self.outmap.get((6, src, sport, dst, dport))
        if back is None:
            return False
        vaddr, vport = back
        struct.pack_into("!I", buf, 12, vaddr)
        self._csum_update(buf, 10, src, vaddr, 32)
        self._csum_update(buf, 36, src, vaddr, 32)
        struct.pack_into("!H", buf, 20, vport)
        self._csum_update(buf, 36, sport, vport, 16)
        return True


def bench_python(rips: list[int], n_new: int, n_est: int) -> tuple[float, float]:
    """New connections/s and established packets/s of :class:`PyNat`."""
    vip = int.from_bytes(socket.inet_aton(VIP), "big")
    nat = PyNat(vip, rips)
    syns = [bytearray(_syn(i, vip)) for i in range(n_new)]
    t0 = time.perf_counter()
    for p in syns:
        nat.process(p)
    new_rate = n_new / (time.perf_counter() - t0)
    rng = random.Random(2)
    pkts = []
    for _ in range(n_est):
        i = rng.randrange(n_new)
        caddr, cport = client(i)
        if rng.random() < 0.5:
            pkts.append(tcp_packet(caddr, vip, cport, 80, 0x10))
        else:
            rip, rport = nat.inmap[(6, caddr, cport, vip, 80)]
            pkts.append(tcp_packet(rip, caddr, rport, cport, 0x10))
    bufs = [bytearray(p) for p in pkts]
    t0 = time.perf_counter()
    for p in bufs:
        nat.process(p)
    est_rate = n_est / (time.perf_counter() - t0)
    return new_rate, est_rate


# ---- threads sharing the engine --------------------------------------------------------------

def _thread_round(e: Any, batches: list[Batch], rounds: int, now: float,
                  cpu: list[float]) -> None:
    arr = ffi.new("lvs_batch *[]", [b.b for b in batches])
    pristine = ffi.new("uint8_t *[]", [b.pristine for b in batches])
    lens = ffi.new("uint32_t *[]", [b.lens0 for b in batches])
    c0 = time.thread_time()
    # the whole loop (restore, the workers' call) in one C call: this thread holds no GIL
    lib.lvs_workers_bench(e, arr, pristine, lens, len(batches), rounds, now)
    cpu.append(time.thread_time() - c0)  # this thread's CPU: contention shows, other load not

def _steered_queue(caddr: int, cport: int, queues: int) -> int:
    """The queue the TUN steering program (dataplane/_steer.c) gives this client."""
    words = ffi.new("uint32_t[4]", [caddr, 0, 0, 0])
    return int(lib.lvs_steer_hash(2, words, cport)) % queues


def bench_threads(args: argparse.Namespace,
                  counts: list[int]) -> list[tuple[str, int, float, float, float]]:
    """(mode, threads, established pkts/s incl. restore, the same per CPU-second of the
    threads, restore-only pkts/s per thread).  The per-CPU rate falls when the threads slow
    each other down (locks, shared cache lines) but not when other processes take the CPUs,
    so on a busy machine it tells the engine's parallel efficiency where the wall rate cannot.

    Every thread runs ``lvs_engine_process_batch_shared``, the workers' call.  ``steered``:
    each thread gets the packets of its own flows, both directions, as the TUN steering
    program hands them out; ``unsteered``: every thread gets packets of any flow (the kernel's
    flow hash, which splits a connection's two directions)."""
    flows, bsz = min(args.flows, 1 << 16), args.batch
    vip = int(ipaddress.ip_address(VIP))
    eng, _ = build_engine(flows * 2, args.servers)
    e = eng._c_handle()
    syns = [Batch([_syn(i, vip) for i in range(j, min(j + bsz, flows))])
            for j in range(0, flows, bsz)]
    time_c(e, syns, 1.0, restore=False)
    dest_of = [struct.unpack_from("!I", bytes(ffi.buffer(b.data + i * STRIDE, 20)), 16)[0]
               for b in syns for i in range(b.n)]
    del syns

    def packet(i: int, rng: random.Random) -> bytes:
        caddr, cport = client(i)
        if rng.random() < 0.5:
            return tcp_packet(caddr, vip, cport, 80, 0x10)
        return tcp_packet(dest_of[i], caddr, 8080, cport, 0x10)

    # every flow ESTABLISHED and answered once, so its packets take the shared path
    warm = [tcp_packet(client(i)[0], vip, client(i)[1], 80, 0x10) for i in range(flows)]
    warm += [tcp_packet(dest_of[i], client(i)[0], 8080, client(i)[1], 0x10)
             for i in range(flows)]
    time_c(e, [Batch(warm[j:j + bsz]) for j in range(0, len(warm), bsz)], 2.0, restore=False)
    rng = random.Random(2)
    per_thread = 64 * max(counts) // 1
    out = []
    for mode in ("steered", "unsteered"):
        for t in counts:
            if mode == "steered":
                mine: list[list[int]] = [[] for _ in range(t)]
                for i in range(flows):
                    mine[_steered_queue(*client(i), t)].append(i)
            else:
                mine = [list(range(flows))] * t
            share = [[Batch([packet(rng.choice(mine[k]), rng) for _ in range(bsz)])
                      for _ in range(per_thread // t)] for k in range(t)]
            for batches in share:
                time_c(e, batches, 3.0, restore=True)
                assert all(b.verdicts().count(0) == b.n for b in batches), "not forwarded"
            n_batches = sum(map(len, share))
            rounds = max(1, args.est_packets // (n_batches * bsz))
            rates, cpu_rates = [], []
            for _ in range(args.repeat):
                cpu: list[float] = []
                threads = [threading.Thread(target=_thread_round,
                                            args=(e, share[k], rounds, 3.0, cpu))
                           for k in range(t)]
                t0 = time.perf_counter()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                n = rounds * n_batches * bsz
                rates.append(n / (time.perf_counter() - t0))
                cpu_rates.append(n / max(sum(cpu), 1e-9))
            pool = [b for batches in share for b in batches]
            t_copy = _best(functools.partial(time_restore, pool), args.repeat)
            out.append((mode, t, statistics.median(rates), statistics.median(cpu_rates),
                        n_batches * bsz / max(t_copy[0], 1e-9)))
    return out


# ---- main ----------------------------------------------------------------------------------

def _best(fn: Callable[[], Timing], repeat: int) -> Timing:
    runs = [fn() for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def _rate(n: int, t: Timing, minus: Timing = (0.0, 0.0)) -> str:
    wall = n / max(t[0] - minus[0], 1e-9)
    cpu = n / max(t[1] - minus[1], 1e-9)
    return f"{wall:>14,.0f}  (per CPU second {cpu:>12,.0f})"


@dataclass
class CResult:
    """The C-path timings of one address family."""

    t_new: Timing
    n_est: int
    t_gross: Timing
    t_copy: Timing
    api_rate: float
    expired: int
    t_exp: Timing
    stats: Any


def bench_c(args: argparse.Namespace, v6: bool) -> CResult:
    """New connections, established packets, the API and one expiry sweep for one family."""
    flows, bsz = args.flows, args.batch
    vip = int(ipaddress.ip_address(VIP6 if v6 else VIP))
    make = tcp6_packet if v6 else tcp_packet
    plen = PKT_LEN6 if v6 else PKT_LEN
    print(f"building {flows} IPv{6 if v6 else 4} SYNs ...", file=sys.stderr)
    eng, _ = build_engine(max(flows * 2, 1 << 16), args.servers, v6)
    e = eng._c_handle()
    syn_batches = [Batch([_syn(i, vip, v6) for i in range(j, min(j + bsz, flows))])
                   for j in range(0, flows, bsz)]

    t_new = time_c(e, syn_batches, 1.0, restore=False)
    fwd = sum(v.count(0) for v in (b.verdicts() for b in syn_batches))
    assert fwd == flows, f"only {fwd} of {flows} SYNs forwarded"
    assert eng.stats().connections == flows

    # learn each flow's real server from the rewritten SYNs, then build established traffic
    dest_of = []
    for b in syn_batches:
        for i in range(b.n):
            raw = bytes(ffi.buffer(b.data + i * STRIDE, 40))
            dest_of.append(int.from_bytes(raw[24:40], "big") if v6
                           else struct.unpack_from("!I", raw, 16)[0])
    del syn_batches
    rng = random.Random(1)
    n_est_batches = max(1, min(args.est_packets // bsz, 2048))
    pool = []
    print(f"building {n_est_batches * bsz} established packets ...", file=sys.stderr)
    for _ in range(n_est_batches):
        pkts = []
        for _ in range(bsz):
            i = rng.randrange(flows)
            caddr, cport = client(i, v6)
            if rng.random() < 0.5:
                pkts.append(make(caddr, vip, cport, 80, 0x10))
            else:
                pkts.append(make(dest_of[i], caddr, 8080, cport, 0x10))
        pool.append(Batch(pkts))
    time_c(e, pool, 2.0, restore=True)  # warm up; every flow becomes ESTABLISHED
    bad = sum(b.n - b.verdicts().count(0) for b in pool)
    assert bad == 0, f"{bad} established packets not forwarded"
    n_est = n_est_batches * bsz
    t_gross = _best(lambda: time_c(e, pool, 3.0, restore=True), args.repeat)
    t_copy = _best(lambda: time_restore(pool), args.repeat)

    # the Python API (copies every packet in and out, builds bytes objects)
    api_pkts = [bytes(ffi.buffer(pool[k].pristine + i * STRIDE, plen))
                for k in range(min(64, len(pool))) for i in range(bsz)]
    t0 = time.perf_counter()
    for j in range(0, len(api_pkts), bsz):
        eng.process_batch(api_pkts[j:j + bsz], 4.0)
    api_rate = len(api_pkts) / (time.perf_counter() - t0)

    st = eng.stats()
    # expiry: one sweep at t=1000 s removes every entry (ESTABLISHED, 900 s)
    t0, c0 = time.perf_counter(), time.process_time()
    expired = eng.expire(1000.0)
    t_exp = (time.perf_counter() - t0, time.process_time() - c0)
    assert expired == flows and eng.stats().connections == 0
    return CResult(t_new, n_est, t_gross, t_copy, api_rate, expired, t_exp, st)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a small report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=1 << 18, help="new connections to create")
    ap.add_argument("--batch", type=int, default=256, help="packets per batch call")
    ap.add_argument("--est-packets", type=int, default=1 << 21,
                    help="established packets per timing round")
    ap.add_argument("--servers", type=int, default=8)
    ap.add_argument("--py-flows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ipv6", action="store_true", help="skip the IPv6 rows")
    ap.add_argument("--threads", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="also run established packets with these thread counts, e.g. 1,2")
    ap.add_argument("--threads-only", action="store_true", help="only the --threads rows")
    args = ap.parse_args(argv)
    if args.threads:
        rows = bench_threads(args, args.threads)
        print(f"engine threads: established {PKT_LEN}-byte IPv4 packets, both directions, "
              f"batch {args.batch}, the workers' call (lvs_engine_process_batch_shared), "
              f"restore copy included, median of {args.repeat}")
        for mode, t, rate, cpu_rate, copy_rate in rows:
            base, cpu_base = next((r[2], r[3]) for r in rows if r[0] == mode)
            print(f"  {mode:9} threads {t}: {rate / 1e6:6.2f} Mpps  (x{rate / base:.2f}); "
                  f"per CPU-second {cpu_rate / 1e6:6.2f} Mpps (efficiency "
                  f"{cpu_rate / cpu_base:.2f}); restore alone {copy_rate / 1e6:.1f} Mpps")
        if args.threads_only:
            return 0

    flows, bsz = args.flows, args.batch
    c4 = bench_c(args, v6=False)
    c6 = bench_c(args, v6=True) if not args.no_ipv6 else None
    st = c4.stats
    new_rate = flows / c4.t_new[0]
    est_net = c4.n_est / max(c4.t_gross[0] - c4.t_copy[0], 1e-9)

    print("running the pure-Python loop ...", file=sys.stderr)
    rips = [0xC6130000 + 11 + i for i in range(args.servers)]
    py_new, py_est = bench_python(rips, args.py_flows, args.py_flows * 2)

    print(f"engine bench: {flows} flows, {args.servers} servers, batch {bsz}, "
          f"{PKT_LEN}-byte TCP packets ({PKT_LEN6} for IPv6), table max {st.max_connections}")
    for tag, c in (("C  ", c4), ("C6 ", c6)):
        if c is None:
            continue
        print(f"  {tag} new connections/s      {_rate(flows, c.t_new)}")
        print(f"  {tag} established pkts/s     {_rate(c.n_est, c.t_gross)}  incl. batch restore")
        print(f"  {tag} established pkts/s     {_rate(c.n_est, c.t_gross, c.t_copy)}"
              "  net of restore")
        print(f"  API{tag[1]} Engine.process_batch  {c.api_rate:>14,.0f}  pkts/s "
              "(Python copies in/out)")
        print(f"  {tag} expired entries/s      {_rate(c.expired, c.t_exp)}  one sweep")
    print(f"  Py  new connections/s      {py_new:>14,.0f}")
    print(f"  Py  established pkts/s     {py_est:>14,.0f}")
    print(f"  speed-up C/Python: new x{new_rate / py_new:,.0f}, "
          f"established x{est_net / py_est:,.0f}")
    print(f"  connection entry {st.entry_size} B; with both hash buckets "
          f"{st.bytes_per_connection} B per connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
