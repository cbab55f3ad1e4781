"""The configuration model: frozen dataclasses, one per TOML section.

``config.py`` turns a TOML file into a :class:`Config`; everything above reads only these
values.  Defaults here are the defaults a user gets when a key is left out, so each one is the
choice an LVS/keepalived operator would expect (noted where it is not obvious).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from functools import total_ordering
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from operator import attrgetter
from typing import Any, Literal

__all__ = [
    "ApiConfig",
    "BgpRouterConfig",
    "CheckConfig",
    "ClusterConfig",
    "Config",
    "DefenseConfig",
    "DirectorConfig",
    "Endpoint",
    "HaConfig",
    "IPAddress",
    "IPInterface",
    "LoadMonitorConfig",
    "RealServerConfig",
    "ServiceKey",
    "TimeoutsConfig",
    "VirtualServerConfig",
    "apply_default_check",
    "hostport",
    "ignored_flags",
    "parse_address",
    "port_ranges",
    "scheduler_flag_names",
    "split_hostport",
]

Protocol = Literal["tcp", "udp"]
CheckType = Literal["none", "tcp", "send_expect", "http", "https", "exec", "udp"]
DownAction = Literal["quiesce", "remove"]
LoadMonitorType = Literal["none", "agent", "exec", "loadavg"]

SCHEDULERS = (
    "rr", "wrr", "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "mh", "fo", "ovf", "twos",
)
SCHEDULER_FLAGS = ("sh-fallback", "sh-port", "mh-fallback", "mh-port", "flag-1", "flag-2",
                   "flag-3")
# ipvsadm's -b names: each is one of the three scheduler bits (SCHED1..3); the named ones are
# only accepted with their scheduler ("incompatible scheduler flag" otherwise).
_FLAG_BIT = {"sh-fallback": 1, "mh-fallback": 1, "flag-1": 1, "sh-port": 2, "mh-port": 2,
             "flag-2": 2, "flag-3": 3}
FLAG_SCHEDULER = {"sh-fallback": "sh", "sh-port": "sh", "mh-fallback": "mh", "mh-port": "mh"}
# The flags each scheduler reads; every other set bit is carried but ignored.
SCHEDULER_USES_FLAGS = {"sh": (1, 2), "mh": (1, 2)}
MH_MAX_TABLE_SIZE = 131071  # the largest Maglev table the mh scheduler builds (checked in C too)
HOST_NETMASK = IPv4Address("255.255.255.255")
IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface


# A dotted quad as ipaddress accepts it (each part 0..255, no leading zero): its integer is
# built here, 5x faster than ipaddress's parser, which a 10,000-server restore or file runs
# for every address (issue 13).  Anything else goes to ipaddress.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def parse_address(text: str) -> IPAddress:
    """An IPv4 or IPv6 address from its text; ValueError otherwise (never a name, never an int)."""
    if not isinstance(text, str):
        raise ValueError(f"expected an address string, got {text!r}")
    m = _DOTTED.fullmatch(text)
    if m is not None:
        a, b, c, d = map(int, m.groups())
        return IPv4Address(a << 24 | b << 16 | c << 8 | d)
    return ip_address(text)


def split_hostport(text: str) -> tuple[str, str | None]:
    """Split ``a.b.c.d:port``, ``[v6]:port``, ``[v6]``, bare ``v6`` or ``host`` into its parts.

    An IPv6 address needs brackets to carry a port (as in URLs and ipvsadm); without them the
    whole text is the address.  The port is returned as text (None when absent), unchecked.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected \"[v6 address]:port\", got {text!r}")
        return host, (rest[1:] if rest else None)
    if text.count(":") > 1:
        return text, None  # a bare IPv6 address
    host, sep, port = text.rpartition(":")
    return (host, port) if sep else (text, None)


