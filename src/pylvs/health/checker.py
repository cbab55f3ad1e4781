"""The health checker process: every probe runs here, on its own event loop, not the director's.

At 10,000 real servers checked every 2 s the probes cost about half a core of Python (connect,
close, bookkeeping: ~100 µs each, 5,000 a second), which on the director's loop delays the HA
heartbeat, the API and reloads (issue 13).  So, as keepalived runs its checkers in a child of
its own, ``pylvs serve`` starts ``python -m pylvs.health.checker`` (:mod:`.remote` is the
director's side).  The child runs an ordinary :class:`~pylvs.health.manager.HealthManager` on a
uvloop and talks to the director over one ``socketpair`` (:mod:`.wire`):

* the director sends the configuration once, then only the services that changed;
* the child sends back only what the director must act on: verdict changes (``ServerEvent``,
  ``SorryEvent``), its log records, and once a second a pickled snapshot for ``pylvs status``,
  the API and the status page (which the director decodes only when someone asks).

The child dies with the director: ``PR_SET_PDEATHSIG`` sends it SIGKILL when the director's
process goes away, and it exits on end-of-file of the socket anyway (a clean stop, or a parent
that died before the prctl).  SIGTERM makes it quit at once, killing running check programs.
Ctrl-C on the terminal is for the director, which stops the child itself, so SIGINT is
ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from pylvs.health.manager import HealthManager
from pylvs.health.program import kill_running
from pylvs.health.result import Reason
from pylvs.health.state import HealthEvent, ServerEvent
from pylvs.health.wire import LogLine, frame, read_frame
from pylvs.looplag import freeze_heap
from pylvs.model import Config, ServiceKey, VirtualServerConfig
from pylvs.tasks import cancel_and_wait

__all__ = ["STATUS_INTERVAL", "Checker", "main"]

log = logging.getLogger("pylvs.health")

#: Seconds between two status snapshots sent to the director (probe counters move on).
STATUS_INTERVAL = 1.0
#: Largest share of the checker's time spent on snapshots: a 10,000-server snapshot takes
#: tens of milliseconds, so it is then sent less often than every second.
STATUS_DUTY = 0.05
_CHEAP_STATUS = 0.002
#: Most events and log lines per frame to the director (~3 ms to unpickle there).
BATCH_ITEMS = 256
# How soon a snapshot follows verdicts it could not ride with.
_STATUS_POLL = 0.1
_PR_SET_PDEATHSIG = 1


class _Forward(logging.Handler):
    """Queues this process's log records for the director, which logs them as its own."""

    def __init__(self, queue: Callable[[LogLine], None]) -> None:
        super().__init__()
        self._queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self._queue(LogLine(record.name, record.levelno, message))
        except Exception:  # a log record must never break a probe
            self.handleError(record)


