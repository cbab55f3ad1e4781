"""A small pure-Python reference model of the IPVS NAT engine, written from docs/ipvs.md.

It is deliberately slow and plain: one dict per lookup direction, lists for dest order, no
timers (``expire`` scans everything).  The property tests drive it and the real C engine with
the same operations and compare what comes out.  Every rule cites the section of
``docs/ipvs.md`` it comes from.

Choices where the reference leaves room:
* Kernel defaults unless a test asks otherwise: ``conn_reuse_mode = 1`` without conntrack (a
  SYN that finds a TIME_WAIT conn without a template expires it and is scheduled afresh,
  #new-connections step 2), ``expire_nodest_conn = 0`` and ``expire_quiescent_template = 0`` (all
  three
  are constructor options), ``nat_icmp_send = 0``, ``schedule_icmp = 0``, ``sloppy_tcp = 0``,
  no ``secure_tcp``.
* A conn is expired when ``now >= expires`` (the kernel timer fires at its deadline).
* Where the kernel would hand a packet to the director's own stack, pylvs drops and counts it
  (see :meth:`Model.process`); the counter names are the engine's (``_nat.c``).
* Where the kernel source is more precise than docs/ipvs.md, the source wins and the code says
  where (template timeout after a delayed expiry, neutralised template ports, ICMP errors
  never answered by ICMP errors).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Literal

from tests.support.packets import Pkt, error_types, is_v6
from tests.support.sched_model import clear_overload_on_unbind

__all__ = [
    "ACTIVE_STATES",
    "TCP_TIMEOUTS",
    "Conn",
    "Dest",
    "Estimator",
    "Model",
    "Service",
    "Stats",
    "Verdict",
    "tcp_transition",
]

# ---- TCP state table (#tcp-states) ---------------------------------------------------------------

STATES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE",
          "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")
_ABBR = dict(zip(("NO", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA"), STATES,
                 strict=True))

# Rows copied from the modern table in docs/ipvs.md#tcp-states; columns in STATES order.
_TABLE_TEXT = {
    ("in", "syn"): "SR ES ES SR SR SR SR SR SR SR SR",
    ("in", "fin"): "CL CW SS TW TW TW CL CW LA LI TW",
    ("in", "ack"): "ES ES SS ES FW TW CL CW CL LI ES",
    ("in", "rst"): "CL CL CL SR CL CL CL CL LA LI SR",
    ("out", "syn"): "SS ES SS SR SS SS SS SS SS LI SR",
    ("out", "fin"): "TW FW SS TW FW TW CL TW LA LI TW",
    ("out", "ack"): "ES ES SS ES FW TW CL CW LA ES ES",
    ("out", "rst"): "CL CL SS CL CL TW CL CL CL CL CL",
}
_TABLE = {
    key: dict(zip(STATES, (_ABBR[a] for a in row.split()), strict=True))
    for key, row in _TABLE_TEXT.items()
}

# Default per-state timeouts (#tcp-states, tcp_timeouts); "--set tcp tcpfin" rewrite two cells.
TCP_TIMEOUTS = {
    "NONE": 2, "ESTABLISHED": 900, "SYN_SENT": 120, "SYN_RECV": 60, "FIN_WAIT": 120,
    "TIME_WAIT": 120, "CLOSE": 10, "CLOSE_WAIT": 60, "LAST_ACK": 30, "LISTEN": 120, "SYNACK": 120,
}
# Modern kernels' tcp_state_active_table (#tcp-states).
ACTIVE_STATES = frozenset({"ESTABLISHED", "SYN_SENT", "SYN_RECV", "SYNACK"})
UDP_STATE = "UDP"
TEMPLATE_STATE = "NONE"
TEMPLATE_REARM = 60  # #expiry: a template that still controls conns is re-armed 60 s at a time


def tcp_transition(state: str, direction: Literal["in", "out"], flags: str) -> str:
    """Next TCP state: the flag row is chosen rst > syn > fin > ack; no such flag -> CLOSE."""
    for letter, row in (("R", "rst"), ("S", "syn"), ("F", "fin"), ("A", "ack")):
        if letter in flags:
            return _TABLE[(direction, row)][state]
    return "CLOSE"


# ---- objects --------------------------------------------------------------------------------


@dataclass(slots=True)
class Stats:
    """The IPVS counters (#statistics); bytes are IP total lengths."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        """(conns, inpkts, outpkts, inbytes, outbytes)."""
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)


