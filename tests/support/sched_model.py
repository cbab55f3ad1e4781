"""Reference models of the IPVS schedulers, written from the kernel's rules.

Sources: the kernel's ``net/netfilter/ipvs/ip_vs_*.c`` as summarised in
``docs/ipvs.md`` #schedulers, #active-and-inactive and #real-servers.  This module never looks at
pylvs's C code; the
property tests drive both with the same operations and compare every choice.

A :class:`Service` plays the kernel's control path as well (``ip_vs_ctl.c``): a new dest goes
to the head of the list, a removed one goes to a trash from which re-adding the same
address:port revives it with its counters, ``last_weight`` keeps the latest non-zero weight,
and binding/unbinding a connection maintains the counters and the OVERLOAD flag.

The only deliberate non-kernel detail is twos's random source: the kernel uses ``prandom``;
pylvs uses xorshift64* seeded per service, modelled here so that choices can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd
from typing import Protocol

__all__ = [
    "MODELS",
    "Dest",
    "Key",
    "Service",
    "clear_overload_on_unbind",
    "hash_32",
    "hsiphash_1u32",
    "siphash",
]

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
PROTO_TCP, PROTO_UDP, PROTO_SCTP = 6, 17, 132
SVC_F_SCHED1 = 0x0008  # sh-fallback / mh-fallback
SVC_F_SCHED2 = 0x0010  # sh-port / mh-port


# ---------------------------------------------------------------------------------------------
# hashes


def hash_32(v: int, bits: int) -> int:
    """include/linux/hash.h: multiply by GOLDEN_RATIO_32 and keep the top ``bits`` bits."""
    return ((v * 0x61C88647) & MASK32) >> (32 - bits)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & MASK64


def siphash(key0: int, key1: int, msg: bytes, c_rounds: int = 2, d_rounds: int = 4) -> int:
    """SipHash-c-d of ``msg`` (Aumasson & Bernstein), 64-bit result."""
    v = [
        0x736F6D6570736575 ^ key0,
        0x646F72616E646F6D ^ key1,
        0x6C7967656E657261 ^ key0,
        0x7465646279746573 ^ key1,
    ]

    def rounds(n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & MASK64
            v[1] = _rotl(v[1], 13) ^ v[0]
            v[0] = _rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & MASK64
            v[3] = _rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & MASK64
            v[3] = _rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & MASK64
            v[1] = _rotl(v[1], 17) ^ v[2]
            v[2] = _rotl(v[2], 32)

    full = len(msg) - len(msg) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(msg[i : i + 8], "little")
        v[3] ^= m
        rounds(c_rounds)
        v[0] ^= m
    last = int.from_bytes(msg[full:], "little") | ((len(msg) & 0xFF) << 56)
    v[3] ^= last
    rounds(c_rounds)
    v[0] ^= last
    v[2] ^= 0xFF
    rounds(d_rounds)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def hsiphash_1u32(value: int, key0: int, key1: int) -> int:
    """The kernel's ``hsiphash(&u32, 4, key)`` on 64-bit: SipHash-1-3, low 32 bits."""
    return siphash(key0, key1, (value & MASK32).to_bytes(4, "little"), 1, 3) & MASK32


# ---------------------------------------------------------------------------------------------
# service, dests, connections


@dataclass(eq=False)
class Dest:
    """A real server as the kernel's ``struct ip_vs_dest`` sees it."""

    addr: int
    port: int
    weight: int
    last_weight: int
    u_threshold: int = 0
    l_threshold: int = 0
    active: int = 0
    inactive: int = 0
    overload: bool = False
    available: bool = True

    @property
    def overhead(self) -> int:
        """ip_vs_dest_conn_overhead: active * 256 + inactive."""
        return self.active * 256 + self.inactive

    def __repr__(self) -> str:
        return f"Dest({self.addr:#x}:{self.port} w={self.weight})"


@dataclass(frozen=True)
class Key:
    """The fields of a new connection's first packet a scheduler may use."""

    saddr: int
    daddr: int
    sport: int
    dport: int
    proto: int = PROTO_TCP