class Checker:
    """The child's side of the socket: apply what the director sends, send back events."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[HealthEvent | LogLine] = []
        self._flush_scheduled = False
        self._manager: HealthManager | None = None
        self._base: Config | None = None
        self._services: dict[ServiceKey, VirtualServerConfig] = {}
        self._order: list[ServiceKey] = []
        self._status_next = 0.0
        self._status_dirty = False

    def queue(self, item: HealthEvent | LogLine) -> None:
        """Send ``item`` to the director with the next batch (within this loop iteration)."""
        if self._redundant(item):
            return
        self._pending.append(item)
        if not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # logged after the loop ended: nobody is listening any more
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _redundant(self, item: HealthEvent | LogLine) -> bool:
        # The first verdict of a server without a check, "up, in the pool at its configured
        # weight", is what the director assumes of such a server anyway: 10,000 of them after
        # a restore only cost its loop (issue 13).  Any later change is sent.
        return (isinstance(item, ServerEvent) and item.reason == Reason.INITIAL.value
                and item.healthy and item.in_pool and item.weight is None
                and self._manager is not None
                and not self._manager.probed(item.service, item.endpoint))

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending and self._writer is not None and not self._writer.is_closing():
            batch, self._pending = self._pending, []
            status = None
            if any(not isinstance(item, LogLine) for item in batch):
                # The snapshot rides with the verdicts when it is cheap, so the director's
                # status agrees with its pool; at 10,000 servers the status loop sends it.
                if time.monotonic() >= self._status_next:
                    status = self._status()
                else:
                    self._status_dirty = True
            # Frames of a few hundred items: the director unpickles a frame in one go, and
            # the 20,000 items of a 10,000-server start in one frame held its loop ~0.2 s.
            for first in range(0, len(batch), BATCH_ITEMS):
                last = first + BATCH_ITEMS >= len(batch)
                self._writer.write(frame(("batch", batch[first:first + BATCH_ITEMS],
                                          status if last else None)))

    def _status(self) -> bytes | None:
        if self._manager is None:
            return None
        started = time.monotonic()
        snap = pickle.dumps(self._manager.snapshot(), pickle.HIGHEST_PROTOCOL)
        took = time.monotonic() - started
        # A small site's snapshot is free (always sent along); a large one is rationed.
        self._status_next = started + took / STATUS_DUTY if took > _CHEAP_STATUS else 0.0
        self._status_dirty = False
        return snap

    def _send(self, message: tuple[object, ...]) -> None:
        self._flush()  # whatever was queued before this message goes first
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(frame(message))

    async def run(self) -> None:
        """Serve the director until it closes the socket (or dies)."""
        reader, self._writer = await asyncio.open_connection(sock=self._sock)
        status = asyncio.create_task(self._status_loop(), name="checker status")
        try:
            while (message := await read_frame(reader)) is not None:
                await self._handle(message)
                with contextlib.suppress(ConnectionError):  # the director is gone: EOF next
                    await self._writer.drain()
        finally:
            await cancel_and_wait([status])
            if self._manager is not None:
                await self._manager.stop()
            self._writer.close()

    async def _handle(self, message: tuple[Any, ...]) -> None:
        tag = message[0]
        if tag == "configure":
            _, config, jitter, ca_file, known = message
            assert isinstance(config, Config) and isinstance(jitter, float)
            assert ca_file is None or isinstance(ca_file, str)
            assert isinstance(known, list)
            self._base = config
            self._services = {vs.key: vs for vs in config.virtual_servers}
            self._order = list(self._services)
            self._manager = HealthManager(config, self.queue, jitter=jitter, ca_file=ca_file)
            self._manager.resume(known)
        elif tag == "put":
            for vs in message[1]:
                assert isinstance(vs, VirtualServerConfig)
                if vs.key not in self._services:
                    self._order.append(vs.key)
                self._services[vs.key] = vs
        elif tag == "drop":
            for key in message[1]:
                self._services.pop(key, None)
        elif tag == "commit":
            order = message[1]
            self._order = (list(order) if isinstance(order, list)
                           else [k for k in self._order if k in self._services])
            await self._commit()
        elif tag == "start":
            if self._manager is not None:
                await self._manager.start()
                # thousands of runners and tasks live as long as the configuration: full GC
                # passes over them would delay probes past their timeout
                freeze_heap()
            self._send(("done", message[1]))
        else:
            log.error("health checker: unknown message %r", tag)

    async def _commit(self) -> None:
        if self._manager is None or self._base is None:
            return
        self._base = replace(self._base, virtual_servers=tuple(
            self._services[k] for k in self._order if k in self._services))
        try:
            await self._manager.apply_config(self._base)
            freeze_heap()
        except Exception:
            # The director validated this configuration; a failure here is a bug, and the
            # probes of the last good configuration go on.
            log.exception("health checker: applying the configuration failed")

    async def _status_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(_STATUS_POLL)
            now = time.monotonic()
            if now < self._status_next or not (self._status_dirty
                                                or now - last >= STATUS_INTERVAL):
                continue
            if (snap := self._status()) is not None:
                self._send(("status", snap))
                last = now


def _quit_now(signum: int, frame: object) -> None:
    kill_running()
    os._exit(0)


def _die_with(parent: int) -> None:
    # SIGKILL when the director's process ends; the getppid() check closes the window between
    # fork and prctl (a parent already gone has made us init's child).
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:
        sys.exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pylvs.health.checker --fd N --parent PID --log-level L``."""
    p = argparse.ArgumentParser(prog="python -m pylvs.health.checker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--parent", type=int, default=0)
    p.add_argument("--log-level", type=int, default=logging.INFO)
    p.add_argument("--nice", type=int, help="run at this niceness (the director's own)")
    args = p.parse_args(argv)
    _die_with(args.parent)
    # SIGTERM: quit now, even in the middle of a large reconfiguration, but take the running
    # check programs along (they run in sessions of their own).
    signal.signal(signal.SIGTERM, _quit_now)
    if args.nice is not None and os.getpriority(os.PRIO_PROCESS, 0) < args.nice:
        # started by a loop thread that HA favoured: the probes are not what must run first
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    checker = Checker(sock)
    root = logging.getLogger()
    root.handlers[:] = [_Forward(checker.queue)]
    root.setLevel(args.log_level)
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(checker.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