def hostport(address: str, port: int | str) -> str:
    """``198.18.0.100:80`` or, for IPv6, ``[2001:2::100]:80`` (ipvsadm's and URLs' spelling)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def scheduler_flag_names(scheduler: str, flags: Iterable[str]) -> tuple[str, ...]:
    """The flags as ipvsadm prints them for *scheduler* (``print_sched_flags``), in bit order.

    The bits are what count: ``flag-1`` on an sh service prints as ``sh-fallback``, and
    ``sh-port`` on an rr service as ``flag-2``.
    """
    bits = {_FLAG_BIT[f] for f in flags if f in _FLAG_BIT}
    named = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}.get(
        scheduler, ("flag-1", "flag-2"))
    names = (*named, "flag-3")
    return tuple(names[b - 1] for b in sorted(bits))


def ignored_flags(scheduler: str, flags: Iterable[str]) -> tuple[str, ...]:
    """The flags *scheduler* does not read (the engine keeps their bits but nothing uses them)."""
    used = SCHEDULER_USES_FLAGS.get(scheduler, ())
    return tuple(f for f in flags if f in _FLAG_BIT and _FLAG_BIT[f] not in used)


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """The identity of a virtual service: protocol, VIP and port.

    The one key every layer uses: the engine returns it from ``add_service``, the director,
    health and the API index services by it, and :attr:`VirtualServerConfig.key` builds it from
    the config.  ``address`` is the address's canonical text (``str(ip_address(...))``).
    """

    protocol: Protocol
    address: str
    port: int
    # ipvsadm -f: a firewall-mark service is named by its address family and mark (the
    # kernel keys it so: -f 1 and -f 1 -6 are two services); build it with for_fwmark() so
    # protocol and port take their one canonical value and the address (0.0.0.0 or ::) the
    # family.
    fwmark: int = 0

    @classmethod
    def for_fwmark(cls, mark: int, family: int = 4) -> ServiceKey:
        """The key of the firewall-mark service ``mark`` of IPv4 or IPv6 (``FWM 80``,
        ``FWM 80 IPv6``)."""
        return cls("tcp", "::" if family == 6 else "0.0.0.0", 0, mark)

    @property
    def family(self) -> int:
        """4 or 6: the address family of the service (of its VIP, or of its mark)."""
        return 6 if ":" in self.address else 4

    @property
    def kind(self) -> str:
        """``tcp`` or ``udp``; ``fwm`` for a firewall-mark service, ``fwm6`` for an IPv6 one:
        the first segment of the service's API path."""
        if self.fwmark:
            return "fwm6" if self.family == 6 else "fwm"
        return self.protocol

    @property
    def hostport(self) -> str:
        """``198.18.0.100:80``; an IPv6 VIP is bracketed: ``[2001:2::100]:80``; ``80`` for a
        firewall-mark service (its family is in :attr:`kind`)."""
        if self.fwmark:
            return str(self.fwmark)
        return hostport(self.address, self.port)

    @property
    def label(self) -> str:
        """``tcp 198.18.0.100:80`` (``fwm 80``, ``fwm6 80``): how the status document and the
        logs name the service."""
        return f"{self.kind} {self.hostport}"

    def __str__(self) -> str:
        if self.fwmark:  # as ipvsadm -L names it
            return f"FWM {self.fwmark}{' IPv6' if self.family == 6 else ''}"
        return f"{self.protocol.upper()} {self.hostport}"


class _HashSlot:
    """A slot for an :class:`Endpoint`'s hash once computed (outside the dataclass fields).

    Endpoints key every per-server dict (weights, verdicts, the engine's index) and an
    address's own hash is slow (``hash(hex(int(ip)))``): a 10,000-server reload hashed
    endpoints ~100,000 times (issue 13).
    """

    __slots__ = ("_hash",)
    _hash: int


