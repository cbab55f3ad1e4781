"""A typed Python face for the C scheduler harness (``_schedtest.c``), IPv4 or IPv6 (``af=6``:
addresses are 128-bit ints).

Servers are named by the integer ids the harness hands out; a removed server that is revived
by re-adding its address:port keeps its id.  Used by the scheduler tests and bench/sched.py.
"""

from __future__ import annotations

from typing import Any

from pylvs._core import ffi, lib

__all__ = ["CSched", "SchedError", "hsiphash_1u32", "siphash24_words"]


class SchedError(RuntimeError):
    """A harness call returned a negative errno."""


def _check(rc: int) -> int:
    if rc < 0:
        raise SchedError(-rc)
    return rc


class CSched:
    """One standalone service driven through the C scheduler callbacks."""

    def __init__(
        self,
        name: str,
        flags: int = 0,
        mh_table_size: int = 0,
        lblc_expiration: float = 0.0,
        seed: int = 1,
        af: int = 4,
    ) -> None:
        err = ffi.new("int *")
        t = lib.lvs_st_new(name.encode(), flags, mh_table_size, lblc_expiration, seed, err)
        if t == ffi.NULL:
            raise SchedError(-err[0])
        self._t: Any = ffi.gc(t, lib.lvs_st_free)
        self.name = name
        self.af = af
        if af == 6:
            _check(lib.lvs_st_set_af(self._t, lib.LVS_AF_INET6))

    @staticmethod
    def _words(addr: int) -> Any:
        """A 128-bit address as the four host-order words the *6 calls take."""
        return ffi.new("uint32_t[4]", [(addr >> s) & 0xFFFFFFFF for s in (96, 64, 32, 0)])

    def set_scheduler(self, name: str) -> None:
        """done_service + init_service, as the engine does on a scheduler change."""
        _check(lib.lvs_st_set_sched(self._t, name.encode()))
        self.name = name

    def add(self, addr: int, port: int, weight: int, upper: int = 0, lower: int = 0) -> int:
        """Link a new (or revive a removed) server at the list head; returns its id."""
        if self.af == 6:
            return _check(lib.lvs_st_add6(self._t, self._words(addr), port, weight, upper,
                                          lower))
        return _check(lib.lvs_st_add(self._t, addr, port, weight, upper, lower))

    def edit(self, sid: int, weight: int, upper: int = 0, lower: int = 0) -> None:
        """Change weight and thresholds, then upd_dest."""
        _check(lib.lvs_st_edit(self._t, sid, weight, upper, lower))

    def remove(self, sid: int) -> None:
        """del_dest, unlink, move to the trash."""
        _check(lib.lvs_st_del(self._t, sid))

    def schedule(
        self, saddr: int, daddr: int, sport: int, dport: int, proto: int, now: float
    ) -> int | None:
        """One scheduling decision: a server id, or None."""
        if self.af == 6:
            r = lib.lvs_st_schedule6(self._t, self._words(saddr), self._words(daddr), sport,
                                     dport, proto, now)
        else:
            r = lib.lvs_st_schedule(self._t, saddr, daddr, sport, dport, proto, now)
        return None if r < 0 else int(r)

    def tick(self, now: float) -> None:
        """The scheduler's periodic callback."""
        lib.lvs_st_tick(self._t, now)

    def open(self, sid: int, active: bool) -> None:
        """Bind a new connection to the server."""
        _check(lib.lvs_st_conn_open(self._t, sid, int(active)))

    def close(self, sid: int, active: bool) -> None:
        """Unbind a connection from the server."""
        _check(lib.lvs_st_conn_close(self._t, sid, int(active)))

    def info(self, sid: int) -> dict[str, int]:
        """weight, active, inactive, flags, refcnt, last_weight of one server."""
        out = ffi.new("int32_t[6]")
        _check(lib.lvs_st_dest_info(self._t, sid, out))
        keys = ("weight", "active", "inactive", "flags", "refcnt", "last_weight")
        return dict(zip(keys, list(out), strict=True))

    def order(self) -> list[int]:
        """Server ids in list order (newest first)."""
        out = ffi.new("int32_t[4096]")
        n = lib.lvs_st_order(self._t, out, 4096)
        return [int(out[i]) for i in range(min(n, 4096))]

    def table(self) -> list[int | None]:
        """The dh/sh buckets or the mh lookup table, as server ids."""
        n = lib.lvs_st_table_size(self._t)
        slots = (lib.lvs_st_table_slot(self._t, i) for i in range(n))
        return [None if s < 0 else int(s) for s in slots]

    def cache_entries(self) -> int:
        """lblc/lblcr: entries in the destination-address table."""
        return int(lib.lvs_st_cache_entries(self._t))

    def cache_lookup(self, daddr: int) -> list[int]:
        """lblc/lblcr: the server ids cached for one destination address (set order)."""
        out = ffi.new("int32_t[64]")
        if self.af == 6:
            n = lib.lvs_st_cache_lookup6(self._t, self._words(daddr), out, 64)
        else:
            n = lib.lvs_st_cache_lookup(self._t, daddr, out, 64)
        return [int(out[i]) for i in range(min(n, 64))]

    def bench(self, n: int, now: float = 0.0) -> int:
        """n picks in a C loop with varying keys; returns how many found a server."""
        return int(lib.lvs_st_bench(self._t, n, now))


def hsiphash_1u32(v: int, k0: int, k1: int) -> int:
    """The C hsiphash, for cross-checking the model's."""
    return int(lib.lvs_st_hsiphash(v, k0, k1))


def siphash24_words(k0: int, k1: int, words: list[int]) -> int:
    """The C SipHash-2-4 over 64-bit words (core/siphash.h, the SYN proxy's cookie hash)."""
    return int(lib.lvs_st_siphash24(k0, k1, ffi.new("uint64_t[]", words or [0]), len(words)))
