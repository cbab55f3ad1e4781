"""Failover drills: the programs the failover tests and benchmark run inside namespaces.

(:class:`pylvs.testbed.hapair.HaPair` builds the namespaces and starts these.)

* ``python -m pylvs.testbed.drill echo --port P``: a TCP and UDP echo server (run on real servers).
* ``python -m pylvs.testbed.drill probe ...``: a UDP prober (run on a client) that sends a numbered
  datagram every ``--gap`` seconds and prints, as JSON, when each was sent and when its echo
  came back, on the shared ``CLOCK_MONOTONIC`` (namespaces do not virtualise it), so the caller
  can line the answers up with the moment it killed a director.
* ``python -m pylvs.testbed.drill stream ...``: one long-lived TCP connection that sends numbered
  blocks and checks every echoed byte; prints bytes verified, the longest stall and any error.
* ``python -m pylvs.testbed.drill shorts ...``: short TCP connections back to back from a few
  workers; prints when each started and whether it succeeded.

Every loop is bounded by a duration and a count.  Root only (namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import time
from typing import Any

from pylvs.testbed.streams import echo_connection

__all__ = ["ECHO_PORT", "main", "probe", "shorts", "stream"]

ECHO_PORT = 7000
_PROBE = struct.Struct("!Qd")
_BLOCK = 1024


# ---- the programs run inside namespaces ------------------------------------------------------

class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def _echo(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(echo_connection, "0.0.0.0", port, backlog=1024)
    await loop.create_datagram_endpoint(_UdpEcho, local_addr=("0.0.0.0", port))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def probe(host: str, port: int, gap: float, duration: float) -> list[tuple[int, float, float]]:
    """Send numbered datagrams for ``duration`` s; return (seq, sent, echoed or -1)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    s.setblocking(False)
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    start = time.monotonic()
    end = start + duration
    nxt, seq = start, 0
    while (now := time.monotonic()) < end and seq < 10_000_000:
        if now >= nxt:
            seq += 1
            sent[seq] = now
            # no route or an ICMP error while the VIP moves: that probe is simply lost
            with contextlib.suppress(OSError):
                s.send(_PROBE.pack(seq, now))
            nxt += gap
        for _ in sel.select(max(0.0, min(nxt, end) - time.monotonic())):
            for _ in range(1000):
                try:
                    data = s.recv(64)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                if len(data) == _PROBE.size:
                    got.setdefault(_PROBE.unpack(data)[0], time.monotonic())
    return [(q, t, got.get(q, -1.0)) for q, t in sent.items()]


def stream(host: str, port: int, duration: float, gap: float) -> dict[str, Any]:
    """One TCP connection: queue a numbered 1 KiB block every ``gap`` s, verify the echo.

    Non-blocking both ways, so a stall (the failover) never makes the sender give up or lose
    track of what was written: every byte queued must come back, in order, once.
    """
    out: dict[str, Any] = {"sent": 0, "verified": 0, "max_stall": 0.0, "error": None}
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        out["error"] = f"connect: {exc}"
        return out
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    unsent, unechoed = bytearray(), bytearray()
    n = 0
    start = time.monotonic()
    end = start + duration
    drain_end = end + 10  # bounded wait for the echoes still on their way
    last_rx = nxt = start
    try:
        while (now := time.monotonic()) < drain_end and (now < end or unechoed):
            while now < end and now >= nxt:
                block = struct.pack("!Q", n) * (_BLOCK // 8)
                unsent += block
                unechoed += block
                out["sent"] += len(block)
                n += 1
                nxt += gap
            if unsent:
                with contextlib.suppress(BlockingIOError):
                    del unsent[: s.send(unsent)]
            sel.select(min(0.01, max(0.0, nxt - time.monotonic())))
            while True:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    break
                if not data:
                    raise ConnectionError("closed by peer")
                if unechoed[: len(data)] != data:
                    raise ValueError(f"echo differs at byte {out['verified']}")
                del unechoed[: len(data)]
                out["verified"] += len(data)
                now = time.monotonic()
                out["max_stall"] = max(out["max_stall"], now - last_rx)
                last_rx = now
            if not unechoed:
                last_rx = time.monotonic()  # nothing owed: waiting is not a stall
        if unechoed:
            raise TimeoutError(f"{len(unechoed)} bytes never echoed")
    except (OSError, ValueError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        s.close()
    return out


def shorts(host: str, port: int, duration: float, workers: int,
           timeout: float) -> list[tuple[float, float, bool]]:
    """Short connections (connect, 64 bytes echoed, close) from ``workers`` threads."""
    import threading

    results: list[tuple[float, float, bool]] = []
    lock = threading.Lock()
    end = time.monotonic() + duration

    def work() -> None:
        count = 0
        while time.monotonic() < end and count < 100_000:
            count += 1
            t0 = time.monotonic()
            ok = True
            try:
                with socket.create_connection((host, port), timeout=timeout) as s:
                    s.settimeout(timeout)
                    s.sendall(b"x" * 64)
                    got = b""
                    while len(got) < 64:
                        chunk = s.recv(64)
                        if not chunk:
                            raise ConnectionError("closed early")
                        got += chunk
            except OSError:
                ok = False
            with lock:
                results.append((t0, time.monotonic(), ok))

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 3 * timeout)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m pylvs.testbed.drill echo|probe|stream|shorts ...``."""
    ap = argparse.ArgumentParser(prog="python -m pylvs.testbed.drill")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--port", type=int, default=ECHO_PORT)
    for name in ("probe", "stream", "shorts"):
        p = sub.add_parser(name)
        p.add_argument("--host", required=True)
        p.add_argument("--port", type=int, default=ECHO_PORT)
        p.add_argument("--duration", type=float, default=5.0)
        p.add_argument("--gap", type=float, default=0.001)
        p.add_argument("--workers", type=int, default=4)
        p.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args(argv)
    if a.cmd == "echo":
        asyncio.run(_echo(a.port))
        return 0
    if a.cmd == "probe":
        res: Any = probe(a.host, a.port, a.gap, min(a.duration, 120))
    elif a.cmd == "stream":
        res = stream(a.host, a.port, min(a.duration, 120), a.gap)
    else:
        res = shorts(a.host, a.port, min(a.duration, 120), min(a.workers, 64), a.timeout)
    json.dump(res, sys.stdout)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