@total_ordering
@dataclass(frozen=True, slots=True)
class Endpoint(_HashSlot):
    """An address and port, written ``a.b.c.d:port`` or ``[2001:2::11]:80`` in the config.

    Endpoints sort as ipvsadm sorts them: IPv4 before IPv6 (the address family first), then by
    address and port, so a dual-stack list sorts without comparing across families.
    """

    address: IPAddress
    port: int

    def __str__(self) -> str:
        return hostport(str(self.address), self.port)

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:  # first use (a copy or an unpickled one computes it again)
            pass
        value = hash((self.address, self.port))
        object.__setattr__(self, "_hash", value)  # frozen: only this cache slot is ever set
        return value

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """(family, address, port) as integers."""
        return (self.address.version, int(self.address), self.port)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return self.sort_key < other.sort_key

    @classmethod
    def parse(cls, text: str, default_port: int | None = None) -> Endpoint:
        """``a.b.c.d:port`` or ``[v6]:port`` (port optional with ``default_port``).

        ValueError names what was expected.
        """
        expected = '"a.b.c.d:port" or "[v6 address]:port"'
        if not isinstance(text, str):
            raise ValueError(f"expected a string {expected}, got {text!r}")
        host, port_text = split_hostport(text)
        if port_text is None:
            if default_port is None:
                raise ValueError(f"expected {expected}, got {text!r} (no port)")
            port_text = str(default_port)
        try:
            address = parse_address(host)
        except ValueError:
            raise ValueError(f"expected {expected} with an IPv4 or IPv6 address, got "
                             f"{text!r}") from None
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"expected a port 0..65535 after ':', got {text!r}")
        return cls(address, int(port_text))


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectorConfig:
    """``[director]``: where the director sits and how it moves packets."""

    public_interface: str
    private_interface: str
    nat_router: str | None = None  # "198.19.0.1/24": the real servers' gateway; floats with HA
    # The IPv6 gateway of a dual-stack site ("2001:2:1::1/64") when nat_router is the IPv4 one;
    # an IPv6-only site may write its gateway in nat_router itself.
    nat_router6: str | None = None

    @property
    def nat_routers(self) -> tuple[IPInterface, ...]:
        """The gateway addresses (one per family) pylvs puts on the private interface."""
        return tuple(_interface(text) for text in (self.nat_router, self.nat_router6)
                     if text is not None)
    dataplane: Literal["tun"] = "tun"
    tun_name: str = "pylvs0"
    offload: bool = True  # IFF_VNET_HDR + TUNSETOFFLOAD: 64 KB GSO super-packets
    batch_size: int = 64
    # Packet worker threads, one TUN queue each; None: one per CPU; 0: pump on the event loop.
    workers: int | None = None
    # A worker's busy-poll window after its last packet, microseconds (0: sleep at once);
    # docs/performance.md, "The TUN path's kernel cost".
    worker_spin_us: int = 0
    # The packet workers' niceness: below the event loop's -10 so the control plane does not
    # keep them off the CPU; 0 leaves the workers and the session's scheduling group as they
    # are (a director sharing its CPUs with the load it forwards): dataplane/_workers.c.
    worker_nice: int = -15
    loop: Literal["uvloop", "asyncio"] = "uvloop"
    max_connections: int = 1 << 20
    # The SYN proxy's first step in XDP on public_interface (dataplane/xdp_component.py).
    xdp_synproxy: Literal["auto", "on", "off"] = "auto"
    # Established TCP connections forwarded in the kernel by a TC program on the public and
    # private interfaces, the engine deciding which (dataplane/fastpath_component.py).
    fastpath: Literal["auto", "on", "off"] = "auto"
    # A connection is offered to the fast path after this many packets from its client (0: as
    # soon as it is ESTABLISHED); below it a short connection stays on the TUN, whose map
    # updates would cost more than the packets they save.
    fastpath_after_packets: int = 0
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutsConfig:
    """``[timeouts]``: ipvsadm ``--set tcp tcpfin udp`` (seconds)."""

    tcp: int = 900
    tcpfin: int = 120
    udp: int = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class DefenseConfig:
    """``[defense]``: flood defence (docs/ipvs.md#flood-defence), keys named as the kernel's
    sysctls.

    ``drop_entry``, ``drop_packet`` and ``secure_tcp``: 0 off, 1 automatic (engages while the
    table is nearly full, moving to 2 and back to 1 by itself), 3 always on.  ``amemthresh``
    counts connection-table entries, not memory pages as in the kernel: the automatic modes
    engage when fewer than this many entries are available to new connections, i.e. free
    slots plus, while ``evict_embryonic`` is on, the embryonic entries it may take (left out:
    a tenth of max_connections).
    ``evict_embryonic``: a full table lets a new connection take the slot of the oldest
    embryonic entry (SYN seen, never established) instead of dropping it (beyond the kernel).
    ``syncookies``, as the kernel's ``net.ipv4.tcp_syncookies``: 0 never, 1 automatic (the
    default, as the kernel's), 2 always.  Engaged, a bare SYN to ANY TCP service is answered
    with the SYN proxy's cookie SYN-ACK and makes no entry, and a valid cookie ACK opens the
    connection as for a ``synproxy = true`` service (docs/ipvs.md#syn-cookies).  Mode 1
    engages at once when the embryonic entries reach min(amemthresh, 4096), the kernel's
    default listen backlog (a legitimate load keeps one per handshake in flight, a spoofed
    flood one per SYN for 60 s), and disengages when for 10 s in a row both the cookie SYNs
    left unanswered in a second, times the SYN_RECV timeout, and the embryonic entries stay
    under half that (cookies make no entries, so the table alone cannot tell the flood is
    over).  ACKs to cookies already sent are accepted for 120 s after it disengages.
    """

    drop_entry: int = 0
    drop_packet: int = 0
    secure_tcp: int = 0
    amemthresh: int | None = None
    am_droprate: int = 10
    evict_embryonic: bool = True
    syncookies: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    """``[api]``: the control API (Unix socket always; TCP only when ``listen`` is set)."""

    socket: str = "/run/pylvs/pylvs.sock"
    socket_mode: int = 0o600
    listen: str | None = None  # "127.0.0.1:9180"; requires token_file
    token_file: str | None = None
    # PEM files; with both, the TCP listener speaks HTTPS so the token never crosses in clear.
    tls_cert: str | None = None
    tls_key: str | None = None
    write_config: bool = False  # allow PUT /config/save to rewrite the TOML file


