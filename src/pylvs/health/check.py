"""``run_probe``: the one entry point that runs any probe under its total deadline.

The deadline (``spec.timeout``) covers connect, send and every read, so a server trickling its
reply one byte at a time still fails on time.  Any exception a probe raises becomes a failed
:class:`ProbeResult`: a probe never crashes its runner.
"""

from __future__ import annotations

import asyncio

from pylvs.health.http_probe import probe_http
from pylvs.health.probes import classify_error, probe_send_expect, probe_tcp, probe_udp
from pylvs.health.program import probe_exec
from pylvs.health.result import ProbeResult, Reason, show_bytes
from pylvs.health.spec import ProbeSpec

__all__ = ["run_probe"]


async def _dispatch(spec: ProbeSpec, got: bytearray) -> ProbeResult:
    if spec.type == "tcp":
        return await probe_tcp(spec)
    if spec.type == "send_expect":
        return await probe_send_expect(spec, got)
    if spec.type == "udp":
        return await probe_udp(spec)
    if spec.type in ("http", "https"):
        return await probe_http(spec)
    if spec.type == "exec":
        return await probe_exec(spec)
    return ProbeResult.failure(Reason.ERROR, f"unknown check type {spec.type!r}")


async def run_probe(spec: ProbeSpec) -> ProbeResult:
    """Run one probe under its total deadline; never raises (except on cancellation)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    got = bytearray()
    try:
        async with asyncio.timeout(spec.timeout):
            result = await _dispatch(spec, got)
    except Exception as exc:  # any probe failure is a verdict, not a crash
        result = classify_error(exc)
        if got:
            # "timeout after '220 mail.exa'" says more than "timeout".
            sep = "; " if result.detail else ""
            result = ProbeResult.failure(
                result.reason, f"{result.detail}{sep}after {show_bytes(bytes(got))!r}"
            )
    duration = loop.time() - start
    return ProbeResult(result.ok, result.reason, result.detail, result.weight, duration)
