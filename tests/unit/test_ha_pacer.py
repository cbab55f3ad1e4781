"""The heartbeat pacer (ha/_pacer.c): each datagram leaves at its due time from a native
thread, in order, whatever the calling thread does meanwhile; replace drops what was pending;
bad input is refused; nothing leaves after close."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address

import pytest

from pylvs.ha.pacer import Datagram, HeartbeatPacer, plan, sockaddr

STEP = 0.02


@contextmanager
def _receiver() -> Iterator[tuple[socket.socket, socket.socket, bytes]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2.0)
        yield rx, tx, sockaddr(IPv4Address("127.0.0.1"), rx.getsockname()[1])
    finally:
        rx.close()
        tx.close()


def _busy(seconds: float) -> None:
    """Hold the GIL and a CPU, as a busy event loop does."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_sockaddr_layout() -> None:
    v4 = sockaddr(IPv4Address("198.18.0.1"), 4242)
    assert len(v4) == 16 and v4[2:4] == (4242).to_bytes(2, "big") and v4[4:8] == bytes(
        [198, 18, 0, 1])
    v6 = sockaddr(IPv6Address("2001:2::1"), 80)
    assert len(v6) == 28 and v6[2:4] == (80).to_bytes(2, "big")
    assert v6[8:24] == IPv6Address("2001:2::1").packed


def test_plan_spaces_the_dues() -> None:
    got = plan(10.0, 10.35, 0.1, lambda due: [Datagram(due, 0, b"", b"x")])
    assert [round(d.due, 6) for d in got] == [10.0, 10.1, 10.2, 10.3]


def test_each_datagram_leaves_on_time_while_the_caller_is_busy() -> None:
    pacer = HeartbeatPacer()
    try:
        with _receiver() as (rx, tx, addr):
            t0 = time.monotonic() + 0.05
            pacer.queue(plan(t0, t0 + 9 * STEP, STEP,
                             lambda due: [Datagram(due, tx.fileno(), addr,
                                                   f"{due:.6f}".encode())]))
            assert pacer.stats()["pending"] == 10
            _busy(0.3)  # the calling thread never lets go: the pacer still sends on time
            arrived = []
            for _ in range(10):
                data = rx.recv(64)
                arrived.append(float(data))
            assert arrived == sorted(arrived) and len(set(arrived)) == 10
            st = pacer.stats()
            assert st["sent"] == 10 and st["send_errors"] == 0 and st["pending"] == 0
            assert st["late_max_ms"] < 50  # generous: a loaded CI machine
    finally:
        pacer.close()


def test_replace_drops_the_pending_and_sends_the_new_at_once() -> None:
    pacer = HeartbeatPacer()
    try:
        with _receiver() as (rx, tx, addr):
            now = time.monotonic()
            pacer.queue([Datagram(now + 5, tx.fileno(), addr, b"old")])
            assert pacer.last_due() == pytest.approx(now + 5)
            pacer.queue([Datagram(now, tx.fileno(), addr, b"new")], replace=True)
            assert rx.recv(16) == b"new"
            rx.settimeout(0.1)
            with pytest.raises(TimeoutError):
                rx.recv(16)
            assert pacer.last_due() == 0.0
    finally:
        pacer.close()


def test_bad_input_is_refused() -> None:
    pacer = HeartbeatPacer()
    try:
        now = time.monotonic() + 10
        with pytest.raises(OSError):  # out of order
            pacer.queue([Datagram(now + 1, 0, b"", b""), Datagram(now, 0, b"", b"")])
        pacer.queue([Datagram(now + 1, 0, b"", b"")])
        with pytest.raises(OSError):  # before what is pending
            pacer.queue([Datagram(now, 0, b"", b"")])
        with pytest.raises(OSError):  # more than the queue holds
            pacer.queue([Datagram(now + 2, 0, b"", b"")] * pacer.capacity)
    finally:
        pacer.close()


def test_nothing_leaves_after_close() -> None:
    pacer = HeartbeatPacer()
    with _receiver() as (rx, tx, addr):
        pacer.queue([Datagram(time.monotonic() + 0.1, tx.fileno(), addr, b"late")])
        pacer.close()
        pacer.close()  # idempotent
        rx.settimeout(0.3)
        with pytest.raises(TimeoutError):
            rx.recv(16)
