"""The heartbeat pacer's Python face (``ha/_pacer.c``): signed heartbeats, sent on time by C.

The event loop signs the heartbeats of the next few seconds in advance (each with the sequence
number and the timestamp it will carry) and queues them; a native SCHED_FIFO thread sends each
at its due time, so neither a busy loop, nor the GIL, nor packet workers filling every CPU
delay a heartbeat (issue 14: send jitter p99 < 10 ms with the packet path saturated).
:class:`HaTransport` keeps the queue topped up every interval; if the loop stops doing so, the
queue runs dry after ``cover`` seconds and the peer takes over, as it must for a hung control
plane.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from pylvs._core import ffi, lib

__all__ = ["PACER_RT_PRIORITY", "Datagram", "HeartbeatPacer", "plan", "sockaddr"]

#: SCHED_FIFO priority of the sender thread: the lowest, above every normal thread (it runs a
#: few microseconds per interval, so it cannot starve anyone); the guardian uses the same.
PACER_RT_PRIORITY = 1


def sockaddr(address: IPv4Address | IPv6Address, port: int) -> bytes:
    """``struct sockaddr_in`` / ``sockaddr_in6`` for ``sendto`` in C (Linux layout)."""
    if address.version == 4:
        return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), address.packed)
    return struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(port), 0, address.packed, 0)


@dataclass(frozen=True, slots=True)
class Datagram:
    """One heartbeat to send at ``due`` (``time.monotonic()``) on socket ``fd`` to ``addr``."""

    due: float
    fd: int
    addr: bytes
    data: bytes


class HeartbeatPacer:
    """A running pacer thread; :meth:`close` stops it (nothing is sent after it returns)."""

    def __init__(self, rt_priority: int = PACER_RT_PRIORITY) -> None:
        p = lib.lvs_pacer_new(rt_priority)
        if p == ffi.NULL:
            raise OSError("cannot start the heartbeat pacer thread")
        self._p: Any = p
        self.capacity = int(lib.LVS_PACER_QUEUE)

    def queue(self, datagrams: Sequence[Datagram], *, replace: bool = False) -> None:
        """Queue ``datagrams`` (in due order) after the pending ones, or instead of them."""
        items = ffi.new("lvs_pacer_item[]", max(1, len(datagrams)))
        for i, d in enumerate(datagrams):
            it = items[i]
            it.due, it.fd = d.due, d.fd
            it.addr_len, it.len = len(d.addr), len(d.data)
            ffi.memmove(it.addr, d.addr, len(d.addr))
            ffi.memmove(it.data, d.data, len(d.data))
        rc = lib.lvs_pacer_queue(self._p, items, len(datagrams), int(replace))
        if rc < 0:
            raise OSError(-rc, "heartbeat pacer: " + ("queue full" if rc == -28 else
                                                      "bad datagram or order"))

    def last_due(self) -> float:
        """Due time of the last pending datagram; 0.0 when none is pending."""
        return float(lib.lvs_pacer_last_due(self._p))

    def stats(self) -> dict[str, Any]:
        """Sent, errors, pending, how late the latest send was, whether it runs real-time."""
        st = ffi.new("lvs_pacer_stats *")
        lib.lvs_pacer_get_stats(self._p, st)
        return {"sent": int(st.sent), "send_errors": int(st.send_errors),
                "pending": int(st.pending), "late_max_ms": round(int(st.late_max_ns) / 1e6, 3),
                "late_over_1ms": int(st.late_over_1ms), "realtime": bool(st.realtime)}

    def close(self) -> None:
        """Stop and join the thread (idempotent)."""
        p, self._p = self._p, None
        if p is not None:
            lib.lvs_pacer_free(p)


def plan(first: float, last: float, interval: float,
         build: Callable[[float], Sequence[Datagram]]) -> list[Datagram]:
    """The datagrams ``build(due)`` for due = first, first + interval, ... up to ``last``."""
    out: list[Datagram] = []
    k = 0
    while (due := first + k * interval) <= last:
        out += build(due)
        k += 1
    return out