@dataclass(frozen=True, slots=True, kw_only=True)
class HaConfig:
    """``[ha]``: active/backup failover between two directors."""

    enabled: bool = False
    node_id: str = "lvs1"
    priority: int = 100  # 1..254; higher wins; 255 is reserved as "owner" like VRRP
    peer_public: IPAddress | None = None  # IPv4 or IPv6 (heartbeats go over either)
    peer_private: IPAddress | None = None
    port: int = 5405
    interval: float = 0.1  # seconds between heartbeats (dead after ~0.36 s; 0.02 s still stable)
    # None: 3 * interval + skew, skew = (256 - priority) / 256 * interval (as VRRP)
    dead_time: float | None = None
    preempt: bool = True
    preempt_delay: float = 0.0
    secret_file: str | None = None  # required when enabled
    sync: bool = True
    sync_port: int = 5406
    notify: str | None = None  # command run as: notify <new-role> <old-role>
    garp_count: int = 5
    garp_repeat_delay: float = 5.0  # second burst after this many seconds
    garp_refresh: float = 0.0  # 0 = no periodic refresh


@dataclass(frozen=True, slots=True, kw_only=True)
class BgpRouterConfig:
    """``[[cluster.router]]``: one upstream router the director announces its VIPs to."""

    address: IPv4Address
    asn: int
    port: int = 179
    password: str | None = None  # TCP MD5 (RFC 2385), as the router is configured


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """``[cluster]``: active-active directors behind ECMP, VIPs announced over BGP by BIRD.

    Every director announces each VIP as a /32 while it serves it; the routers spread flows
    over the directors; with ``sloppy`` every director picks up flows another one began
    (docs/cluster.md).
    """

    mode: Literal["off", "active-active"] = "off"
    asn: int = 65001  # this director's AS (private range by default)
    router_id: IPv4Address | None = None  # None: BIRD takes the lowest interface address
    routers: tuple[BgpRouterConfig, ...] = ()
    bfd: bool = True  # BFD with the routers (and with the real servers, see below)
    bfd_interval: float = 0.1  # seconds between BFD packets (both directions)
    bfd_multiplier: int = 3  # missed packets before a session is down (~0.3 s)
    real_server_bfd: bool = True  # BFD sessions the real servers' return routes follow
    hold_time: int = 9  # BGP hold time (a backstop; BFD detects failures first)
    drain_time: float = 5.0  # SIGTERM: withdraw, wait this long, then stop
    sloppy: bool = True  # engine sloppy_tcp/sloppy_udp (pick up flows moved by ECMP)
    bird: str = "bird"  # the BIRD 2 daemon binary
    state_dir: str = "/run/pylvs/bird"  # bird.conf, the control socket and the pid file
    # The members: every director's address on the private network (this director's own is
    # recognised and skipped).  With members, the directors exchange signed hellos (the
    # member list in status) and, with ``sync``, every connection entry (docs/cluster.md).
    members: tuple[IPAddress, ...] = ()
    node_id: str | None = None  # None: router_id, else the host name; unique per member
    secret_file: str | None = None  # required with members: hellos and sync are signed
    sync: bool = True  # N-way connection sync among the members (non-hash schedulers)
    sync_port: int = 5407
    sync_id: int = 0  # IPVS's syncid in each sync message; 0 accepts any (as the kernel)
    hello_interval: float = 0.2  # seconds; a member silent 3 intervals is dead


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckConfig:
    """``[virtual_server.check]``: how each real server's health is probed."""

    type: CheckType = "tcp"
    port: int | None = None  # None: the real server's port
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    initial_state: Literal["up", "down"] = "down"
    send: str | None = None  # send_expect/udp; escapes like \r\n allowed
    expect: str | None = None
    expect_regex: bool = False
    path: str = "/"
    method: str = "GET"
    status: tuple[int, ...] = (200,)
    body_regex: str | None = None
    digest: str | None = None  # md5 hex of the body, like keepalived's HTTP_GET digest
    host: str | None = None
    verify_tls: bool = True
    client_cert: str | None = None
    client_key: str | None = None
    command: str | None = None  # exec: "%h" and "%p" are replaced by address and port
    # exec: exit codes 2..255 set the weight to code - 2 (keepalived's misc_dynamic)
    dynamic_weight: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadMonitorConfig:
    """``[virtual_server.load_monitor]``: adjust weights up and down from live load."""

    type: LoadMonitorType = "none"
    port: int | None = None  # agent: the agent-check port
    command: str | None = None  # exec/loadavg: "%h" "%p" replaced; prints a load or a weight
    interval: float = 5.0
    timeout: float = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RealServerConfig:
    """``[[virtual_server.real_server]]``."""

    address: Endpoint
    weight: int = 1
    upper_threshold: int = 0  # -x
    lower_threshold: int = 0  # -y


