"""Who else is in the cluster: members, their hellos, liveness and the sync warm-up (sans-IO).

Every director of an active-active cluster lists the members (each one's private address,
``[cluster] members``) and sends each of them a signed hello every ``hello_interval`` (the HA
message format and its HMAC, replay and freshness checks: :mod:`pylvs.ha.messages`, kind
``HELLO``).  A hello says what the sender announces to its routers, whether it drains, and
whose full connection table it has finished sending (``acks``: node id -> that node's run
epoch).  This module keeps the table of members from what arrives; it reads no clock and does
no I/O (callers pass ``now``).

* A member is **alive** while it was heard within ``dead_time`` (3.5 hello intervals).
* A member that comes alive, or restarts (a new epoch), needs this director's **full table**
  (:class:`NeedsDump`); one that falls silent is :class:`Lost` (its backlog is dropped).
* A starting director is **warm** once every member it can hear has acked its epoch, i.e.
  has sent it the whole table, or after ``warmup_max``.  Until then it does not announce its
  VIPs: a flow the routers move to it must find its entry, or a non-hash scheduler would send
  it to another real server.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pylvs.errors import PeerProtocolError
from pylvs.ha.messages import Message
from pylvs.model import IPAddress

__all__ = ["Hello", "Lost", "Member", "Membership", "NeedsDump"]

DEAD_INTERVALS = 3.5  # a member silent this many hello intervals is dead
WARMUP_MAX = 5.0  # announce anyway after this many seconds without every dump acked
MAX_HELLO_VIPS = 64  # a hello must fit one datagram; more VIPs are summarised


@dataclass(frozen=True, slots=True)
class Hello:
    """What a member says about itself in each hello (the message payload, JSON)."""

    vips: tuple[str, ...] = ()  # announced to its routers now
    vip_count: int = 0  # all announced VIPs (``vips`` holds at most MAX_HELLO_VIPS)
    draining: bool = False
    sync: bool = True  # it sends and applies connection records
    acks: tuple[tuple[str, int], ...] = ()  # (node id, epoch) its full table was sent to

    def encode(self) -> bytes:
        """The payload bytes."""
        return json.dumps({"v": list(self.vips[:MAX_HELLO_VIPS]), "n": self.vip_count,
                           "d": self.draining, "s": self.sync,
                           "a": [[node, epoch] for node, epoch in self.acks]},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        """Parse a payload; PeerProtocolError when it is not a hello of this version."""
        try:
            doc = json.loads(payload)
            vips = tuple(str(v) for v in doc["v"])
            acks = tuple((str(node), int(epoch)) for node, epoch in doc["a"])
            return cls(vips=vips, vip_count=int(doc["n"]), draining=bool(doc["d"]),
                       sync=bool(doc["s"]), acks=acks)
        except (ValueError, KeyError, TypeError) as exc:
            raise PeerProtocolError(f"malformed hello: {exc}") from None


@dataclass(frozen=True, slots=True)
class NeedsDump:
    """The member at ``address`` came alive or restarted: send it the whole table."""

    address: IPAddress


@dataclass(frozen=True, slots=True)
class Lost:
    """The member at ``address`` fell silent."""

    address: IPAddress


@dataclass(slots=True)
class Member:
    """One configured member as this director knows it."""

    address: IPAddress
    node_id: str | None = None
    epoch: int | None = None
    last_seen: float | None = None
    alive: bool = False
    hello: Hello | None = None
    config_match: bool | None = None  # same services digest as ours
    acked_us: bool = False  # it has sent us its whole table (for our current epoch)
    dump_epoch: int | None = None  # its epoch our full table is being sent to
    dump_done: bool = False  # ... and has been sent


@dataclass(slots=True)
class Membership:
    """The member table of one director."""

    node_id: str
    epoch: int  # our run's epoch (the Sender's)
    digest: bytes  # our services digest
    addresses: Sequence[IPAddress]
    hello_interval: float
    started: float
    sync: bool = True
    warmup_max: float = WARMUP_MAX
    dropped: Counter[str] = field(default_factory=Counter)
    members: dict[IPAddress, Member] = field(init=False)
    was_warm: bool = False  # once warm, a member's later restart does not withdraw our VIPs

    def __post_init__(self) -> None:
        self.members = {a: Member(a) for a in self.addresses}

    @property
    def dead_time(self) -> float:
        """Silence after which a member is dead."""
        return DEAD_INTERVALS * self.hello_interval

    def heard(self, address: IPAddress, msg: Message, now: float) -> list[NeedsDump]:
        """Any authenticated datagram from ``address``: liveness, restarts, its hello."""
        m = self.members.get(address)
        if m is None:
            self.dropped["not_a_member"] += 1
            return []
        out: list[NeedsDump] = []
        if not m.alive or msg.epoch != m.epoch:
            out.append(NeedsDump(address))
            m.dump_epoch, m.dump_done = msg.epoch, False
            if msg.epoch != m.epoch:
                m.acked_us = False
        m.node_id, m.epoch, m.last_seen, m.alive = msg.node_id, msg.epoch, now, True
        m.config_match = msg.digest == self.digest
        return out

    def hello(self, address: IPAddress, hello: Hello) -> None:
        """A hello from ``address`` (after :meth:`heard`)."""
        m = self.members.get(address)
        if m is None:
            return
        m.hello = hello
        if not hello.sync or (self.node_id, self.epoch) in hello.acks:
            m.acked_us = True

    def dump_sent(self, address: IPAddress) -> None:
        """The whole table queued for ``address`` has left (its backlog emptied)."""
        m = self.members.get(address)
        if m is not None and m.dump_epoch is not None:
            m.dump_done = True

    def tick(self, now: float) -> list[Lost]:
        """Members silent for ``dead_time`` become dead."""
        out = []
        for m in self.members.values():
            if m.alive and m.last_seen is not None and now - m.last_seen > self.dead_time:
                m.alive = False
                out.append(Lost(m.address))
        return out

    def own_hello(self, announced: Iterable[str], draining: bool) -> Hello:
        """Our hello: what we announce, and whom our whole table has reached."""
        vips = tuple(sorted(announced))
        acks = tuple((m.node_id, m.dump_epoch) for m in self.members.values()
                     if m.alive and m.dump_done and m.node_id is not None
                     and m.dump_epoch is not None)
        return Hello(vips=vips[:MAX_HELLO_VIPS], vip_count=len(vips), draining=draining,
                     sync=self.sync, acks=acks)

    def warm(self, now: float) -> bool:
        """True once this director may announce (it holds its peers' connections)."""
        if not self.was_warm:
            self.was_warm = self._warm(now)
        return self.was_warm

    def _warm(self, now: float) -> bool:
        if not self.sync or now - self.started >= self.warmup_max:
            return True
        ready = all(m.acked_us for m in self.members.values() if m.alive)
        if now - self.started < self.dead_time:
            # not every member had time to be heard: warm early only if all were, and acked
            return ready and all(m.alive for m in self.members.values())
        return ready

    def status(self, now: float) -> list[dict[str, Any]]:
        """One JSON-able row per configured member."""
        rows = []
        for m in self.members.values():
            h = m.hello
            rows.append({
                "address": str(m.address), "node_id": m.node_id, "alive": m.alive,
                "last_seen_ago": None if m.last_seen is None else round(now - m.last_seen, 3),
                "announced": list(h.vips) if h else [],
                "announced_count": h.vip_count if h else 0,
                "draining": bool(h and h.draining), "config_match": m.config_match,
                "synced_to_us": m.acked_us, "synced_to_it": m.dump_done,
            })
        return rows
