"""Typed surface of the cffi extension ``pylvs._core``, so ``mypy --strict`` checks every call
into the C core.

It mirrors the cdef (``_core.cdef`` plus ``core/lock.cdef``, ``dataplane/_tunio.cdef``,
``dataplane/_workers.cdef``, ``dataplane/_steer.cdef``, ``dataplane/_xdp.cdef``,
``dataplane/_fastpath.cdef`` and ``core/offload.cdef``):
``lib`` holds each function and constant, ``ffi.new`` knows the C types Python allocates,
and the struct classes carry the C names and fields.  ``tests/unit/test_core_surface.py``
checks this file against the compiled module, so a function added to the cdef without a line
here fails the tests.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, Literal, TypeVar, overload

_C = TypeVar("_C", bound=CData)
_S = TypeVar("_S", bound=CData)

# ---- cdata kinds ----

class CData:
    """Any cffi cdata (pointer, array or struct); compared with ``ffi.NULL`` for NULL."""

class IntArray(CData):
    """An integer array or pointer (``uint8_t[]``, ``uint32_t *``, ``int32_t[6]`` ...)."""

    def __getitem__(self, i: int, /) -> int: ...
    def __setitem__(self, i: int, value: int, /) -> None: ...
    def __add__(self, n: int, /) -> IntArray: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[int]: ...

class CharArray(CData):
    """A ``char[]`` (a C string Python owns)."""

class StringArray(CData):
    """A NULL-terminated ``const char *const *``; each item is a ``const char *``."""

    def __getitem__(self, i: int, /) -> CData: ...

class StructArray(CData, Generic[_S]):
    """An array of structs (``lvs_dest_info[]`` ...)."""

    def __getitem__(self, i: int, /) -> _S: ...
    def __len__(self) -> int: ...

class CBuffer:
    """What ``ffi.buffer`` returns: raw memory, readable as bytes."""

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...
    def __getitem__(self, s: slice, /) -> bytes: ...

# ---- opaque handles ----

class lvs_engine(CData): ...
class lvs_tunio(CData): ...
class lvs_workers(CData): ...
class lvs_steer(CData): ...
class lvs_schedtest(CData): ...
class lvs_pacer(CData): ...
class lvs_fastpath(CData): ...

class NullPointer(lvs_engine, lvs_tunio, lvs_workers, lvs_steer, lvs_schedtest, lvs_pacer,
                  lvs_fastpath, IntArray):
    """``ffi.NULL``: accepted wherever C takes a pointer."""

# ---- structs ----

class lvs_batch(CData):
    count: int
    stride: int
    data: IntArray | CData
    len: IntArray | CData
    meta: IntArray | CData
    verdict: IntArray | CData
    mark: int

class lvs_addr(CData):
    """``union lvs_addr``: an IPv4 address in ``ip``, an IPv6 one as four host-order words."""

    ip: int
    ip6: IntArray | Sequence[int]

class lvs_svc_conf(CData):
    af: int
    proto: int
    addr: lvs_addr
    port: int
    sched: CData
    flags: int
    timeout: int
    netmask: int
    mh_table_size: int
    port_ranges: IntArray | CData
    nranges: int

class lvs_dest_conf(CData):
    af: int
    proto: int
    vaddr: lvs_addr
    vport: int
    dest_af: int
    addr: lvs_addr
    port: int
    weight: int
    u_threshold: int
    l_threshold: int

class lvs_stats_info(CData):
    conns: int
    inpkts: int
    outpkts: int
    inbytes: int
    outbytes: int
    cps: int
    inpps: int
    outpps: int
    inbps: int
    outbps: int

class lvs_svc_info(CData):
    af: int
    proto: int
    addr: lvs_addr
    port: int
    sched: CharArray
    flags: int
    timeout: int
    netmask: int
    mh_table_size: int
    num_dests: int
    stats: lvs_stats_info

class lvs_dest_info(CData):
    addr: lvs_addr
    port: int
    weight: int
    last_weight: int
    u_threshold: int
    l_threshold: int
    flags: int
    activeconns: int
    inactconns: int
    persistconns: int
    refcnt: int
    stats: lvs_stats_info

class lvs_conn_info(CData):
    af: int
    proto: int
    state: int
    flags: int
    caddr: lvs_addr
    vaddr: lvs_addr
    daddr: lvs_addr
    cport: int
    vport: int
    dport: int
    expires: float
    in_pkts: int
    n_control: int
    index: int
    control_index: int

class lvs_engine_info(CData):
    stats: lvs_stats_info
    connections: int
    templates: int
    max_connections: int
    conn_entry_size: int
    bytes_per_conn: int
    num_services: int
    trash_dests: int

class lvs_defense_conf(CData):
    drop_entry: int
    drop_packet: int
    secure_tcp: int
    amemthresh: int
    am_droprate: int
    evict_embryonic: int
    syncookies: int

class lvs_defense_info(CData):
    conf: lvs_defense_conf
    drop_entry_active: int
    secure_tcp_active: int
    drop_rate: int
    free_slots: int
    available: int
    embryonic: int
    drop_entry_conns: int
    drop_entry_templates: int
    evicted_embryonic: int
    evicted_templates: int
    syncookies_engaged: int
    syncookies_threshold: int
    syncookies_unanswered: int
    syncookies_quiet: int
    syncookies_engaged_count: int
    syncookies_xdp_syns: int
    syncookies_window_until: float

class lvs_tunio_stats(CData):
    reads: int
    read_bytes: int
    writes: int
    write_bytes: int
    forwarded: int
    passed: int
    replies: int
    dropped: int
    write_eagain: int
    write_errors: int
    read_errors: int
    short_reads: int
    csum_partial: int
    gso_packets: int
    batches: int
    empty_wakeups: int
    max_batch: int
    spin_hits: int
    spin_polls: int
    batch_hist: IntArray

class lvs_offload_event(CData):
    op: int
    af: int
    proto: int
    pad: int
    cport: int
    vport: int
    dport: int
    pad2: int
    slot: int
    caddr: lvs_addr
    vaddr: lvs_addr
    daddr: lvs_addr

class lvs_offload_fold(CData):
    af: int
    proto: int
    dir: int
    pad: int
    sport: int
    dport: int
    saddr: lvs_addr
    daddr: lvs_addr
    pkts: int
    bytes: int
    last_seen: float

class lvs_offload_stats(CData):
    adds: int
    dels: int
    full: int
    lost: int
    fold_pkts: int
    fold_bytes: int
    fold_orphans: int
    pending: int
    enabled: int

class lvs_fastpath_stats(CData):
    adds: int
    dels: int
    add_errors: int
    flushes: int
    collects: int
    pruned: int
    entries: int
    collect_ns_max: int

class lvs_lock_timing(CData):
    count: int
    total_ns: int
    max_ns: int
    hist: IntArray

class lvs_lock_stats(CData):
    control_hold: lvs_lock_timing
    worker_hold: lvs_lock_timing
    worker_wait: lvs_lock_timing
    longest_call: CData

class lvs_pacer_item(CData):
    due: float
    fd: int
    addr_len: int
    addr: IntArray
    len: int
    data: IntArray

class lvs_pacer_stats(CData):
    sent: int
    send_errors: int
    late_max_ns: int
    late_over_1ms: int
    pending: int
    realtime: int

# ---- ffi ----

_IntCdecl = Literal[
    "uint8_t[]", "uint16_t[]", "uint32_t[]", "uint64_t[]", "int32_t[]",
    "uint32_t *", "int *", "int[]", "uint32_t[3]", "uint32_t[4]", "uint64_t[4]", "int32_t[6]",
    "int32_t[64]", "int32_t[4096]",
]
_Buf = CData | bytes | bytearray | memoryview

class CType:
    """What ``ffi.typeof`` returns (only what the surface test reads)."""

    fields: list[tuple[str, object]]
    kind: str
    args: list[CType]

class FFI:
    """The extension's ``ffi``: only the calls pylvs makes."""

    NULL: NullPointer
    error: type[Exception]

    @overload
    def new(self, cdecl: _IntCdecl, init: int | Sequence[int] | None = None) -> IntArray: ...
    @overload
    def new(self, cdecl: Literal["char[]"], init: bytes) -> CharArray: ...
    @overload
    def new(
        self, cdecl: Literal["lvs_batch *"], init: Mapping[str, int | CData] | None = None
    ) -> lvs_batch: ...
    @overload
    def new(
        self, cdecl: Literal["lvs_batch *[]", "uint8_t *[]", "uint32_t *[]"],
        init: Sequence[CData],
    ) -> CData: ...
    @overload
    def new(self, cdecl: Literal["lvs_addr *"]) -> lvs_addr: ...
    @overload
    def new(self, cdecl: Literal["lvs_svc_conf *"]) -> lvs_svc_conf: ...
    @overload
    def new(self, cdecl: Literal["lvs_dest_conf *"]) -> lvs_dest_conf: ...
    @overload
    def new(self, cdecl: Literal["lvs_svc_info *"]) -> lvs_svc_info: ...
    @overload
    def new(self, cdecl: Literal["lvs_dest_info *"]) -> lvs_dest_info: ...
    @overload
    def new(self, cdecl: Literal["lvs_engine_info *"]) -> lvs_engine_info: ...
    @overload
    def new(self, cdecl: Literal["lvs_defense_conf *"]) -> lvs_defense_conf: ...
    @overload
    def new(self, cdecl: Literal["lvs_defense_info *"]) -> lvs_defense_info: ...
    @overload
    def new(self, cdecl: Literal["lvs_tunio_stats *"]) -> lvs_tunio_stats: ...
    @overload
    def new(self, cdecl: Literal["lvs_lock_stats *"]) -> lvs_lock_stats: ...
    @overload
    def new(self, cdecl: Literal["lvs_pacer_stats *"]) -> lvs_pacer_stats: ...
    @overload
    def new(
        self, cdecl: Literal["lvs_pacer_item[]"], init: int
    ) -> StructArray[lvs_pacer_item]: ...
    @overload
    def new(self, cdecl: Literal["lvs_dest_info[]"], init: int) -> StructArray[lvs_dest_info]: ...
    @overload
    def new(self, cdecl: Literal["lvs_conn_info[]"], init: int) -> StructArray[lvs_conn_info]: ...
    @overload
    def new(self, cdecl: Literal["lvs_addr[]"], init: int) -> StructArray[lvs_addr]: ...
    @overload
    def new(
        self, cdecl: Literal["lvs_offload_event[]"], init: int
    ) -> StructArray[lvs_offload_event]: ...
    @overload
    def new(
        self, cdecl: Literal["lvs_offload_fold[]"], init: int
    ) -> StructArray[lvs_offload_fold]: ...
    @overload
    def new(self, cdecl: Literal["lvs_offload_stats *"]) -> lvs_offload_stats: ...
    @overload
    def new(self, cdecl: Literal["lvs_fastpath_stats *"]) -> lvs_fastpath_stats: ...
    def gc(self, cdata: _C, destructor: Callable[[_C], object], size: int = 0) -> _C: ...
    def string(self, cdata: CData, maxlen: int = -1) -> bytes: ...
    def buffer(self, cdata: CData, size: int = -1) -> CBuffer: ...
    def memmove(self, dest: CData, src: _Buf, n: int) -> None: ...
    def unpack(self, cdata: CData, length: int) -> list[int]: ...
    def sizeof(self, cdecl: str | CData) -> int: ...
    def typeof(self, cdecl: str | CData) -> CType: ...

