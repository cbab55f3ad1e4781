"""Connection-table sync: the active node streams entries to the backup, which installs them.

The engine decides *what* to sync, with IPVS-like thresholds (docs/ipvs.md#sync: a
connection is recorded at its 3rd packet, then every 50th, and on every state change that
matters, templates with their controlled connections), and hands out binary records (IPv4 36
bytes, IPv6 72; 36 more for a connection with a sequence translation, e.g. a SYN-proxied one;
the size is in each record's header, see ``pylvs.engine``):
``Engine.sync_collect()`` drains what is pending, ``Engine.sync_full()`` returns every entry
(for a peer that has just started), ``Engine.sync_apply(blob, now)`` installs records.

This module only moves those records: on the active node it drains the engine every
``flush_interval`` seconds (IPVS waits 20 ms after the first buffered record before sending),
cuts the bytes into datagrams of whole records that fit one Ethernet frame, and hands each to
the transport, which signs it like a heartbeat (same HMAC, same replay protection, its own
port).  On the backup the transport passes authenticated batches to :meth:`SyncChannel.apply`.

In an active-active cluster (``pylvs.cluster.sync``) every director is both: it streams its own
records to each member and installs theirs (IPVS can run a master and a backup sync daemon at
once); such a channel is made with ``multi_master=True``.

Loss is tolerated as IPVS tolerates it: a busy connection is re-recorded every 50 packets, and a
peer that restarts gets a full dump.  The backlog is bounded (``max_backlog`` bytes); beyond it
the oldest records are dropped and counted, because fresher records of the same connections
will follow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from pylvs.ha.messages import MAX_PAYLOAD, Message
from pylvs.tasks import cancel_and_wait

__all__ = ["SyncChannel", "SyncEngine"]

log = logging.getLogger("pylvs.ha")

RECORD_SIZE = 36  # LVS_SYNC_RECORD_SIZE in core/api.h: the smallest record
MAX_DATAGRAMS_PER_FLUSH = 512  # bounded work per tick; the rest waits for the next one


def _record_step(blob: bytes | bytearray, off: int) -> int:
    return max(RECORD_SIZE, ((int.from_bytes(blob[off + 2:off + 4], "big") & 0x0FFF) + 3) & ~3)


def record_prefix(blob: bytes | bytearray, limit: int) -> tuple[int, int]:
    """(bytes, records) of the longest run of whole records at the start of ``blob`` that
    fits in ``limit`` bytes.  A record's size is the low 12 bits of its bytes 2..3, padded to 4
    and at least RECORD_SIZE (IPVS sync v1)."""
    off = n = 0
    end = min(len(blob), limit)
    while off + 4 <= end:
        step = _record_step(blob, off)
        if off + step > end:
            break
        off += step
        n += 1
    return off, n


def record_count(blob: bytes | bytearray) -> int | None:
    """How many whole records ``blob`` holds, or None when it does not end on a boundary."""
    size, n = record_prefix(blob, len(blob))
    return n if size == len(blob) else None


class SyncEngine(Protocol):
    """The engine's sync surface (``pylvs.engine.Engine``)."""

    def sync_collect(self) -> bytes:
        """Drain the records pending since the last call."""

    def sync_full(self, now: float | None = None) -> bytes:
        """Every connection and template, as records (timeouts = time left at ``now``)."""

    def sync_apply(self, blob: bytes, now: float) -> int:
        """Install records; return how many were applied."""

    def set_sync_master(self, enabled: bool = True, *, threshold: int = 3,
                        period: int = 50) -> None:
        """Record connections on the packet path (only the active node needs to)."""


class SyncChannel:
    """Both ends of the sync stream for one director."""

    def __init__(
        self,
        engine: SyncEngine,
        send: Callable[[bytes], bool],
        *,
        record_size: int = RECORD_SIZE,
        flush_interval: float = 0.02,
        max_backlog: int = 4 << 20,
        clock: Callable[[], float] = time.monotonic,
        multi_master: bool = False,
    ) -> None:
        self.engine = engine
        # True in a cluster: installs the peer's records while sending its own (no split brain
        # to guard against there: every member serves, each its own flows)
        self.multi_master = multi_master
        self.send = send
        self.record_size = record_size
        self.flush_interval = flush_interval
        self.max_backlog = max_backlog - max_backlog % record_size
        self.clock = clock
        self.per_datagram = (MAX_PAYLOAD // record_size) * record_size
        self.active = False
        self.backlog = bytearray()
        self.stats: dict[str, int] = {
            "records_sent": 0, "datagrams_sent": 0, "send_failures": 0, "records_dropped": 0,
            "records_applied": 0, "records_received": 0, "batches_rejected": 0, "full_dumps": 0,
        }
        self._task: asyncio.Task[None] | None = None

    # ---- active side -------------------------------------------------------------------------

    def set_active(self, active: bool) -> None:
        """Start (ACTIVE) or stop streaming; a stopping node keeps nothing queued."""
        self.active = active
        self.engine.set_sync_master(active)
        if not active:
            self.backlog.clear()

    def queue_full(self) -> None:
        """Queue a dump of the whole table (the peer just started, or asked by the operator)."""
        if not self.active:
            return
        self.stats["full_dumps"] += 1
        self._queue(self.engine.sync_full(self.clock()))

    def flush(self) -> int:
        """Drain the engine and send what fits in one bounded tick; return datagrams sent."""
        if not self.active:
            return 0
        self._queue(self.engine.sync_collect())
        sent = 0
        while self.backlog and sent < MAX_DATAGRAMS_PER_FLUSH:
            size, records = record_prefix(self.backlog, self.per_datagram)
            chunk = bytes(self.backlog[:size])
            if not self.send(chunk):
                self.stats["send_failures"] += 1
                break  # keep it; the link may be back next tick
            del self.backlog[: len(chunk)]
            sent += 1
            self.stats["datagrams_sent"] += 1
            self.stats["records_sent"] += records
        return sent

    def _queue(self, blob: bytes) -> None:
        if record_count(blob) is None:
            log.error("ha sync: engine returned %d bytes, not whole records", len(blob))
            return
        self.backlog += blob
        excess = len(self.backlog) - self.max_backlog
        if excess > 0:
            # whole records from the front, at least `excess` bytes of them
            size = records = 0
            while size < excess:
                size += _record_step(self.backlog, size)
                records += 1
            del self.backlog[:size]
            self.stats["records_dropped"] += records

    async def run(self) -> None:
        """Flush every ``flush_interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                self.flush()
            except Exception:  # an engine bug must not kill the heartbeat's event loop
                log.exception("ha sync: flush failed")

    def start(self) -> None:
        """Start the flush task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        """Stop the flush task (and wait until it has)."""
        task, self._task = self._task, None
        await cancel_and_wait([task])

    # ---- backup side -------------------------------------------------------------------------

    def apply(self, msg: Message, now: float) -> int:
        """Install one authenticated batch from the active peer; return records applied."""
        if self.active and not self.multi_master:
            return 0  # split brain: our own table is the one serving traffic
        payload = msg.payload
        count = record_count(payload)
        if not payload or count is None:
            self.stats["batches_rejected"] += 1
            return 0
        self.stats["records_received"] += count
        applied = self.engine.sync_apply(payload, now)
        self.stats["records_applied"] += applied
        return applied

    def status(self) -> dict[str, Any]:
        """Counters for the API."""
        return {"active": self.active, "backlog_bytes": len(self.backlog), **self.stats}
