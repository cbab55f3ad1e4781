"""The engine's value types: keys, configuration and listing records, counters.

All frozen and hashable; :mod:`pylvs.engine` builds them from the C core and re-exports them.
(``Verdict`` is defined in :mod:`pylvs.engine`: its values come from the C core.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pylvs.model import Protocol, ServiceKey

__all__ = [
    "ConnectionInfo",
    "Defense",
    "DefenseInfo",
    "EngineStats",
    "OffloadEvent",
    "OffloadFold",
    "Protocol",
    "Rates",
    "ServerInfo",
    "ServerKey",
    "ServiceInfo",
    "ServiceKey",
    "Stats",
    "SynCookiesInfo",
    "Timeouts",
]


@dataclass(frozen=True, slots=True)
class ServerKey:
    """Identifies a real server inside one virtual service."""

    service: ServiceKey
    address: str
    port: int

    @property
    def hostport(self) -> str:
        """``198.19.0.11:80``; an IPv6 server is bracketed: ``[2001:2:1::11]:8080``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.service} -> {self.hostport}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The three timeouts ``ipvsadm --set tcp tcpfin udp`` controls, in seconds."""

    tcp: int = 900
    tcpfin: int = 120
    udp: int = 300


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters since the last :meth:`Engine.zero_stats` (bytes = IP length)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0


@dataclass(frozen=True, slots=True)
class Rates:
    """IPVS estimator output: per second, rounded; ``*bps`` are bytes per second."""

    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A real server as listed by :meth:`Engine.services`."""

    key: ServerKey
    weight: int
    last_weight: int
    upper_threshold: int
    lower_threshold: int
    available: bool
    overloaded: bool
    active_conns: int
    inactive_conns: int
    persist_conns: int
    stats: Stats
    rates: Rates


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A virtual service with its configuration, counters and real servers."""

    key: ServiceKey
    scheduler: str
    persistence: int
    netmask: str
    flags: tuple[str, ...]
    mh_table_size: int
    servers: tuple[ServerInfo, ...]
    stats: Stats
    rates: Rates
    synproxy: bool = False
    ftp: bool = False  # the FTP helper watches its control connections


@dataclass(frozen=True, slots=True)
class OffloadEvent:
    """A flow-offload event of the engine (core/offload.h): ``add`` (the connection may be
    forwarded in the kernel) or ``del`` (it must come back to the engine)."""

    op: Literal["add", "del"]
    client: tuple[str, int]
    virtual: tuple[str, int]
    server: tuple[str, int]


@dataclass(frozen=True, slots=True)
class OffloadFold:
    """What the kernel forwarded for one direction of a connection, to fold into the engine:
    ``inbound`` (client -> VIP, keyed by the client and the VIP) or not (the real server's
    reply, keyed by the server and the client); ``last_seen`` on the engine's clock."""

    inbound: bool
    source: tuple[str, int]
    destination: tuple[str, int]
    packets: int
    bytes: int
    last_seen: float
    protocol: Protocol = "tcp"


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One connection-table entry (``ipvsadm -Lc``).  Templates have ``template=True``."""

    protocol: Protocol
    client_address: str
    client_port: int
    virtual_address: str
    virtual_port: int
    server_address: str
    server_port: int
    state: str
    expires: float
    template: bool
    active: bool
    synced: bool
    in_pkts: int
    controlled: int
    control: int | None
    synproxy: bool = False

    def remaining(self, now: float) -> float:
        """Seconds until the entry expires, seen at time *now*."""
        return max(0.0, self.expires - now)


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Engine-wide totals, table occupancy and per-reason drop/pass counters."""

    totals: Stats
    rates: Rates
    connections: int
    templates: int
    max_connections: int
    entry_size: int
    bytes_per_connection: int
    services: int
    trash_servers: int
    drops: Mapping[str, int] = field(default_factory=dict)
    passes: Mapping[str, int] = field(default_factory=dict)
    events: Mapping[str, int] = field(default_factory=dict)
    """Counted events that are not drops (SYN proxy: cookies sent, connections opened;
    sloppy pickup: entries created from a non-SYN or from a reply)."""


@dataclass(frozen=True, slots=True)
class Defense:
    """The flood defence settings (docs/ipvs.md#flood-defence), as the kernel's sysctls.

    ``drop_entry``, ``drop_packet`` and ``secure_tcp`` take 0 (off), 1 (automatic, idle),
    2 (automatic, engaged) or 3 (always on); the automatic modes move between 1 and 2 by
    themselves as the table fills and empties.  They engage when fewer than ``amemthresh``
    entries are available to new connections: free table slots, plus the embryonic entries
    eviction may take while it is on (the kernel counts free memory pages instead).
    ``am_droprate`` is drop_packet's rate in mode 3.  ``evict_embryonic`` lets a new
    connection take the slot of the oldest embryonic entry when the table is full (beyond the
    kernel).  ``syncookies`` (the kernel's tcp_syncookies): 0 never, 1 automatic (engaged while
    a SYN flood is detected), 2 always; engaged, every TCP service answers a SYN with a SYN
    cookie as a synproxy service does (docs/ipvs.md#syn-cookies).
    """

    drop_entry: int = 0
    drop_packet: int = 0
    secure_tcp: int = 0
    amemthresh: int | None = None  # None: a tenth of max_connections (at least 1)
    am_droprate: int = 10
    evict_embryonic: bool = True
    syncookies: int = 1


@dataclass(frozen=True, slots=True)
class DefenseInfo:
    """The defence as it is now: settings (automatic modes read 1 or 2), what is engaged,
    and the entries each rule removed."""

    settings: Defense
    drop_entry_active: bool
    secure_tcp_active: bool
    drop_rate: int  # 0: drop_packet idle; n: one in n new connections is dropped
    free_slots: int
    available: int  # what amemthresh is compared with: free slots (+ embryonic if evicting)
    embryonic: int  # entries eviction may take
    entries_dropped: Mapping[str, int] = field(default_factory=dict)
    syncookies: SynCookiesInfo | None = None


@dataclass(frozen=True, slots=True)
class SynCookiesInfo:
    """syncookies now (core/defense.c): engaged or not, what engages it, and the measure
    that disengages it."""

    engaged: bool
    threshold: int  # embryonic entries that engage it: min(amemthresh, 4096); 0 never
    unanswered: int  # cookie SYNs without an ACK in the last second
    quiet_seconds: int  # consecutive seconds under the disengage mark (10 disengage)
    times_engaged: int
    xdp_syns: int  # cookie SYNs the XDP responder answered, as the director reported them
    window_until: float  # after disengaging, cookie ACKs are accepted until then (engine clock)
