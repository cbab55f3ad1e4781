"""The workers' batch call (``lvs_engine_process_batch_shared``: established packets under the
shared engine lock, the rest exclusive, core/lock.h) against the exclusive one
(``lvs_engine_process_batch``): for random traffic (TCP lifecycles in both directions, UDP,
IPv6, persistence, junk, ICMP errors, expiry between batches, the sync master switched on and
off, timeouts changed) every verdict and byte, the connection table, the stats and the drop
counters must be identical."""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from pylvs._core import ffi, lib
from pylvs.engine import Engine
from tests.support.packets import build, icmp_error, tcp, udp
from tests.support.worker_harness import tcp_segment

VIP, VIP6 = "198.18.0.100", "2001:2::100"
Call = Callable[[Any, Any, float], int]


def _engine() -> Engine:
    eng = Engine(max_connections=4096, seed=7)
    for proto, vip, port, kw in (("tcp", VIP, 80, {"scheduler": "rr"}),
                                 ("tcp", VIP, 443, {"scheduler": "wlc", "persistence": 60}),
                                 ("udp", VIP, 53, {"scheduler": "wrr"}),
                                 ("tcp", VIP6, 80, {"scheduler": "rr"})):
        svc = eng.add_service(proto, vip, port, **kw)  # type: ignore[arg-type]
        for i in range(3):
            rip = f"2001:2:1::{11 + i}" if ":" in vip else f"198.19.0.{11 + i}"
            eng.add_server(svc, rip, 8080 if port == 80 else port, weight=1 + i)
    return eng


def _run(eng: Engine, call: Call, packets: list[bytes], now: float) -> list[tuple[int, bytes]]:
    n, stride = len(packets), 2048
    data = ffi.new("uint8_t[]", n * stride)
    lens, metas, verdicts = (ffi.new("uint32_t[]", n), ffi.new("uint8_t[]", n),
                             ffi.new("uint8_t[]", n))
    for i, p in enumerate(packets):
        ffi.memmove(data + i * stride, p, len(p))
        lens[i] = len(p)
    b = ffi.new("lvs_batch *")
    b.count, b.stride, b.data, b.len, b.meta, b.verdict = n, stride, data, lens, metas, verdicts
    call(eng._c_handle(), b, now)
    return [(int(verdicts[i]), bytes(ffi.buffer(data + i * stride, lens[i]))) for i in range(n)]


def _exclusive(e: Any, b: Any, now: float) -> int:
    lib.lvs_engine_lock(e)
    try:
        return int(lib.lvs_engine_process_batch(e, b, now))
    finally:
        lib.lvs_engine_unlock(e)


def _snapshot(eng: Engine) -> tuple[Any, ...]:
    """Everything the packet path changes: entries (state, deadline, counts), per-service and
    per-server counters and stats, engine totals and drop counters."""
    return sorted(map(repr, eng.connections())), eng.services(), eng.stats()