class Scheduler:
    """Base: a stateless scheduler. Hooks run after the list has changed (kernel order)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def changed(self) -> None:
        """A dest was added, removed or edited."""

    def pick(self, key: Key, now: float) -> Dest | None:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Periodic work."""


@dataclass
class Service:
    """A virtual service: the dest list (newest first), its trash and one scheduler."""

    sched_name: str
    flags: int = 0
    mh_table_size: int = 0
    lblc_expiration: float = 0.0
    rng_state: int = 1
    af: int = 4  # 4 or 6: addresses are ints of 32 or 128 bits
    dests: list[Dest] = field(default_factory=list)
    trash: dict[tuple[int, int], Dest] = field(default_factory=dict)
    sched: Scheduler = field(init=False)

    def __post_init__(self) -> None:
        self.sched = MODELS[self.sched_name](self)

    def set_scheduler(self, name: str) -> None:
        """Replace the scheduler (its state starts afresh from the current list)."""
        self.sched_name = name
        self.sched = MODELS[name](self)

    @staticmethod
    def _thresholds(d: Dest, upper: int, lower: int) -> None:
        if upper == 0 or upper > d.u_threshold:
            d.overload = False
        d.u_threshold, d.l_threshold = upper, lower

    def add(self, addr: int, port: int, weight: int, upper: int = 0, lower: int = 0) -> Dest:
        """ipvsadm -a: revive from the trash or create; link at the head."""
        d = self.trash.pop((addr, port), None)
        if d is None:
            d = Dest(addr, port, weight, weight)
        d.last_weight = weight
        d.weight = weight
        d.available = True
        self._thresholds(d, upper, lower)
        self.dests.insert(0, d)
        self.sched.changed()
        return d

    def edit(self, d: Dest, weight: int, upper: int = 0, lower: int = 0) -> None:
        """ipvsadm -e."""
        if weight != 0:
            d.last_weight = weight
        d.weight = weight
        self._thresholds(d, upper, lower)
        self.sched.changed()

    def remove(self, d: Dest) -> None:
        """ipvsadm -d: unlink, clear AVAILABLE, keep in the trash."""
        if isinstance(self.sched, RR):
            self.sched.unlinking(d)
        self.dests.remove(d)
        d.available = False
        self.trash[(d.addr, d.port)] = d
        self.sched.changed()

    def schedule(self, key: Key, now: float) -> Dest | None:
        """A new connection's scheduling decision."""
        return self.sched.pick(key, now)

    def tick(self, now: float) -> None:
        """The scheduler's periodic timer."""
        self.sched.tick(now)

    def open(self, d: Dest, active: bool) -> None:
        """ip_vs_bind_dest (+ the TCP state change to active when ``active``)."""
        d.inactive += 1
        if d.u_threshold and d.active + d.inactive >= d.u_threshold:
            d.overload = True
        if active:
            d.inactive -= 1
            d.active += 1

    def close(self, d: Dest, active: bool) -> None:
        """ip_vs_unbind_dest."""
        if active:
            d.active -= 1
        else:
            d.inactive -= 1
        clear_overload_on_unbind(d)


class ThresholdDest(Protocol):
    """What the threshold rules read and write on a dest (both models' dests have it)."""

    active: int
    inactive: int
    u_threshold: int
    l_threshold: int
    overload: bool


def clear_overload_on_unbind(d: ThresholdDest) -> None:
    """ip_vs_unbind_dest's rule (docs/ipvs.md#real-servers): OVERLOAD clears below -y when set, else
    below 3/4 of
    -x when that is set, else at once."""
    total = d.active + d.inactive
    if d.l_threshold:
        if total < d.l_threshold:
            d.overload = False
    elif d.u_threshold:
        if total * 4 < d.u_threshold * 3:
            d.overload = False
    else:
        d.overload = False


def _eligible(d: Dest) -> bool:
    return d.weight > 0 and not d.overload


# ---------------------------------------------------------------------------------------------
# list-walking schedulers


