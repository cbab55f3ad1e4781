"""The established-flow fast path on the Python side: load the TC program, attach it, hand its
map to the C dataplane.

The program (``dataplane/bpf/tc_fastpath.bpf.c``) forwards the data segments of connections
the engine admitted in the kernel, on the director's public and private interfaces, without
the TUN (flow offload: docs/performance.md, "The fast path").  The engine decides which
connections (core/offload.c); the C dataplane (``dataplane/_fastpath.c``) applies its events
to the program's map after each worker batch and folds the map's counters back into the
engine (:meth:`FastPath.collect`, which the director calls every
:data:`FOLD_INTERVAL` seconds and before a stats read).  Nothing here runs per packet or per
connection.

Loading uses libbpf (as :mod:`pylvs.dataplane.xdp`); attaching is a tcx BPF link
(``BPF_LINK_CREATE``, ``BPF_TCX_INGRESS``), which the kernel detaches when its last fd closes,
so a director killed with ``-9`` leaves nothing attached.  Everything that can fail raises
:class:`CoreError`; the director then logs a warning and keeps the TUN path.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pylvs.dataplane.xdp import load_libbpf, load_object, possible_cpus
from pylvs.errors import CoreError

if TYPE_CHECKING:
    from pylvs._core import FFI, Lib, lvs_fastpath, lvs_workers
    from pylvs.engine import Engine

__all__ = ["BPF_OBJECT", "FOLD_INTERVAL", "FastPath", "FastPathStats"]

BPF_OBJECT = Path(__file__).resolve().parent / "bpf" / "tc_fastpath.bpf.o"
FOLD_INTERVAL = 0.5  # seconds between folds of the kernel's counters into the engine
QUEUE = 16384  # offload events that may wait for a worker (core/offload.c)

_PROGRAM = b"pylvs_fastpath"
_COUNTERS = ("forwarded", "neigh", "no_fib", "ttl")  # the program's enum, in order
# struct fp_key / fp_val of the program (for tests that fill the map themselves)
FP_KEY = struct.Struct("=16s16s2s2sBBxx")
FP_VAL = struct.Struct("=16s2sBBIQQQ")


def _core() -> tuple[FFI, Lib]:
    from pylvs._core import ffi, lib

    return ffi, lib


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise CoreError(f"{what}: {os.strerror(-rc)}")
    return rc


@dataclass(frozen=True)
class FastPathStats:
    """The fast path's counters: the dataplane's, the engine's and the program's."""

    entries: int        # map entries at the last fold (two per connection)
    adds: int           # connections put in the map
    dels: int           # connections taken out
    add_errors: int     # refused by the map (full)
    flushes: int
    pruned: int         # entries a fold found dead
    collects: int
    collect_ms_max: float
    packets: int        # packets and bytes the kernel forwarded, as folded into the engine
    bytes: int
    queue_full: int     # offers the engine could not queue (the conn stayed on the TUN)
    forwarded: int      # the program's own counters (per CPU, summed)
    neigh: int
    no_fib: int
    ttl: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the status."""
        return dict(self.__dict__)


