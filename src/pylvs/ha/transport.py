"""The asyncio adapter around :class:`~pylvs.ha.state.HaStateMachine`: UDP on both networks.

It holds no policy.  It reads datagrams, authenticates them (``messages.Receiver``), feeds
heartbeats to the state machine and sync batches to the sync handler, keeps one timer in step
with ``next_deadline()``, and carries out the returned actions.

Sockets: one UDP socket per path (public, private, and the sync port), each bound with
``SO_BINDTODEVICE`` to its interface, so a heartbeat's path is known from the socket it arrived
on and a cut cable silences exactly one path.  A path whose peer address is IPv6 gets an IPv6
socket (the hop limit and traffic class stand in for TTL and TOS).  Datagrams go out with TTL
255 and are accepted only with TTL 255 (RFC 5082, as VRRP; VRRPv3 asks the same hop limit of
IPv6): nothing routed from off-link gets in even before the HMAC check.  They are marked DSCP
CS6 and socket priority 6 so that a busy dataplane on the same interface does not queue
heartbeats behind bulk traffic.

Sending on time (issue 14): the periodic heartbeats leave from a native real-time thread
(:mod:`pylvs.ha.pacer`), which the loop keeps supplied with the next KEEPER_COVER seconds of
signed heartbeats; so neither a busy loop nor packet workers filling the CPUs delay one, and a
loop stalled longer than KEEPER_COVER stops them (a hung control plane: the peer takes over).
A changed heartbeat (role, priority) is re-planned from now, which sends it at once.  Where the
pacer cannot run (an injected clock in tests, no thread), the loop sends them itself and a
keeper thread (:mod:`pylvs.ha.keeper`) repeats the last one while the loop is more than an
interval and a half late, for up to KEEPER_COVER seconds.

Late timers (docs/failover-health.md#lessons row 5): when the loop wakes late, heartbeats may
already be
sitting in the socket buffers; uvloop runs timers before polling for I/O, so the timer callback
first drains every socket and only then lets the state machine decide that the peer is dead.

Role changes are carried out in order by one worker task (claiming the addresses must finish
before releasing them can start).  If carrying one out fails, the node goes to FAULT (the peer
then takes over) and tries to recover after ``fault_hold`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pylvs.ha.keeper import HeartbeatKeeper
from pylvs.ha.messages import Kind, Message, PathId, Receiver, Role, Sender
from pylvs.ha.pacer import Datagram, HeartbeatPacer, plan, sockaddr
from pylvs.ha.state import (
    Action,
    ConfigMismatch,
    HaStateMachine,
    PathChanged,
    PeerSeen,
    Reannounce,
    RoleChanged,
    SendHeartbeat,
)
from pylvs.looplag import LagHistogram
from pylvs.model import IPAddress
from pylvs.tasks import TaskSet, cancel_and_wait

__all__ = ["HaTransport", "Link", "RoleHandler", "open_link_socket", "read_datagrams",
           "received_ttl"]

log = logging.getLogger("pylvs.ha")

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
SO_PRIORITY = getattr(socket, "SO_PRIORITY", 12)
TTL = 255
DSCP_CS6 = 0xC0
MAX_DATAGRAM = 2048
DRAIN_LIMIT = 256  # datagrams read per wake-up and socket: bounded, the rest waits a turn
# The longest loop stall the heartbeat keeper covers (pylvs.ha.keeper): past it the control
# plane counts as hung and the peer may take over.  A 10,000-server reload stalls < 1 s.
KEEPER_COVER = 3.0


class RoleHandler(Protocol):
    """What carries out role changes (``takeover.Takeover``)."""

    async def role_changed(self, new: Role, old: Role) -> None:
        """Claim (ACTIVE) or release (anything else) the addresses; raise on failure."""

    async def reannounce(self) -> None:
        """Announce the addresses again after winning a split brain."""


@dataclass(frozen=True, slots=True)
class Link:
    """One path to the peer: our interface and the peer's address on that network."""

    path: PathId
    interface: str
    peer: IPAddress
    port: int


