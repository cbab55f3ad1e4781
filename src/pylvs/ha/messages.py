"""Wire format of the HA channel: versioned, binary, HMAC-SHA256 authenticated.

Every datagram between the two directors (heartbeats and connection-sync batches alike) is one
:class:`Message`.  Layout, network byte order::

    off  size  field
      0     4  magic  b"PLHA"
      4     1  version (1)
      5     1  kind   (1 heartbeat, 2 sync, 3 cluster hello)
      6     1  path   (0 public, 1 private, 2 sync) - the channel the sender sent it on
      7     1  role   (0 init, 1 backup, 2 active, 3 fault)
      8     1  priority (0 = "I resign", as VRRP)
      9     1  node id length n (1..32)
     10     2  heartbeat interval, milliseconds
     12     8  epoch: random per process start
     20     8  sequence number, strictly increasing per sender
     28     8  timestamp: sender's wall clock, microseconds since the Unix epoch
     36    16  config digest (first 16 bytes of SHA-256 over the services' config)
     52     n  node id, UTF-8
   52+n     2  payload length m
   54+n     m  payload (empty for heartbeats; engine sync records for sync; for a cluster
                 hello, pylvs.cluster.membership's JSON)
 54+n+m    32  HMAC-SHA256(secret, every byte before it)

Why each guard exists (piranha's pulse sent a bare 4-byte magic, and VRRP dropped its password
because a clear-text secret protects nothing; docs/failover-health.md#piranha-pulse,
#heartbeat-authentication):

* The HMAC covers every field, so nobody without the shared secret can forge a heartbeat, and
  the path byte is covered too, so a datagram captured on one network cannot be replayed on the
  other.
* The receiver keeps the highest sequence number seen per (peer, path) and drops anything not
  newer: an exact replay is refused.  Per path, because the same heartbeat round goes out on both
  networks with distinct sequence numbers and one network may be slower than the other.
* A restarted peer draws a new random epoch and starts counting again.  A new epoch is accepted
  only when its timestamp is later than everything accepted from that peer before, so a replay
  of an older run cannot masquerade as a restart.
* Every message must be fresh: its timestamp within ``max_skew`` seconds of the receiver's wall
  clock.  This covers the receiver's own restart (it has no memory of sequence numbers then).
  The window is wide (30 s by default) so that two directors with loosely synced clocks still
  hear each other; a skew beyond it is counted under its own name ("stale") so the operator sees
  the cause instead of a silent split brain (the failure mode that made VRRP drop auth).

Parsing is strict: wrong magic, version, kind, path, role, lengths, trailing bytes or MAC all
raise :class:`~pylvs.errors.PeerProtocolError` with a short reason, which the caller counts and
drops.  Nothing here does I/O or reads a clock: callers pass ``wall`` (seconds, wall clock).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TypeVar

from pylvs.errors import ConfigError, PeerProtocolError

__all__ = [
    "MAC_SIZE",
    "MAGIC",
    "MAX_NODE_ID",
    "MAX_PAYLOAD",
    "VERSION",
    "Kind",
    "Message",
    "PathId",
    "Receiver",
    "Role",
    "Sender",
    "config_digest",
    "decode",
    "encode",
    "load_secret",
]

log = logging.getLogger("pylvs.ha")

MAGIC = b"PLHA"
VERSION = 1
MAC_SIZE = 32
MAX_NODE_ID = 32
# Keep a sync datagram under a 1500-byte MTU after IP/UDP headers and our own header.
MAX_PAYLOAD = 1500 - 20 - 8 - 54 - MAX_NODE_ID - MAC_SIZE
DIGEST_SIZE = 16
MIN_SECRET = 16

_HEAD = struct.Struct("!4sBBBBBBHQQQ16s")
_LEN = struct.Struct("!H")


class Kind(IntEnum):
    """What a datagram carries."""

    HEARTBEAT = 1
    SYNC = 2
    HELLO = 3  # an active-active cluster member's hello (pylvs.cluster), on the sync path


class PathId(IntEnum):
    """The channel a datagram was sent on; checked against the socket it arrived on."""

    PUBLIC = 0
    PRIVATE = 1
    SYNC = 2


class Role(IntEnum):
    """A node's HA role, as announced in its heartbeats."""

    INIT = 0
    BACKUP = 1
    ACTIVE = 2
    FAULT = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One decoded, authenticated datagram."""

    kind: Kind
    path: PathId
    node_id: str
    role: Role
    priority: int
    interval: float  # seconds between the sender's heartbeats
    epoch: int
    seq: int
    timestamp: float  # sender's wall clock, seconds
    digest: bytes
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} outside 0..255")
        raw_id = self.node_id.encode()
        if not 1 <= len(raw_id) <= MAX_NODE_ID:
            raise ValueError(f"node id must be 1..{MAX_NODE_ID} bytes of UTF-8")
        if len(self.digest) != DIGEST_SIZE:
            raise ValueError(f"digest must be {DIGEST_SIZE} bytes")
        if len(self.payload) > 0xFFFF:
            raise ValueError("payload too large")
        if not 0 < self.interval * 1000 < 0x10000:
            raise ValueError("interval must be between 1 ms and 65 s")


def encode(msg: Message, secret: bytes) -> bytes:
    """Serialise and sign ``msg``."""
    raw_id = msg.node_id.encode()
    body = b"".join(
        (
            _HEAD.pack(
                MAGIC, VERSION, msg.kind, msg.path, msg.role, msg.priority, len(raw_id),
                round(msg.interval * 1000), msg.epoch, msg.seq, round(msg.timestamp * 1e6),
                msg.digest,
            ),
            raw_id,
            _LEN.pack(len(msg.payload)),
            msg.payload,
        )
    )
    return body + hmac.new(secret, body, hashlib.sha256).digest()


_E = TypeVar("_E", bound=IntEnum)


def _enum(cls: type[_E], value: int, what: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise PeerProtocolError(f"malformed: unknown {what} {value}") from None


def decode(data: bytes, secret: bytes) -> Message:
    """Authenticate and parse one datagram; raise PeerProtocolError("malformed…"/"bad mac")."""
    if len(data) < _HEAD.size + 1 + _LEN.size + MAC_SIZE:
        raise PeerProtocolError("malformed: too short")
    body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    # Check the MAC before looking at any field, so unauthenticated bytes never steer parsing
    # (and the comparison is constant-time).
    if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()):
        raise PeerProtocolError("bad mac")
    (magic, version, kind, path, role, prio, id_len, interval_ms, epoch, seq, ts_us,
     digest) = _HEAD.unpack_from(body)
    if magic != MAGIC:
        raise PeerProtocolError("malformed: bad magic")
    if version != VERSION:
        raise PeerProtocolError(f"malformed: version {version}")
    if not 1 <= id_len <= MAX_NODE_ID or interval_ms == 0:
        raise PeerProtocolError("malformed: bad node id length or interval")
    off = _HEAD.size + id_len
    if len(body) < off + _LEN.size:
        raise PeerProtocolError("malformed: truncated")
    (pay_len,) = _LEN.unpack_from(body, off)
    if len(body) != off + _LEN.size + pay_len:
        raise PeerProtocolError("malformed: length mismatch")
    try:
        node_id = body[_HEAD.size : off].decode()
    except UnicodeDecodeError:
        raise PeerProtocolError("malformed: node id not UTF-8") from None
    k = _enum(Kind, kind, "kind")
    if (k is not Kind.HEARTBEAT) != (path == PathId.SYNC) or (k is Kind.HEARTBEAT and pay_len):
        raise PeerProtocolError("malformed: kind does not match path or payload")
    return Message(
        kind=k, path=_enum(PathId, path, "path"), node_id=node_id, role=_enum(Role, role, "role"),
        priority=prio, interval=interval_ms / 1000, epoch=epoch, seq=seq, timestamp=ts_us / 1e6,
        digest=digest, payload=body[off + _LEN.size :],
    )


def load_secret(path: str | Path) -> bytes:
    """Read the shared secret; at least 16 bytes after stripping surrounding whitespace.

    A file that others than its owner may read is used, with a warning: refusing it would turn
    a permissions slip into an outage.
    """
    try:
        secret = Path(path).read_bytes().strip()
        mode = Path(path).stat().st_mode
    except OSError as exc:
        raise ConfigError(f"ha.secret_file: cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077:
        log.warning("ha.secret_file: %s is readable by others (mode %o); use chmod 600",
                    path, mode & 0o777)
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"ha.secret_file: {path} holds {len(secret)} bytes, need >= {MIN_SECRET}")
    return secret


def config_digest(text: str) -> bytes:
    """The 16-byte digest announced in heartbeats, over a canonical text of the services."""
    return hashlib.sha256(text.encode()).digest()[:DIGEST_SIZE]


@dataclass(slots=True)
class Sender:
    """Builds this node's outgoing messages: one epoch per process, one sequence counter."""

    node_id: str
    secret: bytes
    digest: bytes
    interval: float
    epoch: int = field(default_factory=lambda: int.from_bytes(os.urandom(8), "big"))
    seq: int = 0

    def build(
        self, kind: Kind, path: PathId, role: Role, priority: int, wall: float,
        payload: bytes = b"",
    ) -> bytes:
        """Return the signed datagram for one send."""
        self.seq += 1
        msg = Message(
            kind=kind, path=path, node_id=self.node_id, role=role, priority=priority,
            interval=self.interval, epoch=self.epoch, seq=self.seq, timestamp=wall,
            digest=self.digest, payload=payload,
        )
        return encode(msg, self.secret)


