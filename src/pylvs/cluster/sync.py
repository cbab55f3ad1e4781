"""N-way connection sync and hellos among the members of an active-active cluster (asyncio).

Each director both sends its own connection records and installs the other members' ones, as
an IPVS director running a master and a backup sync daemon at once.  The records are the
engine's (the kernel's sync v1 entries, the ones the HA pair sends: ``pylvs.engine``) behind
the kernel's own v1 message header (``struct ip_vs_sync_mesg``: reserved 0, syncid, size,
number of entries, version 1, spare), so each sync payload is a message an IPVS backup would
parse; it travels in the HA message format (HMAC-SHA256, replay and freshness checks, TTL 255,
own sync port: :mod:`pylvs.ha.messages`) over the private network.  A message whose syncid is
not ours is ignored unless ours is 0, as the kernel's backup does.

**Unicast to each member**, not multicast (IPVS's default): the members are configured anyway
(``[cluster] members``), so unicast needs no multicast group, routing or IGMP snooping on the
private switch, and it lets a member that (re)starts get the whole table for itself alone
instead of every member receiving every member's dump again.  The price is one copy of each
datagram per member, small for the few directors of a cluster.

Per member there is one :class:`pylvs.ha.sync.SyncChannel` (its own bounded backlog and
per-tick limit, so a dead or slow member holds up nobody).  Every ``flush_interval`` this
module drains the engine's pending records once and hands the same bytes to each live
member's channel.

What keeps it sane:

* **No sync storms.**  The engine produces a record only on the packet path (a connection's
  own client packets on this director, with IPVS's threshold and period), never when it
  installs one: an entry received from a member is not sent on.  Only a full dump (for a
  member that has just come up) lists every entry, and it goes to that member alone.
* **Counters.**  An installed entry is bound to its real server like any other, so it counts
  in that server's active/inactive connections (as on an IPVS backup), its INACTIVE bit
  following the owner's records: ``wlc``/``lc`` on every director see the connections of the
  whole cluster, once each.  ``rr``'s position is not touched.
* **Expiry.**  Installed entries expire as synced entries do: the record's state timeout
  (``in_pkts = sync_threshold``), refreshed by the owner's later records.
* **Warm-up.**  A starting director announces its VIPs only when every member it hears has
  sent it the whole table (:mod:`pylvs.cluster.membership`), so the routers move no flow to a
  director that would not know it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import ip_address
from typing import Any

from pylvs.cluster.membership import Hello, Membership
from pylvs.errors import ConfigError, PeerProtocolError
from pylvs.ha.messages import Kind, Message, PathId, Receiver, Role, Sender, load_secret
from pylvs.ha.sync import SyncChannel, SyncEngine, record_count
from pylvs.ha.transport import Link, open_link_socket, read_datagrams
from pylvs.model import ClusterConfig, IPAddress
from pylvs.tasks import cancel_and_wait

__all__ = ["ClusterSync", "is_local_address"]

log = logging.getLogger("pylvs.cluster")

FLUSH_INTERVAL = 0.02  # IPVS waits 20 ms after the first buffered record before sending
PRIORITY = 100  # the header's priority byte means nothing between cluster members
SYNC_HEADER = struct.Struct("!BBHBbH")  # struct ip_vs_sync_mesg (sync protocol version 1)
SYNC_VERSION = 1


def sync_message(sync_id: int, records: bytes) -> bytes:
    """``records`` behind the kernel's v1 message header (at most 255 entries, as its u8)."""
    count = record_count(records) or 0
    return SYNC_HEADER.pack(0, sync_id, SYNC_HEADER.size + len(records), min(count, 255),
                            SYNC_VERSION, 0) + records


def sync_records(sync_id: int, message: bytes) -> bytes | None:
    """The records of a v1 message, or None when it is malformed or for another sync id."""
    if len(message) < SYNC_HEADER.size:
        return None
    reserved, syncid, size, _count, version, _spare = SYNC_HEADER.unpack_from(message)
    if reserved or version != SYNC_VERSION or size != len(message):
        return None
    if sync_id and syncid != sync_id:
        return None
    return message[SYNC_HEADER.size:]