def open_link_socket(link: Link) -> socket.socket:
    """A non-blocking UDP socket bound to ``link.port`` on ``link.interface`` only, sending
    with TTL (hop limit) 255, DSCP CS6 and priority 6 and reporting each arrival's TTL."""
    v6 = link.peer.version == 6
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, link.interface.encode())
        if v6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, DSCP_CS6)
        else:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
            s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_CS6)
        s.setsockopt(socket.SOL_SOCKET, SO_PRIORITY, 6)
        s.setblocking(False)
        s.bind(("::" if v6 else "0.0.0.0", link.port))
    except OSError:
        s.close()
        raise
    return s


def received_ttl(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The TTL or hop limit of a datagram from ``recvmsg``'s ancillary data, None if absent."""
    for level, kind, data in ancdata:
        if ((level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL),
                              (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)) and len(data) >= 4):
            ttl: int = struct.unpack("=i", data[:4])[0]
            return ttl
    return None


def read_datagrams(sock: socket.socket, counters: Counter[str],
                   dropped: Counter[str]) -> Iterator[tuple[bytes, Any]]:
    """The datagrams waiting on ``sock`` (at most DRAIN_LIMIT: bounded, the rest waits a turn)
    that arrived with TTL 255, as (data, source address); read errors are counted in
    ``counters``, TTL drops in ``dropped``."""
    for _ in range(DRAIN_LIMIT):
        try:
            data, anc, _flags, addr = sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            counters["recv_errors"] += 1
            return
        if received_ttl(anc) != TTL:
            dropped["ttl"] += 1
            continue
        yield data, addr


