"""HaTransport with the heartbeat pacer (issue 14): heartbeats keep their cadence while the loop
does nothing, stop once the loop has been stalled past the cover (a hung control plane), carry
increasing sequence numbers the peer accepts, and a resign goes out at once and alone."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from pylvs.ha import transport as transport_mod
from pylvs.ha.messages import Kind, PathId, Receiver, Role, Sender
from pylvs.ha.pacer import HeartbeatPacer
from pylvs.ha.state import HaStateMachine
from pylvs.ha.transport import HaTransport, Link

SECRET = b"0123456789abcdef0123"
INTERVAL = 0.02


class _NoRoles:
    async def role_changed(self, new: Role, old: Role) -> None:
        """Nothing to claim in a unit test."""

    async def reannounce(self) -> None:
        """Nothing to announce."""


@pytest.fixture
def paced() -> Iterator[tuple[HaTransport, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(1.0)
    tx.setblocking(False)  # the transport drains its sockets on every tick
    machine = HaStateMachine(node_id="a", priority=100, interval=INTERVAL, digest=b"d" * 16,
                             paths=(PathId.PUBLIC,))
    t = HaTransport(machine, Sender("a", SECRET, b"d" * 16, INTERVAL), Receiver(SECRET, "a"),
                    [], _NoRoles())
    # what start() does, without a loop: the socket and the pacer
    t._socks[PathId.PUBLIC] = (tx, Link(PathId.PUBLIC, "lo", IPv4Address("127.0.0.1"),
                                        rx.getsockname()[1]))
    t._pacer = HeartbeatPacer()
    try:
        yield t, rx
    finally:
        if t._pacer is not None:
            t._pacer.close()
        rx.close()
        tx.close()


def _receive(rx: socket.socket, seconds: float) -> list[tuple[float, int, int]]:
    """(arrival, seq, priority) of each heartbeat the peer accepts within ``seconds``."""
    peer = Receiver(SECRET, "b")
    out = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        rx.settimeout(left)
        try:
            data = rx.recv(2048)
        except TimeoutError:
            break
        msg = peer.accept(data, PathId.PUBLIC, time.time())
        assert msg is not None and msg.kind is Kind.HEARTBEAT, peer.dropped
        out.append((time.monotonic(), msg.seq, msg.priority))
    return out


def test_heartbeats_keep_their_cadence_while_the_loop_does_nothing(
        paced: tuple[HaTransport, socket.socket]) -> None:
    t, rx = paced
    t._run(t.machine.start(time.monotonic()))  # the first heartbeat plans the next seconds
    got = _receive(rx, 0.3)  # and the "loop" never runs again meanwhile
    assert len(got) >= 12  # ~15 at 20 ms
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
    assert max(gaps) < INTERVAL * 2.5
    assert [s for _, s, _ in got] == sorted({s for _, s, _ in got})  # accepted: increasing


def test_a_loop_stalled_past_the_cover_falls_silent(
        paced: tuple[HaTransport, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_mod, "KEEPER_COVER", 0.1)
    t, rx = paced
    t._run(t.machine.start(time.monotonic()))
    got = _receive(rx, 0.4)
    assert got and got[-1][0] - got[0][0] <= 0.1 + 0.03  # nothing after the cover


def test_periodic_ticks_top_up_and_a_resign_goes_out_at_once_and_alone(
        paced: tuple[HaTransport, socket.socket]) -> None:
    t, rx = paced
    t._run(t.machine.start(time.monotonic()))
    assert t._pacer is not None
    pending = t._pacer.stats()["pending"]
    time.sleep(INTERVAL * 3)
    t._on_timer()  # a tick: the queue is topped up, not re-planned (no extra heartbeat)
    assert t._pacer.stats()["pending"] >= pending - 1
    _receive(rx, 0.05)
    t._run(t.machine.stop(time.monotonic()))  # priority 0, and no periodic one after it
    got = _receive(rx, 0.2)
    assert [p for _, _, p in got] == [0]
