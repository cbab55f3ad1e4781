"""Keeps heartbeats going while the event loop is briefly busy (issue 13).

The heartbeat protocol runs on the asyncio loop, and so does the control plane: applying a
10,000-server reload or restore can hold the loop for hundreds of milliseconds, longer than the
peer's dead time (0.36 s at the default interval), and the backup then takes over a director
that is alive and forwarding (its packets run in C worker threads, not on the loop).
keepalived avoids this by running VRRP in a process of its own; here a small thread repeats the
loop's last heartbeat when the loop has not sent one for more than an interval and a half.

It covers a stall for at most ``cover`` seconds: a loop that stays stuck longer is a hung control
plane, and the peer must then take over, as it would if the process had died.  The thread needs
the GIL only for the send (CPython hands it over every ``sys.getswitchinterval()``, 5 ms, and the
C core's calls release it), and it never touches the state machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["HeartbeatKeeper", "should_repeat"]

T = TypeVar("T")

LATE_FACTOR = 1.5  # a loop this many intervals late is stalled, not merely jittery


def should_repeat(now: float, last_sent: float, interval: float, cover: float) -> bool:
    """Whether the keeper sends: the loop is late by more than LATE_FACTOR intervals, and the
    stall has not lasted longer than ``cover`` seconds."""
    since = now - last_sent
    return interval * LATE_FACTOR < since <= cover


class HeartbeatKeeper(Generic[T]):
    """A daemon thread that repeats the last heartbeat (``T``: what ``send`` needs) during stalls.

    The loop calls :meth:`sent` after each heartbeat it sends; ``send`` must be safe to call from
    this thread (the transport serialises it with ``lock``).
    """

    def __init__(self, send: Callable[[T], None], interval: float, cover: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()  # held around every heartbeat send, the loop's and ours
        self.repeated = 0
        self._send = send
        self._interval = interval
        self._cover = cover
        self._clock = clock
        self._last: T | None = None
        self._last_sent = float("-inf")
        self._repeated_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sent(self, heartbeat: T) -> None:
        """The loop sent ``heartbeat`` just now (call with :attr:`lock` held)."""
        self._last = heartbeat
        self._last_sent = self._clock()

    def start(self) -> None:
        """Start watching (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pylvs-ha-keeper",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread: nothing is sent after this returns."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval / 2):
            with self.lock:
                heartbeat = self._last
                if heartbeat is None or self._stop.is_set():
                    continue
                now = self._clock()
                if not should_repeat(now, self._last_sent, self._interval, self._cover) or \
                        now - self._repeated_at < self._interval:
                    continue
                self._send(heartbeat)
                self._repeated_at = now
                self.repeated += 1