class HaTransport:
    """Runs one node's heartbeat protocol over real sockets."""

    def __init__(
        self,
        machine: HaStateMachine,
        sender: Sender,
        receiver: Receiver,
        links: Sequence[Link],
        handler: RoleHandler,
        *,
        sync_link: Link | None = None,
        on_sync: Callable[[Message, float], None] | None = None,
        on_peer_seen: Callable[[PeerSeen], None] | None = None,
        fault_hold: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.machine = machine
        self.sender = sender
        self.receiver = receiver
        self.links = tuple(links)
        self.sync_link = sync_link
        self.handler = handler
        self.on_sync = on_sync
        self.on_peer_seen = on_peer_seen
        self.fault_hold = fault_hold
        self.clock = clock
        self.wall = wall
        self.counters: Counter[str] = Counter()
        self.last_change: RoleChanged | None = None
        self._socks: dict[PathId, tuple[socket.socket, Link]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._late_logged = float("-inf")
        # How late the heartbeat timer fires: the send jitter the peer sees (issue 13).
        self.timer_lag = LagHistogram(window=600)
        self._changes: asyncio.Queue[RoleChanged] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._reannouncing = TaskSet()  # re-announcements in flight (kept, awaited on stop)
        self._recover: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: HeartbeatKeeper[SendHeartbeat] = HeartbeatKeeper(
            self._send_heartbeat_now, machine.interval, KEEPER_COVER, clock)
        # the pacer needs the real clock: its thread sleeps until time.monotonic() deadlines
        self._want_pacer = clock is time.monotonic
        self._pacer: HeartbeatPacer | None = None
        self._paced: tuple[Role, int] | None = None  # what the pacer's queue carries
        self._ticking = False  # in the periodic timer: a heartbeat due now is a top-up

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sockets and start as BACKUP."""
        self._loop = asyncio.get_running_loop()
        try:
            for link in (*self.links, *((self.sync_link,) if self.sync_link else ())):
                sock = open_link_socket(link)
                self._socks[link.path] = (sock, link)
                self._loop.add_reader(sock.fileno(), self._readable, link.path)
        except OSError:
            self._close_sockets()
            raise
        if self._want_pacer:
            try:
                self._pacer = HeartbeatPacer()
            except OSError as exc:
                log.warning("ha: %s; the event loop sends the heartbeats", exc)
        self._worker = self._loop.create_task(self._work())
        self._run(self.machine.start(self.clock()))
        if self._pacer is None:
            self._keeper.start()

    async def stop(self, handover: bool = True) -> None:
        """Leave: (``handover``) tell the peer with priority 0, then release the addresses.

        Priority 0 goes out first: the peer needs tens of milliseconds to claim the addresses,
        and meanwhile we keep forwarding what still reaches us, so the clients see one gap
        (the peer's claim) instead of two in a row (our release, then its claim).  Both nodes
        answer ARP for that short overlap; the peer's gratuitous ARP settles it.
        """
        pacer, self._pacer = self._pacer, None
        if pacer is not None:
            pacer.close()
        self._keeper.stop()  # from here on only the loop speaks for this node
        actions = self.machine.stop(self.clock())
        if handover:
            for act in actions:
                if isinstance(act, SendHeartbeat):
                    for _ in range(2):  # one lost datagram must not cost a full dead time
                        self._send_heartbeat(act)
        for act in actions:
            if isinstance(act, RoleChanged):
                self._changes.put_nowait(act)
        if self._worker is not None:
            await self._changes.join()
        if self._timer is not None:
            self._timer.cancel()
        if self._recover is not None:
            self._recover.cancel()
        worker, self._worker = self._worker, None
        await cancel_and_wait([worker])
        await self._reannouncing.close()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock, _ in self._socks.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()

    # ---- sending -----------------------------------------------------------------------------

    def send_sync(self, payload: bytes) -> bool:
        """Send one sync batch to the peer; False if it could not be sent."""
        entry = self._socks.get(PathId.SYNC)
        if entry is None:
            return False
        sock, link = entry
        data = self.sender.build(Kind.SYNC, PathId.SYNC, self.machine.role,
                                 self.machine.priority, self.wall(), payload)
        try:
            sock.sendto(data, (str(link.peer), link.port))
        except OSError:
            self.counters["sync_send_errors"] += 1
            return False
        self.counters["sync_sent"] += 1
        return True

    def _send_heartbeat(self, act: SendHeartbeat) -> None:
        if self._pacer is not None:
            self._pace(self._pacer, act)
            return
        with self._keeper.lock:
            self._send_heartbeat_now(act)
            self._keeper.sent(act)

    def _pace(self, pacer: HeartbeatPacer, act: SendHeartbeat) -> None:
        """On the periodic tick, top the pacer's queue up to KEEPER_COVER ahead.  Re-plan from
        now (send at once) for any other heartbeat (a role change, a re-announcement), when
        the content changed, when the machine sends no more after this one (a resign), or when
        the queue ran dry."""
        now, interval = self.clock(), self.machine.interval
        paths = [self._socks[p] for p in self.machine.paths if p in self._socks]
        periodic = self.machine.send_at is not None
        # the queue holds at most LVS_PACER_QUEUE datagrams: a short interval covers less
        cover = min(KEEPER_COVER, (pacer.capacity // max(1, len(paths)) - 1) * interval)
        wall_offset = self.wall() - now

        def build(due: float) -> list[Datagram]:
            return [Datagram(due, sock.fileno(), sockaddr(link.peer, link.port),
                             self.sender.build(Kind.HEARTBEAT, link.path, act.role,
                                               act.priority, due + wall_offset))
                    for sock, link in paths]

        last = pacer.last_due()
        try:
            if self._ticking and (act.role, act.priority) == self._paced and periodic and \
                    last >= now:
                pacer.queue(plan(last + interval, now + cover, interval, build))
            else:
                pacer.queue(plan(now, now + cover if periodic else now, interval, build),
                            replace=True)
                self._paced = (act.role, act.priority) if periodic else None
        except OSError as exc:  # a bug, not a peer fault: say so, and send this one ourselves
            log.error("ha: %s", exc)
            self._send_heartbeat_now(act)

    def _send_heartbeat_now(self, act: SendHeartbeat) -> None:
        wall = self.wall()
        for path in self.machine.paths:
            entry = self._socks.get(path)
            if entry is None:
                continue
            sock, link = entry
            data = self.sender.build(Kind.HEARTBEAT, path, act.role, act.priority, wall)
            try:
                sock.sendto(data, (str(link.peer), link.port))
                self.counters[f"sent_{path.name.lower()}"] += 1
            except OSError:
                # a cut link: ENETUNREACH or a full queue; the other path carries on
                self.counters[f"send_errors_{path.name.lower()}"] += 1

    # ---- receiving and timers ----------------------------------------------------------------

    def _readable(self, path: PathId) -> None:
        self._drain(path)
        self._reschedule()

    def _drain(self, path: PathId) -> None:
        entry = self._socks.get(path)
        if entry is None:
            return
        for data, _addr in read_datagrams(entry[0], self.counters, self.receiver.dropped):
            msg = self.receiver.accept(data, path, self.wall())
            if msg is None:
                continue
            now = self.clock()
            if msg.kind is not Kind.HEARTBEAT:  # a cluster hello has no business here
                if msg.kind is Kind.SYNC and self.on_sync is not None and \
                        self.machine.role is not Role.ACTIVE:
                    self.on_sync(msg, now)
                continue
            self._run(self.machine.receive(msg, now))

    def _on_timer(self) -> None:
        self._timer = None
        now = self.clock()
        self.timer_lag.observe(now - self._timer_due)
        if now - self._timer_due > self.machine.interval / 2:
            self.counters["late_timers"] += 1
            if now - self._late_logged >= 1.0:  # at most once a second: a hint, not a flood
                self._late_logged = now
                log.warning("ha: timer ran %.0f ms late (late timers so far: %d); a busy host "
                            "needs a longer interval", (now - self._timer_due) * 1000,
                            self.counters["late_timers"])
        for path in list(self._socks):
            self._drain(path)
        self._ticking = True
        try:
            self._run(self.machine.handle_timer(self.clock()))
        finally:
            self._ticking = False
        self._reschedule()

    def _reschedule(self) -> None:
        if self._loop is None:
            return
        due = self.machine.next_deadline()
        if due is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None and due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_later(max(0.0, due - self.clock()), self._on_timer)

    # ---- actions -----------------------------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, SendHeartbeat):
                self._send_heartbeat(act)
            elif isinstance(act, RoleChanged):
                log.warning("ha: %s -> %s (%s)", act.old.name, act.new.name, act.reason)
                self.last_change = act
                self._changes.put_nowait(act)
            elif isinstance(act, Reannounce):
                log.warning("ha: staying ACTIVE and re-announcing (%s)", act.reason)
                if self._loop is not None:
                    self._reannouncing.start(self.handler.reannounce(), name="ha reannounce")
            elif isinstance(act, ConfigMismatch):
                if act.matches:
                    log.warning("ha: peer %s config digest matches ours again", act.peer)
                else:
                    log.error("ha: CONFIG MISMATCH: peer %s runs services digest %s, ours is %s;"
                              " a failover would change the service", act.peer,
                              act.peer_digest.hex(), self.machine.digest.hex())
            elif isinstance(act, PeerSeen):
                log.info("ha: peer %s (run %016x) is %s", act.peer, act.epoch, act.role.name)
                if self.on_peer_seen is not None:
                    self.on_peer_seen(act)
            elif isinstance(act, PathChanged):
                log.warning("ha: %s path to peer is %s", act.path.name.lower(),
                            "up" if act.alive else "SILENT")
        self._reschedule()

    async def _work(self) -> None:
        while True:
            change = await self._changes.get()
            try:
                await self.handler.role_changed(change.new, change.old)
            except Exception as exc:  # netconf/OS failure: this node cannot serve
                log.error("ha: becoming %s failed: %s", change.new.name, exc)
                if change.new is not Role.FAULT and self.machine.role is not Role.INIT:
                    self._run(self.machine.fault(self.clock(), f"{change.new.name}: {exc}"))
                    if self._loop is not None:
                        self._recover = self._loop.call_later(self.fault_hold, self._try_recover)
            finally:
                self._changes.task_done()

    def _try_recover(self) -> None:
        self._recover = None
        self._run(self.machine.recover(self.clock()))

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for the API and ``pylvs status``."""
        m = self.machine
        now = self.clock()
        return {
            "role": m.role.name.lower(),
            "node_id": m.node_id,
            "priority": m.priority,
            "peer": None if m.peer is None else {
                "node_id": m.peer.node_id, "role": m.peer.role.name.lower(),
                "priority": m.peer.priority,
            },
            "paths": {p.name.lower(): {"alive": m.path_alive.get(p, False),
                                       "last_heard_ago": (round(now - m.last_heard[p], 3)
                                                          if p in m.last_heard else None)}
                      for p in m.paths},
            "transitions": m.transitions,
            "accepted": self.receiver.accepted,
            "dropped": dict(self.receiver.dropped),
            "counters": dict(self.counters),
            "timer_lag_ms": _lag_ms(self.timer_lag),
            "heartbeats_repeated_in_stalls": self._keeper.repeated,
            "pacer": None if self._pacer is None else self._pacer.stats(),
        }


def _lag_ms(hist: LagHistogram) -> dict[str, float]:
    snap = hist.snapshot()
    return {k: round(float(snap[k]) * 1e3, 2) for k in ("p50", "p99", "max", "max_ever")}
