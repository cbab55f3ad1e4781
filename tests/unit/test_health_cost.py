"""What probes cost the director's event loop: CPU per probe, measured on loopback.

Run ``pytest -s tests/unit/test_health_cost.py`` to see the numbers.  The bounds are loose
(an order of magnitude above what a 2-core test machine measures) so the test only catches a
probe that starts burning the loop the dataplane shares.
"""

from __future__ import annotations

import asyncio
import resource
import time
from ipaddress import IPv4Address

from aiohttp import web

from pylvs.health import ProbeSpec, run_probe


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


async def test_cpu_per_probe() -> None:
    app = web.Application()

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    bounds = {"tcp": 2.0, "http": 6.0, "exec": 30.0}  # ms of this process's CPU per probe
    counts = {"tcp": 400, "http": 300, "exec": 60}
    try:
        for kind, n in counts.items():
            spec = ProbeSpec(type=kind, address=IPv4Address("127.0.0.1"), port=port,  # type: ignore[arg-type]
                             interval=1.0, timeout=5.0,
                             command="true %h %p" if kind == "exec" else None)
            cpu0, kids0 = _cpu()
            t0 = time.perf_counter()
            for _ in range(n // 10):
                results = await asyncio.gather(*(run_probe(spec) for _ in range(10)))
                assert all(r.ok for r in results), results[0]
            wall = time.perf_counter() - t0
            cpu1, kids1 = _cpu()
            per = 1e3 * (cpu1 - cpu0) / n
            print(f"{kind:5} {n} probes, 10 at a time: {per:.3f} ms CPU each in this process "
                  f"(server side included), {1e3 * (kids1 - kids0) / n:.3f} ms in children, "
                  f"{n / wall:.0f} probes/s")
            assert per < bounds[kind], (kind, per)
    finally:
        await runner.cleanup()
