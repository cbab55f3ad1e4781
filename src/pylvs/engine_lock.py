"""The engine lock on the Python side: every C call that takes an ``lvs_engine *`` holds it.

The packet workers (``dataplane/_workers.c``) hold the engine lock (``core/lock.h``, a
reader-writer lock) for one batch's engine call: shared for established packets, exclusive for
the rest; the control plane (add/edit/remove, expire, rates, sync, listings) holds it
exclusively for one C call, so the packet path stops for at most one control call and the
control plane waits for at most the batches already running (writers are preferred, and blocked
workers are let in before the next control call: core/lock.c).

:func:`locking` wraps the compiled module once, at import of :mod:`pylvs.engine`: the façade
keeps calling ``_lib.lvs_…(self._e, …)`` and each such call becomes ``lvs_locked_…``, the twin
``_build.py`` generates, which takes the lock, calls the function and releases the lock inside
one C call.  Why inside C: cffi releases the GIL around each C call and takes it back after, so
a lock taken by one call and released by the next is held while the thread waits for the GIL
(measured: 38 ms for a read of the counters beside one busy Python thread).

The lock times its holds and waits itself (``lvs_engine_lock_stats``) and keeps the name of the
control call held longest: :func:`lock_stats_dict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pylvs._core import FFI, Lib, lvs_engine, lvs_lock_timing

__all__ = ["LOCKED_PREFIX", "LOCK_TIMINGS", "lock_stats_dict", "locking"]

#: The generated twins' prefix (``_build.py``, ``locked_twins``).
LOCKED_PREFIX = "lvs_locked_"

#: The kinds of time lvs_lock_stats records (core/lock.h).
LOCK_TIMINGS = ("control_hold", "worker_hold", "worker_wait")


class _LockingLib:
    """``lib`` whose engine functions are their locked twins; other names pass through."""

    def __init__(self, lib: Lib) -> None:
        for name in dir(lib):
            twin = LOCKED_PREFIX + name
            setattr(self, name, getattr(lib, twin if hasattr(lib, twin) else name))


def locking(ffi: FFI, lib: Lib) -> Lib:
    """``lib`` whose engine calls hold the engine lock (see the module docstring)."""
    return cast("Lib", _LockingLib(lib))


def lock_stats_dict(ffi: FFI, lib: Lib, engine: lvs_engine) -> dict[str, Any]:
    """``lvs_engine_lock_stats`` as JSON: per kind of :data:`LOCK_TIMINGS` the count, total and
    max seconds and cumulative ``buckets`` ([upper bound in seconds or "+Inf", count], the
    Prometheus shape); plus the control call that held the lock longest."""
    raw = ffi.new("lvs_lock_stats *")
    lib.lvs_engine_lock_stats(engine, raw)
    bounds: list[float | str] = [lib.lvs_engine_lock_bound_us(i) / 1e6
                                 for i in range(lib.LVS_LOCK_BUCKETS - 1)]
    bounds.append("+Inf")
    out: dict[str, Any] = {kind: _timing(getattr(raw, kind), bounds) for kind in LOCK_TIMINGS}
    name = "" if raw.longest_call == ffi.NULL else ffi.string(raw.longest_call).decode()
    out["longest_control_call"] = {"function": name,
                                   "seconds": out["control_hold"]["max_seconds"]}
    return out


def _timing(t: lvs_lock_timing, bounds: list[float | str]) -> dict[str, Any]:
    running, buckets = 0, []
    for i, bound in enumerate(bounds):
        running += int(t.hist[i])
        buckets.append([bound, running])
    return {"count": int(t.count), "total_seconds": int(t.total_ns) / 1e9,
            "max_seconds": int(t.max_ns) / 1e9, "buckets": buckets}