class FastPath:
    """The loaded program, its links, and the C dataplane that keeps its map."""

    def __init__(self, obj: Any, prog_fd: int, flows_fd: int, counters_fd: int) -> None:
        self._obj: Any = obj
        self.prog_fd = prog_fd
        self.flows_fd = flows_fd
        self.counters_fd = counters_fd
        self.links: dict[str, int] = {}  # interface -> link fd
        self._fp: lvs_fastpath | None = None
        self._engine: Engine | None = None
        self._workers: lvs_workers | None = None

    @classmethod
    def load(cls, max_connections: int, path: Path = BPF_OBJECT) -> FastPath:
        """Load the object with room for ``max_connections`` (two entries each);
        :class:`CoreError` when it is missing or the kernel refuses it."""
        def size(ffi: Any, lib: Any, obj: Any) -> None:
            flows = lib.bpf_object__find_map_by_name(obj, b"flows")
            lib.bpf_map__set_max_entries(flows, max(2, 2 * max_connections))

        obj = load_object(path, "TC fast path", size)
        lib = load_libbpf()[1]
        flows = lib.bpf_object__find_map_by_name(obj, b"flows")
        prog = lib.bpf_object__find_program_by_name(obj, _PROGRAM)
        counters = lib.bpf_object__find_map_by_name(obj, b"counters")
        return cls(obj, lib.bpf_program__fd(prog), lib.bpf_map__fd(flows),
                   lib.bpf_map__fd(counters))

    def attach(self, ifname: str) -> None:
        """Attach to ``ifname``'s ingress (a tcx link)."""
        if ifname in self.links:
            return
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError as exc:
            raise CoreError(f"cannot attach the fast path to {ifname}: {exc}") from exc
        fd = int(_core()[1].lvs_fastpath_link(self.prog_fd, ifindex))
        if fd < 0:
            raise CoreError(f"cannot attach the fast path to {ifname} (tcx ingress): "
                            f"{os.strerror(-fd)}")
        self.links[ifname] = fd

    def detach(self, ifname: str) -> None:
        """Detach from ``ifname`` (closing the link is the detach)."""
        fd = self.links.pop(ifname, None)
        if fd is not None:
            os.close(fd)

    def bind(self, engine: Engine, max_connections: int, workers: lvs_workers | None, *,
             after_packets: int = 0, ipv6: bool = True) -> None:
        """Start offloading: the C dataplane on the map, the workers applying its events after
        each batch, and the engine offering its connections."""
        ffi, lib = _core()
        fp = lib.lvs_fastpath_new(engine._c_handle(), self.flows_fd, max_connections)
        if fp == ffi.NULL:
            raise CoreError("lvs_fastpath_new failed (out of memory?)")
        self._fp, self._engine, self._workers = fp, engine, workers
        if workers is not None:
            lib.lvs_workers_set_fastpath(workers, fp)
        engine.offload_enable(QUEUE, after_packets, ipv6)

    def unbind(self) -> None:
        """Stop offloading: the engine stops offering and forgets its marks, the workers stop
        applying, the map is emptied (connections go back to the TUN)."""
        ffi, lib = _core()
        if self._fp is None:
            return
        if self._engine is not None:
            self._engine.offload_disable()
        if self._workers is not None:
            lib.lvs_workers_set_fastpath(self._workers, ffi.NULL)
        lib.lvs_fastpath_flush(self._fp)
        lib.lvs_fastpath_free(self._fp)
        self._fp = self._engine = self._workers = None

    @property
    def bound(self) -> bool:
        """Whether connections are being offloaded."""
        return self._fp is not None

    def collect(self) -> int:
        """Fold the kernel's counts into the engine and prune dead entries; the entries
        left (0 when not bound).  Blocks for the fold (C, no GIL)."""
        if self._fp is None:
            return 0
        return _check(int(_core()[1].lvs_fastpath_collect(self._fp)), "fast path fold")

    def drain(self) -> int:
        """Apply the engine's queued events now (the workers do it after each batch)."""
        if self._fp is None:
            return 0
        return int(_core()[1].lvs_fastpath_drain(self._fp, 1))

    def flush(self) -> None:
        """Delete every entry: every connection takes the TUN again (an HA backup)."""
        if self._fp is not None:
            _core()[1].lvs_fastpath_flush(self._fp)

    def stats(self) -> FastPathStats:
        """Counters of the dataplane, the engine's offload and the program."""
        ffi, lib = _core()
        dp = ffi.new("lvs_fastpath_stats *")
        if self._fp is not None:
            lib.lvs_fastpath_get_stats(self._fp, dp)
        eng = self._engine.offload_stats() if self._engine is not None else {}
        prog = self.program_counters()
        return FastPathStats(
            entries=int(dp.entries), adds=int(dp.adds), dels=int(dp.dels),
            add_errors=int(dp.add_errors), flushes=int(dp.flushes), pruned=int(dp.pruned),
            collects=int(dp.collects), collect_ms_max=int(dp.collect_ns_max) / 1e6,
            packets=eng.get("fold_pkts", 0), bytes=eng.get("fold_bytes", 0),
            queue_full=eng.get("full", 0),
            **prog)

    def program_counters(self) -> dict[str, int]:
        """The program's per-CPU counters, summed."""
        ffi, lib = _core()
        if self._obj is None:
            return dict.fromkeys(_COUNTERS, 0)
        ncpu = possible_cpus()
        out = {}
        for i, name in enumerate(_COUNTERS):
            values = ffi.new("uint64_t[]", ncpu)
            _check(lib.lvs_xdp_map_lookup(self.counters_fd, struct.pack("=I", i), values),
                   "fast path counters")
            out[name] = sum(int(values[c]) for c in range(ncpu))
        return out

    def run(self, frame: bytes, ifindex: int = 1) -> tuple[int, bytes]:
        """Run the program once on an Ethernet frame arriving on ``ifindex``
        (BPF_PROG_TEST_RUN; for tests): its verdict and the frame as it left it."""
        ffi, lib = _core()
        cap = len(frame) + 256
        out = ffi.new("uint8_t[]", cap)
        out_len = ffi.new("uint32_t *")
        verdict = _check(int(lib.lvs_fastpath_test_run(self.prog_fd, ifindex, frame, len(frame),
                                                       out, cap, out_len)),
                         "BPF_PROG_TEST_RUN")
        return verdict, bytes(ffi.buffer(out, out_len[0]))

    def close(self) -> None:
        """Stop offloading, detach from every interface and free the program."""
        self.unbind()
        for ifname in list(self.links):
            self.detach(ifname)
        if self._obj is not None:
            load_libbpf()[1].bpf_object__close(self._obj)
            self._obj = None
