"""The NAT engine: a typed, sans-IO façade over the C core.

Packets go in as bytes together with the current time; rewritten packets (or ``None`` for a
drop) come out.  Nothing here reads a clock, a socket or a file, and nothing returns cdata
(except :meth:`Engine._c_handle`, which exists only for the C dataplane).

Behaviour follows Linux IPVS in NAT mode (``docs/ipvs.md``, #connection-table to #sync); the table
of
what happens to malformed or foreign input is at the top of ``core/packet.c``.  Every number
shared with C (option ids, flag bits, verdicts, error texts, state names) is read from the
compiled module, never retyped here.

Connection sync records
-----------------------
:meth:`Engine.sync_collect`, :meth:`Engine.sync_full` and :meth:`Engine.sync_apply` exchange a
concatenation of records, the connection entries of IPVS sync protocol version 1: 36 bytes for
an IPv4 entry (``struct ip_vs_sync_v4``), 72 for an IPv6 one (``struct ip_vs_sync_v6``), each
carrying its own size (no message header; the HA layer adds its own, and cuts blobs on record
boundaries with :func:`sync_split`).  A connection with a sequence translation (a SYN-proxied
one) carries two options after its entry (below): 72 bytes for IPv4, 108 for IPv6.  The size
field holds the unpadded length; the next record starts at the next multiple of 4 (the
kernel's padding; pylvs's own records are multiples of 4).  All fields are big-endian::

    off size field
      0    1 type       0 (IPv4) or 1 (STYPE_F_INET6: IPv6)
      1    1 protocol   6 TCP, 17 UDP
      2    2 ver_size   version 0 in the top 4 bits, entry size (36 or 72) in the low 12
      4    4 flags      0x0080 NOOUTPUT, 0x0100 INACTIVE, 0x1000 TEMPLATE, 0x0200 OUT_SEQ,
                        0x0400 IN_SEQ
      8    2 state      TCP state index (0 NONE ... 10 SYNACK), 0 for UDP and templates
     10    2 cport      client port (0 for a template)
     12    2 vport      virtual port (0 for a template of a port-zero service)
     14    2 dport      real-server port
     16    4 fwmark     always 0
     20    4 timeout    seconds: the state's timeout (collect) or the time left (full)
     24    4 caddr      client address (the masked client network for a template)
     28    4 vaddr      virtual address
     32    4 daddr      real-server address
     36    1 opt type   1 (IPVS_OPT_SEQ_DATA)                          } 72-byte records only
     37    1 opt len    24
     38   24 in_seq, out_seq: init_seq, delta, previous_delta each (ip_vs_sync_conn_options)
     62    1 opt type   0x50 (IPVS_OPT_F_PARAM 0x40 | 0x10: optional, pylvs's; a kernel skips it)
     63    1 opt len    8
     64    4 ts_off     timestamp offset added to the server's TSval
     68    1 win_shift  window-scale shift of server windows (signed)
     69    1 ext flags  1 = ts_off applies
     70    1 synproxy   1 = opened by the SYN proxy
     71    1 reserved

An IPv6 entry is the same up to offset 24, then holds 16-byte addresses: caddr at 24, vaddr at
40, daddr at 56 (a template's caddr is the client address cut to the service's prefix length).

A record is produced as IPVS's master does (docs/ipvs.md#sync, ``ip_vs_sync_conn``): on each
incoming packet
of a conn, for TCP only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT and TIME_WAIT, at once on a
change to one of those other than ESTABLISHED, otherwise when the conn's incoming packet count
``pkts % sync_period == sync_threshold`` (``pkts == sync_threshold`` with a period of 0).  The
conn's persistence template follows on every incoming packet of the conn (templates skip the
count check), and again whenever it outlives its timeout while still in control.
:meth:`Engine.sync_full` lists templates first.  :meth:`Engine.sync_apply` works like
``ip_vs_proc_conn``: it creates or refreshes entries (state, INACTIVE bit, ``in_pkts =
sync_threshold``, timer = the record's timeout, or the state's default when 0), never links a
conn to its template, and skips records whose service or real server is unknown here.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

from pylvs._core import ffi as _ffi
from pylvs._core import lib as _raw_lib
from pylvs.engine_lock import lock_stats_dict, locking
from pylvs.engine_types import (
    ConnectionInfo,
    Defense,
    DefenseInfo,
    EngineStats,
    OffloadEvent,
    OffloadFold,
    Protocol,
    Rates,
    ServerInfo,
    ServerKey,
    ServiceInfo,
    ServiceKey,
    Stats,
    SynCookiesInfo,
    Timeouts,
)
from pylvs.errors import ConfigError, CoreError

if TYPE_CHECKING:
    from pylvs._core import (
        CharArray,
        IntArray,
        StringArray,
        lvs_addr,
        lvs_conn_info,
        lvs_dest_conf,
        lvs_dest_info,
        lvs_engine,
        lvs_engine_info,
        lvs_stats_info,
        lvs_svc_conf,
        lvs_svc_info,
    )

__all__ = [
    "META_CSUM_PARTIAL",
    "META_GSO",
    "RATE_ROW",
    "SYNC_RECORD_MAX",
    "SYNC_RECORD_SIZE",
    "SYNC_RECORD_SIZE_V6",
    "ConnectionInfo",
    "Defense",
    "DefenseInfo",
    "Engine",
    "EngineStats",
    "OffloadEvent",
    "OffloadFold",
    "Rates",
    "ServerInfo",
    "ServerKey",
    "ServiceInfo",
    "ServiceKey",
    "Stats",
    "SynCookiesInfo",
    "Timeouts",
    "Verdict",
    "scheduler_names",
    "sync_record_count",
    "sync_split",
]

# Every engine call holds the engine lock: packet workers share the engine (engine_lock.py).
_lib = locking(_ffi, _raw_lib)
_PROTO_NUM: dict[str, int] = {"tcp": _lib.LVS_PROTO_TCP, "udp": _lib.LVS_PROTO_UDP}
_PROTO_NAME: dict[int, Protocol] = {_lib.LVS_PROTO_TCP: "tcp", _lib.LVS_PROTO_UDP: "udp"}

SYNC_RECORD_SIZE: int = int(_lib.LVS_SYNC_RECORD_SIZE)
SYNC_RECORD_SIZE_V6: int = int(_lib.LVS_SYNC_RECORD_SIZE_V6)
#: the largest record: an IPv6 entry with the sequence options
SYNC_RECORD_MAX: int = int(_lib.LVS_SYNC_RECORD_MAX)
_AF_INET: int = int(_lib.LVS_AF_INET)
_AF_INET6: int = int(_lib.LVS_AF_INET6)
#: integers per row of :meth:`Engine.rate_rows`
RATE_ROW: int = int(_lib.LVS_RATE_ROW)
#: per-packet metadata bits of the batch API (see core/api.h): the L4 checksum field holds only the
#: pseudo-header sum (virtio NEEDS_CSUM) / the packet is a TCP GSO super-packet
META_CSUM_PARTIAL: int = int(_lib.LVS_META_CSUM_PARTIAL)
META_GSO: int = int(_lib.LVS_META_GSO)



class Verdict(enum.IntEnum):
    """What the engine did with one packet (``LVS_VERDICT_*``)."""

    FORWARD = _lib.LVS_VERDICT_FORWARD
    PASS = _lib.LVS_VERDICT_PASS
    DROP = _lib.LVS_VERDICT_DROP
    REPLY = _lib.LVS_VERDICT_REPLY


_SVC_F_PERSISTENT = _lib.LVS_SVC_F_PERSISTENT
_SVC_F_SCHED1 = _lib.LVS_SVC_F_SCHED1
_SVC_F_SCHED2 = _lib.LVS_SVC_F_SCHED2
_SVC_F_SCHED3 = _lib.LVS_SVC_F_SCHED3
_SVC_FLAG_BITS = {
    "sh-fallback": _SVC_F_SCHED1,
    "mh-fallback": _SVC_F_SCHED1,
    "flag-1": _SVC_F_SCHED1,
    "sh-port": _SVC_F_SCHED2,
    "mh-port": _SVC_F_SCHED2,
    "flag-2": _SVC_F_SCHED2,
    "flag-3": _SVC_F_SCHED3,
}
_DEST_F_AVAILABLE = _lib.LVS_DEST_F_AVAILABLE
_DEST_F_OVERLOAD = _lib.LVS_DEST_F_OVERLOAD
_CONN_F_INACTIVE = _lib.LVS_CONN_F_INACTIVE
_CONN_F_TEMPLATE = _lib.LVS_CONN_F_TEMPLATE
_CONN_F_SYNC = _lib.LVS_CONN_F_SYNC


def _c_strings(names: StringArray) -> tuple[str, ...]:
    """A NULL-terminated ``const char *const *`` from the core as Python strings."""
    out: list[str] = []
    i = 0
    while names[i] != _ffi.NULL:
        out.append(_ffi.string(names[i]).decode())
        i += 1
    return tuple(out)


def scheduler_names() -> tuple[str, ...]:
    """Every scheduler the C registry knows, in registry order."""
    return _c_strings(_lib.lvs_sched_names())


_COUNTERS = _c_strings(_lib.lvs_counter_names())
_TCP_STATES = _c_strings(_lib.lvs_tcp_state_names())
_PASS_COUNTERS = frozenset({"not_ours"})
# Counted events that are not drops: SYN proxy steps, entries sloppy pickup created, the FTP
# helper's entries and rewrites.
_EVENT_COUNTERS = frozenset({"synproxy_syn", "synproxy_ack_ok", "synproxy_held", "sloppy_in",
                             "sloppy_reply", "ftp_data_entry", "ftp_rewrite", "ftp_no_room",
                             "syncookie_syn", "syncookie_ack_ok"})
_SVC_F_SYNPROXY = _lib.LVS_SVC_F_SYNPROXY
_SVC_F_FTP = _lib.LVS_SVC_F_FTP
_CONN_F_SYNPROXY = _lib.LVS_CONN_F_SYNPROXY


Address = str | ipaddress.IPv4Address | ipaddress.IPv6Address


# Addresses are immutable: a reload of 10,000 servers parsed each one's text several times
# (0.4 s of a 0.8 s reload, issue 13).
# A plain dict (cleared when full) rather than lru_cache: add_server also puts the address it
# was given as an object, so the key's text is never parsed back (issue 13).
_IPS: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
_IPS_MAX = 1 << 16


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = _IPS.get(text)
    if ip is None:
        ip = _remember_ip(text, ipaddress.ip_address(text))
    return ip


def _remember_ip(text: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if len(_IPS) >= _IPS_MAX:
        _IPS.clear()
    _IPS[text] = ip
    return ip


def _ip(addr: Address, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return addr
    try:
        return _parse_ip(str(addr))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what}: {addr!r} is not an IPv4 or IPv6 address") from exc


def _af(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return _AF_INET6 if ip.version == 6 else _AF_INET


def _set_addr(dst: lvs_addr, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """Fill a C ``lvs_addr``: host-order words, the most significant first (core/lvs.h)."""
    v = int(ip)
    if ip.version == 4:
        dst.ip6 = [v, 0, 0, 0]
    else:
        dst.ip6 = [(v >> 96) & 0xFFFFFFFF, (v >> 64) & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF,
                   v & 0xFFFFFFFF]


def _svc_ident(key: ServiceKey) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """The C core's (address, proto) of a service: (the mark in the first word of an address
    of the service's family, LVS_PROTO_FWM) for a firewall-mark service (core/lvs.h)."""
    if key.fwmark:
        if key.family == 6:
            return ipaddress.IPv6Address(key.fwmark << 96), int(_lib.LVS_PROTO_FWM)
        return ipaddress.IPv4Address(key.fwmark), int(_lib.LVS_PROTO_FWM)
    return _ip(key.address, "service address"), _proto(key.protocol)