def is_local_address(address: IPAddress) -> bool:
    """True if ``address`` is configured on this host (a bind to it succeeds)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(address), 0))
        except OSError:
            return False
    return True


class _MemberFeed:
    """The engine as one member's :class:`SyncChannel` sees it.

    ``sync_collect`` returns this member's share of the records drained once per tick for
    everybody; the full table and installing go to the engine.  The engine's master switch
    belongs to :class:`ClusterSync`, not to a channel (one member going silent must not stop
    the records for the others).
    """

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.pending = bytearray()

    def sync_collect(self) -> bytes:
        out = bytes(self.pending)
        self.pending.clear()
        return out

    def sync_full(self, now: float | None = None) -> bytes:
        return self.engine.sync_full(now)

    def sync_apply(self, blob: bytes, now: float) -> int:
        return self.engine.sync_apply(blob, now)

    def set_sync_master(self, enabled: bool = True, *, threshold: int = 3,
                        period: int = 50) -> None:
        return None


class ClusterSync:
    """Hellos and connection sync with every other member, over one UDP port."""

    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        interface: str,
        node_id: str,
        digest: bytes,
        engine: SyncEngine,
        hello_state: Callable[[], tuple[Iterable[str], bool]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        if cluster.secret_file is None:
            raise ConfigError("cluster.secret_file: required with cluster.members")
        try:
            secret = load_secret(cluster.secret_file)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("ha.secret_file", "cluster.secret_file")) \
                from None
        self.cluster = cluster
        self.peers = tuple(a for a in cluster.members if not is_local_address(a))
        # one socket per address family among the peers, on the private interface
        self._links = {a.version: Link(PathId.SYNC, interface, a, cluster.sync_port)
                       for a in self.peers}
        self.engine, self.hello_state = engine, hello_state
        self.clock, self.wall, self.flush_interval = clock, wall, flush_interval
        self.sender = Sender(node_id=node_id, secret=secret, digest=digest,
                             interval=cluster.hello_interval)
        self.receiver = Receiver(secret=secret, own_node_id=node_id)
        self.membership = Membership(node_id=node_id, epoch=self.sender.epoch, digest=digest,
                                     addresses=self.peers,
                                     hello_interval=cluster.hello_interval, started=clock(),
                                     sync=cluster.sync)
        self.channels: dict[IPAddress, SyncChannel] = {}
        if cluster.sync:
            for address in self.peers:
                self.channels[address] = SyncChannel(
                    _MemberFeed(engine), functools.partial(self._send_sync, address),
                    clock=clock, flush_interval=flush_interval, multi_master=True)
        self.counters: Counter[str] = Counter()
        self._socks: dict[int, socket.socket] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_hello = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the socket(s), start recording connections and say hello."""
        self._loop = asyncio.get_running_loop()
        try:
            for version, link in sorted(self._links.items()):
                sock = open_link_socket(link)
                self._socks[version] = sock
                self._loop.add_reader(sock.fileno(), self._readable, sock)
        except OSError as exc:
            self._close()
            raise ConfigError(f"cluster.sync_port: cannot listen on "
                              f"{next(iter(self._links.values())).interface} port "
                              f"{self.cluster.sync_port}: {exc.strerror}") from None
        if self.channels:
            self.engine.set_sync_master(True)
        self.membership.started = self.clock()
        self._task = self._loop.create_task(self._run(), name="cluster sync")
        log.info("cluster: node %s, members %s; %s", self.sender.node_id,
                 ", ".join(map(str, self.peers)) or "none",
                 "connection sync on" if self.channels else "no connection sync")

    async def stop(self) -> None:
        """Send what is pending, stop, close."""
        task, self._task = self._task, None
        await cancel_and_wait([task])
        with contextlib.suppress(Exception):  # a last flush is best effort
            self._tick()
        if self.channels:
            self.engine.set_sync_master(False)
        self._close()

    def _close(self) -> None:
        for sock in self._socks.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()

    def update_config(self, cluster: ClusterConfig, digest: bytes) -> None:
        """A reload: the new services digest goes out in the next hello; the members, the
        port, the secret and the sync switch change only with a restart (said in the log)."""
        self.sender.digest = self.membership.digest = digest
        fixed = ("members", "node_id", "secret_file", "sync", "sync_port", "sync_id",
                 "hello_interval")
        changed = [k for k in fixed if getattr(cluster, k) != getattr(self.cluster, k)]
        if changed:
            log.warning("cluster: %s change only with a restart", ", ".join(
                f"cluster.{k}" for k in changed))

    def warm(self) -> bool:
        """True once the director may announce: it holds every live member's connections."""
        return self.membership.warm(self.clock())

    # ---- the tick: liveness, records, hellos -------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                self._tick()
            except Exception:  # an engine bug must not end sync for good
                log.exception("cluster: sync tick failed")
            await asyncio.sleep(self.flush_interval)

    def _tick(self) -> None:
        now = self.clock()
        for lost in self.membership.tick(now):
            log.warning("cluster: member %s (%s) is silent", lost.address,
                        self.membership.members[lost.address].node_id)
            ch = self.channels.get(lost.address)
            if ch is not None:
                ch.set_active(False)  # its backlog goes; it gets the whole table when back
        if self.channels:
            blob = self.engine.sync_collect()  # once, for every member
            for address, ch in self.channels.items():
                if not ch.active:
                    continue
                if blob:
                    feed = ch.engine
                    assert isinstance(feed, _MemberFeed)
                    feed.pending += blob
                ch.flush()
                member = self.membership.members[address]
                if not ch.backlog and not member.dump_done and member.dump_epoch is not None:
                    self.membership.dump_sent(address)
        if now >= self._next_hello:
            self._next_hello = now + self.cluster.hello_interval
            hello = self.membership.own_hello(*self.hello_state()).encode()
            for address in self.peers:
                self._send(Kind.HELLO, address, hello)

    def _send_sync(self, address: IPAddress, payload: bytes) -> bool:
        return self._send(Kind.SYNC, address, sync_message(self.cluster.sync_id, payload))

    def _send(self, kind: Kind, address: IPAddress, payload: bytes) -> bool:
        sock = self._socks.get(address.version)
        if sock is None:
            return False
        data = self.sender.build(kind, PathId.SYNC, Role.ACTIVE, PRIORITY, self.wall(), payload)
        try:
            sock.sendto(data, (str(address), self.cluster.sync_port))
        except OSError:
            # a member that is down: no ARP answer, or a full queue; the others carry on
            self.counters[f"{kind.name.lower()}_send_errors"] += 1
            return False
        self.counters[f"{kind.name.lower()}_sent"] += 1
        return True

    # ---- receiving ---------------------------------------------------------------------------

    def _readable(self, sock: socket.socket) -> None:
        for data, src in read_datagrams(sock, self.counters, self.receiver.dropped):
            address = ip_address(str(src[0]).split("%")[0])
            if address not in self.membership.members:
                self.receiver.dropped["not_a_member"] += 1
                continue
            msg = self.receiver.accept(data, PathId.SYNC, self.wall())
            if msg is not None:
                self._received(address, msg)

    def _received(self, address: IPAddress, msg: Message) -> None:
        now = self.clock()
        for need in self.membership.heard(address, msg, now):
            log.info("cluster: member %s (%s) is alive; sending it the whole table",
                     need.address, msg.node_id)
            ch = self.channels.get(need.address)
            if ch is not None:
                ch.set_active(True)
                ch.queue_full()
        if msg.kind is Kind.HELLO:
            try:
                self.membership.hello(address, Hello.decode(msg.payload))
            except PeerProtocolError:
                self.receiver.dropped["malformed_hello"] += 1
        elif msg.kind is Kind.SYNC:
            ch = self.channels.get(address)
            records = sync_records(self.cluster.sync_id, msg.payload)
            if ch is None:
                self.receiver.dropped["sync_off"] += 1
            elif records is None:
                self.receiver.dropped["sync_header"] += 1  # another sync id, or malformed
            else:
                ch.apply(dataclasses.replace(msg, payload=records), now)
        else:
            self.receiver.dropped["heartbeat"] += 1  # an HA pair's heartbeat: not ours

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``members`` part of the cluster section: each member and its sync counters."""
        rows = self.membership.status(self.clock())
        for row in rows:
            ch = self.channels.get(ip_address(row["address"]))
            row["sync"] = None if ch is None else ch.status()
        return {
            "node_id": self.sender.node_id,
            "sync": bool(self.channels),
            "warm": self.membership.was_warm,
            "port": self.cluster.sync_port,
            "members": rows,
            "accepted": self.receiver.accepted,
            "dropped": dict(self.receiver.dropped + self.membership.dropped),
            "counters": dict(self.counters),
        }
