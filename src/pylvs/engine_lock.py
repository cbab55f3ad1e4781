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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pylvs._core import FFI, CData, Lib

__all__ = ["locking"]

# Lifetime and the lock itself: never wrapped (free destroys the mutex it would unlock).
# lvs_engine_process_batch_shared takes the lock itself (shared, then exclusive), and so
# does lvs_workers_bench through it.
_UNLOCKED = frozenset({"lvs_engine_new", "lvs_engine_free", "lvs_engine_lock",
                       "lvs_engine_unlock", "lvs_engine_trylock",
                       "lvs_engine_process_batch_shared", "lvs_workers_bench"})


class _LockingLib:
    """``lib`` with every engine function wrapped in the engine lock; other names pass through."""

    def __init__(self, ffi: FFI, lib: Lib) -> None:
        engine_t = ffi.typeof("lvs_engine *")
        lock, unlock = lib.lvs_engine_lock, lib.lvs_engine_unlock
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
            unlock: Callable[[Any], None]) -> Callable[..., Any]:
    def call(engine: Any, *args: Any) -> Any:
        lock(engine)
        try:
            return fn(engine, *args)
        finally:
            unlock(engine)

    call.__name__ = getattr(fn, "__name__", "engine_call")
    return call


def locking(ffi: FFI, lib: Lib) -> Lib:
    """``lib`` whose engine calls hold the engine lock (see the module docstring)."""
    return cast("Lib", _LockingLib(ffi, lib))
