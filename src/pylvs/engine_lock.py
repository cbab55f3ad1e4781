"""The engine lock on the Python side: every C call that takes an ``lvs_engine *`` holds it.

The packet workers (``dataplane/_workers.c``) hold the engine lock (``core/lock.h``, a
reader-writer lock) for one batch's engine call: shared for established packets, exclusive for
the rest; the control plane (add/edit/remove, expire, rates, sync, listings) holds it
exclusively for one C call, so the packet path stops for at most one control call and the
control plane waits for at most the batches already running (writers are preferred).  cffi
releases the GIL around every C call, so a control call that waits for a worker's batch does
not stall other Python threads.

:func:`locking` wraps the compiled module once, at import of :mod:`pylvs.engine`: the façade
keeps calling ``_lib.lvs_…(self._e, …)`` and each such call becomes lock, call, unlock.  An
uncontended lock costs two short C calls, noise beside a control operation.

The lock times its holds itself (``lvs_engine_lock_stats``); the wrapper adds which C function
held it longest (:func:`longest_hold`), so a long stop of the packet path names its cause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pylvs._core import FFI, CData, Lib, lvs_engine, lvs_lock_timing

__all__ = ["LOCK_TIMINGS", "lock_stats_dict", "locking", "longest_hold"]

# Lifetime and the lock itself: never wrapped (free destroys the mutex it would unlock).
# lvs_engine_process_batch_shared takes the lock itself (shared, then exclusive), and so
# does lvs_workers_bench through it.
# lvs_engine_lock_stats reads atomics: it must not wait for the lock it reports on.
_UNLOCKED = frozenset({"lvs_engine_new", "lvs_engine_free", "lvs_engine_lock",
                       "lvs_engine_unlock", "lvs_engine_trylock", "lvs_engine_lock_control",
                       "lvs_engine_unlock_control", "lvs_engine_lock_stats",
                       "lvs_engine_process_batch_shared", "lvs_workers_bench"})

# The longest control-plane hold since start: [nanoseconds, C function].  One per process (one
# engine per director); a race between two calls can only lose a tie.
_longest: list[Any] = [0, ""]


def longest_hold() -> tuple[float, str]:
    """The longest the control plane held the engine lock in one call (seconds) and the C
    function that did; (0.0, "") before any call."""
    return _longest[0] / 1e9, str(_longest[1])


class _LockingLib:
    """``lib`` with every engine function wrapped in the engine lock; other names pass through."""

    def __init__(self, ffi: FFI, lib: Lib) -> None:
        engine_t = ffi.typeof("lvs_engine *")
        lock, unlock = lib.lvs_engine_lock_control, lib.lvs_engine_unlock_control
        for name in dir(lib):
            obj = getattr(lib, name)
            if name not in _UNLOCKED and _takes_engine(ffi, obj, engine_t):
                obj = _locked(obj, lock, unlock)
            setattr(self, name, obj)


def _takes_engine(ffi: FFI, obj: object, engine_t: object) -> bool:
    if isinstance(obj, int | float | str | bytes):
        return False
    try:
        t: Any = ffi.typeof(cast("CData", obj))
    except TypeError:
        return False
    return bool(t.kind == "function" and t.args and t.args[0] is engine_t)


def _locked(fn: Callable[..., Any], lock: Callable[[Any], None],
            unlock: Callable[[Any], int]) -> Callable[..., Any]:
    name = getattr(fn, "__name__", "engine_call")

    def call(engine: Any, *args: Any) -> Any:
        lock(engine)
        try:
            return fn(engine, *args)
        finally:
            held = unlock(engine)
            if held > _longest[0]:
                _longest[:] = [held, name]

    call.__name__ = name
    return call


def locking(ffi: FFI, lib: Lib) -> Lib:
    """``lib`` whose engine calls hold the engine lock (see the module docstring)."""
    return cast("Lib", _LockingLib(ffi, lib))


#: The kinds of time lvs_lock_stats records (core/lock.h).
LOCK_TIMINGS = ("control_hold", "worker_hold", "worker_wait")


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
    seconds, name = longest_hold()
    out["longest_control_call"] = {"function": name, "seconds": seconds}
    return out


def _timing(t: lvs_lock_timing, bounds: list[float | str]) -> dict[str, Any]:
    running, buckets = 0, []
    for i, bound in enumerate(bounds):
        running += int(t.hist[i])
        buckets.append([bound, running])
    return {"count": int(t.count), "total_seconds": int(t.total_ns) / 1e9,
            "max_seconds": int(t.max_ns) / 1e9, "buckets": buckets}
