"""The TUN dataplane: open the device and pump packet batches through the engine.

Python's part is small on purpose.  :class:`TunDataplane` opens ``/dev/net/tun`` (creating the
device; it is not persistent, so it disappears with the process), registers the fd with the
running event loop, and on each readiness calls *one* C function, ``lvs_tunio_pump``, which
reads packets until the queue is empty or the batch is full, runs the engine's batch call and
writes the results back.  No Python runs per packet.

With ``offload`` the device is opened with ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD(TUN_F_CSUM |
TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)``: the kernel then hands over 64 KB TCP
super-packets with partial checksums instead of segmenting them first
(docs/performance.md#tun-offloads, #gso, #checksums).

With ``workers`` ≥ 1 (``[director] workers``) the event loop is out of the packet path: the
device is opened with ``IFF_MULTI_QUEUE``, one fd per queue, and C threads
(``dataplane/_workers.c``) pump one queue each, sharing the engine under its lock.  Python only
watches one eventfd, readable when a worker stopped on its own.  ``workers = 0`` keeps the pump
on the event loop.  With two queues or more a steering program (``dataplane/steer.py``) sends
both directions of a connection to one queue; if the kernel refuses it, the kernel's flow hash
picks the queues (still correct: one shared connection table), and a warning says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pylvs.dataplane.steer import IPAddress, TunSteering
from pylvs.errors import CoreError, NetConfigError

if TYPE_CHECKING:
    from pylvs._core import FFI, Lib, lvs_engine, lvs_tunio, lvs_tunio_stats, lvs_workers

__all__ = ["MAX_QUEUES", "TunDataplane", "TunStats", "default_workers", "open_tun"]

log = logging.getLogger(__name__)

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
MAX_QUEUES = 256  # the kernel's MAX_TAP_QUEUES
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
VNET_HDR_LEN = 10
# A slot holds the largest packet a read can return: a 64 KB GSO super-packet.  Plain mode
# reads at most the device MTU, but a larger slot costs only address space.
OFFLOAD_STRIDE = 65536 + 256
PLAIN_STRIDE = 16384
MAX_ROUNDS = 4  # full batches per wakeup before yielding to the event loop

_STAT_FIELDS = (
    "reads", "read_bytes", "writes", "write_bytes", "forwarded", "passed", "replies", "dropped",
    "write_eagain", "write_errors", "read_errors", "short_reads", "csum_partial", "gso_packets",
    "batches", "empty_wakeups", "max_batch", "spin_hits", "spin_polls",
)


def _core() -> tuple[FFI, Lib]:
    # Imported on first use: open_tun (and `pylvs check`) must work without the C core.
    from pylvs._core import ffi, lib

    return ffi, lib


def default_workers() -> int:
    """``[director] workers`` when unset: one per CPU this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except OSError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_QUEUES))