class _KeySlot:
    """A slot for :attr:`VirtualServerConfig.key` once built, outside the dataclass fields.

    The key is read tens of thousands of times in a reload of 10,000 servers (issue 13), and
    building it (an address to text, a frozen dataclass) cost about 12 us each time.  Kept in
    a plain slot of this base class it is no field: equality, hashing, ``replace()``, pickling
    (the checker child) and the API codec never see it, and a copy simply builds it again.
    """

    __slots__ = ("_key",)
    _key: ServiceKey


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualServerConfig(_KeySlot):
    """``[[virtual_server]]``: one virtual service and its real servers."""

    # A firewall-mark service (fwmark > 0) needs no address; one given (port 0) is the VIP
    # the director answers ARP for and drops unmarked packets to (docs/ipvs.md#fwmark).
    address: Endpoint = field(default_factory=lambda: Endpoint(IPv4Address(0), 0))
    fwmark: int = 0  # ipvsadm -f: packets the operator's nftables rules mark with this value
    # a service on several ports without nftables: "80", "10000-10100"; address port 0
    ports: tuple[str, ...] = ()
    protocol: Protocol = "tcp"
    scheduler: str = "wlc"
    flags: tuple[str, ...] = ()
    persistence: int = 0  # seconds; 0 = off
    # Persistence granularity: a mask for IPv4 (255.255.255.0), a prefix length for IPv6 (64),
    # as ipvsadm's -M; the host mask means /128 for an IPv6 service.
    netmask: IPv4Address | int = HOST_NETMASK
    mh_table_size: int = 0  # 0 = kernel default (4093)
    ftp: bool = False  # ip_vs_ftp: PORT/EPRT and 227/229 make data entries (docs/ipvs.md#ftp)
    synproxy: bool = False  # answer the TCP handshake at the director with SYN cookies
    down_action: DownAction = "quiesce"
    sorry_server: Endpoint | None = None
    quorum: int = 1  # minimum total weight of healthy servers before the sorry server is used
    quorum_hysteresis: int = 0
    slow_start: float = 0.0  # seconds for a recovered server to ramp up to its weight
    check: CheckConfig = field(default_factory=CheckConfig)
    load_monitor: LoadMonitorConfig = field(default_factory=LoadMonitorConfig)
    real_servers: tuple[RealServerConfig, ...] = ()

    @property
    def key(self) -> ServiceKey:
        """Identity of the service across reloads: (protocol, VIP, port), or the mark."""
        try:
            return self._key
        except AttributeError:  # first use: build it once (the fields never change)
            pass
        if self.fwmark:
            key = ServiceKey.for_fwmark(self.fwmark, self.address.address.version)
        else:
            key = ServiceKey(self.protocol, str(self.address.address), self.address.port)
        object.__setattr__(self, "_key", key)  # frozen: only this cache slot is ever set
        return key

    @property
    def prefix_length(self) -> int:
        """The persistence granularity as a prefix length of the VIP's family."""
        if isinstance(self.netmask, int):
            return self.netmask
        if self.netmask == HOST_NETMASK:
            return self.address.address.max_prefixlen
        return IPv4Interface(f"0.0.0.0/{self.netmask}").network.prefixlen


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A whole configuration file."""

    director: DirectorConfig
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    ha: HaConfig = field(default_factory=HaConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    virtual_servers: tuple[VirtualServerConfig, ...] = ()
    source: str = "<memory>"  # the file it came from, for error messages and SIGHUP


def _rebuild(cls: type[Any], values: tuple[Any, ...]) -> Any:
    """Unpickle a model object: its fields in order (see :func:`_fast_pickle`)."""
    obj = object.__new__(cls)
    for name, value in zip(_FIELD_NAMES[cls], values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _fast_pickle(cls: type[Any]) -> None:
    """Pickle *cls* as its field values in one C call (``attrgetter``).

    The checker child is sent the configuration and sends back events: the ``__getstate__``
    that dataclasses give a frozen slots class calls ``fields()`` per object, 0.3 s for a
    10,000-server configuration (issue 13).
    """
    names = tuple(f.name for f in fields(cls))
    _FIELD_NAMES[cls] = names
    get = attrgetter(*names)
    single = len(names) == 1  # attrgetter of one name returns the value, not a tuple

    def reduce(self: Any) -> tuple[Any, ...]:
        values = get(self)
        return _rebuild, (cls, (values,) if single else values)

    setattr(cls, "__reduce__", reduce)  # noqa: B010  (mypy: a method assigned to a class)


def port_ranges(ports: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """``("80", "10000-10100")`` -> ``((80, 80), (10000, 10100))``; ValueError names the bad
    item (a port is 1..65535, a range low-high with low <= high)."""
    out = []
    for item in ports:
        low, sep, high = item.partition("-")
        try:
            lo, hi = int(low), int(high if sep else low)
        except ValueError:
            raise ValueError(f"{item!r} is not a port or a range low-high") from None
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"{item!r} is not a port 1..65535 or a range low-high in it")
        out.append((lo, hi))
    return tuple(out)


def _interface(text: str) -> IPInterface:
    return IPv6Interface(text) if ":" in text else IPv4Interface(text)


def apply_default_check(vs: VirtualServerConfig, check_type_given: bool) -> VirtualServerConfig:
    """Give a service whose config names no probe type the default for its protocol.

    TCP services get a TCP connect.  For UDP a connect can never succeed, so the servers run
    unchecked (``none``), as keepalived does for a real server without a checker; a UDP
    service that wants probing names ``udp`` (or e.g. ``tcp`` for DNS over both) itself.
    """
    if check_type_given or vs.protocol != "udp" or vs.check.type != "tcp":
        return vs
    return replace(vs, check=replace(vs.check, type="none"))


for _cls in (ServiceKey, Endpoint, DirectorConfig, TimeoutsConfig, DefenseConfig, ApiConfig,
             HaConfig, BgpRouterConfig, ClusterConfig, CheckConfig, LoadMonitorConfig,
             RealServerConfig, VirtualServerConfig, Config):
    _fast_pickle(_cls)