def _c_addr(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> lvs_addr:
    a: lvs_addr = _ffi.new("lvs_addr *")
    _set_addr(a, ip)
    return a


def _ipstr(af: int, a: lvs_addr) -> str:
    """The canonical text of a C ``lvs_addr`` of family *af*."""
    if af == _AF_INET6:
        w = a.ip6
        return str(ipaddress.IPv6Address(int(w[0]) << 96 | int(w[1]) << 64 | int(w[2]) << 32
                                         | int(w[3])))
    return str(ipaddress.IPv4Address(int(a.ip)))


def _same_family(svc: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 srv: ipaddress.IPv4Address | ipaddress.IPv6Address, what: object) -> None:
    # *what* is formatted only for the error: a server key as text costs microseconds
    if svc.version != srv.version:
        raise ConfigError(f"{what}: IPv{srv.version} server for an IPv{svc.version} service "
                          f"(NAT needs the real server in the VIP's address family)")


def sync_record_count(blob: bytes) -> int:
    """How many whole sync records *blob* holds (each carries its size); ConfigError when
    the sizes do not add up to the blob."""
    return len(_sync_offsets(blob)) - 1


def sync_split(blob: bytes, max_len: int) -> list[bytes]:
    """Cut a blob of sync records into chunks of at most *max_len* bytes on record
    boundaries (for datagrams); *max_len* must hold the largest record."""
    if max_len < SYNC_RECORD_MAX:
        raise ConfigError(f"sync chunks of {max_len} bytes cannot hold a "
                          f"{SYNC_RECORD_MAX}-byte record")
    offs = _sync_offsets(blob)
    out: list[bytes] = []
    start = 0
    for prev, off in itertools.pairwise(offs):
        if off - start > max_len:
            out.append(blob[start:prev])
            start = prev
    if start < len(blob):
        out.append(blob[start:])
    return out


def _sync_offsets(blob: bytes) -> list[int]:
    offs = [0]
    off = 0
    while off < len(blob):
        if off + 4 > len(blob):
            raise ConfigError(f"sync blob: {len(blob) - off} stray bytes at offset {off}")
        size = int.from_bytes(blob[off + 2:off + 4], "big") & 0x0FFF
        base = SYNC_RECORD_SIZE_V6 if blob[off] & 1 else SYNC_RECORD_SIZE
        if not base <= size <= SYNC_RECORD_MAX or off + size > len(blob):
            raise ConfigError(f"sync blob: bad record size {size} at offset {off}")
        off = min(len(blob), (off + size + 3) & ~3)  # the kernel pads records to 4 bytes
        offs.append(off)
    return offs


def _port(port: int, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port!r} is not in 0..65535")
    return port


def _proto(protocol: str) -> int:
    try:
        return _PROTO_NUM[protocol]
    except KeyError:
        raise ConfigError(f"protocol {protocol!r}: expected 'tcp' or 'udp'") from None


def _netmask(netmask: str | int | None, version: int) -> int:
    """The C persistence netmask: an IPv4 mask (dotted or a prefix length), or for IPv6 a
    prefix length 1..128 (ipvsadm's ``-M 64``; digits or ``/64`` as text).  None: a host."""
    if version == 6:
        if netmask is None:
            return 128
        text = str(netmask).lstrip("/")
        if isinstance(netmask, bool) or not text.isdigit() or not 1 <= int(text) <= 128:
            raise ConfigError(f"netmask: {netmask!r} is not an IPv6 prefix length 1..128")
        return int(text)
    if netmask is None:
        return 0xFFFFFFFF
    if isinstance(netmask, int) and not isinstance(netmask, bool):
        if not 0 <= netmask <= 32:
            raise ConfigError(f"netmask: prefix length {netmask} is not in 0..32")
        return (0xFFFFFFFF << (32 - netmask)) & 0xFFFFFFFF
    try:
        return int(ipaddress.IPv4Address(str(netmask)))
    except ValueError as exc:
        raise ConfigError(f"netmask: {netmask!r} is not an IPv4 netmask") from exc


def _u32(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0x7FFFFFFF:
        raise ConfigError(f"{what}: {value!r} is not an integer in 0..{0x7FFFFFFF}")
    return value


def _is_u31(value: object) -> bool:
    return type(value) is int and 0 <= value <= 0x7FFFFFFF


def _dest_values_error(server: ServerKey, weight: int, upper: int, lower: int) -> NoReturn:
    """Raise the ConfigError naming which of a server's weight and thresholds is wrong."""
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0 \
            or weight > 0x7FFFFFFF:
        raise ConfigError(f"{server}: weight {weight!r} must be an integer >= 0")
    upper = _u32(upper, f"{server}: upper_threshold")
    lower = _u32(lower, f"{server}: lower_threshold")
    raise ConfigError(f"{server}: lower_threshold {lower} > upper_threshold {upper}")


def _check(rc: int, what: str) -> int:
    """*rc* if it is not an error; a negative ``LVS_E*`` raises with the core's text."""
    if rc >= 0:
        return rc
    text = _lib.lvs_strerror(-rc)
    reason = f"error {-rc}" if text == _ffi.NULL else _ffi.string(text).decode()
    if -rc == _lib.LVS_E_NOMEM:
        raise CoreError(f"{what}: {reason}")
    raise ConfigError(f"{what}: {reason}")


def _stats(s: lvs_stats_info) -> tuple[Stats, Rates]:
    return (
        Stats(int(s.conns), int(s.inpkts), int(s.outpkts), int(s.inbytes), int(s.outbytes)),
        Rates(int(s.cps), int(s.inpps), int(s.outpps), int(s.inbps), int(s.outbps)),
    )


class Engine:
    """The IPVS-like NAT engine (sans-IO).  See the module docstring and docs/ARCHITECTURE.md.

    ``max_connections`` bounds connections plus persistence templates; a full table drops
    new connections (counted as ``table_full``).  ``seed`` keys the connection hash.
    The remaining keywords mirror IPVS sysctls of the same names.

    Not thread-safe: cffi releases the GIL around C calls, so every method (and the C
    dataplane's batch calls) must come from one thread, e.g. the event loop's.
    """

    RATE_ROW = RATE_ROW

    def __init__(self, max_connections: int = 1 << 20, timeouts: Timeouts | None = None, *,
                 seed: int = 0, expire_nodest_conn: bool = False,
                 expire_quiescent_template: bool = False, conn_reuse_mode: int = 1,
                 defense: Defense | None = None) -> None:
        if not 1 <= max_connections <= 1 << 26:
            raise ConfigError(f"max_connections: {max_connections} is not in 1..{1 << 26}")
        ptr = _lib.lvs_engine_new(max_connections, seed & 0xFFFFFFFFFFFFFFFF)
        if ptr == _ffi.NULL:
            raise CoreError("cannot allocate the engine")
        self._e: lvs_engine = _ffi.gc(ptr, _lib.lvs_engine_free)
        self._rate_cap = 64  # rows the last rate_rows() returned: the next buffer's size
        self._scratch: IntArray | None = None
        self._scratch_size = 0
        self._ports: dict[ServiceKey, tuple[tuple[int, int], ...]] = {}  # port-list services
        self.sync_skipped = 0
        # called before services() and stats() read the counters: the fast path folds the
        # kernel's counts in first (dataplane/fastpath_component.py)
        self.read_hooks: list[Callable[[], None]] = []
        self.set_option("expire_nodest_conn", expire_nodest_conn)
        self.set_option("expire_quiescent_template", expire_quiescent_template)
        self.set_option("conn_reuse_mode", conn_reuse_mode)
        if timeouts is not None:
            self.set_timeouts(tcp=timeouts.tcp, tcpfin=timeouts.tcpfin, udp=timeouts.udp)
        if defense is not None:
            self.set_defense(defense)

    def _c_handle(self) -> lvs_engine:
        """The ``lvs_engine *`` cdata, for the C dataplane only; valid while self lives."""
        return self._e

    # ---- options and timeouts ----

    _OPTIONS = {
        "expire_nodest_conn": _lib.LVS_OPT_EXPIRE_NODEST_CONN,
        "expire_quiescent_template": _lib.LVS_OPT_EXPIRE_QUIESCENT_TEMPLATE,
        "conn_reuse_mode": _lib.LVS_OPT_CONN_REUSE_MODE,
        "sync_master": _lib.LVS_OPT_SYNC_MASTER,
        "sync_threshold": _lib.LVS_OPT_SYNC_THRESHOLD,
        "sync_period": _lib.LVS_OPT_SYNC_PERIOD,
        "sloppy_tcp": _lib.LVS_OPT_SLOPPY_TCP,
        "sloppy_udp": _lib.LVS_OPT_SLOPPY_UDP,
    }

    def set_option(self, name: str, value: int | bool) -> None:
        """Set an IPVS-sysctl-like option (names as in :attr:`_OPTIONS`)."""
        opt = self._OPTIONS.get(name)
        if opt is None:
            raise ConfigError(f"unknown engine option {name!r}")
        _check(_lib.lvs_engine_set_option(self._e, opt, int(value)), name)

    def option(self, name: str) -> int:
        """Current value of an option."""
        opt = self._OPTIONS.get(name)
        if opt is None:
            raise ConfigError(f"unknown engine option {name!r}")
        return int(_lib.lvs_engine_get_option(self._e, opt))

    def set_timeouts(self, tcp: int = 0, tcpfin: int = 0, udp: int = 0) -> None:
        """``ipvsadm --set tcp tcpfin udp``: 0 keeps the current value."""
        for name, v in (("tcp", tcp), ("tcpfin", tcpfin), ("udp", udp)):
            _u32(v, f"timeout {name}")
        _lib.lvs_engine_set_timeouts(self._e, tcp, tcpfin, udp)

    def timeouts(self) -> Timeouts:
        """The current ``tcp tcpfin udp`` timeouts."""
        out = _ffi.new("uint32_t[3]")
        _lib.lvs_engine_get_timeouts(self._e, out, out + 1, out + 2)
        return Timeouts(int(out[0]), int(out[1]), int(out[2]))

    # ---- flood defence ----

    def set_defense(self, defense: Defense) -> None:
        """Apply the flood defence settings; a mode written takes effect at once (as the
        kernel's sysctl handler runs ``update_defense_level``)."""
        for name in ("drop_entry", "drop_packet", "secure_tcp"):
            if getattr(defense, name) not in (0, 1, 2, 3):
                raise ConfigError(f"defense.{name}: expected 0..3, got {getattr(defense, name)}")
        if defense.syncookies not in (0, 1, 2):
            raise ConfigError(f"defense.syncookies: expected 0..2, got {defense.syncookies}")
        amemthresh = defense.amemthresh
        if amemthresh is None:
            amemthresh = max(1, int(self._info().max_connections) // 10)
        _u32(amemthresh, "defense.amemthresh")
        _u32(defense.am_droprate, "defense.am_droprate")
        conf = _ffi.new("lvs_defense_conf *")
        conf.drop_entry = defense.drop_entry
        conf.drop_packet = defense.drop_packet
        conf.secure_tcp = defense.secure_tcp
        conf.amemthresh = amemthresh
        conf.am_droprate = defense.am_droprate
        conf.evict_embryonic = int(defense.evict_embryonic)
        conf.syncookies = defense.syncookies
        _check(_lib.lvs_defense_set(self._e, conf), "defense")

    def defense(self) -> DefenseInfo:
        """The defence now: modes, what is engaged, entries removed by reason."""
        out = _ffi.new("lvs_defense_info *")
        _lib.lvs_defense_get(self._e, out)
        c = out.conf
        return DefenseInfo(
            settings=Defense(drop_entry=int(c.drop_entry), drop_packet=int(c.drop_packet),
                             secure_tcp=int(c.secure_tcp), amemthresh=int(c.amemthresh),
                             am_droprate=int(c.am_droprate),
                             evict_embryonic=bool(c.evict_embryonic),
                             syncookies=int(c.syncookies)),
            drop_entry_active=bool(out.drop_entry_active),
            secure_tcp_active=bool(out.secure_tcp_active), drop_rate=int(out.drop_rate),
            free_slots=int(out.free_slots), available=int(out.available),
            embryonic=int(out.embryonic),
            entries_dropped=MappingProxyType({
                "drop_entry": int(out.drop_entry_conns),
                "drop_entry_template": int(out.drop_entry_templates),
                "evict_embryonic": int(out.evicted_embryonic),
                "evict_template": int(out.evicted_templates),
            }),
            syncookies=SynCookiesInfo(
                engaged=bool(out.syncookies_engaged), threshold=int(out.syncookies_threshold),
                unanswered=int(out.syncookies_unanswered),
                quiet_seconds=int(out.syncookies_quiet),
                times_engaged=int(out.syncookies_engaged_count),
                xdp_syns=int(out.syncookies_xdp_syns),
                window_until=float(out.syncookies_window_until)))

    def note_cookie_syns(self, n: int) -> None:
        """``n`` more SYNs to services without synproxy were answered with cookies outside
        the engine (the XDP responder): syncookies counts them as unanswered until their ACKs
        arrive, so it stays engaged while XDP takes the flood."""
        if n > 0:
            _lib.lvs_defense_cookie_syns(self._e, n)

    # ---- services ----

    def _svc_conf(self, key: ServiceKey, scheduler: str, persistence: int,
                  netmask: str | int | None,
                  flags: Iterable[str], mh_table_size: int,
                  synproxy: bool, ports: tuple[tuple[int, int], ...] = (), ftp: bool = False
                  ) -> tuple[lvs_svc_conf, tuple[CharArray, IntArray]]:
        if scheduler not in scheduler_names():
            raise ConfigError(f"{key}: unknown scheduler {scheduler!r} "
                              f"(known: {' '.join(scheduler_names())})")
        bits = 0
        for f in flags:
            if f not in _SVC_FLAG_BITS:
                raise ConfigError(f"{key}: unknown service flag {f!r}")
            bits |= _SVC_FLAG_BITS[f]
        if ftp:
            if key.protocol != "tcp" or key.port < 2 or key.fwmark or ":" in key.address:
                raise ConfigError(f"{key}: the FTP helper needs an IPv4 TCP service on a port")
            bits |= _SVC_F_FTP
        if synproxy:
            if key.protocol != "tcp":
                raise ConfigError(f"{key}: synproxy needs a TCP service")
            bits |= _SVC_F_SYNPROXY
        persistence = _u32(persistence, f"{key}: persistence")
        if persistence > 2678400:
            raise ConfigError(f"{key}: persistence {persistence} exceeds 31 days")
        if ports and (key.port != 0 or key.fwmark):
            raise ConfigError(f"{key}: a port list needs port 0 (and no fwmark)")
        if any(not 1 <= lo <= hi <= 65535 for lo, hi in ports):
            raise ConfigError(f"{key}: port ranges {ports!r} are not low-high in 1..65535")
        if key.port == 0 and persistence == 0 and not key.fwmark and not ports:
            raise ConfigError(f"{key}: a port-zero service must be persistent")
        c = _ffi.new("lvs_svc_conf *")
        name = _ffi.new("char[]", scheduler.encode())
        ip, c.proto = _svc_ident(key)
        c.af = _af(ip)
        _set_addr(c.addr, ip)
        c.port = key.port
        c.sched = name
        c.flags = bits
        c.timeout = persistence
        c.netmask = _netmask(netmask, ip.version)
        c.mh_table_size = _u32(mh_table_size, f"{key}: mh_table_size")
        if mh_table_size and not _lib.lvs_is_prime(mh_table_size):
            raise ConfigError(f"{key}: mh_table_size {mh_table_size} is not a prime")
        ranges = _ffi.new("uint16_t[]", [p for r in ports for p in r] or [0])
        c.port_ranges = ranges
        c.nranges = len(ports)
        return c, (name, ranges)

    def add_service(self, protocol: Protocol, address: Address, port: int, *,
                    scheduler: str = "wlc", persistence: int = 0,
                    netmask: str | int | None = None, flags: Iterable[str] = (),
                    mh_table_size: int = 0, fwmark: int = 0,
                    ports: Iterable[tuple[int, int]] = (), synproxy: bool = False,
                    ftp: bool = False) -> ServiceKey:
        """``ipvsadm -A``: add a virtual service (IPv4 or IPv6); returns its key.  *netmask*
        (persistence granularity) is an IPv4 mask or prefix length, or an IPv6 prefix length
        (``-M 64``); None means one client address.  With ``fwmark`` (``-f``) the service is
        the mark's: only the address's family is used (``-f 1 -6``: ``"::"``), protocol and
        port are not.  ``ports`` (port
        0 only): the (low, high) ranges a port-0 service is limited to; it then needs no
        persistence.  ``synproxy``: the engine answers the TCP handshake itself with SYN
        cookies and opens the connection to a real server only for a client that completed it
        (docs/ipvs.md#syn-proxy).  ``ftp``: the FTP helper watches the control connections
        (PORT/EPRT, 227/229 replies; docs/ipvs.md#ftp)."""
        if fwmark:
            if isinstance(fwmark, bool) or not isinstance(fwmark, int) \
                    or not 0 < fwmark <= 0xFFFFFFFF:
                raise ConfigError(f"fwmark {fwmark!r} is not in 1..4294967295")
            family = _ip(address, "service address").version if address else 4
            key = ServiceKey.for_fwmark(fwmark, family)
        else:
            _proto(protocol)
            key = ServiceKey(protocol, str(_ip(address, "service address")),
                             _port(port, "service"))
        ranges = tuple(ports)
        c, _keep = self._svc_conf(key, scheduler, persistence, netmask, tuple(flags),
                                  mh_table_size, synproxy, ranges, ftp)
        _check(_lib.lvs_svc_add(self._e, c), f"add service {key}")
        self._ports[key] = ranges
        return key

    def edit_service(self, service: ServiceKey, *, scheduler: str | None = None,
                     persistence: int | None = None, netmask: str | int | None = None,
                     flags: Iterable[str] | None = None,
                     mh_table_size: int | None = None, synproxy: bool | None = None,
                     ports: Iterable[tuple[int, int]] | None = None,
                     ftp: bool | None = None) -> None:
        """``ipvsadm -E``: change what is given, keep the rest."""
        cur = self.service(service, with_servers=False)
        c, _keep = self._svc_conf(
            service,
            cur.scheduler if scheduler is None else scheduler,
            cur.persistence if persistence is None else persistence,
            cur.netmask if netmask is None else netmask,
            cur.flags if flags is None else tuple(flags),
            cur.mh_table_size if mh_table_size is None else mh_table_size,
            cur.synproxy if synproxy is None else synproxy,
            self._ports.get(service, ()) if ports is None else tuple(ports),
            cur.ftp if ftp is None else ftp,
        )
        _check(_lib.lvs_svc_edit(self._e, c), f"edit service {service}")
        if ports is not None:
            self._ports[service] = tuple(ports)

    def service_ports(self, service: ServiceKey) -> tuple[tuple[int, int], ...]:
        """The port ranges a port-0 service is limited to (empty: all ports)."""
        return self._ports.get(service, ())

    def remove_service(self, service: ServiceKey) -> None:
        """``ipvsadm -D``: its servers go to the trash while connections still use them."""
        ip, proto = _svc_ident(service)
        _check(_lib.lvs_svc_del(self._e, _af(ip), proto, _c_addr(ip), service.port),
               f"remove service {service}")
        self._ports.pop(service, None)

    def set_fwmark_vips(self, addresses: Iterable[str]) -> None:
        """The VIPs (IPv4 and IPv6) of firewall-mark services: unmarked packets to them are
        dropped."""
        ips = {_ip(a, "fwmark VIP") for a in addresses}
        v4 = sorted(int(a) for a in ips if a.version == 4)
        v6 = sorted((a for a in ips if a.version == 6), key=int)
        buf = _ffi.new("uint32_t[]", max(len(v4), 1))
        for i, a in enumerate(v4):
            buf[i] = a
        buf6 = _ffi.new("lvs_addr[]", max(len(v6), 1))
        for i, a6 in enumerate(v6):
            _set_addr(buf6[i], a6)
        _check(_lib.lvs_engine_set_fwm_vips(self._e, buf, len(v4), buf6, len(v6)),
               "set fwmark VIPs")

    # ---- servers ----

    def _dest_conf(self, server: ServerKey, weight: int, upper: int,
                   lower: int) -> lvs_dest_conf:
        # Checked without building an error text: naming the server (its key as text) for
        # every call cost a third of a 10,000-server reload (issue 13).
        if not (_is_u31(weight) and _is_u31(upper) and _is_u31(lower)) or lower > upper:
            _dest_values_error(server, weight, upper, lower)
        c = _ffi.new("lvs_dest_conf *")
        svc = server.service
        vip, c.proto = _svc_ident(svc)
        rip = _ip(server.address, "server address")
        _same_family(vip, rip, server)
        c.af = _af(vip)
        _set_addr(c.vaddr, vip)
        c.vport = svc.port
        c.dest_af = _af(rip)
        _set_addr(c.addr, rip)
        c.port = _port(server.port, "server")
        c.weight = weight
        c.u_threshold = upper
        c.l_threshold = lower
        return c

    def add_server(self, service: ServiceKey, address: Address, port: int, *, weight: int = 1,
                   upper_threshold: int = 0, lower_threshold: int = 0) -> ServerKey:
        """``ipvsadm -a``: add a real server (at the head of the list, like the kernel); it
        must be of the service's address family (ConfigError otherwise)."""
        ip = _ip(address, "server address")
        text = str(ip)
        _remember_ip(text, ip)  # the key holds the text: _dest_conf needs no parse of it
        key = ServerKey(service, text, _port(port, "server"))
        c = self._dest_conf(key, weight, upper_threshold, lower_threshold)
        _check(_lib.lvs_dest_add(self._e, c), f"add server {key}")
        return key

    def edit_server(self, server: ServerKey, *, weight: int | None = None,
                    upper_threshold: int | None = None,
                    lower_threshold: int | None = None) -> None:
        """``ipvsadm -e``: change what is given, keep the rest."""
        if weight is None or upper_threshold is None or lower_threshold is None:
            # the engine is read only for what is not given (the director gives all three)
            cur = self.server(server)
            weight = cur.weight if weight is None else weight
            upper_threshold = cur.upper_threshold if upper_threshold is None else upper_threshold
            lower_threshold = cur.lower_threshold if lower_threshold is None else lower_threshold
        c = self._dest_conf(server, weight, upper_threshold, lower_threshold)
        _check(_lib.lvs_dest_edit(self._e, c), f"edit server {server}")

    def remove_server(self, server: ServerKey, *, expire_connections: bool = False) -> None:
        """``ipvsadm -d``.  Its connections stay (packets dropped) until they time out, or
        are expired at once with ``expire_connections=True`` (expire_nodest_conn)."""
        c = self._dest_conf(server, 0, 0, 0)
        _check(_lib.lvs_dest_del(self._e, c, int(expire_connections)),
               f"remove server {server}")

    def expire_server_connections(self, server: ServerKey) -> int:
        """Expire every connection (and unused template) bound to a server; returns how many."""
        c = self._dest_conf(server, 0, 0, 0)
        return _check(_lib.lvs_dest_expire_conns(self._e, c), f"expire {server}")

    # ---- listing ----

    def _servers(self, key: ServiceKey, n: int) -> tuple[ServerInfo, ...]:
        cap = max(n, 1)
        while True:
            buf = _ffi.new("lvs_dest_info[]", cap)
            ip, proto = _svc_ident(key)
            got = _check(_lib.lvs_dest_info_list(self._e, _af(ip), proto, _c_addr(ip),
                                                 key.port, buf, cap), f"list {key}")
            if got <= cap:
                break
            cap = got
        af = _af(_svc_ident(key)[0])
        return tuple(_server_info(key, af, buf[i]) for i in range(got))

    def _before_read(self) -> None:
        for hook in self.read_hooks:
            hook()

    def services(self) -> list[ServiceInfo]:
        """Every service in the order added, each with its servers in kernel list order."""
        self._before_read()
        out = []
        info = _ffi.new("lvs_svc_info *")
        for i in range(int(_lib.lvs_svc_count(self._e))):
            if _lib.lvs_svc_info_get(self._e, i, info) < 0:
                break
            out.append(self._service_from(info, with_servers=True))
        return out

    def _service_from(self, info: lvs_svc_info, *, with_servers: bool) -> ServiceInfo:
        af = int(info.af)
        if int(info.proto) == _lib.LVS_PROTO_FWM:
            key = ServiceKey.for_fwmark(int(info.addr.ip), 6 if af == _AF_INET6 else 4)
        else:
            key = ServiceKey(_PROTO_NAME[int(info.proto)], _ipstr(af, info.addr),
                             int(info.port))
        sched = _ffi.string(info.sched).decode()
        st, rt = _stats(info.stats)
        return ServiceInfo(
            key=key, scheduler=sched,
            persistence=int(info.timeout) if info.flags & _SVC_F_PERSISTENT else 0,
            netmask=(str(int(info.netmask)) if af == _AF_INET6
                     else str(ipaddress.IPv4Address(int(info.netmask)))),
            flags=_flag_names(int(info.flags), sched),
            mh_table_size=int(info.mh_table_size),
            servers=self._servers(key, int(info.num_dests)) if with_servers else (),
            stats=st, rates=rt, synproxy=bool(info.flags & _SVC_F_SYNPROXY),
            ftp=bool(info.flags & _SVC_F_FTP))

    def service(self, key: ServiceKey, *, with_servers: bool = True) -> ServiceInfo:
        """One service by key (a hash lookup in the core, not a listing); ConfigError if
        absent.  ``with_servers=False`` leaves ``servers`` empty and skips listing them."""
        self._before_read()
        info = _ffi.new("lvs_svc_info *")
        ip, proto = _svc_ident(key)
        _check(_lib.lvs_svc_info_find(self._e, _af(ip), proto, _c_addr(ip), key.port, info),
               f"{key}")
        return self._service_from(info, with_servers=with_servers)

    def rate_rows(self) -> array[int]:
        """The rate estimator's readout of every service and server, in one C call.

        :data:`RATE_ROW` integers per row: a service, then each of its servers in list order.
        :meth:`rate_row_key` names a row; items 5..9 are cps, inpps, outpps, inbps and outbps,
        item 10 a server's weight.  Cheap enough to sample 10,000 servers every 2 s, where
        :meth:`services` builds an object per server.
        """
        cap = max(self._rate_cap, 1)
        while True:
            buf = _ffi.new("uint64_t[]", cap * RATE_ROW)
            got = int(_lib.lvs_rate_rows(self._e, buf, cap))
            if got <= cap:
                break
            cap = got
        self._rate_cap = got
        out: array[int] = array("Q")
        out.frombytes(_ffi.buffer(buf, got * RATE_ROW * 8))
        return out

    @staticmethod
    def rate_row_key(rows: Sequence[int], i: int,
                     service: ServiceKey | None) -> tuple[ServiceKey, ServerKey | None]:
        """Name row *i* of :meth:`rate_rows`: (its service, None) for a service row, (the
        service, the server) for a server row (*service*: the last service row's key)."""
        o = i * RATE_ROW
        head = rows[o]
        af, proto, port = (head >> 8) & 0xFF, (head >> 16) & 0xFF, (head >> 32) & 0xFFFF
        if af == _AF_INET6:
            text = str(ipaddress.IPv6Address(rows[o + 1] << 96 | rows[o + 2] << 64
                                             | rows[o + 3] << 32 | rows[o + 4]))
        else:
            text = str(ipaddress.IPv4Address(rows[o + 1]))
        if head & 1:
            if service is None:
                raise ValueError(f"rate row {i}: a server row before any service row")
            return service, ServerKey(service, text, port)
        if proto == _lib.LVS_PROTO_FWM:
            return ServiceKey.for_fwmark(rows[o + 1]), None
        return ServiceKey(_PROTO_NAME[proto], text, port), None

    def server(self, key: ServerKey) -> ServerInfo:
        """One real server by key (looked up in its service only); ConfigError if absent."""
        info = _ffi.new("lvs_dest_info *")
        _check(_lib.lvs_dest_info_find(self._e, self._dest_conf(key, 0, 0, 0), info), f"{key}")
        return _server_info(key.service, _af(_svc_ident(key.service)[0]), info)

    def connections(self) -> list[ConnectionInfo]:
        """Every connection and persistence template (``ipvsadm -Lc``), in table order."""
        cap = max(int(self._info().connections), 1)
        while True:
            buf = _ffi.new("lvs_conn_info[]", cap)
            n = int(_lib.lvs_conn_list(self._e, buf, cap))
            if n <= cap:
                break
            cap = n
        raw = [buf[i] for i in range(n)]
        out = []
        for c in raw:
            tmpl = bool(c.flags & _CONN_F_TEMPLATE)
            proto = _PROTO_NAME.get(int(c.proto), "tcp")
            af = int(c.af)
            if tmpl or proto == "udp":
                state = "NONE" if tmpl else "UDP"
            else:
                state = _TCP_STATES[c.state] if c.state < len(_TCP_STATES) else "NONE"
            out.append(ConnectionInfo(
                protocol=proto,
                client_address=_ipstr(af, c.caddr), client_port=int(c.cport),
                virtual_address=_ipstr(af, c.vaddr), virtual_port=int(c.vport),
                server_address=_ipstr(af, c.daddr), server_port=int(c.dport),
                state=state, expires=float(c.expires), template=tmpl,
                active=not (c.flags & _CONN_F_INACTIVE) and not tmpl,
                synced=bool(c.flags & _CONN_F_SYNC), in_pkts=int(c.in_pkts),
                controlled=int(c.n_control), control=None,
                synproxy=bool(c.flags & _CONN_F_SYNPROXY)))
        return _link_templates(out, raw)

    def _info(self) -> lvs_engine_info:
        info = _ffi.new("lvs_engine_info *")
        _lib.lvs_engine_info_get(self._e, info)
        return info

    def stats(self) -> EngineStats:
        """Global totals (since the last zero), rates, occupancy and drop/pass reasons."""
        self._before_read()
        info = self._info()
        vals = _ffi.new("uint64_t[]", len(_COUNTERS))
        _lib.lvs_counter_values(self._e, vals, len(_COUNTERS))
        counts = {name: int(vals[i]) for i, name in enumerate(_COUNTERS)}
        st, rt = _stats(info.stats)
        return EngineStats(
            totals=st, rates=rt, connections=int(info.connections),
            templates=int(info.templates), max_connections=int(info.max_connections),
            entry_size=int(info.conn_entry_size), bytes_per_connection=int(info.bytes_per_conn),
            services=int(info.num_services), trash_servers=int(info.trash_dests),
            drops=MappingProxyType({k: v for k, v in counts.items()
                                    if k not in _PASS_COUNTERS and k not in _EVENT_COUNTERS}),
            passes=MappingProxyType({k: v for k, v in counts.items() if k in _PASS_COUNTERS}),
            events=MappingProxyType({k: v for k, v in counts.items() if k in _EVENT_COUNTERS}))

    def lock_stats(self) -> dict[str, Any]:
        """How long the engine lock stopped packets (core/lock.h), JSON-able: per kind
        (``control_hold``, ``worker_hold``, ``worker_wait``) the count, total and max seconds and
        cumulative ``buckets`` [upper bound s, count]; and the control call held longest."""
        return lock_stats_dict(_ffi, _raw_lib, self._e)

    def zero_stats(self, service: ServiceKey | None = None) -> None:
        """``ipvsadm -Z``: take the current counters as the baseline, reset the estimators."""
        if service is None:
            _lib.lvs_engine_zero_stats(self._e, 0, 0, _ffi.new("lvs_addr *"), 0)
            return
        ip, proto = _svc_ident(service)
        _check(_lib.lvs_engine_zero_stats(self._e, _af(ip), proto, _c_addr(ip), service.port),
               f"zero {service}")

    def update_rates(self, now: float) -> None:
        """Run the IPVS rate estimator once per elapsed 2 s (call at least every 2 s)."""
        _lib.lvs_engine_update_rates(self._e, _clock(now))

    # ---- packets ----

    def process(self, packet: bytes, now: float, *, mark: int = 0) -> bytes | None:
        """One IPv4 or IPv6 packet in; out comes the rewritten packet, the packet unchanged (not
        ours), a generated ICMP error for the sender (port unreachable when no server can take
        a new connection, time exceeded at TTL / hop limit <= 1; ICMPv6 for IPv6), or None for
        a drop.  ``mark`` is the packet's firewall mark (what a fwmark service's TUN device
        stands for)."""
        verdict, out = self.process_detailed(packet, now, mark=mark)
        return None if verdict == Verdict.DROP else out

    def process_detailed(self, packet: bytes, now: float,
                         meta: int = 0, *, mark: int = 0) -> tuple[Verdict, bytes]:
        """Like :meth:`process` but with the verdict; ``meta`` takes :data:`META_CSUM_PARTIAL`
        and :data:`META_GSO` bits.  A PASS returns the packet as given."""
        v, out = self._run([packet], now, [meta], mark)
        return v[0], out[0]

    def process_batch(self, packets: Sequence[bytes], now: float,
                      meta: Sequence[int] | None = None, *,
                      mark: int = 0) -> list[bytes | None]:
        """Many packets (all carrying ``mark``) through one C call; each result as for
        :meth:`process`."""
        verdicts, outs = self._run(packets, now, meta, mark)
        return [None if v == Verdict.DROP else o for v, o in zip(verdicts, outs, strict=True)]

    def _run(self, packets: Sequence[bytes], now: float, meta: Sequence[int] | None,
             mark: int = 0) -> tuple[list[Verdict], list[bytes]]:
        n = len(packets)
        if n == 0:
            return [], []
        if meta is not None and len(meta) != n:
            raise ConfigError("meta must have one entry per packet")
        stride = max(int(_lib.LVS_MIN_STRIDE), max(len(p) for p in packets))
        size = stride * n
        data = self._scratch
        if data is None or self._scratch_size < size:
            data = self._scratch = _ffi.new("uint8_t[]", size)
            self._scratch_size = size
        lens = _ffi.new("uint32_t[]", n)
        metas = _ffi.new("uint8_t[]", n)
        verdicts = _ffi.new("uint8_t[]", n)
        for i, p in enumerate(packets):
            _ffi.memmove(data + i * stride, p, len(p))
            lens[i] = len(p)
            if meta is not None:
                metas[i] = meta[i] & 0xFF
        b = _ffi.new("lvs_batch *")
        b.count = n
        b.stride = stride
        b.data = data
        b.len = lens
        b.meta = metas
        b.verdict = verdicts
        b.mark = mark & 0xFFFFFFFF
        _lib.lvs_engine_process_batch(self._e, b, _clock(now))
        vs: list[Verdict] = []
        outs: list[bytes] = []
        for i in range(n):
            v = Verdict(verdicts[i])
            vs.append(v)
            if v == Verdict.PASS:
                outs.append(bytes(packets[i]))
            else:
                outs.append(bytes(_ffi.buffer(data + i * stride, lens[i])))
        return vs, outs

    def expire(self, now: float) -> int:
        """Run due timers and the schedulers' periodic work (call at least once a second);
        returns the entries removed."""
        return int(_lib.lvs_engine_expire(self._e, _clock(now)))

    # ---- the SYN proxy's secrets, for the XDP responder ----

    def synproxy_secrets(self, now: float) -> tuple[int, tuple[int, int], tuple[int, int]]:
        """The cookie period of the CLOCK_MONOTONIC time *now*, its MAC key and the engine's
        base key: what ``dataplane/xdp.py`` pushes so XDP builds this engine's cookies."""
        period = int(_lib.lvs_synproxy_period(_clock(now)))
        out = _ffi.new("uint64_t[4]")
        _lib.lvs_synproxy_secrets(self._e, period, out)
        return period, (int(out[0]), int(out[1])), (int(out[2]), int(out[3]))

    # ---- connection sync ----

    def set_sync_master(self, enabled: bool = True, *, threshold: int = 3,
                        period: int = 50) -> None:
        """Collect sync records on the packet path, with IPVS's sync_threshold/sync_period."""
        self.set_option("sync_threshold", threshold)
        self.set_option("sync_period", period)
        self.set_option("sync_master", enabled)

    def sync_collect(self) -> bytes:
        """Records produced since the last call (empty unless :meth:`set_sync_master`)."""
        n = int(_lib.lvs_sync_pending(self._e))
        if n == 0:
            return b""
        buf = _ffi.new("uint8_t[]", n)
        got = int(_lib.lvs_sync_collect(self._e, buf, n))
        return bytes(_ffi.buffer(buf, got))

    def sync_full(self, now: float | None = None) -> bytes:
        """A record for every entry, templates first.  With *now*, timeouts are time left."""
        t = -1.0 if now is None else _clock(now)
        need = int(_lib.lvs_sync_full(self._e, _ffi.NULL, 0, t))
        buf = _ffi.new("uint8_t[]", max(need, 1))
        got = int(_lib.lvs_sync_full(self._e, buf, need, t))
        return bytes(_ffi.buffer(buf, min(got, need)))

    # ---- flow offload (core/offload.h; dataplane/fastpath.py drives it) ----

    def offload_enable(self, queue: int, after_packets: int = 0, ipv6: bool = True) -> None:
        """Offer established TCP connections of plain NAT services to the kernel's fast path
        (after ``after_packets`` packets in); at most ``queue`` events wait."""
        _check(_lib.lvs_offload_enable(self._e, queue, after_packets, int(ipv6)), "offload")

    def offload_disable(self) -> None:
        """Stop offering; every connection's offload mark is cleared."""
        _lib.lvs_offload_disable(self._e)

    def offload_events(self, limit: int = 1024) -> tuple[list[OffloadEvent], bool]:
        """Take up to ``limit`` queued events (oldest first) and whether a DEL was lost (the
        dataplane must then forget its whole table).  The C dataplane drains these itself;
        this is for tests and tools."""
        buf = _ffi.new("lvs_offload_event[]", limit)
        lost = _ffi.new("int *")
        n = int(_lib.lvs_offload_drain(self._e, buf, limit, lost))
        out = []
        for i in range(n):
            ev = buf[i]
            out.append(OffloadEvent(
                "add" if ev.op == _lib.LVS_OFFLOAD_ADD else "del",
                (_ipstr(ev.af, ev.caddr), int(ev.cport)),
                (_ipstr(ev.af, ev.vaddr), int(ev.vport)),
                (_ipstr(ev.af, ev.daddr), int(ev.dport))))
        return out, bool(lost[0])

    def offload_fold(self, records: Sequence[OffloadFold]) -> list[bool]:
        """Fold the kernel's counts (stats, timers, sync thresholds); per record whether its
        entry stays (False: the connection is gone or no longer offloadable)."""
        n = len(records)
        buf = _ffi.new("lvs_offload_fold[]", max(n, 1))
        for i, r in enumerate(records):
            src, dst = ipaddress.ip_address(r.source[0]), ipaddress.ip_address(r.destination[0])
            c = buf[i]
            c.af = _AF_INET6 if src.version == 6 else _AF_INET
            c.proto = _proto(r.protocol)
            c.dir = 0 if r.inbound else 1
            _set_addr(c.saddr, src)
            _set_addr(c.daddr, dst)
            c.sport, c.dport = r.source[1], r.destination[1]
            c.pkts, c.bytes, c.last_seen = r.packets, r.bytes, r.last_seen
        verdicts = _ffi.new("uint8_t[]", max(n, 1))
        _lib.lvs_offload_fold_batch(self._e, buf, n, verdicts)
        return [verdicts[i] == _lib.LVS_OFFLOAD_KEEP for i in range(n)]

    def offload_stats(self) -> dict[str, int]:
        """The engine's offload counters (core/offload.h lvs_offload_stats)."""
        st = _ffi.new("lvs_offload_stats *")
        _lib.lvs_offload_get_stats(self._e, st)
        return {name: int(getattr(st, name)) for name in
                ("adds", "dels", "full", "lost", "fold_pkts", "fold_bytes", "fold_orphans",
                 "pending", "enabled")}

    def sync_apply(self, blob: bytes, now: float) -> int:
        """Install or refresh entries from records; returns how many were applied.  Records
        for an unknown service or server are skipped and counted in :attr:`sync_skipped`."""
        sync_record_count(blob)  # whole records or ConfigError, before C sees it
        skipped = _ffi.new("uint32_t *")
        applied = int(_lib.lvs_sync_apply(self._e, blob, len(blob), _clock(now), skipped))
        self.sync_skipped += int(skipped[0])
        return applied


def _clock(now: float) -> float:
    """``now`` as the core takes it; the C time arithmetic is undefined for inf and NaN."""
    t = float(now)
    if not math.isfinite(t) or t < 0.0:
        raise ConfigError(f"now must be a finite, non-negative number of seconds, got {now!r}")
    return t


def _server_info(service: ServiceKey, af: int, d: lvs_dest_info) -> ServerInfo:
    """A C ``lvs_dest_info`` of a service of family *af* (a server shares its service's)."""
    st, rt = _stats(d.stats)
    return ServerInfo(
        key=ServerKey(service, _ipstr(af, d.addr), int(d.port)),
        weight=int(d.weight), last_weight=int(d.last_weight),
        upper_threshold=int(d.u_threshold), lower_threshold=int(d.l_threshold),
        available=bool(d.flags & _DEST_F_AVAILABLE),
        overloaded=bool(d.flags & _DEST_F_OVERLOAD),
        active_conns=int(d.activeconns), inactive_conns=int(d.inactconns),
        persist_conns=int(d.persistconns), stats=st, rates=rt)


def _flag_names(flags: int, sched: str) -> tuple[str, ...]:
    prefix = "mh" if sched == "mh" else "sh" if sched == "sh" else None
    out = []
    if flags & _SVC_F_SCHED1:
        out.append(f"{prefix}-fallback" if prefix else "flag-1")
    if flags & _SVC_F_SCHED2:
        out.append(f"{prefix}-port" if prefix else "flag-2")
    if flags & _SVC_F_SCHED3:
        out.append("flag-3")
    return tuple(out)


def _link_templates(out: list[ConnectionInfo],
                    raw: list[lvs_conn_info]) -> list[ConnectionInfo]:
    """Fill ``control``: the position of the controlling template in the same listing."""
    pos = {int(c.index): i for i, c in enumerate(raw)}
    return [replace(info, control=pos.get(int(c.control_index)))
            if c.control_index >= 0 else info for info, c in zip(out, raw, strict=True)]
