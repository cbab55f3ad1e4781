"""Failover in network namespaces (root).

Part A drives two HA transports in one process, each with its sockets inside its own namespace
(``setns`` around socket creation), joined by two veth links - the public and the private
network - so the heartbeat protocol runs over real UDP with real TTLs and real cut cables.
The address owner there records claims instead of calling netconf; part B runs the real thing.

Part B runs two ``pylvs serve`` directors on the shared topology (topology.py) and checks
what a client sees: takeover after kill -9, SIGTERM handover, preemption, partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest

from pylvs.ha.messages import (
    Kind,
    PathId,
    Receiver,
    Role,
    Sender,
    config_digest,
    encode,
)
from pylvs.ha.state import HaStateMachine, default_dead_time
from pylvs.ha.transport import HaTransport, Link

CLONE_NEWNET = 0x40000000
SECRET = secrets.token_bytes(32)
DIGEST = config_digest("services")
IV = 0.1


# ---- namespaces --------------------------------------------------------------------------------

def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with this thread in namespace ``name`` (sockets made there stay there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{name}", "rb") as ns:
        if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


@dataclass
class Pair:
    """Namespaces a and b, joined by eth0 (public 198.18.0.1/.3) and eth1 (private .2/.3)."""

    a: str
    b: str

    def link(self, ns: str, ifname: str, up: bool) -> None:
        _ip("-n", ns, "link", "set", ifname, "up" if up else "down")


@pytest.fixture
def pair() -> Iterator[Pair]:
    tag = "ha" + secrets.token_hex(3)
    p = Pair(f"{tag}-a", f"{tag}-b")
    made: list[str] = []
    try:
        for ns in (p.a, p.b):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for ifname, (addr_a, addr_b) in (("eth0", ("198.18.0.1", "198.18.0.3")),
                                         ("eth1", ("198.19.0.2", "198.19.0.3"))):
            _ip("-n", p.a, "link", "add", ifname, "type", "veth", "peer", "name", ifname,
                "netns", p.b)
            _ip("-n", p.a, "addr", "add", f"{addr_a}/24", "dev", ifname)
            _ip("-n", p.b, "addr", "add", f"{addr_b}/24", "dev", ifname)
            _ip("-n", p.a, "link", "set", ifname, "up")
            _ip("-n", p.b, "link", "set", ifname, "up")
        yield p
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# ---- part A: the protocol over real sockets ----------------------------------------------------

@dataclass
class Recorder:
    """RoleHandler that records what the takeover would do, with timestamps."""

    changes: list[tuple[float, Role, Role]] = field(default_factory=list)
    reannounces: int = 0

    async def role_changed(self, new: Role, old: Role) -> None:
        self.changes.append((time.monotonic(), old, new))

    async def reannounce(self) -> None:
        self.reannounces += 1


@dataclass
class Node:
    ns: str
    transport: HaTransport
    rec: Recorder

    @property
    def role(self) -> Role:
        return self.transport.machine.role

    async def start(self) -> None:
        with in_netns(self.ns):
            await self.transport.start()


def _node(ns: str, node_id: str, prio: int, peer_pub: str, peer_priv: str, *,
          preempt: bool = True, secret: bytes = SECRET) -> Node:
    sm = HaStateMachine(node_id=node_id, priority=prio, interval=IV, digest=DIGEST,
                        preempt=preempt)
    rec = Recorder()
    links = [Link(PathId.PUBLIC, "eth0", IPv4Address(peer_pub), 5405),
             Link(PathId.PRIVATE, "eth1", IPv4Address(peer_priv), 5405)]
    tr = HaTransport(sm, Sender(node_id=node_id, secret=secret, digest=DIGEST, interval=IV),
                     Receiver(secret=secret, own_node_id=node_id), links, rec)
    return Node(ns, tr, rec)


def _nodes(pair: Pair, preempt: bool = True) -> tuple[Node, Node]:
    a = _node(pair.a, "lvs1", 200, "198.18.0.3", "198.19.0.3", preempt=preempt)
    b = _node(pair.b, "lvs2", 100, "198.18.0.1", "198.19.0.2", preempt=preempt)
    return a, b


async def _until(pred: object, timeout: float) -> float:
    """Wait (bounded) until ``pred()`` is true; return the time it became true."""
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        await asyncio.sleep(0.002)
    raise AssertionError(f"condition not met within {timeout} s")


async def test_primary_active_backup_stays_and_one_cut_path_changes_nothing(pair: Pair) -> None:
    a, b = _nodes(pair)
    await b.start()  # the backup first: it must still defer to the primary
    await a.start()
    try:
        await _until(lambda: a.role is Role.ACTIVE, 2.0)
        await asyncio.sleep(1.0)
        assert (a.role, b.role) == (Role.ACTIVE, Role.BACKUP)
        assert [c[1:] for c in b.rec.changes] == [(Role.INIT, Role.BACKUP)]
        for ifname in ("eth0", "eth1"):
            pair.link(pair.a, ifname, False)  # one network down ...
            await asyncio.sleep(10 * IV)
            assert (a.role, b.role) == (Role.ACTIVE, Role.BACKUP), ifname
            silent = "public" if ifname == "eth0" else "private"
            assert b.transport.status()["paths"][silent]["alive"] is False
            pair.link(pair.a, ifname, True)  # ... and back
            await asyncio.sleep(5 * IV)
        assert b.transport.machine.transitions == 1
    finally:
        await a.transport.stop()
        await b.transport.stop()


async def test_silence_on_every_path_fails_over_within_dead_time(pair: Pair) -> None:
    a, b = _nodes(pair)
    await a.start()
    await b.start()
    try:
        await _until(lambda: a.role is Role.ACTIVE, 2.0)
        await asyncio.sleep(3 * IV)
        # a crash as the backup sees it: the active stops sending on every path at once
        a.transport._socks.clear()
        t0 = time.monotonic()
        took = await _until(lambda: b.role is Role.ACTIVE, 2.0) - t0
        assert took <= default_dead_time(IV, 100) + 0.05
    finally:
        await a.transport.stop(handover=False)
        await b.transport.stop()


async def test_clean_stop_hands_over_at_once_and_primary_preempts_on_return(pair: Pair) -> None:
    a, b = _nodes(pair)
    await a.start()
    await b.start()
    try:
        await _until(lambda: a.role is Role.ACTIVE and b.role is Role.BACKUP, 2.0)
        await asyncio.sleep(2 * IV)
        t0 = time.monotonic()
        await a.transport.stop(handover=True)
        took = await _until(lambda: b.role is Role.ACTIVE, 1.0) - t0
        assert took < 0.05  # no dead time: the priority-0 heartbeat arrives in microseconds
        a2 = _nodes(pair)[0]
        await a2.start()
        await _until(lambda: a2.role is Role.ACTIVE and b.role is Role.BACKUP, 2.0)
        await a2.transport.stop()
    finally:
        await b.transport.stop()


async def test_no_preempt_keeps_the_backup_active(pair: Pair) -> None:
    a, b = _nodes(pair, preempt=False)
    await b.start()
    try:
        await _until(lambda: b.role is Role.ACTIVE, 2.0)
        await a.start()
        await asyncio.sleep(15 * IV)
        assert (a.role, b.role) == (Role.BACKUP, Role.ACTIVE)
    finally:
        await a.transport.stop()
        await b.transport.stop()


async def test_partition_heals_to_exactly_one_active(pair: Pair) -> None:
    a, b = _nodes(pair)
    await a.start()
    await b.start()
    try:
        await _until(lambda: a.role is Role.ACTIVE, 2.0)
        pair.link(pair.a, "eth0", False)
        pair.link(pair.a, "eth1", False)
        await _until(lambda: b.role is Role.ACTIVE, 2.0)  # both active while partitioned
        assert a.role is Role.ACTIVE
        pair.link(pair.a, "eth0", True)
        pair.link(pair.a, "eth1", True)
        await _until(lambda: b.role is Role.BACKUP, 2.0)
        await asyncio.sleep(5 * IV)
        assert (a.role, b.role) == (Role.ACTIVE, Role.BACKUP)
        assert a.rec.reannounces >= 1  # the winner re-announced
    finally:
        await a.transport.stop()
        await b.transport.stop()


def _sniff_one(ns: str, ifname: str, port: int, timeout: float) -> bytes:
    """Capture one UDP payload to ``port`` arriving on ``ifname`` in ``ns`` (bounded)."""
    with in_netns(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    with s:
        s.bind((ifname, 0x0800))
        s.settimeout(0.1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ip = s.recv(4096)
            except TimeoutError:
                continue
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] == socket.IPPROTO_UDP and int.from_bytes(ip[ihl + 2:ihl + 4]) == port:
                return ip[ihl + 8:]
    raise AssertionError("no heartbeat captured")


def _inject(ns: str, ifname: str, dst: str, datagrams: list[bytes], ttl: int = 255) -> None:
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.setsockopt(socket.SOL_SOCKET, 25, ifname.encode())
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        for d in datagrams:
            s.sendto(d, (dst, 5405))


async def test_forged_replayed_and_wrongly_signed_heartbeats_change_nothing(pair: Pair) -> None:
    a, b = _nodes(pair)
    await a.start()
    await b.start()
    try:
        await _until(lambda: a.role is Role.ACTIVE and b.role is Role.BACKUP, 2.0)
        captured = await asyncio.to_thread(_sniff_one, pair.b, "eth0", 5405, 2.0)
        wall = time.time()
        # what an attacker on the wire would try against the backup: "the active resigns"
        other = Sender(node_id="lvs1", secret=b"not-the-shared-secret", digest=DIGEST,
                       interval=IV)
        wrong = [other.build(Kind.HEARTBEAT, PathId.PUBLIC, Role.INIT, 0, wall)
                 for _ in range(20)]
        forged = [os.urandom(120) for _ in range(20)]
        off_link = [encode_resign(wall)]  # right secret, but TTL 64: not from the segment
        rb = b.transport.receiver
        before = dict(rb.dropped)
        _inject(pair.a, "eth0", "198.18.0.3", [captured] * 20 + wrong + forged)
        _inject(pair.a, "eth0", "198.18.0.3", off_link, ttl=64)
        await asyncio.sleep(10 * IV)
        assert (a.role, b.role) == (Role.ACTIVE, Role.BACKUP)
        assert b.transport.machine.transitions == 1
        gained = {k: rb.dropped[k] - before.get(k, 0) for k in rb.dropped}
        assert gained["replay"] == 20
        assert gained["bad_mac"] == 40
        assert gained["ttl"] == 1
    finally:
        await a.transport.stop()
        await b.transport.stop()


def encode_resign(wall: float) -> bytes:
    """A correctly signed resignation that must still be refused for its TTL."""
    from pylvs.ha.messages import Message

    msg = Message(kind=Kind.HEARTBEAT, path=PathId.PUBLIC, node_id="lvs1", role=Role.INIT,
                  priority=0, interval=IV, epoch=99, seq=1, timestamp=wall, digest=DIGEST)
    return encode(msg, SECRET)


async def test_mismatched_secret_is_loud_not_silent(pair: Pair) -> None:
    a = _node(pair.a, "lvs1", 200, "198.18.0.3", "198.19.0.3")
    b = _node(pair.b, "lvs2", 100, "198.18.0.1", "198.19.0.2", secret=b"x" * 32)
    await a.start()
    await b.start()
    try:
        await asyncio.sleep(15 * IV)
        # each refuses the other, so both serve - and each counts why, for the operator
        assert (a.role, b.role) == (Role.ACTIVE, Role.ACTIVE)
        assert a.transport.receiver.dropped["bad_mac"] > 10
        assert b.transport.receiver.dropped["bad_mac"] > 10
    finally:
        await a.transport.stop()
        await b.transport.stop()