def open_tun(name: str, offload: bool, multi_queue: bool = False) -> int:
    """Open (creating if needed) TUN device ``name``, or one more queue of it with
    ``multi_queue``; return the non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
        flags |= IFF_MULTI_QUEUE if multi_queue else 0
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        if offload:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)
    except OSError as exc:
        os.close(fd)
        raise NetConfigError(f"cannot open TUN device {name!r}: {exc.strerror}") from exc
    return fd


@dataclass(frozen=True, slots=True)
class TunStats:
    """Counters of the pump plus the kernel's view of the device queue."""

    reads: int
    read_bytes: int
    writes: int
    write_bytes: int
    forwarded: int
    passed: int
    replies: int
    dropped: int  # engine verdict DROP
    write_eagain: int  # written back while the kernel would block: lost
    write_errors: int
    read_errors: int
    short_reads: int
    csum_partial: int
    gso_packets: int
    batches: int
    empty_wakeups: int
    max_batch: int
    batch_hist: tuple[int, ...]  # batches of size 1, 2-3, 4-7, ...
    queue_dropped: int | None  # the device's tx_dropped: the kernel -> pylvs queue overflowed
    worker_reads: tuple[int, ...] = ()  # packets read by each worker thread (its TUN queue)
    worker_forwarded: tuple[int, ...] = ()  # packets each worker forwarded (either direction)
    steering: bool = False  # the steering program picks the queues (dataplane/steer.py)
    spin_hits: int = 0  # workers' busy polls that found packets: wakeups saved (_workers.c)
    spin_polls: int = 0  # busy polls that found the queue empty

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict (for ``status()``)."""
        return {name: getattr(self, name) for name in self.__slots__}


class TunDataplane:
    """One TUN device pumped through an engine on the running event loop.

    ``workers`` ≥ 1 pumps in that many C threads, one TUN queue each; 0 pumps on the event loop.
    ``mark`` makes it the device of one firewall mark (netconf routes the packets marked so
    into it): the engine sees that mark on every packet read.  ``engine_ptr`` returns the
    engine's typed ``lvs_engine *`` (``Engine._c_handle()``), or
    None to drop everything, e.g. before the engine exists; ``clock`` is the time base the
    engine's timers use; ``on_failure`` is called once if the pump stops on its own (the device
    went away).
    """

    def __init__(self, name: str, *, offload: bool = True, batch_size: int = 64,
                 workers: int = 0, engine_ptr: Callable[[], lvs_engine | None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_failure: Callable[[str], None] | None = None, mark: int = 0,
                 spin_us: int | None = None, nice: int | None = None) -> None:
        self.name = name
        self.mark = mark  # a fwmark service's device: every packet read carries this mark
        self.offload = offload
        self.batch_size = batch_size
        if not 0 <= workers <= MAX_QUEUES:
            raise ValueError(f"workers: expected 0..{MAX_QUEUES}, got {workers}")
        self.workers = workers
        # The workers' busy-poll window after the last packet (None: the C default,
        # LVS_WORKERS_SPIN_NS; 0: sleep at once): docs/performance.md, "The TUN path's kernel
        # cost".
        self.spin_us = spin_us
        # The workers' niceness (None: the C default, LVS_WORKERS_NICE; 0 or more: left as
        # created, and the session's autogroup too): dataplane/_workers.c, "Priority".
        self.nice = nice
        self.fds: list[int] = []  # one per queue (workers mode)
        self._workers: lvs_workers | None = None
        self._engine_ptr = engine_ptr or (lambda: None)
        self._clock = clock
        self.fd: int | None = None
        self._io: lvs_tunio | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: str | None = None
        self._on_failure = on_failure
        self._pump: Callable[[lvs_tunio, lvs_engine, float, int], int] | None = None
        self._engine: lvs_engine | None = None  # handed to every pump call (set at start)
        self.steering: TunSteering | None = None  # workers >= 2 and the kernel took it
        self._vips: frozenset[IPAddress] = frozenset()

    def open(self) -> None:
        """Create the device and the C pump (the device is down until netconf sets it up)."""
        if self.fd is not None:
            return
        if self.workers:
            self._open_queues()
            return
        ffi, lib = _core()
        fd = open_tun(self.name, self.offload)
        stride = OFFLOAD_STRIDE if self.offload else PLAIN_STRIDE
        io = lib.lvs_tunio_new(fd, int(self.offload), self.batch_size, stride)
        if io == ffi.NULL:
            os.close(fd)
            raise CoreError("lvs_tunio_new failed (out of memory?)")
        if self.mark:
            lib.lvs_tunio_set_mark(io, self.mark)
        self.fd = fd
        self._io = ffi.gc(io, lib.lvs_tunio_free)
        self._pump = lib.lvs_tunio_pump  # bound once: the readiness callback is hot

    def _open_queues(self) -> None:
        fds: list[int] = []
        try:
            for _ in range(self.workers):
                fds.append(open_tun(self.name, self.offload, multi_queue=True))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self.fds = fds
        self.fd = fds[0]
        if len(fds) > 1:
            self._attach_steering(fds[0])

    def _attach_steering(self, fd: int) -> None:
        try:
            steering = TunSteering.load()
        except CoreError as exc:
            log.warning("TUN %s: %s; the kernel's flow hash picks the queues, so a connection's "
                        "two directions may meet on two workers (correct, slower)",
                        self.name, exc)
            return
        try:
            steering.attach(fd)
            steering.set_vips(self._vips)
        except CoreError as exc:
            steering.close()
            log.warning("TUN %s: steering program not attached (%s); the kernel's flow hash "
                        "picks the queues", self.name, exc)
            return
        self.steering = steering
        log.info("TUN %s: steering program attached: both directions of a connection go to "
                 "one of %d queues", self.name, len(self.fds))

    def set_vips(self, vips: frozenset[IPAddress]) -> None:
        """The VIPs routed into this device: the steering program tells replies by them."""
        self._vips = vips
        if self.steering is not None:
            self.steering.set_vips(vips)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start pumping: the worker threads, or on ``loop`` (default: the running loop)."""
        if self.fd is None:
            self.open()
        assert self.fd is not None
        self._engine = self._engine_ptr() or _core()[0].NULL
        self._loop = loop or asyncio.get_running_loop()
        if self.workers:
            self._start_workers(self._loop)
        else:
            self._loop.add_reader(self.fd, self._on_readable)

    def _start_workers(self, loop: asyncio.AbstractEventLoop) -> None:
        ffi, lib = _core()
        if self._workers is None:
            stride = OFFLOAD_STRIDE if self.offload else PLAIN_STRIDE
            assert self._engine is not None
            w = lib.lvs_workers_new(self._engine, ffi.new("int[]", self.fds), len(self.fds),
                                    int(self.offload), self.batch_size, stride)
            if w == ffi.NULL:
                raise CoreError("lvs_workers_new failed (out of memory or file descriptors?)")
            if self.mark:
                lib.lvs_workers_set_mark(w, self.mark)
            if self.spin_us is not None:
                lib.lvs_workers_set_spin(w, self.spin_us * 1000)
            if self.nice is not None:
                lib.lvs_workers_set_nice(w, self.nice)
            self._workers = w
        rc = lib.lvs_workers_start(self._workers)
        if rc < 0:
            raise CoreError(f"cannot start packet workers: {os.strerror(-rc)}")
        loop.add_reader(lib.lvs_workers_notify_fd(self._workers), self._on_worker_failed)

    def stop(self) -> None:
        """Stop pumping (joins the worker threads); the device stays until :meth:`close`."""
        if self._workers is not None:
            _, lib = _core()
            if self._loop is not None:
                self._loop.remove_reader(lib.lvs_workers_notify_fd(self._workers))
            lib.lvs_workers_stop(self._workers)  # at most one batch per worker: no await needed
        elif self._loop is not None and self.fd is not None:
            self._loop.remove_reader(self.fd)
        self._loop = None

    def close(self) -> None:
        """Stop and close the fds, which removes the device (and every route into it)."""
        self.stop()
        if self._workers is not None:
            _core()[1].lvs_workers_free(self._workers)
            self._workers = None
        for fd in self.fds or ([self.fd] if self.fd is not None else []):
            os.close(fd)
        self.fds = []
        self.fd = None
        self._io = None
        if self.steering is not None:
            self.steering.close()
            self.steering = None

    def workers_handle(self) -> lvs_workers | None:
        """The running workers' C handle (the fast path hands them its events), or None."""
        return self._workers

    def threads_running(self) -> int:
        """Worker threads started and not yet joined (0 in event-loop mode)."""
        if self._workers is None:
            return 0
        return int(_core()[1].lvs_workers_running(self._workers))

    def _on_worker_failed(self) -> None:
        ffi, lib = _core()
        if self._workers is None or self._failed is not None:
            return
        which = ffi.new("uint32_t *")
        rc = lib.lvs_workers_failure(self._workers, which)
        if rc == 0:
            return
        self._failed = f"worker {int(which[0])}: {os.strerror(-rc)}"
        log.error("TUN %s: %s; dataplane stopped", self.name, self._failed)
        self.stop()
        if self._on_failure is not None:
            self._on_failure(self._failed)

    def _on_readable(self) -> None:
        pump, io, engine = self._pump, self._io, self._engine
        if pump is None or io is None or engine is None:  # not started, or closed
            return
        n = pump(io, engine, self._clock(), MAX_ROUNDS)
        if n < 0 and self._failed is None:
            # A read error on a TUN fd is not transient (the device went away): stop pumping
            # rather than spin on a readable-but-failing fd.
            self._failed = os.strerror(-n)
            log.error("TUN %s: read failed (%s); dataplane stopped", self.name, self._failed)
            self.stop()
            if self._on_failure is not None:
                self._on_failure(self._failed)

    @property
    def failed(self) -> str | None:
        """Why the pump stopped on its own, if it did."""
        return self._failed

    def stats(self) -> TunStats:
        """A snapshot of the pump's counters (summed over the workers) and the device's queue
        drops."""
        ffi, lib = _core()
        snaps: list[lvs_tunio_stats] = []
        if self._workers is not None:
            for i in range(int(lib.lvs_workers_count(self._workers))):
                st = ffi.new("lvs_tunio_stats *")
                lib.lvs_workers_get_stats(self._workers, i, st)
                snaps.append(st)
        elif self._io is not None:
            st = ffi.new("lvs_tunio_stats *")
            lib.lvs_tunio_get_stats(self._io, st)
            snaps.append(st)
        elif self.fd is None:
            raise CoreError("the TUN dataplane is not open")
        values = {name: sum(int(getattr(st, name)) for st in snaps) for name in _STAT_FIELDS}
        values["max_batch"] = max((int(st.max_batch) for st in snaps), default=0)
        hist = tuple(sum(int(st.batch_hist[b]) for st in snaps)
                     for b in range(len(snaps[0].batch_hist))) if snaps else ()
        return TunStats(**values, batch_hist=hist,
                        queue_dropped=_read_counter(self.name, "tx_dropped"),
                        worker_reads=tuple(int(st.reads) for st in snaps)
                        if self._workers is not None else (),
                        worker_forwarded=tuple(int(st.forwarded) for st in snaps)
                        if self._workers is not None else (),
                        steering=self.steering is not None)

    def zero_stats(self) -> None:
        """Reset the pump's counters (ipvsadm -Z)."""
        if self._workers is not None:
            _core()[1].lvs_workers_zero_stats(self._workers)
        elif self._io is not None:
            _core()[1].lvs_tunio_zero_stats(self._io)


def _read_counter(ifname: str, counter: str) -> int | None:
    path = f"/sys/class/net/{ifname}/statistics/{counter}"
    with contextlib.suppress(OSError, ValueError), open(path, encoding="ascii") as fh:
        return int(fh.read())
    return None
