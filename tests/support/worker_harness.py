"""Drive the C packet workers (``dataplane/_workers.c``) without a TUN device or root.

Each queue is a ``SOCK_SEQPACKET`` socket pair: the worker owns one end exactly as it owns a
TUN queue fd (read() returns one packet, write() sends one), the test owns the other end.  The
threads, the engine lock, poll and the stop eventfd are the production code.

Also a stress run for ThreadSanitizer (``python -m tests.support.worker_harness``, see
:func:`stress`): two workers pump packets while the calling thread makes every kind of control
call.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pylvs._core import ffi, lib
from pylvs.engine import Engine
from tests.support.packets import checksum16

__all__ = ["Queues", "stress", "syn", "tcp_segment", "workers"]

PLAIN_STRIDE = 16384


def tcp_segment(src: str, sport: int, dst: str, dport: int, flags: int = 0x02,
                payload: bytes = b"") -> bytes:
    """A checksummed IPv4 TCP segment (fast enough for thousands of packets a test)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 8192, 0, 0) + payload
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    csum = checksum16(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", checksum16(ip)) + ip[12:]
    return ip + tcp


def syn(sport: int, client: str = "198.18.0.2", vip: str = "198.18.0.100") -> bytes:
    """A SYN from ``client:sport`` to ``vip:80``."""
    return tcp_segment(client, sport, vip, 80)


class Queues:
    """N socket pairs and an ``lvs_workers`` pumping their worker ends through ``engine``."""

    def __init__(self, engine: Engine | None, n: int, batch: int = 64) -> None:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(n)]
        self.worker_ends = [a for a, _ in pairs]
        self.peers = [b for _, b in pairs]
        for a in self.worker_ends:
            a.setblocking(False)
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        for b in self.peers:
            b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        eng = engine._c_handle() if engine is not None else ffi.NULL
        fds = ffi.new("int[]", [a.fileno() for a in self.worker_ends])
        w = lib.lvs_workers_new(eng, fds, n, 0, batch, PLAIN_STRIDE)
        assert w != ffi.NULL
        self.w: Any = w
        self.engine = engine  # keeps the engine alive while the threads use it

    def start(self) -> None:
        """Start the threads."""
        assert lib.lvs_workers_start(self.w) == 0

    def running(self) -> int:
        """Threads started and not joined."""
        return int(lib.lvs_workers_running(self.w))

    def stop(self) -> None:
        """Wake and join every thread."""
        lib.lvs_workers_stop(self.w)

    def stats(self, i: int) -> Any:
        """Worker ``i``'s published counters."""
        st = ffi.new("lvs_tunio_stats *")
        assert lib.lvs_workers_get_stats(self.w, i, st) == 0
        return st

    def exchange(self, q: int, packet: bytes, timeout: float = 0.3) -> bytes | None:
        """Send ``packet`` into queue ``q`` and return what the worker writes back (None:
        nothing within ``timeout``, i.e. dropped)."""
        self.peers[q].send(packet)
        self.peers[q].settimeout(timeout)
        try:
            return self.peers[q].recv(65536)
        except TimeoutError:
            return None

    def close(self) -> None:
        """Stop, free (closes the eventfds) and close every socket."""
        lib.lvs_workers_free(self.w)
        self.w = None
        for s in (*self.worker_ends, *self.peers):
            s.close()


@contextmanager
def workers(engine: Engine | None, n: int, batch: int = 64) -> Iterator[Queues]:
    """Started :class:`Queues`, always stopped and closed."""
    q = Queues(engine, n, batch)
    try:
        q.start()
        yield q
    finally:
        q.close()


def rr_engine(servers: int = 3, scheduler: str = "rr") -> Engine:
    """An engine with one TCP service 198.18.0.100:80 and ``servers`` real servers."""
    eng = Engine(max_connections=1 << 16)
    svc = eng.add_service("tcp", "198.18.0.100", 80, scheduler=scheduler)
    for i in range(servers):
        eng.add_server(svc, f"198.19.0.{11 + i}", 80, weight=1 + i % 2)
    return eng


def stress(seconds: float = 3.0, n_workers: int = 2) -> dict[str, int]:
    """Blast packets into ``n_workers`` queues from sender threads while this thread makes
    control calls; returns the totals (sent, read, verdict sums, control calls)."""
    eng = rr_engine(4, "wlc")
    eng.set_sync_master(True, threshold=1, period=1)
    svc = eng.services()[0].key
    stop = threading.Event()
    sent = [0] * n_workers
    with workers(eng, n_workers) as q:
        def sender(i: int) -> None:
            rng = random.Random(i)
            peer = q.peers[i]
            while not stop.is_set():
                port = rng.randrange(1024, 65535)
                flags = 0x02 if rng.random() < 0.5 else 0x10
                peer.send(tcp_segment(f"198.18.{i}.{rng.randrange(2, 250)}", port,
                                      "198.18.0.100", 80, flags))
                sent[i] += 1
                # A reply from a real server to some client: the out direction.
                peer.send(tcp_segment(f"198.19.0.{11 + rng.randrange(4)}", 80,
                                      f"198.18.{1 - i}.{rng.randrange(2, 250)}", port, 0x12))
                sent[i] += 1

        def drainer(i: int) -> None:
            peer = q.peers[i]
            peer.settimeout(0.05)
            while not stop.is_set():
                try:
                    peer.recv(65536)
                except TimeoutError:
                    continue

        threads = [threading.Thread(target=f, args=(i,)) for i in range(n_workers)
                   for f in (sender, drainer)]
        for t in threads:
            t.start()
        calls = 0
        end = time.monotonic() + seconds
        extra = 0
        while time.monotonic() < end:
            now = time.monotonic()
            srv = eng.add_server(svc, f"198.19.1.{extra % 200 + 1}", 80, weight=2)
            eng.edit_server(srv, weight=3)
            eng.edit_service(svc, scheduler=("rr", "wlc", "sh", "mh")[extra % 4])
            eng.expire(now)
            eng.update_rates(now)
            eng.sync_apply(eng.sync_collect(), now)
            eng.stats()
            eng.services()
            eng.connections() if extra % 20 == 0 else None
            eng.remove_server(srv)
            eng.zero_stats() if extra % 50 == 0 else None
            lib.lvs_workers_zero_stats(q.w) if extra % 70 == 0 else None
            extra += 1
            calls += 11
        stop.set()
        for t in threads:
            t.join()
        time.sleep(0.2)  # the workers finish what the socket buffers still hold
        q.stop()
        totals = {"sent": sum(sent), "calls": calls, "running_after_stop": q.running()}
        for name in ("reads", "forwarded", "passed", "replies", "dropped", "batches"):
            totals[name] = sum(int(getattr(q.stats(i), name)) for i in range(n_workers))
    return totals


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(stress(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)))
    os._exit(0)