@dataclass(slots=True)
class Estimator:
    """ip_vs_est.c in the kernel's fixed point (#statistics): every 2 s, avg += (sample - avg) / 4,
    with pps/cps samples scaled by 2^10 (delta << 9 over 2 s) and byte rates by 2^5."""

    last: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    avg: list[int] = field(default_factory=lambda: [0] * 5)

    def tick(self, st: Stats) -> None:
        """One 2-second estimation step from the current counters."""
        now = st.as_tuple()
        for i, (new, old) in enumerate(zip(now, self.last, strict=True)):
            sample = (new - old) << (9 if i < 3 else 4)
            self.avg[i] += (sample - self.avg[i]) >> 2
        self.last = now

    def reset(self, st: Stats) -> None:
        """ip_vs_zero_estimator: start again from the current counters."""
        self.last = st.as_tuple()
        self.avg = [0] * 5

    def rates(self) -> tuple[int, int, int, int, int]:
        """(cps, inpps, outpps, inbps, outbps) rounded as the kernel reads them."""
        a = self.avg
        return ((a[0] + 0x1FF) >> 10, (a[1] + 0x1FF) >> 10, (a[2] + 0x1FF) >> 10,
                (a[3] + 0xF) >> 5, (a[4] + 0xF) >> 5)


@dataclass(eq=False, slots=True)
class Dest:
    """A real server (ip_vs_dest)."""

    addr: str
    port: int
    weight: int
    u_threshold: int = 0
    l_threshold: int = 0
    available: bool = True
    overload: bool = False
    active: int = 0
    inactive: int = 0
    persist: int = 0
    refcnt: int = 0
    svc: Service | None = None  # the service it serves (or last served, while in the trash)
    stats: Stats = field(default_factory=Stats)

    @property
    def overhead(self) -> int:
        """ip_vs_dest_conn_overhead: active * 256 + inactive (#schedulers)."""
        return self.active * 256 + self.inactive


@dataclass(eq=False, slots=True)
class Service:
    """A virtual service (ip_vs_service)."""

    proto: str
    addr: str
    port: int
    scheduler: str
    persistence: int = 0
    netmask: str = "255.255.255.255"
    dests: list[Dest] = field(default_factory=list)  # newest first (kernel order)
    rr_last: Dest | None = None  # None = the list head
    stats: Stats = field(default_factory=Stats)


@dataclass(eq=False, slots=True)
class Conn:
    """A connection entry or a persistence template (ip_vs_conn)."""

    proto: str
    caddr: str
    cport: int
    vaddr: str
    vport: int
    daddr: str
    dport: int
    dest: Dest
    svc: Service
    state: str
    expires: float
    inactive: bool = True  # conns bind as INACTIVE (#active-and-inactive)
    template: bool = False
    control: Conn | None = None
    n_control: int = 0
    tmpl_timeout: float = 0  # a template's own timeout: svc persistence, 60 s once delayed
    in_key: tuple[object, ...] = ()
    out_key: tuple[object, ...] = ()
    embryo: bool = False  # in the embryonic FIFO: TCP, made by a SYN, never ESTABLISHED
    assured: bool = False  # template: a conn it controls got established (or a UDP reply)