class RR(Scheduler):
    """ip_vs_rr.c: circular walk resuming after the last pick."""

    def __init__(self, svc: Service) -> None:
        super().__init__(svc)
        self.last: Dest | None = None  # None = the list head

    def unlinking(self, d: Dest) -> None:
        """del_dest: a cursor on the removed dest moves to the previous entry."""
        if self.last is d:
            i = self.svc.dests.index(d)
            self.last = self.svc.dests[i - 1] if i > 0 else None

    def pick(self, key: Key, now: float) -> Dest | None:
        ds = self.svc.dests
        start = 0 if self.last is None else ds.index(self.last) + 1
        for i in range(len(ds)):
            d = ds[(start + i) % len(ds)]
            if _eligible(d):
                self.last = d
                return d
        return None


class WRR(Scheduler):
    """ip_vs_wrr.c: gcd / max-weight stepping."""

    def __init__(self, svc: Service) -> None:
        super().__init__(svc)
        self.cl = -1  # index in the list; -1 = the head
        self._weights()
        self.cw = self.mw

    def _weights(self) -> None:
        ws = [d.weight for d in self.svc.dests if d.weight > 0]
        self.di = 1
        if ws:
            self.di = ws[0]
            for w in ws[1:]:
                self.di = gcd(self.di, w)
        self.mw = max([0] + [d.weight for d in self.svc.dests]) - (self.di - 1)

    def changed(self) -> None:
        self.cl = -1
        self._weights()
        if self.cw > self.mw or self.cw == 0:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def pick(self, key: Key, now: float) -> Dest | None:
        ds = self.svc.dests
        if self.mw == 0:
            return None
        last = self.cl
        pos = self.cl
        stop: int | None = None
        last_pass = restarted = False
        while True:
            for i in range(pos + 1, len(ds)):
                if not ds[i].overload and ds[i].weight >= self.cw:
                    self.cl = i
                    return ds[i]
                if i == stop:
                    self.cl = i
                    return None
            pos = -1
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last == -1:
                    self.cl = -1
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last != -1:
                stop = last


class LC(Scheduler):
    """ip_vs_lc.c: least overhead, first wins ties."""

    def pick(self, key: Key, now: float) -> Dest | None:
        best: Dest | None = None
        for d in self.svc.dests:
            if d.overload or d.weight == 0:
                continue
            if best is None or d.overhead < best.overhead:
                best = d
        return best


def _weighted_least(dests: list[Dest], cost: str) -> Dest | None:
    """wlc/sed: first eligible dest, then strict cost(least)*w(d) > cost(d)*w(least)."""

    def c(d: Dest) -> int:
        return d.overhead if cost == "wlc" else d.active + 1

    start = next((i for i, d in enumerate(dests) if _eligible(d)), None)
    if start is None:
        return None
    least = dests[start]
    for d in dests[start + 1 :]:
        if d.overload:
            continue
        if c(least) * d.weight > c(d) * least.weight:
            least = d
    return least


class WLC(Scheduler):
    """ip_vs_wlc.c."""

    def pick(self, key: Key, now: float) -> Dest | None:
        return _weighted_least(self.svc.dests, "wlc")


class SED(Scheduler):
    """ip_vs_sed.c: wlc with cost active + 1."""

    def pick(self, key: Key, now: float) -> Dest | None:
        return _weighted_least(self.svc.dests, "sed")


class NQ(Scheduler):
    """ip_vs_nq.c: the first idle eligible dest, else sed's comparison."""

    def pick(self, key: Key, now: float) -> Dest | None:
        least: Dest | None = None
        for d in self.svc.dests:
            if d.overload or d.weight == 0:
                continue
            if d.active == 0:
                return d
            if least is None or (least.active + 1) * d.weight > (d.active + 1) * least.weight:
                least = d
        return least


class FO(Scheduler):
    """ip_vs_fo.c: the first dest of the highest weight."""

    def pick(self, key: Key, now: float) -> Dest | None:
        cands = [d for d in self.svc.dests if not d.overload and d.weight > 0]
        if not cands:
            return None
        top = max(d.weight for d in cands)
        return next(d for d in cands if d.weight == top)