@dataclass(slots=True)
class _PeerReplayState:
    epoch: int
    last_ts: float
    last_seq: dict[PathId, int]


@dataclass(slots=True)
class Receiver:
    """Authenticates incoming datagrams and refuses replays; counts every drop by reason.

    ``accept`` returns the message or ``None`` (dropped); it never raises for peer faults.
    """

    secret: bytes
    own_node_id: str
    max_skew: float = 30.0
    dropped: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    _peers: dict[str, _PeerReplayState] = field(default_factory=dict)

    def accept(self, data: bytes, arrived_on: PathId, wall: float) -> Message | None:
        """Return the message if it is authentic, fresh, new and arrived where it claims."""
        try:
            msg = decode(data, self.secret)
        except PeerProtocolError as exc:
            self.dropped["bad_mac" if str(exc) == "bad mac" else "malformed"] += 1
            return None
        reason = self._check(msg, arrived_on, wall)
        if reason:
            self.dropped[reason] += 1
            return None
        self.accepted += 1
        return msg

    def _check(self, msg: Message, arrived_on: PathId, wall: float) -> str | None:
        if msg.path is not arrived_on:
            return "wrong_path"
        if msg.node_id == self.own_node_id:
            return "own_node_id"  # our own datagram looped back, or a peer misconfigured as us
        if abs(msg.timestamp - wall) > self.max_skew:
            return "stale"
        st = self._peers.get(msg.node_id)
        if st is None or msg.epoch != st.epoch:
            if st is not None and msg.timestamp <= st.last_ts:
                return "replay"  # an old run's datagram posing as a restart
            st = _PeerReplayState(epoch=msg.epoch, last_ts=msg.timestamp, last_seq={})
            self._peers[msg.node_id] = st
        elif msg.seq <= st.last_seq.get(msg.path, 0):
            return "replay"
        st.last_seq[msg.path] = msg.seq
        st.last_ts = max(st.last_ts, msg.timestamp)
        return None