class Traffic:
    """Random packets of a few hundred flows, each flow moving through its lifecycle."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.flows: list[dict[str, Any]] = []
        self.rs: dict[tuple[str, int, int], tuple[str, int]] = {}  # learned from outputs

    def packet(self) -> bytes:
        r = self.rng.random()
        if r < 0.03:
            return b"\x45" + bytes(self.rng.randrange(30))  # junk
        v4 = [f for f in self.flows[-20:] if f["kind"] != "t6"]
        if r < 0.06 and v4:
            f = self.rng.choice(v4)  # an ICMP error from the client's side
            return build(icmp_error("198.18.9.1", VIP, tcp(VIP, f["vport"], f["c"], f["cp"])))
        if not self.flows or r < 0.15:
            kind = self.rng.choice(["t80", "t443", "u53", "t6"])
            c = (f"2001:2::{self.rng.randrange(1, 400):x}" if kind == "t6"
                 else f"198.18.{self.rng.randrange(1, 3)}.{self.rng.randrange(1, 250)}")
            f = {"kind": kind, "c": c, "cp": self.rng.randrange(1024, 65000), "step": 0,
                 "vport": {"t80": 80, "t443": 443, "u53": 53, "t6": 80}[kind]}
            self.flows.append(f)
            if len(self.flows) > 300:
                self.flows.pop(0)
        else:
            f = self.rng.choice(self.flows)
        return self._next(f)

    def _next(self, f: dict[str, Any]) -> bytes:
        vip = VIP6 if f["kind"] == "t6" else VIP
        out = self.rng.random() < 0.45 and (f["c"], f["cp"], f["vport"]) in self.rs
        step = f["step"]
        f["step"] += 1
        if f["kind"] == "u53":
            if out:
                rip, rport = self.rs[(f["c"], f["cp"], f["vport"])]
                return build(udp(rip, rport, f["c"], f["cp"], payload=b"a"))
            return build(udp(f["c"], f["cp"], vip, 53, payload=b"q"))
        flags = ("S" if step == 0 else "A" if step < 12 else self.rng.choice(["FA", "A", "R"]))
        if out:
            rip, rport = self.rs[(f["c"], f["cp"], f["vport"])]
            flags = "SA" if step == 1 else flags
            if ":" in vip:
                return build(tcp(rip, rport, f["c"], f["cp"], flags))
            return tcp_segment(rip, rport, f["c"], f["cp"], _bits(flags), b"x")
        if ":" in vip:
            return build(tcp(f["c"], f["cp"], vip, f["vport"], flags))
        return tcp_segment(f["c"], f["cp"], vip, f["vport"], _bits(flags), b"y")

    def learn(self, packets: list[bytes], results: list[tuple[int, bytes]]) -> None:
        """Remember each forwarded request's real server, so replies can be made."""
        for p, (v, out) in zip(packets, results, strict=True):
            if v != 0 or len(out) < 28 or (p[:1] == b"\x45" and p[9] == 1):
                continue
            if out[0] >> 4 == 6:
                if out[6] != 6 or len(out) < 44:
                    continue
                src, dst = socket.inet_ntop(socket.AF_INET6, out[8:24]), out[24:40]
                rip = socket.inet_ntop(socket.AF_INET6, dst)
                sport, dport = struct.unpack("!HH", out[40:44])
                vport = struct.unpack("!H", p[42:44])[0]
            else:
                ihl = (out[0] & 15) * 4
                src = socket.inet_ntoa(out[12:16])
                rip = socket.inet_ntoa(out[16:20])
                sport, dport = struct.unpack("!HH", out[ihl:ihl + 4])
                vport = struct.unpack("!H", p[ihl + 2:ihl + 4])[0]
            if rip.startswith(("198.19.", "2001:2:1:")):
                self.rs[(src, sport, vport)] = (rip, dport)


def _bits(flags: str) -> int:
    return sum({"F": 1, "S": 2, "R": 4, "A": 16}[ch] for ch in flags)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shared_batches_equal_exclusive_batches(seed: int) -> None:
    ref, shared = _engine(), _engine()
    traffic = Traffic(seed)
    fast = 0
    now = 1000.0
    for step in range(160):
        packets = [traffic.packet() for _ in range(traffic.rng.randrange(1, 40))]
        want = _run(ref, _exclusive, packets, now)
        got = _run(shared, lib.lvs_engine_process_batch_shared, packets, now)
        assert got == want, (seed, step)
        traffic.learn(packets, want)
        fast += sum(1 for v, _ in want if v == 0)
        now += traffic.rng.choice([0.01, 0.3, 2.0, 30.0])
        if step % 7 == 0:
            assert ref.expire(now) == shared.expire(now)
        if step % 40 == 20:
            for eng in (ref, shared):  # threshold 3 of 5: most packets make no record
                eng.set_sync_master(step % 80 == 20, threshold=3, period=5)
        if step == 100:
            for eng in (ref, shared):
                eng.set_timeouts(tcp=600, tcpfin=60, udp=120)
        assert _snapshot(shared) == _snapshot(ref), (seed, step)
        assert shared.sync_collect() == ref.sync_collect(), (seed, step)
    assert fast > 500  # enough forwarded packets went through both paths