class OVF(Scheduler):
    """ip_vs_ovf.c: highest weight among dests with active <= weight."""

    def pick(self, key: Key, now: float) -> Dest | None:
        cands = [
            d for d in self.svc.dests if not d.overload and d.weight > 0 and d.active <= d.weight
        ]
        if not cands:
            return None
        top = max(d.weight for d in cands)
        return next(d for d in cands if d.weight == top)


class TWOS(Scheduler):
    """ip_vs_twos.c: two weighted random candidates, keep the less loaded per weight."""

    def _rand(self) -> int:
        x = self.svc.rng_state or 0x9E3779B97F4A7C15
        x ^= x >> 12
        x ^= (x << 25) & MASK64
        x ^= x >> 27
        self.svc.rng_state = x
        return ((x * 0x2545F4914F6CDD1D) & MASK64) >> 32

    def pick(self, key: Key, now: float) -> Dest | None:
        cands = [d for d in self.svc.dests if _eligible(d)]
        if not cands:
            return None
        total = sum(d.weight for d in cands) + 1
        r1 = self._rand() % total
        r2 = self._rand() % total

        def draw(r: int) -> Dest:
            for d in cands:
                r -= d.weight
                if r <= 0:
                    return d
            raise AssertionError("r <= sum of weights always lands")

        c1, c2 = draw(r1), draw(r2)
        return c2 if c2.weight * c1.overhead > c1.weight * c2.overhead else c1


# ---------------------------------------------------------------------------------------------
# static hash tables


def _port(svc: Service, key: Key) -> int:
    if svc.flags & SVC_F_SCHED2 and key.proto in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
        return key.sport
    return 0


def addr_fold(svc: Service, addr: int) -> int:
    """The 32-bit key the kernel's hashing schedulers use (ip_vs_sh_hashkey & co.): the IPv4
    address, or for AF_INET6 the XOR of the address's four 32-bit words."""
    if svc.af != 6:
        return addr
    return (addr >> 96 ^ addr >> 64 ^ addr >> 32 ^ addr) & MASK32


def _unavailable(d: Dest) -> bool:
    return d.weight <= 0 or d.overload


class DH(Scheduler):
    """ip_vs_dh.c: 256 buckets, bucket i -> dest i mod n; keyed by destination address."""

    def __init__(self, svc: Service) -> None:
        super().__init__(svc)
        self.changed()

    def changed(self) -> None:
        ds = self.svc.dests
        self.table: list[Dest | None] = [ds[i % len(ds)] if ds else None for i in range(256)]

    def pick(self, key: Key, now: float) -> Dest | None:
        d = self.table[hash_32(addr_fold(self.svc, key.daddr), 8)]
        if d is None or not d.available or _unavailable(d):
            return None
        return d


def _fallback_lookup(
    table: list[Dest | None], size: int, slot_of: SlotFn, fallback: bool
) -> Dest | None:
    """sh/mh lookup with the optional fallback walk of rotating offsets."""
    ihash = slot_of(0)
    d = table[ihash]
    if not fallback:
        return None if d is None or _unavailable(d) else d
    if d is None:
        return None
    if not _unavailable(d):
        return d
    for offset in range(size):
        d = table[slot_of((offset + ihash) % size)]
        if d is None:
            break
        if not _unavailable(d):
            return d
    return None


class SlotFn:
    """The slot of a key for a given offset (callable)."""

    def __init__(self, addr: int, port: int, size: int, mh: bool) -> None:
        self.addr, self.port, self.size, self.mh = addr, port, size, mh

    def __call__(self, offset: int) -> int:
        if self.mh:
            v = (offset + self.port + self.addr) & MASK32
            return hsiphash_1u32(v, MH_K1, MH_K1) % self.size
        return (offset + hash_32((self.port + self.addr) & MASK32, 8)) & 255


