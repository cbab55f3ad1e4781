"""The HA role state machine (sans-IO): who of the two directors owns the VIPs.

Theory of operation
-------------------
Each director runs one :class:`HaStateMachine`.  It never reads a clock or a socket: the adapter
(``transport.py``) feeds it authenticated heartbeats with :meth:`~HaStateMachine.receive`, calls
:meth:`~HaStateMachine.handle_timer` when :meth:`~HaStateMachine.next_deadline` is reached, and
carries out the returned actions (send a heartbeat, change role, re-announce).  Every call takes
``now``, a monotonic time in seconds.

Roles follow VRRP (docs/failover-health.md#vrrp) with the fixes its #lessons and #design-takeaways
ask for:

* **INIT**: not started, or stopped.  ``start`` moves to BACKUP.
* **BACKUP**: waits for the peer.  Both nodes send a heartbeat every ``interval`` on every path
  (public and private network), whatever their role, so each always knows what the other is.
  The *dead timer* is re-armed by every heartbeat from an active peer (or from a standby peer
  that outranks us, see below) on *any* path; so the peer is dead only when its heartbeats stop
  on every path, and one cut cable is not a failover.  Dead time is VRRPv3's
  ``3 * interval + skew`` with ``skew = (256 - priority) / 256 * interval``, using the peer's
  advertised interval, unless configured explicitly.
* **ACTIVE**: owns the VIPs and the nat_router address.  Entered when the dead timer fires, when
  the peer resigns (priority 0 on a clean stop, or FAULT) - at once, without waiting - or when
  preemption is due.
* **FAULT**: this node cannot serve (taking the addresses failed, a link is down).  It keeps
  sending heartbeats announcing FAULT, which the peer reads as a resignation.  RECOVER goes
  back to BACKUP, which waits a full dead time before acting, like a fresh start.

Ranking: higher priority wins; on a tie the higher node id wins (the lower one steps down).

* Preemption: a BACKUP that outranks an ACTIVE peer takes over only if ``preempt`` is set, and
  only ``preempt_delay`` seconds after it first heard that peer (the adapter makes this at least
  long enough for the connection table to be synced to us).  Without ``preempt`` a returning
  primary stays BACKUP: it hears the active peer within one interval, long before its own
  dead timer (a full dead time after start) could fire - the condition keepalived's users keep
  tripping over with nopreempt (#lessons row 3).
* Cold start: two BACKUP nodes hear each other; the outranked one keeps re-arming its dead
  timer while the outranking standby is alive, so only the higher one takes over (piranha's
  "both activate at once" flaw, #piranha-pulse).
* Split brain (both ACTIVE, e.g. after a partition heals): ranking decides regardless of
  ``preempt``.  The loser steps down; the winner re-announces (heartbeat now, gratuitous ARP
  burst and notify again) because the loser's ARP replies may have moved the neighbours' caches
  (#lessons row 1).  Re-announcements are spaced at least one dead time apart so a one-way partition
  cannot make us flood.  An ACTIVE node also re-announces when the peer is heard again after
  being silent on every path, because the peer may have served during the partition and
  stepped down before we ever heard it as ACTIVE.
* A peer whose config digest differs from ours is reported once per distinct digest.

The machine is a table: ``TRANSITIONS[(role, trigger)] -> (new role, effects)``.  Entering a
role runs ``ON_ENTER[role]`` first, then the transition's own effects.  A heartbeat is turned
into exactly one trigger by :func:`classify`.  A (role, trigger) pair missing from the table is
a bug and raises :class:`HaStateError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pylvs.ha.messages import Kind, Message, PathId, Role

__all__ = [
    "ON_ENTER",
    "TRANSITIONS",
    "Action",
    "ConfigMismatch",
    "Effect",
    "HaStateError",
    "HaStateMachine",
    "PathChanged",
    "PeerSeen",
    "Reannounce",
    "RoleChanged",
    "SendHeartbeat",
    "Trigger",
    "classify",
    "default_dead_time",
]


class HaStateError(Exception):
    """A (role, trigger) pair the table does not cover: a bug in this module."""


class Trigger(enum.Enum):
    """What happened, as the transition table sees it."""

    START = "start"
    STOP = "stop"
    FAULT = "fault"
    RECOVER = "recover"
    DEAD_TIMER = "dead-timer"
    PREEMPT_TIMER = "preempt-timer"
    PEER_ACTIVE_OUTRANKS = "peer-active-outranks"  # active peer ranks above us
    PEER_ACTIVE_PREEMPTIBLE = "peer-active-preemptible"  # we rank above it, preempt on
    PEER_ACTIVE_TOLERATED = "peer-active-tolerated"  # we rank above it, preempt off
    PEER_STANDBY_OUTRANKS = "peer-standby-outranks"  # standby peer ranks above us
    PEER_STANDBY_OUTRANKED = "peer-standby-outranked"  # we rank above the standby peer
    PEER_RESIGNS = "peer-resigns"  # priority 0 or FAULT: the peer will not serve


class Effect(enum.Enum):
    """Side effects of a transition, applied in order."""

    ARM_DEAD = "arm-dead"  # dead timer := now + dead time
    CANCEL_DEAD = "cancel-dead"
    ARM_PREEMPT = "arm-preempt"  # preempt timer := now + delay, unless already armed
    CANCEL_PREEMPT = "cancel-preempt"
    SEND_NOW = "send-now"  # heartbeat at once, announcing the (new) role
    SEND_RESIGN = "send-resign"  # heartbeat with priority 0
    REANNOUNCE = "reannounce"  # split-brain winner: GARP + notify again (rate limited)


R, T, E = Role, Trigger, Effect
_Step = tuple[Role, tuple[Effect, ...]]

# Effects run whenever a role is entered from a different one.
ON_ENTER: dict[Role, tuple[Effect, ...]] = {
    R.INIT: (E.CANCEL_DEAD, E.CANCEL_PREEMPT),
    R.BACKUP: (E.ARM_DEAD, E.CANCEL_PREEMPT, E.SEND_NOW),
    R.ACTIVE: (E.CANCEL_DEAD, E.CANCEL_PREEMPT, E.SEND_NOW),
    R.FAULT: (E.CANCEL_DEAD, E.CANCEL_PREEMPT, E.SEND_NOW),
}

_PEER_TRIGGERS = (
    T.PEER_ACTIVE_OUTRANKS, T.PEER_ACTIVE_PREEMPTIBLE, T.PEER_ACTIVE_TOLERATED,
    T.PEER_STANDBY_OUTRANKS, T.PEER_STANDBY_OUTRANKED, T.PEER_RESIGNS,
)

TRANSITIONS: dict[tuple[Role, Trigger], _Step] = {
    # not started / stopped: heartbeats are only bookkeeping
    (R.INIT, T.START): (R.BACKUP, ()),
    (R.INIT, T.STOP): (R.INIT, ()),
    (R.INIT, T.FAULT): (R.INIT, ()),
    (R.INIT, T.RECOVER): (R.INIT, ()),
    **{(R.INIT, t): (R.INIT, ()) for t in _PEER_TRIGGERS},
    # standby
    (R.BACKUP, T.STOP): (R.INIT, (E.SEND_RESIGN,)),
    (R.BACKUP, T.FAULT): (R.FAULT, ()),
    (R.BACKUP, T.RECOVER): (R.BACKUP, ()),
    (R.BACKUP, T.DEAD_TIMER): (R.ACTIVE, ()),
    (R.BACKUP, T.PREEMPT_TIMER): (R.ACTIVE, ()),
    (R.BACKUP, T.PEER_RESIGNS): (R.ACTIVE, ()),
    (R.BACKUP, T.PEER_ACTIVE_OUTRANKS): (R.BACKUP, (E.ARM_DEAD, E.CANCEL_PREEMPT)),
    (R.BACKUP, T.PEER_ACTIVE_PREEMPTIBLE): (R.BACKUP, (E.ARM_DEAD, E.ARM_PREEMPT)),
    (R.BACKUP, T.PEER_ACTIVE_TOLERATED): (R.BACKUP, (E.ARM_DEAD, E.CANCEL_PREEMPT)),
    (R.BACKUP, T.PEER_STANDBY_OUTRANKS): (R.BACKUP, (E.ARM_DEAD,)),
    (R.BACKUP, T.PEER_STANDBY_OUTRANKED): (R.BACKUP, ()),
    # owner of the addresses
    (R.ACTIVE, T.STOP): (R.INIT, (E.SEND_RESIGN,)),
    (R.ACTIVE, T.FAULT): (R.FAULT, ()),
    (R.ACTIVE, T.RECOVER): (R.ACTIVE, ()),
    (R.ACTIVE, T.PEER_ACTIVE_OUTRANKS): (R.BACKUP, ()),  # split brain, we lose
    (R.ACTIVE, T.PEER_ACTIVE_PREEMPTIBLE): (R.ACTIVE, (E.REANNOUNCE,)),  # split brain, we win
    (R.ACTIVE, T.PEER_ACTIVE_TOLERATED): (R.ACTIVE, (E.REANNOUNCE,)),
    (R.ACTIVE, T.PEER_STANDBY_OUTRANKS): (R.ACTIVE, ()),  # its job to preempt, if it may
    (R.ACTIVE, T.PEER_STANDBY_OUTRANKED): (R.ACTIVE, ()),
    (R.ACTIVE, T.PEER_RESIGNS): (R.ACTIVE, ()),
    # cannot serve
    (R.FAULT, T.STOP): (R.INIT, (E.SEND_RESIGN,)),
    (R.FAULT, T.FAULT): (R.FAULT, ()),
    (R.FAULT, T.RECOVER): (R.BACKUP, ()),
    **{(R.FAULT, t): (R.FAULT, ()) for t in _PEER_TRIGGERS},
}


def default_dead_time(interval: float, priority: int) -> float:
    """VRRPv3 Master_Down_Interval: 3 intervals plus a skew favouring high priority."""
    return 3 * interval + (256 - priority) / 256 * interval


def _rank(priority: int, node_id: str) -> tuple[int, bytes]:
    return (priority, node_id.encode())


def classify(msg: Message, priority: int, node_id: str, preempt: bool) -> Trigger:
    """Turn one peer heartbeat into the trigger the table understands."""
    if msg.priority == 0 or msg.role is Role.FAULT:
        return T.PEER_RESIGNS
    peer_wins = _rank(msg.priority, msg.node_id) > _rank(priority, node_id)
    if msg.role is Role.ACTIVE:
        if peer_wins:
            return T.PEER_ACTIVE_OUTRANKS
        return T.PEER_ACTIVE_PREEMPTIBLE if preempt else T.PEER_ACTIVE_TOLERATED
    return T.PEER_STANDBY_OUTRANKS if peer_wins else T.PEER_STANDBY_OUTRANKED


@dataclass(frozen=True, slots=True, kw_only=True)
class SendHeartbeat:
    """Send one heartbeat on every path now."""

    role: Role
    priority: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleChanged:
    """Take (ACTIVE) or release (anything else) the addresses, then run notify."""

    new: Role
    old: Role
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reannounce:
    """Still ACTIVE after a split brain: gratuitous ARP burst and notify again."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigMismatch:
    """The peer announces a different services config digest (or the same one again)."""

    peer: str
    peer_digest: bytes
    matches: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSeen:
    """First heartbeat of a peer run (new node id or epoch): time for a full sync."""

    peer: str
    epoch: int
    role: Role