ffi: FFI

# ---- lib ----

class Lib:
    """The extension's ``lib``: every function and constant of the cdef."""

    # scheduler registry (core/lvs.h)
    def lvs_sched_names(self) -> StringArray: ...
    def lvs_is_prime(self, n: int, /) -> int: ...

    # constants (values read from the C headers at build time)
    LVS_PROTO_TCP: int
    LVS_PROTO_UDP: int
    LVS_PROTO_FWM: int
    LVS_AF_INET: int
    LVS_AF_INET6: int
    LVS_RATE_ROW: int
    LVS_SVC_F_PERSISTENT: int
    LVS_SVC_F_SCHED1: int
    LVS_MH_MAX_SIZE: int
    LVS_SVC_F_SCHED2: int
    LVS_SVC_F_SCHED3: int
    LVS_SVC_F_SYNPROXY: int
    LVS_SVC_F_FTP: int
    LVS_DEST_F_AVAILABLE: int
    LVS_DEST_F_OVERLOAD: int
    LVS_CONN_F_SYNC: int
    LVS_CONN_F_INACTIVE: int
    LVS_CONN_F_TEMPLATE: int
    LVS_CONN_F_SYNPROXY: int
    LVS_CONN_F_SEQ_MASK: int
    LVS_CONN_F_NO_CPORT: int
    LVS_SP_EXPIRED: int
    LVS_SP_BAD: int
    LVS_META_CSUM_PARTIAL: int
    LVS_META_GSO: int
    LVS_VERDICT_FORWARD: int
    LVS_VERDICT_PASS: int
    LVS_VERDICT_DROP: int
    LVS_VERDICT_REPLY: int
    LVS_MIN_STRIDE: int
    LVS_E_NOENT: int
    LVS_E_SRCH: int
    LVS_E_NOMEM: int
    LVS_E_EXIST: int
    LVS_E_INVAL: int
    LVS_E_RANGE: int
    LVS_E_AFNOSUPPORT: int
    LVS_OPT_EXPIRE_NODEST_CONN: int
    LVS_OPT_EXPIRE_QUIESCENT_TEMPLATE: int
    LVS_OPT_CONN_REUSE_MODE: int
    LVS_OPT_SYNC_MASTER: int
    LVS_OPT_SYNC_THRESHOLD: int
    LVS_OPT_SYNC_PERIOD: int
    LVS_OPT_SLOPPY_TCP: int
    LVS_OPT_SLOPPY_UDP: int
    LVS_SYNC_RECORD_SIZE: int
    LVS_SYNC_RECORD_SIZE_V6: int
    LVS_SYNC_OPTS_SIZE: int
    LVS_SYNC_RECORD_MAX: int
    LVS_LOCK_BUCKETS: int

    # engine (core/api.h)
    def lvs_engine_process_batch(self, e: lvs_engine, b: lvs_batch, now: float, /) -> int: ...
    def lvs_engine_new(self, max_conns: int, seed: int, /) -> lvs_engine: ...
    def lvs_engine_free(self, e: lvs_engine, /) -> None: ...
    # the engine lock (core/lock.cdef)
    def lvs_engine_lock(self, e: lvs_engine, /) -> None: ...
    def lvs_engine_unlock(self, e: lvs_engine, /) -> None: ...
    def lvs_engine_trylock(self, e: lvs_engine, /) -> int: ...
    def lvs_engine_lock_control(self, e: lvs_engine, /) -> None: ...
    def lvs_engine_unlock_control(self, e: lvs_engine, /) -> int: ...
    def lvs_engine_unlock_named(self, e: lvs_engine, name: bytes, /) -> None: ...
    def lvs_engine_lock_stats(self, e: lvs_engine, out: lvs_lock_stats, /) -> None: ...
    def lvs_engine_lock_bound_us(self, i: int, /) -> int: ...
    def lvs_engine_process_batch_shared(
        self, e: lvs_engine, b: lvs_batch, now: float, /
    ) -> int: ...
    def lvs_strerror(self, err: int, /) -> CData: ...
    def lvs_tcp_state_names(self) -> StringArray: ...
    def lvs_engine_set_option(self, e: lvs_engine, opt: int, value: int, /) -> int: ...
    def lvs_engine_get_option(self, e: lvs_engine, opt: int, /) -> int: ...
    def lvs_engine_expire(self, e: lvs_engine, now: float, /) -> int: ...
    def lvs_engine_set_timeouts(
        self, e: lvs_engine, tcp: int, tcpfin: int, udp: int, /
    ) -> None: ...
    def lvs_engine_get_timeouts(
        self, e: lvs_engine, tcp: IntArray, tcpfin: IntArray, udp: IntArray, /
    ) -> None: ...
    def lvs_defense_set(self, e: lvs_engine, c: lvs_defense_conf, /) -> int: ...
    def lvs_defense_get(self, e: lvs_engine, out: lvs_defense_info, /) -> None: ...
    def lvs_defense_cookie_syns(self, e: lvs_engine, n: int, /) -> None: ...
    def lvs_svc_add(self, e: lvs_engine, c: lvs_svc_conf, /) -> int: ...
    def lvs_svc_edit(self, e: lvs_engine, c: lvs_svc_conf, /) -> int: ...
    def lvs_svc_del(
        self, e: lvs_engine, af: int, proto: int, addr: lvs_addr, port: int, /
    ) -> int: ...
    def lvs_dest_add(self, e: lvs_engine, c: lvs_dest_conf, /) -> int: ...
    def lvs_dest_edit(self, e: lvs_engine, c: lvs_dest_conf, /) -> int: ...
    def lvs_dest_del(self, e: lvs_engine, c: lvs_dest_conf, expire_conns: int, /) -> int: ...
    def lvs_dest_expire_conns(self, e: lvs_engine, c: lvs_dest_conf, /) -> int: ...
    def lvs_svc_count(self, e: lvs_engine, /) -> int: ...
    def lvs_svc_info_get(self, e: lvs_engine, idx: int, out: lvs_svc_info, /) -> int: ...
    def lvs_dest_info_list(
        self, e: lvs_engine, af: int, proto: int, addr: lvs_addr, port: int,
        out: StructArray[lvs_dest_info], cap: int, /,
    ) -> int: ...
    def lvs_svc_info_find(
        self, e: lvs_engine, af: int, proto: int, addr: lvs_addr, port: int,
        out: lvs_svc_info, /,
    ) -> int: ...
    def lvs_dest_info_find(
        self, e: lvs_engine, c: lvs_dest_conf, out: lvs_dest_info, /
    ) -> int: ...
    def lvs_rate_rows(self, e: lvs_engine, out: IntArray, cap: int, /) -> int: ...
    def lvs_conn_list(
        self, e: lvs_engine, out: StructArray[lvs_conn_info], cap: int, /
    ) -> int: ...
    def lvs_engine_info_get(self, e: lvs_engine, out: lvs_engine_info, /) -> None: ...
    def lvs_counter_names(self) -> StringArray: ...
    def lvs_counter_values(self, e: lvs_engine, out: IntArray, cap: int, /) -> int: ...
    def lvs_engine_set_fwm_vips(
        self, e: lvs_engine, addrs: IntArray | CData, n: int, addrs6: StructArray[lvs_addr],
        n6: int, /
    ) -> int: ...
    def lvs_engine_zero_stats(
        self, e: lvs_engine, af: int, proto: int, addr: lvs_addr, port: int, /
    ) -> int: ...
    def lvs_engine_update_rates(self, e: lvs_engine, now: float, /) -> None: ...
    def lvs_sync_collect(self, e: lvs_engine, out: IntArray, cap: int, /) -> int: ...
    def lvs_sync_pending(self, e: lvs_engine, /) -> int: ...
    def lvs_sync_full(self, e: lvs_engine, out: IntArray, cap: int, now: float, /) -> int: ...
    def lvs_sync_apply(
        self, e: lvs_engine, data: _Buf, len: int, now: float, skipped: IntArray, /
    ) -> int: ...
    def lvs_synproxy_cookie_make(
        self, e: lvs_engine, saddr: int, daddr: int, sport: int, dport: int, sseq: int,
        mssind: int, tsopts: int, now: float, /
    ) -> int: ...
    def lvs_synproxy_cookie_check(
        self, e: lvs_engine, saddr: int, daddr: int, sport: int, dport: int, sseq: int,
        cookie: int, tsopts: int, now: float, /
    ) -> int: ...
    def lvs_synproxy_secrets(self, e: lvs_engine, period: int, out: IntArray, /) -> None: ...
    def lvs_synproxy_period(self, now: float, /) -> int: ...

    # scheduler test harness (_sched.h)
    def lvs_st_new(
        self, sched: bytes, flags: int, mh_table_size: int, lblc_expiration: float, seed: int,
        err: IntArray, /,
    ) -> lvs_schedtest: ...
    def lvs_st_free(self, t: lvs_schedtest, /) -> None: ...
    def lvs_st_set_sched(self, t: lvs_schedtest, sched: bytes, /) -> int: ...
    def lvs_st_set_af(self, t: lvs_schedtest, af: int, /) -> int: ...
    def lvs_st_add6(
        self, t: lvs_schedtest, addr: IntArray, port: int, weight: int, upper: int, lower: int, /
    ) -> int: ...
    def lvs_st_schedule6(
        self, t: lvs_schedtest, saddr: IntArray, daddr: IntArray, sport: int, dport: int,
        proto: int, now: float, /
    ) -> int: ...
    def lvs_st_cache_lookup6(
        self, t: lvs_schedtest, daddr: IntArray, out: IntArray, max: int, /
    ) -> int: ...
    def lvs_st_add(
        self, t: lvs_schedtest, addr: int, port: int, weight: int, upper: int, lower: int, /
    ) -> int: ...
    def lvs_st_edit(
        self, t: lvs_schedtest, id: int, weight: int, upper: int, lower: int, /
    ) -> int: ...
    def lvs_st_del(self, t: lvs_schedtest, id: int, /) -> int: ...
    def lvs_st_schedule(
        self, t: lvs_schedtest, saddr: int, daddr: int, sport: int, dport: int, proto: int,
        now: float, /,
    ) -> int: ...
    def lvs_st_tick(self, t: lvs_schedtest, now: float, /) -> None: ...
    def lvs_st_conn_open(self, t: lvs_schedtest, id: int, active: int, /) -> int: ...
    def lvs_st_conn_close(self, t: lvs_schedtest, id: int, active: int, /) -> int: ...
    def lvs_st_dest_info(self, t: lvs_schedtest, id: int, out: IntArray, /) -> int: ...
    def lvs_st_order(self, t: lvs_schedtest, out: IntArray, max: int, /) -> int: ...
    def lvs_st_table_size(self, t: lvs_schedtest, /) -> int: ...
    def lvs_st_table_slot(self, t: lvs_schedtest, i: int, /) -> int: ...
    def lvs_st_cache_entries(self, t: lvs_schedtest, /) -> int: ...
    def lvs_st_cache_lookup(
        self, t: lvs_schedtest, daddr: int, out: IntArray, max: int, /
    ) -> int: ...
    def lvs_st_hsiphash(self, v: int, k0: int, k1: int, /) -> int: ...
    def lvs_st_siphash24(self, k0: int, k1: int, m: IntArray, n: int, /) -> int: ...
    def lvs_st_bench(self, t: lvs_schedtest, n: int, now: float, /) -> int: ...

    # dataplane (dataplane/_tunio.cdef)
    def lvs_tunio_new(
        self, fd: int, vnet_hdr: int, batch_max: int, stride: int, /
    ) -> lvs_tunio: ...
    def lvs_tunio_free(self, io: lvs_tunio, /) -> None: ...
    def lvs_tunio_set_mark(self, io: lvs_tunio, mark: int, /) -> None: ...
    def lvs_tunio_pump(
        self, io: lvs_tunio, engine: lvs_engine, now: float, max_rounds: int, /
    ) -> int: ...
    def lvs_tunio_get_stats(self, io: lvs_tunio, out: lvs_tunio_stats, /) -> None: ...
    def lvs_tunio_zero_stats(self, io: lvs_tunio, /) -> None: ...
    # packet worker threads (dataplane/_workers.cdef)
    def lvs_workers_new(
        self, engine: lvs_engine, fds: IntArray, n: int, vnet_hdr: int, batch_max: int,
        stride: int, /
    ) -> lvs_workers: ...
    def lvs_workers_start(self, w: lvs_workers, /) -> int: ...
    def lvs_workers_stop(self, w: lvs_workers, /) -> None: ...
    def lvs_workers_free(self, w: lvs_workers, /) -> None: ...
    def lvs_workers_set_spin(self, w: lvs_workers, spin_ns: int, /) -> None: ...
    def lvs_workers_set_nice(self, w: lvs_workers, nice: int, /) -> None: ...
    def lvs_workers_set_mark(self, w: lvs_workers, mark: int, /) -> None: ...
    def lvs_workers_count(self, w: lvs_workers, /) -> int: ...
    def lvs_workers_running(self, w: lvs_workers, /) -> int: ...
    def lvs_workers_notify_fd(self, w: lvs_workers, /) -> int: ...
    def lvs_workers_failure(self, w: lvs_workers, which: IntArray, /) -> int: ...
    def lvs_workers_get_stats(
        self, w: lvs_workers, i: int, out: lvs_tunio_stats, /
    ) -> int: ...
    def lvs_workers_zero_stats(self, w: lvs_workers, /) -> None: ...
    def lvs_workers_bench(
        self, engine: lvs_engine, batches: CData, pristine: CData, lens: CData, n: int,
        rounds: int, now: float, /
    ) -> int: ...
    # the TUN steering program (dataplane/_steer.cdef)
    def lvs_steer_new(self, err: IntArray, /) -> lvs_steer: ...
    def lvs_steer_free(self, s: lvs_steer, /) -> None: ...
    def lvs_steer_attach(self, s: lvs_steer, tun_fd: int, /) -> int: ...
    def lvs_steer_set_vip(self, s: lvs_steer, addr: IntArray, present: int, /) -> int: ...
    def lvs_steer_test_run(self, s: lvs_steer, pkt: bytes, length: int, /) -> int: ...
    def lvs_steer_hash(self, af: int, addr: IntArray, port: int, /) -> int: ...
    # the heartbeat pacer (ha/_pacer.cdef)
    LVS_PACER_DATA_MAX: int
    LVS_PACER_ADDR_MAX: int
    LVS_PACER_QUEUE: int
    def lvs_pacer_new(self, rt_priority: int, /) -> lvs_pacer: ...
    def lvs_pacer_free(self, p: lvs_pacer, /) -> None: ...
    def lvs_pacer_queue(
        self, p: lvs_pacer, items: StructArray[lvs_pacer_item], n: int, replace: int, /
    ) -> int: ...
    def lvs_pacer_last_due(self, p: lvs_pacer, /) -> float: ...
    def lvs_pacer_get_stats(self, p: lvs_pacer, out: lvs_pacer_stats, /) -> None: ...

    # flow offload, the engine's half (core/offload.cdef)
    LVS_OFFLOAD_ADD: int
    LVS_OFFLOAD_DEL: int
    LVS_OFFLOAD_KEEP: int
    LVS_OFFLOAD_DROP: int
    def lvs_offload_enable(self, e: lvs_engine, queue: int, after_pkts: int, v6: int, /) -> int: ...
    def lvs_offload_disable(self, e: lvs_engine, /) -> None: ...
    def lvs_offload_drain(
        self, e: lvs_engine, out: StructArray[lvs_offload_event], max: int, lost: IntArray, /
    ) -> int: ...
    def lvs_offload_pending(self, e: lvs_engine, /) -> int: ...
    def lvs_offload_fold_batch(
        self, e: lvs_engine, recs: StructArray[lvs_offload_fold], n: int, verdicts: IntArray, /
    ) -> None: ...
    def lvs_offload_get_stats(self, e: lvs_engine, out: lvs_offload_stats, /) -> None: ...
    # the fast path's dataplane calls (dataplane/_fastpath.cdef)
    LVS_FASTPATH_TTL_IN: int
    LVS_FASTPATH_TTL_OUT: int
    def lvs_fastpath_new(
        self, engine: lvs_engine, map_fd: int, max_conns: int, /
    ) -> lvs_fastpath: ...
    def lvs_fastpath_free(self, fp: lvs_fastpath, /) -> None: ...
    def lvs_fastpath_drain(self, fp: lvs_fastpath, wait: int, /) -> int: ...
    def lvs_fastpath_collect(self, fp: lvs_fastpath, /) -> int: ...
    def lvs_fastpath_flush(self, fp: lvs_fastpath, /) -> int: ...
    def lvs_fastpath_get_stats(self, fp: lvs_fastpath, out: lvs_fastpath_stats, /) -> None: ...
    def lvs_fastpath_link(self, prog_fd: int, ifindex: int, /) -> int: ...
    def lvs_fastpath_tcx_count(self, ifindex: int, /) -> int: ...
    def lvs_fastpath_test_run(
        self, prog_fd: int, ifindex: int, frame: _Buf, len: int, out: _Buf, cap: int,
        out_len: IntArray, /
    ) -> int: ...
    def lvs_workers_set_fastpath(self, w: lvs_workers, fp: lvs_fastpath, /) -> None: ...
    # the XDP SYN-cookie responder's bpf(2) calls (dataplane/_xdp.cdef)
    def lvs_xdp_link(self, prog_fd: int, ifindex: int, flags: int, /) -> int: ...
    def lvs_xdp_map_update(self, map_fd: int, key: _Buf, value: _Buf, /) -> int: ...
    def lvs_xdp_map_delete(self, map_fd: int, key: _Buf, /) -> int: ...
    def lvs_xdp_map_lookup(self, map_fd: int, key: _Buf, value: _Buf, /) -> int: ...
    def lvs_xdp_test_run(
        self, prog_fd: int, frame: _Buf, len: int, out: _Buf, cap: int, out_len: IntArray, /
    ) -> int: ...

lib: Lib