class SH(Scheduler):
    """ip_vs_sh.c (weighted buckets, sh-fallback, sh-port); keyed by source address."""

    def __init__(self, svc: Service) -> None:
        super().__init__(svc)
        self.changed()

    def changed(self) -> None:
        self.table: list[Dest | None] = []
        ds = self.svc.dests
        if not ds:
            self.table = [None] * 256
            return
        i = 0
        while len(self.table) < 256:
            d = ds[i % len(ds)]
            take = max(d.weight, 1)
            self.table.extend([d] * min(take, 256 - len(self.table)))
            i += 1

    def pick(self, key: Key, now: float) -> Dest | None:
        slot = SlotFn(addr_fold(self.svc, key.saddr), _port(self.svc, key), 256, mh=False)
        return _fallback_lookup(self.table, 256, slot, bool(self.svc.flags & SVC_F_SCHED1))


MH_K1 = 2654435761
MH_K2 = 2654446892
MH_DEFAULT = 4093


class MH(Scheduler):
    """ip_vs_mh.c: Maglev permutations populated round-robin, turns from last_weight."""

    def __init__(self, svc: Service) -> None:
        super().__init__(svc)
        self.size = svc.mh_table_size or MH_DEFAULT
        self.tab_bits = self.size.bit_length() // 2
        self.changed()

    def changed(self) -> None:
        m = self.size
        ds = self.svc.dests
        lws = [d.last_weight for d in ds if d.last_weight > 0]
        if not lws:
            self.table: list[Dest | None] = [None] * m
            return
        g = lws[0]
        for w in lws[1:]:
            g = gcd(g, w)
        rshift = max(0, (max(lws) // g).bit_length() - self.tab_bits)
        offset, skip, turns = [], [], []
        for d in ds:
            a = addr_fold(self.svc, d.addr)
            offset.append(hsiphash_1u32((d.port + a) & MASK32, MH_K1, MH_K1) % m)
            skip.append(hsiphash_1u32((d.port + a) & MASK32, MH_K2, MH_K2) % (m - 1) + 1)
            t = (d.last_weight // g) >> rshift
            turns.append(t if t else int(d.last_weight != 0))
        # the j-th preference of dest i is (offset + j*skip) mod m; `nxt` is its next j
        nxt = [0] * len(ds)
        table: list[Dest | None] = [None] * m
        filled = 0
        while filled < m:
            for i, d in enumerate(ds):
                for _ in range(turns[i]):
                    while True:
                        c = (offset[i] + nxt[i] * skip[i]) % m
                        if table[c] is None:
                            break
                        nxt[i] += 1
                    table[c] = d
                    filled += 1
                    if filled == m:
                        break
                if filled == m:
                    break
        self.table = table

    def pick(self, key: Key, now: float) -> Dest | None:
        slot = SlotFn(addr_fold(self.svc, key.saddr), _port(self.svc, key), self.size, mh=True)
        return _fallback_lookup(self.table, self.size, slot, bool(self.svc.flags & SVC_F_SCHED1))


# ---------------------------------------------------------------------------------------------
# locality-based least connection


@dataclass(eq=False)
class CacheEntry:
    """One destination address: lblc keeps one dest, lblcr a set (newest member first)."""

    addr: int
    lastuse: float
    dests: list[Dest] = field(default_factory=list)
    lastmod: float = 0.0


class LBLC(Scheduler):
    """ip_vs_lblc.c, with the 60 s GC timer driven by tick()."""

    replicated = False

    def __init__(self, svc: Service) -> None:
        super().__init__(svc)
        self.buckets: list[list[CacheEntry]] = [[] for _ in range(1024)]
        self.entries = 0
        self.rover = 0
        self.counter = 1
        self.next_check: float | None = None

    @property
    def expiration(self) -> float:
        return self.svc.lblc_expiration if self.svc.lblc_expiration > 0 else 86400.0

    def find(self, addr: int) -> CacheEntry | None:
        """The cache entry of a destination address."""
        bucket = self.buckets[hash_32(addr_fold(self.svc, addr), 10)]
        return next((e for e in bucket if e.addr == addr), None)

    def _new(self, addr: int, now: float) -> CacheEntry:
        e = CacheEntry(addr, now)
        self.buckets[hash_32(addr_fold(self.svc, addr), 10)].insert(0, e)
        self.entries += 1
        return e

    def overloaded(self, d: Dest) -> bool:
        """Above its weight while some dest is under half of its weight."""
        return d.active > d.weight and any(x.active * 2 < x.weight for x in self.svc.dests)

    def pick(self, key: Key, now: float) -> Dest | None:
        if self.next_check is None:
            self.next_check = now + 60
        e = self.find(key.daddr)
        if e is not None:
            e.lastuse = now
            cached = e.dests[0]
            if cached.available and cached.weight > 0 and not self.overloaded(cached):
                return cached
        d = _weighted_least(self.svc.dests, "wlc")
        if d is None:
            return None
        if e is None:
            e = self._new(key.daddr, now)
        e.dests = [d]
        return d

    def _sweep(self, j: int, now: float, timeout: float) -> int:
        keep = [e for e in self.buckets[j] if now < e.lastuse + timeout]
        dropped = len(self.buckets[j]) - len(keep)
        self.buckets[j] = keep
        self.entries -= dropped
        return dropped

    def tick(self, now: float) -> None:
        if self.next_check is None:
            self.next_check = now + 60
            return
        if now < self.next_check:
            return
        self.next_check = now + 60
        if self.counter % 30 == 0:
            for i in range(1024):
                self._sweep((self.rover + 1 + i) % 1024, now, self.expiration)
            self.counter = 1
            return
        max_size = 1024 * 16
        if self.entries <= max_size:
            self.counter += 1
            return
        goal = min((self.entries - max_size) * 4 // 3, max_size // 2)
        j = self.rover
        for _ in range(1024):
            j = (j + 1) % 1024
            goal -= self._sweep(j, now, 360.0)
            if goal <= 0:
                break
        self.rover = j


class LBLCR(LBLC):
    """ip_vs_lblcr.c: a replicated set per destination address."""

    replicated = True

    @staticmethod
    def set_min(e: CacheEntry) -> Dest | None:
        """Weighted least-connection member (AVAILABLE, weight > 0, not OVERLOADed)."""
        least: Dest | None = None
        for d in e.dests:
            if d.overload or not d.available:
                continue
            if least is None:
                if d.weight > 0:
                    least = d
                continue
            if least.overhead * d.weight > d.overhead * least.weight:
                least = d
        return least

    @staticmethod
    def set_max(e: CacheEntry) -> Dest | None:
        """Weighted most-loaded member with weight > 0."""
        most: Dest | None = None
        for d in e.dests:
            if d.weight <= 0:
                continue
            if most is None or most.overhead * d.weight < d.overhead * most.weight:
                most = d
        return most

    def _insert(self, e: CacheEntry, d: Dest, now: float) -> None:
        if d not in e.dests:
            e.dests.insert(0, d)
            e.lastmod = now

    def pick(self, key: Key, now: float) -> Dest | None:
        if self.next_check is None:
            self.next_check = now + 60
        e = self.find(key.daddr)
        if e is not None:
            e.lastuse = now
            d = self.set_min(e)
            if len(e.dests) > 1 and now > e.lastmod + self.expiration:
                m = self.set_max(e)
                if m is not None:
                    e.dests.remove(m)
                    e.lastmod = now
            if d is not None and not self.overloaded(d):
                return d
            d = _weighted_least(self.svc.dests, "wlc")
            if d is None:
                return None
            self._insert(e, d, now)
            return d
        d = _weighted_least(self.svc.dests, "wlc")
        if d is None:
            return None
        self._insert(self._new(key.daddr, now), d, now)
        return d


MODELS: dict[str, type[Scheduler]] = {
    "rr": RR,
    "wrr": WRR,
    "lc": LC,
    "wlc": WLC,
    "sed": SED,
    "nq": NQ,
    "lblc": LBLC,
    "lblcr": LBLCR,
    "dh": DH,
    "sh": SH,
    "mh": MH,
    "fo": FO,
    "ovf": OVF,
    "twos": TWOS,
}