@dataclass(frozen=True, slots=True, kw_only=True)
class PathChanged:
    """A path to the peer went silent for a dead time, or came back."""

    path: PathId
    alive: bool


Action = SendHeartbeat | RoleChanged | Reannounce | ConfigMismatch | PeerSeen | PathChanged


@dataclass(slots=True)
class _Peer:
    node_id: str
    epoch: int
    role: Role
    priority: int
    interval: float
    digest: bytes


@dataclass(slots=True)
class HaStateMachine:
    """One director's role.  Feed it heartbeats and timer ticks; carry out what it returns."""

    node_id: str
    priority: int
    interval: float
    digest: bytes
    paths: tuple[PathId, ...] = (PathId.PUBLIC, PathId.PRIVATE)
    preempt: bool = True
    preempt_delay: float = 0.0
    dead_time: float | None = None  # None: default_dead_time(peer interval, priority)
    role: Role = Role.INIT
    peer: _Peer | None = None
    dead_at: float | None = None
    preempt_at: float | None = None
    send_at: float | None = None
    last_reannounce: float = float("-inf")
    last_heard: dict[PathId, float] = field(default_factory=dict)
    path_alive: dict[PathId, bool] = field(default_factory=dict)
    transitions: int = 0
    _mismatch: bytes | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} outside 1..255")
        if self.interval <= 0:
            raise ValueError("interval must be positive")

    # ---- inputs ------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Begin as BACKUP; the first heartbeat goes out at once."""
        return self._fire(T.START, now, "start")

    def stop(self, now: float) -> list[Action]:
        """Clean stop: announce priority 0 so the peer takes over at once."""
        return self._fire(T.STOP, now, "stop")

    def fault(self, now: float, reason: str) -> list[Action]:
        """This node cannot serve (e.g. taking the addresses failed)."""
        return self._fire(T.FAULT, now, reason)

    def recover(self, now: float) -> list[Action]:
        """The fault is gone; back to BACKUP, waiting a full dead time."""
        return self._fire(T.RECOVER, now, "recovered")

    def receive(self, msg: Message, now: float) -> list[Action]:
        """Handle one authenticated heartbeat (``Receiver.accept`` has checked it)."""
        if msg.kind is not Kind.HEARTBEAT:
            return []
        out: list[Action] = []
        # Silent on every path until now: the peer may have served during a partition.
        returned = not any(self.path_alive.values())
        if msg.path in self.paths:
            self.last_heard[msg.path] = now
            if not self.path_alive.get(msg.path, False):
                self.path_alive[msg.path] = True
                out.append(PathChanged(path=msg.path, alive=True))
        peer = self.peer
        if peer is None or (peer.node_id, peer.epoch) != (msg.node_id, msg.epoch):
            out.append(PeerSeen(peer=msg.node_id, epoch=msg.epoch, role=msg.role))
        self.peer = _Peer(msg.node_id, msg.epoch, msg.role, msg.priority, msg.interval, msg.digest)
        if msg.digest != self.digest and msg.digest != self._mismatch:
            self._mismatch = msg.digest
            out.append(ConfigMismatch(peer=msg.node_id, peer_digest=msg.digest, matches=False))
        elif msg.digest == self.digest and self._mismatch is not None:
            self._mismatch = None
            out.append(ConfigMismatch(peer=msg.node_id, peer_digest=msg.digest, matches=True))
        trigger = classify(msg, self.priority, self.node_id, self.preempt)
        reason = f"heard {msg.node_id} {msg.role.name} prio {msg.priority}"
        if self.role is Role.ACTIVE and msg.role is Role.ACTIVE:
            reason = f"split brain, {reason}"
        out += self._fire(trigger, now, reason)
        if returned and self.role is Role.ACTIVE:
            out += self._apply(E.REANNOUNCE, now, f"peer back after silence, {reason}")
        return out

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`handle_timer` must be called, or None when idle."""
        times = [t for t in (self.send_at, self.dead_at, self.preempt_at) if t is not None]
        times += [self.last_heard[p] + self._dead_time() for p in self.last_heard
                  if self.path_alive.get(p)]
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[Action]:
        """Run everything due at ``now``."""
        out: list[Action] = []
        limit = self._dead_time()
        for path, heard in self.last_heard.items():
            if self.path_alive.get(path) and now >= heard + limit:
                self.path_alive[path] = False
                out.append(PathChanged(path=path, alive=False))
        if self.dead_at is not None and now >= self.dead_at:
            self.dead_at = None
            out += self._fire(T.DEAD_TIMER, now, self._dead_timer_reason())
        if self.preempt_at is not None and now >= self.preempt_at:
            self.preempt_at = None
            out += self._fire(T.PREEMPT_TIMER, now, "preempting lower-priority peer")
        if self.send_at is not None and now >= self.send_at:
            out.append(self._send(now))
        return out

    def _dead_timer_reason(self) -> str:
        """Why the dead timer fired: a silent peer, or (cold start) a standby we outrank.

        An outranked standby's heartbeats do not re-arm our dead timer, so at a cold start the
        higher node takes over while hearing the peer; "silent" would then be a false alarm.
        """
        peer = self.peer
        if peer is None or not any(self.path_alive.values()):
            return "peer silent on every path"
        return (f"no active peer: {peer.node_id} is {peer.role.name} prio {peer.priority}, "
                "outranked by us")

    # ---- the table ---------------------------------------------------------------------------

    def _fire(self, trigger: Trigger, now: float, reason: str) -> list[Action]:
        try:
            new, effects = TRANSITIONS[(self.role, trigger)]
        except KeyError:
            raise HaStateError(f"no transition for {self.role.name} on {trigger.value}") from None
        out: list[Action] = []
        old = self.role
        if new is not old:
            self.role = new
            self.transitions += 1
            out.append(RoleChanged(new=new, old=old, reason=reason))
            effects = ON_ENTER[new] + effects
        for effect in effects:
            out += self._apply(effect, now, reason)
        return out

    def _apply(self, effect: Effect, now: float, reason: str) -> list[Action]:
        if effect is E.ARM_DEAD:
            self.dead_at = now + self._dead_time()
        elif effect is E.CANCEL_DEAD:
            self.dead_at = None
        elif effect is E.ARM_PREEMPT:
            if self.preempt_at is None:
                self.preempt_at = now + self.preempt_delay
        elif effect is E.CANCEL_PREEMPT:
            self.preempt_at = None
        elif effect is E.SEND_NOW:
            return [self._send(now)]
        elif effect is E.SEND_RESIGN:
            self.send_at = None
            return [SendHeartbeat(role=self.role, priority=0)]
        elif effect is E.REANNOUNCE:
            if now - self.last_reannounce < self._dead_time():
                return [self._send(now)]
            self.last_reannounce = now
            return [self._send(now), Reannounce(reason=reason)]
        return []

    def _send(self, now: float) -> SendHeartbeat:
        self.send_at = now + self.interval if self.role is not Role.INIT else None
        return SendHeartbeat(role=self.role, priority=self.priority)

    def _dead_time(self) -> float:
        if self.dead_time is not None:
            return self.dead_time
        interval = self.peer.interval if self.peer is not None else self.interval
        return default_dead_time(interval, self.priority)