VerdictKind = Literal["forward", "pass", "drop", "icmp_unreach", "time_exceeded"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the engine must do with one packet.

    ``forward``: emit ``packet`` (the rewritten input; TTL policy is the caller's); ``pass``:
    emit the input unchanged; ``drop``: emit nothing, counted under ``reason``;
    ``icmp_unreach``: emit an ICMP port unreachable to the sender (#new-connections step 5);
    ``time_exceeded``: the packet dies at TTL <= 1 (IPVS answers ICMP time exceeded).
    """

    kind: VerdictKind
    packet: Pkt | None = None
    reason: str = ""
    direction: Literal["in", "out", ""] = ""


# ---- the model ------------------------------------------------------------------------------


class Model:
    """The IPVS NAT semantics for the subset the property tests exercise: IPv4 TCP and UDP
    services (exact port or persistent port-zero), rr and wlc, NAT dests only."""

    def __init__(self, tcp: int = 900, tcpfin: int = 120, udp: int = 300,
                 max_connections: int = 1 << 20, *, expire_nodest_conn: bool = False,
                 expire_quiescent_template: bool = False, conn_reuse_mode: int = 1,
                 evict_embryonic: bool = True) -> None:
        # pylvs bounds the table (entries and templates); a failed allocation behaves like
        # the kernel's ip_vs_conn_new() returning NULL: after scheduling, packet dropped.
        self.max_connections = max_connections
        self.expire_nodest_conn = expire_nodest_conn  # sysctls of the same names (#real-servers,
        # #new-connections)
        self.expire_quiescent_template = expire_quiescent_template
        self.conn_reuse_mode = conn_reuse_mode
        # docs/ipvs.md#flood-defence: a full table gives the oldest embryonic conn's slot away
        self.evict_embryonic = evict_embryonic
        self.embryos: dict[int, Conn] = {}  # id -> conn, oldest first
        self.evicted = {"evict_embryonic": 0, "evict_template": 0}
        self.tcp_timeouts = dict(TCP_TIMEOUTS, ESTABLISHED=tcp, FIN_WAIT=tcpfin)
        self.udp_timeout = udp
        self.services: dict[tuple[str, str, int], Service] = {}
        self.by_in: dict[tuple[object, ...], Conn] = {}
        self.by_out: dict[tuple[object, ...], Conn] = {}
        self.templates: dict[tuple[object, ...], Conn] = {}
        self.all_conns: list[Conn] = []  # every live entry, neutralised templates included
        # Removed dests still referenced by conns, keyed like the kernel's trash lookup:
        # (proto, vaddr, vport, addr, port).
        self.trash: dict[tuple[str, str, int, str, int], Dest] = {}
        self.total = Stats()
        self.drops: dict[str, int] = {}

    # ---- configuration (#real-servers) ----

    def set_timeouts(self, tcp: int = 0, tcpfin: int = 0, udp: int = 0) -> None:
        """ipvsadm --set: three cells; 0 keeps the current value (#tcp-states)."""
        if tcp:
            self.tcp_timeouts["ESTABLISHED"] = tcp
        if tcpfin:
            self.tcp_timeouts["FIN_WAIT"] = tcpfin
        if udp:
            self.udp_timeout = udp

    def add_service(self, proto: str, addr: str, port: int, scheduler: str = "wlc",
                    persistence: int = 0, netmask: str = "255.255.255.255") -> Service:
        """-A."""
        svc = Service(proto, addr, port, scheduler, persistence, netmask)
        self.services[(proto, addr, port)] = svc
        return svc

    def edit_service(self, svc: Service, scheduler: str | None = None,
                     persistence: int | None = None, netmask: str | None = None) -> None:
        """-E: binding a different scheduler starts it fresh (rr's cursor at the head)."""
        if scheduler is not None and scheduler != svc.scheduler:
            svc.scheduler = scheduler
            svc.rr_last = None
        if persistence is not None:
            svc.persistence = persistence
        if netmask is not None:
            svc.netmask = netmask

    def remove_service(self, svc: Service) -> None:
        """-D: the dests leave like -d; their conns live on (and get dropped) until expiry."""
        for d in list(svc.dests):
            self.remove_server(svc, d)
        del self.services[(svc.proto, svc.addr, svc.port)]

    def add_server(self, svc: Service, addr: str, port: int, weight: int = 1,
                   upper_threshold: int = 0, lower_threshold: int = 0) -> Dest:
        """-a: new dests go to the list head; a dest still in the trash is revived
        (#real-servers)."""
        d = self.trash.pop((svc.proto, svc.addr, svc.port, addr, port), None)
        if d is None:
            d = Dest(addr, port, weight)
        d.available = True
        d.svc = svc
        self._update_dest(d, weight, upper_threshold, lower_threshold)
        svc.dests.insert(0, d)
        return d

    def edit_server(self, svc: Service, d: Dest, weight: int | None = None,
                    upper_threshold: int | None = None, lower_threshold: int | None = None) -> None:
        """-e."""
        self._update_dest(
            d,
            d.weight if weight is None else weight,
            d.u_threshold if upper_threshold is None else upper_threshold,
            d.l_threshold if lower_threshold is None else lower_threshold,
        )

    @staticmethod
    def _update_dest(d: Dest, weight: int, upper: int, lower: int) -> None:
        # __ip_vs_update_dest: OVERLOAD clears when u becomes 0 or grows.
        if upper == 0 or upper > d.u_threshold:
            d.overload = False
        d.weight, d.u_threshold, d.l_threshold = weight, upper, lower

    def remove_server(self, svc: Service, d: Dest) -> None:
        """-d: unlink, clear AVAILABLE, keep in the trash while conns reference it
        (#real-servers)."""
        if svc.rr_last is d:
            # ip_vs_rr_del_dest: the cursor moves to the previous entry (or the head).
            i = svc.dests.index(d)
            svc.rr_last = svc.dests[i - 1] if i > 0 else None
        svc.dests.remove(d)
        d.available = False
        if d.refcnt:
            self.trash[(svc.proto, svc.addr, svc.port, d.addr, d.port)] = d

    def zero_stats(self, svc: Service | None = None) -> None:
        """-Z: one service and its listed dests, or every service, dest and the totals
        (#statistics).

        The kernel keeps a baseline and shows differences; counters only grow, so clearing
        them reads the same.  Dests in the trash are not listed and keep their counters.
        """
        for s in (self.services.values() if svc is None else [svc]):
            s.stats = Stats()
            for d in s.dests:
                d.stats = Stats()
        if svc is None:
            self.total = Stats()

    # ---- schedulers (#schedulers) ----

    @staticmethod
    def _eligible(d: Dest) -> bool:
        return d.weight > 0 and not d.overload

    def _schedule(self, svc: Service) -> Dest | None:
        dests = svc.dests
        if not dests:
            return None
        if svc.scheduler == "rr":
            start = dests.index(svc.rr_last) + 1 if svc.rr_last is not None else 0
            for i in range(len(dests)):
                d = dests[(start + i) % len(dests)]
                if self._eligible(d):
                    svc.rr_last = d
                    return d
            return None
        if svc.scheduler == "wlc":
            least = next((d for d in dests if self._eligible(d)), None)
            if least is None:
                return None
            for d in dests[dests.index(least) + 1 :]:
                if d.overload:
                    continue
                if least.overhead * d.weight > d.overhead * least.weight:
                    least = d
            return least
        raise NotImplementedError(svc.scheduler)

    # ---- connection table (#connection-table, #lookups) ----

    @staticmethod
    def _in_key(proto: str, caddr: str, cport: int, vaddr: str, vport: int) -> tuple[object, ...]:
        return (proto, caddr, cport, vaddr, vport)

    @staticmethod
    def _out_key(proto: str, caddr: str, cport: int, daddr: str, dport: int) -> tuple[object, ...]:
        return (proto, caddr, cport, daddr, dport)

    def _bind(self, c: Conn) -> None:
        """ip_vs_bind_dest: count the conn, then the upper-threshold check (#real-servers)."""
        d = c.dest
        d.refcnt += 1
        if c.template:
            d.persist += 1
        elif c.inactive:
            d.inactive += 1
        else:
            d.active += 1
        if d.u_threshold and d.active + d.inactive >= d.u_threshold:
            d.overload = True

    def _unbind(self, c: Conn) -> None:
        """ip_vs_unbind_dest: uncount, then the lower-threshold rule (#real-servers)."""
        d = c.dest
        if c.template:
            d.persist -= 1
        elif c.inactive:
            d.inactive -= 1
        else:
            d.active -= 1
        clear_overload_on_unbind(d)
        d.refcnt -= 1
        if d.refcnt == 0 and d.svc is not None:
            key = (d.svc.proto, d.svc.addr, d.svc.port, d.addr, d.port)
            if self.trash.get(key) is d:
                del self.trash[key]

    def _new_conn(self, svc: Service, d: Dest, caddr: str, cport: int, vport: int, dport: int,
                  now: float, template: bool = False, pin: Conn | None = None) -> Conn | None:
        if len(self.all_conns) >= self.max_connections and not self._make_room(pin):
            return None
        c = Conn(svc.proto, caddr, cport, svc.addr, vport, d.addr, dport,
                 d, svc, TEMPLATE_STATE if template else "NONE", now + 3, template=template)
        self._bind(c)
        self.all_conns.append(c)
        return c

    def _make_room(self, pin: Conn | None) -> bool:
        """Evict the oldest embryonic conn, and its template when that is left controlling
        nothing and was never assured (``pin``, the template the new conn will join, stays)."""
        if not self.evict_embryonic or not self.embryos:
            return False
        c = next(iter(self.embryos.values()))
        ct = c.control
        self._free(c)
        self.evicted["evict_embryonic"] += 1
        if ct is not None and ct is not pin and ct.n_control == 0 and not ct.assured:
            self._free(ct)
            self.evicted["evict_template"] += 1
        return True

    def _assure(self, c: Conn) -> None:
        """The flow proved real: out of the embryonic FIFO; its template is assured."""
        if c.embryo:
            c.embryo = False
            del self.embryos[id(c)]
        if c.control is not None:
            c.control.assured = True

    def _hash(self, c: Conn) -> None:
        c.in_key = self._in_key(c.proto, c.caddr, c.cport, c.vaddr, c.vport)
        c.out_key = self._out_key(c.proto, c.caddr, c.cport, c.daddr, c.dport)
        self.by_in[c.in_key] = c
        self.by_out[c.out_key] = c

    def _free(self, c: Conn) -> None:
        if not c.template:
            if self.by_in.get(c.in_key) is c:
                del self.by_in[c.in_key]
            if self.by_out.get(c.out_key) is c:
                del self.by_out[c.out_key]
        elif self.templates.get(c.in_key) is c:
            del self.templates[c.in_key]
        self.all_conns.remove(c)
        if c.embryo:
            c.embryo = False
            del self.embryos[id(c)]
        self._unbind(c)
        if c.control is not None:
            c.control.n_control -= 1

    def _rearm(self, c: Conn, now: float) -> None:
        c.expires = now + self._timeout_of(c)

    def _timeout_of(self, c: Conn) -> float:
        if c.template:
            return c.tmpl_timeout
        if c.proto == "udp":
            return self.udp_timeout
        return self.tcp_timeouts[c.state]

    def _set_state(self, c: Conn, state: str) -> None:
        """Move the conn and its dest's active/inactive counts across the boundary
        (#active-and-inactive)."""
        if state != c.state:
            if state == "ESTABLISHED":
                self._assure(c)
            now_active = state in ACTIVE_STATES
            if c.inactive and now_active:
                c.dest.inactive -= 1
                c.dest.active += 1
                c.inactive = False
            elif not c.inactive and not now_active:
                c.dest.active -= 1
                c.dest.inactive += 1
                c.inactive = True
        c.state = state

    def expire(self, now: float) -> int:
        """Fire every due timer; returns how many entries were freed (#expiry)."""
        freed = 0
        # Plain conns first so that a template due at the same instant sees n_control drop.
        for c in sorted(self.all_conns, key=lambda c: (c.template, c.expires)):
            if c.expires > now or c not in self.all_conns:
                continue
            if c.n_control > 0:
                # ip_vs_conn_expire, expire_later: the timeout itself becomes 60 s, so every
                # later ip_vs_conn_put(template) re-arms 60 s, not the persistence timeout.
                c.tmpl_timeout = TEMPLATE_REARM
                c.expires = now + TEMPLATE_REARM
                continue
            self._free(c)
            freed += 1
        return freed

    def _expire_now(self, c: Conn) -> None:
        """ip_vs_conn_expire_now, as used by conn reuse: the entry goes at once."""
        self._free(c)

    # ---- packets (#nat-rewriting, #new-connections, #icmp) ----

    def _drop(self, reason: str, direction: Literal["in", "out", ""] = "") -> Verdict:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return Verdict("drop", reason=reason, direction=direction)

    @staticmethod
    def _count(st: Stats, direction: str, nbytes: int) -> None:
        if direction == "in":
            st.inpkts += 1
            st.inbytes += nbytes
        else:
            st.outpkts += 1
            st.outbytes += nbytes

    def _count_stats(self, c: Conn, direction: str, nbytes: int) -> None:
        # ip_vs_in_stats/ip_vs_out_stats count only while the dest is AVAILABLE (#statistics).
        if not c.dest.available or c.dest.svc is None:
            return
        for st in (c.dest.stats, c.dest.svc.stats, self.total):
            self._count(st, direction, nbytes)

    def vips(self) -> set[str]:
        """Addresses of the configured services."""
        return {addr for (_, addr, _) in self.services}

    def process(self, p: Pkt, length: int, now: float) -> Verdict:
        """The engine's verdict for packet ``p`` of ``length`` bytes at time ``now``.

        Traffic IPVS would leave to the director's own stack (no service on the port, a TCP
        segment that may not create a conn, ICMP to the VIP that is no error about a conn) is
        dropped and counted instead: in pylvs the VIP is routed into the engine, so passing
        it would loop (the engine's documented choice, _nat.c).  For the same reason an address
        is a VIP only while a service uses it: once the last service of a VIP is gone (and its
        route with it), packets to it are not the engine's, even for conns still in the table.
        In the kernel the address stays local and IPVS would drop them (#new-connections step 6).
        """
        if p.proto == "icmp":
            return self._icmp(p, length)
        if p.dst in self.vips():
            c = self.by_in.get(self._in_key(p.proto, p.src, p.sport, p.dst, p.dport))
            return self._inbound(p, length, now, c)
        c = self.by_out.get(self._out_key(p.proto, p.dst, p.dport, p.src, p.sport))
        if c is not None:
            return self._outbound(p, length, now, c)
        return self._pass()  # #new-connections: neither for a VIP nor a reply of a conn

    def _pass(self) -> Verdict:
        self.drops["not_ours"] = self.drops.get("not_ours", 0) + 1
        return Verdict("pass")

    def _transmit_in(self, c: Conn, p: Pkt, out: Pkt) -> Verdict:
        """ip_vs_nat_xmit: the TTL is decremented; at TTL <= 1 the packet dies with an ICMP
        time exceeded, after the conn, its stats and its state were updated (#nat-rewriting)."""
        if p.ttl <= 1:
            if p.proto == "icmp":
                # icmp_send never answers an ICMP error with another (RFC 1122 3.2.2)
                return self._drop("ttl_exceeded", "in")
            self.drops["ttl_exceeded"] = self.drops.get("ttl_exceeded", 0) + 1
            return Verdict("time_exceeded", reason="ttl_exceeded", direction="in")
        return Verdict("forward", out, direction="in")

    def _inbound(self, p: Pkt, length: int, now: float, c: Conn | None) -> Verdict:
        syn = p.proto == "tcp" and "S" in p.flags
        # #new-connections step 2 (is_new_conn tests only the SYN bit): a SYN on a TIME_WAIT or
        # CLOSE conn
        # without a template (the kernel's is_new_conn_expected), or on a conn of a quiesced
        # dest under expire_nodest_conn, starts afresh.
        if c is not None and syn and self.conn_reuse_mode and (
            (self.expire_nodest_conn and c.dest.weight == 0)
            or (c.state in ("TIME_WAIT", "CLOSE") and c.control is None)
        ):
            self._expire_now(c)
            c = None
        if c is None:
            # ip_vs_service_find: the exact port first, then the VIP's port-zero service
            # (#new-connections, service lookup)
            svc = self.services.get((p.proto, p.dst, p.dport)) or self.services.get(
                (p.proto, p.dst, 0))
            if svc is None or (svc.port == 0 and not svc.persistence):
                return self._drop("no_service", "in")
            if p.proto == "tcp" and (not syn or "R" in p.flags):
                return self._drop("tcp_no_syn", "in")  # #new-connections step 3: nothing is
                # forwarded
            got = self._schedule_conn(svc, p, now)
            if got == "full":
                return self._drop("table_full", "in")
            if got is None:
                self.drops["no_dest"] = self.drops.get("no_dest", 0) + 1
                return Verdict("icmp_unreach", reason="no_dest", direction="in")
            c = got
        elif not c.dest.available:
            if self.expire_nodest_conn:
                self._expire_now(c)
            return self._drop("dest_unavailable", "in")  # #new-connections step 6
        self._handled(c, "in", p, length, now)
        # A UDP checksum of 0 is fully computed on the way through (#nat-rewriting).
        out = replace(p, dst=c.daddr, dport=c.dport, udp_csum_zero=False)
        return self._transmit_in(c, p, out)

    def _schedule_conn(self, svc: Service, p: Pkt, now: float) -> Conn | Literal["full"] | None:
        """ip_vs_schedule / ip_vs_sched_persist (#persistence); "full" when an entry cannot be
        had."""
        if svc.persistence:
            if is_v6(svc.addr):
                # an IPv6 service's netmask is a prefix length (ipv6_addr_prefix)
                snet = str(ipaddress.IPv6Network(f"{p.src}/{svc.netmask}",
                                                 strict=False).network_address)
            else:
                mask = int(ipaddress.IPv4Address(svc.netmask))
                snet = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(p.src)) & mask))
            # A port-zero service keeps one template per client net for every port; the
            # template names the dest port only for an exact-port service.
            exact = svc.port != 0 and p.dport == svc.port
            tport = svc.port if exact else 0
            tkey = self._in_key(svc.proto, snet, 0, svc.addr, tport)
            t = self.templates.get(tkey)
            if t is not None and (not t.dest.available or (
                    self.expire_quiescent_template and t.dest.weight == 0)):
                # ip_vs_check_template: neutralised (ports 0xffff), unmatched until it expires
                del self.templates[tkey]
                t.vport = t.dport = 0xFFFF
                t = None
            if t is None:
                d = self._schedule(svc)
                if d is None:
                    return None
                t = self._new_conn(svc, d, snet, 0, tport, d.port if exact else 0, now,
                                   template=True)
                if t is None:
                    return "full"
                t.in_key = tkey
                t.tmpl_timeout = svc.persistence
                self.templates[tkey] = t
            # The conn goes to the dest port only when the packet hit the service port and
            # the dest has one; otherwise the packet's port is kept (#persistence step 5).
            dport = t.dest.port if exact and t.dest.port else p.dport
            c = self._new_conn(svc, t.dest, p.src, p.sport, p.dport, dport, now, pin=t)
            self._rearm(t, now)  # ip_vs_conn_put(template): its whole timeout again
            if c is None:
                return "full"
            c.control = t
            t.n_control += 1
        else:
            d = self._schedule(svc)
            if d is None:
                return None
            c = self._new_conn(svc, d, p.src, p.sport, p.dport, d.port, now)
            if c is None:
                return "full"
        self._hash(c)
        if c.proto == "tcp":
            c.embryo = True
            self.embryos[id(c)] = c
        for st in (c.dest.stats, svc.stats, self.total):
            st.conns += 1
        return c

    def _handled(self, c: Conn, direction: Literal["in", "out"], p: Pkt, length: int,
                 now: float) -> None:
        """What every packet handled on a conn does: stats, state transition, timer re-arm."""
        self._count_stats(c, direction, length)
        if c.proto == "tcp":
            self._set_state(c, tcp_transition(c.state, direction, p.flags))
        else:
            self._set_state(c, UDP_STATE)
            if direction == "out" and c.control is not None:
                self._assure(c)
        self._rearm(c, now)

    def _outbound(self, p: Pkt, length: int, now: float, c: Conn) -> Verdict:
        """Reply from the real server: SNAT back to VIP:vport, state OUTPUT (#lookups,
        #nat-rewriting)."""
        self._handled(c, "out", p, length, now)
        out = replace(p, src=c.vaddr, sport=c.vport, udp_csum_zero=False)
        return Verdict("forward", out, direction="out")

    def _icmp(self, p: Pkt, length: int) -> Verdict:
        """ICMP errors quoting a conn are translated both ways; timers untouched (#icmp)."""
        q = p.inner
        error = p.icmp_type in error_types(p.src) and q is not None and q.proto != "icmp"
        to_vip = p.dst in self.vips()
        if error and q is not None:
            # Inbound: the quote is VIP -> client.
            c = self.by_in.get(self._in_key(q.proto, q.dst, q.dport, q.src, q.sport))
            if c is not None and to_vip:
                self._count_stats(c, "in", length)
                inner = replace(q, src=c.daddr, sport=c.dport)
                return self._transmit_in(c, p, replace(p, dst=c.daddr, inner=inner))
            # Outbound: the quote is client -> real server.
            c = self.by_out.get(self._out_key(q.proto, q.src, q.sport, q.dst, q.dport))
            if c is not None and not to_vip:
                self._count_stats(c, "out", length)
                inner = replace(q, dst=c.vaddr, dport=c.vport)
                return Verdict("forward", replace(p, src=c.vaddr, inner=inner), direction="out")
        if to_vip:
            return self._drop("icmp_no_conn" if error else "icmp_other", "in")
        return self._pass()

    # ---- views ----

    def connections(self) -> list[Conn]:
        """Every entry, templates included."""
        return list(self.all_conns)
