"""Long-lived TCP streams and a stream of new connections, to watch flows across a failover.

``python -m pylvs.testbed.streams serve --port 9000``: an echo server (a real server).

``python -m pylvs.testbed.streams load --vip A --port 9000 --sources S1,S2,... --streams N
--rate R --duration D``: N streams, each from its own source address and kept open, send 16
bytes every ``--tick`` seconds and wait for the echo; meanwhile R new connections per second
each exchange one message and close.  It prints ``ready [[source, port], ...]`` once every
stream is open, then at the end one JSON document: per stream its source, the longest wait for
an echo, every wait over :data:`STALL` with when it began (wall clock), and an error if it
broke; per failed new connection when and why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["echo_connection", "main"]

MESSAGE = 16
STALL = 0.05  # an echo slower than this is reported with when it was sent


async def echo_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back everything the peer sends until it closes (a real server's echo service)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    """Echo every TCP connection on ``port`` until killed."""
    server = await asyncio.start_server(echo_connection, "0.0.0.0", port, backlog=1024,
                                        reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def _open(vip: str, port: int, source: str, timeout: float) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(vip, port, local_addr=(source, 0)), timeout)


async def _stream(i: int, vip: str, port: int, source: str, tick: float, stop: asyncio.Event,
                  opened: asyncio.Queue[int], result: dict[str, Any]) -> None:
    try:
        reader, writer = await _open(vip, port, source, 5.0)
    except (OSError, TimeoutError) as exc:
        result["error"] = f"connect: {exc!r}"
        await opened.put(i)
        return
    sock = writer.get_extra_info("socket")
    result["sport"] = sock.getsockname()[1]
    await opened.put(i)
    n = 0
    try:
        while not stop.is_set():
            sent = time.time()
            writer.write(n.to_bytes(MESSAGE, "big"))
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(MESSAGE), 30.0)
            if int.from_bytes(got, "big") != n:
                raise ValueError(f"echo {int.from_bytes(got, 'big')} for {n}")
            wait = time.time() - sent
            if wait > result["max_wait"]:
                result["max_wait"], result["max_wait_at"] = wait, sent
            if wait > STALL:
                result["stalls"].append([round(sent, 3), round(wait, 3)])
            n += 1
            await asyncio.sleep(tick)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        result["error"] = f"{exc!r} at {time.time():.3f}"
    finally:
        result["messages"] = n
        writer.close()


async def _new_conns(vip: str, port: int, sources: Sequence[str], rate: float,
                     stop: asyncio.Event, out: dict[str, Any]) -> None:
    failures: list[dict[str, Any]] = out["failures"]
    tasks: set[asyncio.Task[None]] = set()

    async def one(source: str) -> None:
        t0 = time.time()
        try:
            reader, writer = await _open(vip, port, source, 1.0)
            writer.write(b"x" * MESSAGE)
            await asyncio.wait_for(reader.readexactly(MESSAGE), 1.0)
            writer.close()
            out["ok"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            failures.append({"at": t0, "error": type(exc).__name__})

    k = 0
    while not stop.is_set():
        task = asyncio.create_task(one(sources[k % len(sources)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        k += 1
        await asyncio.sleep(1.0 / rate)
    if tasks:
        await asyncio.wait(tasks, timeout=3.0)


async def load(vip: str, port: int, sources: Sequence[str], streams: int, rate: float,
               duration: float, tick: float) -> dict[str, Any]:
    """Run the load (see the module docstring) and return its report."""
    stop = asyncio.Event()
    opened: asyncio.Queue[int] = asyncio.Queue()
    results: list[dict[str, Any]] = [
        {"source": sources[i % len(sources)], "sport": None, "max_wait": 0.0,
         "max_wait_at": None, "error": None, "stalls": []} for i in range(streams)]
    tasks = [asyncio.create_task(_stream(i, vip, port, sources[i % len(sources)], tick, stop,
                                         opened, r))
             for i, r in enumerate(results)]
    for _ in range(streams):
        await opened.get()
    print("ready " + json.dumps([[r["source"], r["sport"]] for r in results]), flush=True)
    conns: dict[str, Any] = {"ok": 0, "failures": []}
    started = time.time()
    new_task = asyncio.create_task(_new_conns(vip, port, sources, rate, stop, conns)) \
        if rate > 0 else None
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.gather(*tasks, *([new_task] if new_task else []))
    return {"started": started, "stopped": time.time(), "streams": results,
            "new_connections": conns}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pylvs.testbed.streams")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=9000)
    lo = sub.add_parser("load")
    lo.add_argument("--vip", required=True)
    lo.add_argument("--port", type=int, default=9000)
    lo.add_argument("--sources", required=True)
    lo.add_argument("--streams", type=int, default=30)
    lo.add_argument("--rate", type=float, default=20.0)
    lo.add_argument("--duration", type=float, default=10.0)
    lo.add_argument("--tick", type=float, default=0.02)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(serve(args.port))
        return 0
    socket.setdefaulttimeout(5)
    report = asyncio.run(load(args.vip, args.port, args.sources.split(","), args.streams,
                              args.rate, args.duration, args.tick))
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
