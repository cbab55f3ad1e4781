"""Network configuration of the director host, through pyroute2: idempotent apply and remove.

What the TUN packet path needs (docs/design.md#the-packet-path):

* the TUN device up, with a long transmit queue (the kernel -> pylvs queue; 500 drops bursts)
  and no qdisc in front of it;
* ``VIP/32 dev <tun>`` (IPv6: ``VIP/128``) routes, so client packets for a VIP reach the dataplane
  (the VIP is *not* a local address);
* a proxy-neighbour entry per VIP on the public interface, so the director answers ARP (IPv4) or
  neighbour solicitations (IPv6: proxy NDP, ``proxy_ndp = 1``) for it, with ``proxy_delay`` 0
  (the kernel otherwise delays proxy replies by up to 0.8 s);
* reply steering: ``iif <private> from <RIP> ipproto <proto> sport <rport> lookup <table>`` and
  ``default dev <tun>`` in that table, so real servers' replies go through pylvs, not around it
  (one rule and one default route per address family);
* sysctls: ``ip_forward = 1``; ``rp_filter`` 2 or 0 on the TUN (rewritten client packets come *in*
  on the TUN with the client's source, which strict mode would drop as a martian);
* the ``nat_router`` addresses (the real servers' gateways, one per family) on the private
  interface; an IPv6 one without duplicate address detection, so it answers at once;
* per firewall-mark service (docs/ipvs.md#fwmark): a TUN device of its own (created by the
  director's dataplane), ``fwmark <mark> lookup <table>`` with ``default dev <that TUN>`` in
  the table, so the packets the operator's nftables rules mark reach the engine through the
  device that stands for their mark.

IPv6 is switched on lazily, the first time a plan holds an IPv6 VIP, server or gateway
(``net.ipv6.conf.all.forwarding = 1``, ``proxy_ndp`` on the public side, IPv6 on the TUN without
a link-local address): an IPv4-only director leaves the host's IPv6 settings alone
(docs/design.md#dual-stack).

Every object pylvs adds is tagged (routes with protocol :data:`RTPROT_PYLVS`, rules with their own
priority and table) or written down in a small state file, so :meth:`NetConf.remove` undoes
exactly what was added and a restart after a crash first removes the leftovers and then applies
afresh.  The TUN device itself is created by the dataplane when it opens ``/dev/net/tun`` (it
is not persistent, so it vanishes with the process, and its routes with it).

If the process dies without :meth:`NetConf.remove` (``kill -9``), the guardian process that
:meth:`NetConf.setup` starts (:mod:`pylvs.guardian`) removes at once what answers for this
node on the network: the ``nat_router`` addresses and the proxy ARP/NDP entries
(:func:`release_claims`).

All methods block on netlink; asyncio callers run them with ``asyncio.to_thread``.  (pyroute2's
``AsyncIPRoute`` cannot run on uvloop, whose datagram endpoints reject AF_NETLINK.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    collapse_addresses,
    ip_interface,
)
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pylvs.errors import NetConfigError
from pylvs.guardian import Guardian, wait_for_previous
from pylvs.model import Config, IPAddress, IPInterface, VirtualServerConfig, parse_address
from pylvs.neighbours import announce_frames

__all__ = [
    "RTPROT_PYLVS",
    "NetConf",
    "NetPlan",
    "Steer",
    "aggregate_steering",
    "fwmark_device",
    "plan_from_config",
    "release_claims",
    "send_announcements",
]

log = logging.getLogger(__name__)

RTN_BLACKHOLE = 6  # rtnetlink route type
RTPROT_PYLVS = 201  # route protocol number marking routes pylvs owns (ip route ... proto 201)
NTF_PROXY = 0x08
IFA_F_NODAD = 0x02
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_DEFAULT: dict[int, str] = {socket.AF_INET: "0.0.0.0/0", socket.AF_INET6: "::/0"}
SO_NETNS_COOKIE = 71  # asm-generic/socket.h; not exported by Python 3.11's socket module
_IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_STATE_DIR = Path(os.environ.get("PYLVS_STATE_DIR", "/run/pylvs"))


@dataclass(frozen=True, slots=True)
class Steer:
    """One reply-steering rule: packets from ``address/prefixlen`` port ``port`` over
    ``protocol`` go to the TUN."""

    protocol: str
    address: IPAddress
    port: int  # 0: every source port (port-0 services)
    # A block of real servers: one rule instead of one per address.  None: the address alone
    # (/32 or /128).
    prefixlen: int | None = None

    def __post_init__(self) -> None:
        if self.prefixlen is None:
            object.__setattr__(self, "prefixlen", self.address.max_prefixlen)

    def __lt__(self, other: object) -> bool:
        # IPv4 and IPv6 addresses do not compare with each other: order by family first.
        if not isinstance(other, Steer):
            return NotImplemented
        return self._key < other._key

    @property
    def _key(self) -> tuple[str, int, int, int, int]:
        return (self.protocol, self.address.version, int(self.address), self.port,
                self.prefixlen or 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetPlan:
    """The desired state :meth:`NetConf.apply` converges to."""

    vips: frozenset[IPAddress] = frozenset()
    steering: frozenset[Steer] = frozenset()
    nat_routers: frozenset[IPInterface] = frozenset()  # at most one per address family
    fwmarks: frozenset[int] = frozenset()  # marks whose packets go to their own TUN device
    # the marks of IPv6 fwmark services: their IPv6 packets take the mark's device as well (an
    # IPv4-only mark routes no IPv6, whose packets would otherwise loop back to the kernel)
    fwmarks6: frozenset[int] = frozenset()

    @property
    def has_ipv6(self) -> bool:
        """True when anything in the plan is IPv6 (the host then needs IPv6 forwarding)."""
        return (bool(self.fwmarks6) or any(v.version == 6 for v in self.vips)
                or any(s.address.version == 6 for s in self.steering)
                or any(n.version == 6 for n in self.nat_routers))


def fwmark_device(tun_name: str, mark: int) -> str:
    """The TUN device of firewall mark ``mark``: ``pylvs0f50`` for mark 80 (hex, <= 15 chars)."""
    return f"{tun_name[:6]}f{mark:x}"


def plan_from_config(cfg: Config, *, active: bool = True) -> NetPlan:
    """The plan for ``cfg``; a backup (``active=False``) owns neither VIPs nor the nat_router."""
    def protocols(vs: VirtualServerConfig) -> tuple[str, ...]:
        # a mark may cover TCP and UDP alike: steer both (a reply that is not ours passes)
        return ("tcp", "udp") if vs.fwmark else (vs.protocol,)

    def port(vs: VirtualServerConfig, rs_port: int) -> int:
        # FTP data connections come from port 20 and passive ports: every source port
        return 0 if vs.ftp else rs_port

    sources: set[tuple[str, IPAddress, int]] = set()
    for vs in cfg.virtual_servers:
        endpoints = [rs.address for rs in vs.real_servers]
        if vs.sorry_server is not None:
            endpoints.append(vs.sorry_server)
        sources.update((proto, ep.address, port(vs, ep.port))
                       for ep in endpoints for proto in protocols(vs))
    steering = aggregate_steering(sources)
    # a fwmark service without a VIP of its own has 0.0.0.0 (or ::)
    vips = {vs.address.address for vs in cfg.virtual_servers
            if not vs.address.address.is_unspecified}
    return NetPlan(
        vips=frozenset(vips) if active else frozenset(),
        steering=frozenset(steering),
        nat_routers=frozenset(cfg.director.nat_routers) if active else frozenset(),
        fwmarks=frozenset(vs.fwmark for vs in cfg.virtual_servers if vs.fwmark),
        fwmarks6=frozenset(vs.fwmark for vs in cfg.virtual_servers
                           if vs.fwmark and vs.address.address.version == 6),
    )


def aggregate_steering(
        sources: Iterable[tuple[str, IPAddress, int]]) -> frozenset[Steer]:
    """Steering rules for exactly these ``(protocol, address, port)`` sources, as few as can be.

    The kernel keeps policy rules in a list (each insertion and each packet from the private
    side walks it), so 10,000 real servers as 10,000 rules would take seconds to install and
    slow every reply (issue 13): addresses sharing protocol, port and family are merged into
    the fewest CIDR blocks (IPv4) or prefixes (IPv6) that hold them and nothing else.
    """
    groups: dict[tuple[str, int], set[IPAddress]] = {}
    for proto, addr, port in sources:
        groups.setdefault((proto, port), set()).add(addr)
    return frozenset(
        Steer(proto, net.network_address, port, net.prefixlen)
        for (proto, port), addrs in groups.items()
        for net in _blocks(addrs))


def _blocks(addrs: Iterable[IPAddress]) -> Iterator[IPv4Network | IPv6Network]:
    """The fewest networks holding exactly ``addrs``, each family on its own."""
    v4 = [IPv4Network(a) for a in addrs if isinstance(a, IPv4Address)]
    v6 = [IPv6Network(a) for a in addrs if isinstance(a, IPv6Address)]
    yield from collapse_addresses(v4)
    yield from collapse_addresses(v6)


@dataclass
class _State:
    """What this host had before pylvs touched it, and what pylvs added (saved as JSON)."""

    sysctls: dict[str, str] = field(default_factory=dict)  # path -> value before pylvs
    proxies: list[str] = field(default_factory=list)  # VIPs with a proxy entry pylvs added
    # the gateway addresses pylvs added (not ones that were already there)
    nat_routers: list[str] = field(default_factory=list)
    ipv6: bool = False  # IPv6 switched on (sysctls, the table's IPv6 routes)
    fwmark_tables: list[int] = field(default_factory=list)  # tables of the fwmark devices


class NetConf:
    """Applies and removes pylvs's network configuration for one TUN device.

    ``NetConf(public, private, tun)`` does nothing until :meth:`setup`.  The methods are
    idempotent: applying the same plan twice changes nothing, and every add tolerates an
    object that is already there.  :meth:`add_vips` and friends are the takeover/release
    steps the HA layer calls.
    """

    def __init__(self, public_interface: str, private_interface: str, tun_name: str, *,
                 table: int = 201, rule_priority: int = 1000, txqueuelen: int = 10000,
                 state_dir: Path | None = None, guardian: bool = True,
                 fwmark_table_base: int = 0x10000) -> None:
        self.public = public_interface
        self.private = private_interface
        self.tun = tun_name
        self.table = table
        self.rule_priority = rule_priority
        # fwmark rules go first (rule_priority - 1) so a marked packet to a VIP takes its
        # mark's TUN even when the VIP also has an address service; table base + n per mark
        self.fwmark_priority = rule_priority - 1
        self.fwmark_table_base = fwmark_table_base
        self.txqueuelen = txqueuelen
        self._state_path = (state_dir or _STATE_DIR) / f"netconf-{_netns_id()}-{tun_name}.json"
        self._state = _State()
        self._plan = NetPlan()
        self._want_guardian = guardian
        self._guardian: Guardian | None = None
        # Calls come from worker threads (director reloads, HA takeovers): an RLock so that a
        # read-modify-apply (_update) is atomic against other applies.
        self._lock = threading.RLock()

    # -- lifecycle -------------------------------------------------------------------------
    def setup(self) -> None:
        """Undo a crashed run's leftovers, then set sysctls, the TUN link and the table.

        Also starts the guardian that removes this node's claims if the process dies.
        """
        with self._lock:
            if not wait_for_previous(self._state_path):
                log.warning("netconf: the guardian of a previous run is still cleaning up")
            self._recover()
            if Path(f"/proc/sys/net/ipv6/conf/{self.tun}").is_dir() and not self._state.ipv6:
                # Off until a plan holds IPv6 (_enable_ipv6); without this the TUN's own
                # router solicitations and MLD reports (sent when it goes up) would be read
                # and passed back by the pump.
                self._sysctl(f"net/ipv6/conf/{self.tun}/disable_ipv6", "1")
            with self._ipr() as ipr:
                tun = self._index(ipr, self.tun)
                self._index(ipr, self.public)
                self._index(ipr, self.private)
                self._tun_up(ipr, tun)
                self._table_routes(ipr, tun, socket.AF_INET)
            self._sysctl("net/ipv4/ip_forward", "1")
            self._tun_sysctls(self.tun)
            self._sysctl(f"net/ipv4/neigh/{self.public}/proxy_delay", "0")
            self._save()
            if self._want_guardian and self._guardian is None:
                try:
                    self._guardian = Guardian.start(self._state_path, self.public, self.private)
                except OSError as exc:
                    log.warning("netconf: cannot start the guardian (a crash would leave the "
                                "nat_router and proxy ARP/NDP in place): %s", exc)

    def _tun_up(self, ipr: Any, index: int) -> None:
        ipr.link("set", index=index, state="up", txqlen=self.txqueuelen)
        # No qdisc in front of the TUN (as on veth): the TUN's own ring of txqlen
        # packets is the queue, and pfifo_fast only adds a lock and a requeue path.
        ipr.tc("replace", kind="noqueue", index=index, handle="0:")

    def _tun_sysctls(self, name: str) -> None:
        # The kernel applies max(all, <dev>): 2 (loose) is enough whatever "all" says, and
        # 0 when "all" is 0 saves a reverse-path FIB lookup per rewritten packet.
        loose = Path("/proc/sys/net/ipv4/conf/all/rp_filter").read_text().strip() != "0"
        self._sysctl(f"net/ipv4/conf/{name}/rp_filter", "2" if loose else "0")
        self._sysctl(f"net/ipv4/conf/{name}/send_redirects", "0")
        if not loose:
            # rp_filter 0 alone still costs a FIB lookup per packet written back: the policy
            # rules pylvs adds make fib_validate_source check the source against the whole
            # rule list.  With accept_local the kernel skips that check (docs/performance.md,
            # "The TUN path's kernel cost").  What it lets through that was refused: a packet
            # whose source is one of this host's addresses, i.e. a local process connecting
            # to a VIP; its SYN now reaches the real server (whose reply is delivered locally
            # and reset) instead of dying at the TUN: such a client works in neither case.
            self._sysctl(f"net/ipv4/conf/{name}/accept_local", "1")

    def apply(self, plan: NetPlan) -> None:
        """Converge VIPs, reply steering, fwmark routes and the nat_router addresses to ``plan``."""
        with self._lock:
            old = self._plan
            with self._ipr() as ipr:
                if plan.has_ipv6 and not self._state.ipv6:
                    self._enable_ipv6(ipr)
                self._set_vips(ipr, plan.vips)
                self._set_steering(ipr, plan.steering)
                self._set_fwmarks(ipr, plan, set_up=plan.fwmarks - old.fwmarks)
                self._set_nat_routers(ipr, plan.nat_routers)
            self._plan = plan
            self._save()

    def remove(self) -> None:
        """Remove everything pylvs added and restore the sysctls; never raises."""
        with self._lock:
            try:
                with self._ipr() as ipr:
                    self._undo(ipr)
            except (NetConfigError, NetlinkError, OSError) as exc:
                log.error("netconf: removing configuration failed: %s", exc)
            self._plan = NetPlan()
            guardian, self._guardian = self._guardian, None
            if guardian is not None:
                guardian.stand_down()

    # -- HA takeover / release -------------------------------------------------------------
    def add_vips(self, vips: Iterable[IPAddress]) -> None:
        """Route ``vips`` into the TUN and answer ARP/NS for them (keeps the ones already up)."""
        with self._lock:
            self._update(vips=self._plan.vips | frozenset(vips))

    def remove_vips(self, vips: Iterable[IPAddress]) -> None:
        """Stop routing and answering ARP/NS for ``vips``."""
        with self._lock:
            self._update(vips=self._plan.vips - frozenset(vips))

    def add_nat_router(self, address: IPInterface) -> None:
        """Put a real servers' gateway address on the private interface."""
        with self._lock:
            self._update(nat_routers=self._plan.nat_routers | {address})

    def remove_nat_router(self) -> None:
        """Take the gateway addresses off the private interface (those pylvs added)."""
        self._update(nat_routers=frozenset())

    def set_steering(self, steering: Iterable[Steer]) -> None:
        """Replace the reply-steering rules (a backup keeps them, so takeover is instant)."""
        self._update(steering=frozenset(steering))

    def update(self, change: Callable[[NetPlan], NetPlan]) -> None:
        """Apply ``change(current plan)`` atomically against every other apply."""
        with self._lock:
            self.apply(change(self._plan))

    @property
    def plan(self) -> NetPlan:
        """The plan last applied."""
        return self._plan

    def _update(self, **changes: Any) -> None:
        with self._lock:
            plan = self._plan
            self.apply(NetPlan(vips=changes.get("vips", plan.vips),
                               steering=changes.get("steering", plan.steering),
                               nat_routers=changes.get("nat_routers", plan.nat_routers),
                               fwmarks=changes.get("fwmarks", plan.fwmarks),
                               fwmarks6=changes.get("fwmarks6", plan.fwmarks6)))

    # -- pieces ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _ipr(self) -> Iterator[Any]:
        try:
            with IPRoute() as ipr:
                yield ipr
        except NetlinkError as exc:
            raise NetConfigError(f"netlink: {os.strerror(exc.code)} ({exc})") from exc

    @staticmethod
    def _index(ipr: Any, name: str) -> int:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise NetConfigError(f"interface {name!r} does not exist")
        return int(found[0])

    def _enable_ipv6(self, ipr: Any) -> None:
        """Switch IPv6 on for the TUN and the host, the first time a plan needs it."""
        tun = self._index(ipr, self.tun)
        self._tun_ipv6(self.tun)
        # "all" switches every interface to router behaviour; proxy NDP answers only on an
        # interface that forwards (ndisc_recv_ns checks the device's forwarding).
        self._sysctl("net/ipv6/conf/all/forwarding", "1")
        self._sysctl(f"net/ipv6/conf/{self.public}/proxy_ndp", "1")
        self._sysctl(f"net/ipv6/neigh/{self.public}/proxy_delay", "0")
        self._table_routes(ipr, tun, socket.AF_INET6)
        self._state.ipv6 = True

    def _table_routes(self, ipr: Any, tun: int, family: int) -> None:
        """``default dev <tun>`` in the steering table, and the blackhole behind it."""
        ipr.route("replace", dst=_DEFAULT[family], oif=tun, table=self.table,
                  proto=RTPROT_PYLVS, family=family)
        # If this process dies, the TUN and its route vanish; steered replies must then be
        # dropped, not forwarded un-NATed (the client would answer with RSTs that kill the
        # connections the HA backup is about to take over).
        ipr.route("replace", dst=_DEFAULT[family], type="blackhole", table=self.table,
                  priority=0xFFFFFFFF, proto=RTPROT_PYLVS, family=family)

    def _tun_ipv6(self, name: str) -> None:
        """IPv6 on for a TUN device, quietly."""
        # No link-local address on the TUN: without one the kernel sends no router
        # solicitations, DAD probes or solicited-node MLD reports into the dataplane.
        self._sysctl(f"net/ipv6/conf/{name}/addr_gen_mode", "1")
        self._sysctl(f"net/ipv6/conf/{name}/accept_ra", "0")
        self._sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")

    def _host_routes(self, ipr: Any, table: int) -> list[Any]:
        return [r for family in _FAMILIES
                for r in ipr.route("dump", table=table, proto=RTPROT_PYLVS, family=family)]

    def _set_vips(self, ipr: Any, vips: frozenset[IPAddress]) -> None:
        tun = self._index(ipr, self.tun)
        public = self._index(ipr, self.public)
        routes = [r for r in self._host_routes(ipr, 254)
                  if r["dst_len"] == (32 if r["family"] == socket.AF_INET else 128)]
        current = {parse_address(r.get("dst")) for r in routes if r.get("oif") == tun}
        fallbacks = {parse_address(r.get("dst")) for r in routes if r["type"] == RTN_BLACKHOLE}
        for vip in _sorted(current - vips):
            _ignore(ipr.route, errno.ESRCH, "del", dst=_host(vip), oif=tun, proto=RTPROT_PYLVS,
                    family=_family(vip))
        for vip in _sorted(fallbacks - vips):
            _ignore(ipr.route, errno.ESRCH, "del", dst=_host(vip), type="blackhole",
                    proto=RTPROT_PYLVS, family=_family(vip))
        for vip in _sorted(set(map(parse_address, self._state.proxies)) - vips):
            _ignore(ipr.neigh, errno.ENOENT, "del", dst=str(vip), ifindex=public,
                    flags=NTF_PROXY, family=_family(vip))
        for vip in _sorted(vips):
            ipr.route("replace", dst=_host(vip), oif=tun, proto=RTPROT_PYLVS, family=_family(vip))
            # If this process dies the TUN route vanishes with the device; this fallback then
            # drops the VIP's packets silently.  Without it the dead node's kernel would route
            # them on (often back out the public side) or answer "host unreachable", failing
            # clients whose SYN arrives before the backup has taken the VIP over; a dropped
            # SYN is simply retransmitted to the new active node.  A blackhole route is not
            # RTN_UNICAST, so the proxy-ARP entry stops answering too.  (Proxy NDP looks at
            # no route: a dead node's entry keeps answering solicitations until the backup's
            # unsolicited advertisements, sent with Override, move the neighbours.)
            ipr.route("replace", dst=_host(vip), type="blackhole", priority=0xFFFFFFFF,
                      proto=RTPROT_PYLVS, family=_family(vip))
            ipr.neigh("replace", dst=str(vip), ifindex=public, flags=NTF_PROXY,
                      family=_family(vip))
        self._state.proxies = [str(v) for v in _sorted(vips)]

    def _rules(self, ipr: Any) -> Iterator[Any]:
        # IPv6 rules too whenever the host has IPv6, not only once this run enabled it: a
        # dual-stack run that crashed left its IPv6 steering (the guardian keeps the rules and
        # deletes the state file), and an IPv4-only run after it must converge them away.
        has_ipv6 = self._state.ipv6 or Path("/proc/sys/net/ipv6").is_dir()
        families = _FAMILIES if has_ipv6 else (socket.AF_INET,)
        for family in families:
            for rule in ipr.rule("dump", family=family):
                if (rule.get("priority") == self.rule_priority
                        and rule.get("table") == self.table):
                    yield rule

    def _set_steering(self, ipr: Any, steering: frozenset[Steer]) -> None:
        have: dict[Steer, Any] = {}
        stale: list[tuple[Steer, Any]] = []
        for rule in self._rules(ipr):
            sport = rule.get("sport_range") or "0:0"
            proto = {v: k for k, v in _IPPROTO.items()}.get(rule.get("ip_proto") or 0, "?")
            any_address = "::" if rule["family"] == socket.AF_INET6 else "0.0.0.0"
            key = Steer(proto, parse_address(rule.get("src") or any_address),
                        int(sport.split(":")[0]), int(rule.get("src_len") or 0))
            if key in steering and rule.get("iifname") == self.private and key not in have:
                have[key] = rule
            else:
                stale.append((key, rule))
        # New rules go in before the stale ones come out: a block that grows (198.19.0.12/32
        # becoming .12/31 when .13 joins) would otherwise leave .12's replies unsteered for a
        # moment, and a connection whose SYN-ACK leaves un-NATed then waits a whole SYN
        # retransmission (1 s) — seen as a client timeout during a reload that adds a server.
        self._add_steering(ipr, sorted(steering - have.keys()))
        for _, rule in stale:
            self._del_rule(ipr, rule)
        # A stale twin of a wanted rule (a duplicate, or one without our iifname) may have been
        # matched by the delete in its place: put those back (EEXIST when still there).
        self._add_steering(ipr, sorted({key for key, _ in stale if key in steering}))

    def _add_steering(self, ipr: Any, steers: list[Steer]) -> None:
        for steer in steers:
            spec: dict[str, Any] = dict(
                table=self.table, priority=self.rule_priority, iifname=self.private,
                src=str(steer.address), src_len=steer.prefixlen,
                ip_proto=_IPPROTO[steer.protocol], family=_family(steer.address))
            if steer.port:
                spec["sport_range"] = f"{steer.port}:{steer.port}"
            _ignore(ipr.rule, errno.EEXIST, "add", **spec)

    def fwmark_table(self, mark: int) -> int:
        """The routing table of mark ``mark``'s TUN device."""
        return self.fwmark_table_base + mark

    def _fwmark_rules(self, ipr: Any) -> Iterator[Any]:
        # IPv6 ones too whenever the host has IPv6 (as _rules: a crashed dual-stack run's)
        has_ipv6 = self._state.ipv6 or Path("/proc/sys/net/ipv6").is_dir()
        for family in _FAMILIES if has_ipv6 else (socket.AF_INET,):
            for rule in ipr.rule("dump", family=family):
                if rule.get("priority") == self.fwmark_priority:
                    yield rule

    def _set_fwmarks(self, ipr: Any, plan: NetPlan, set_up: frozenset[int]) -> None:
        """``fwmark M lookup <table M>``, ``default dev <TUN of M>`` in it, for each mark; for
        a mark of an IPv6 service the same in IPv6 (``::/0``), with IPv6 on for the device."""
        wanted = {(socket.AF_INET, m) for m in plan.fwmarks}
        wanted |= {(socket.AF_INET6, m) for m in plan.fwmarks6 & plan.fwmarks}
        for mark in sorted(plan.fwmarks):
            name = fwmark_device(self.tun, mark)
            index = self._index(ipr, name)
            if mark in plan.fwmarks6:
                self._tun_ipv6(name)
            elif Path(f"/proc/sys/net/ipv6/conf/{name}").is_dir():
                self._sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
            if mark in set_up:
                self._tun_up(ipr, index)
                self._tun_sysctls(name)
            for family in _FAMILIES:
                table = self.fwmark_table(mark)
                if (family, mark) in wanted:
                    ipr.route("replace", dst=_DEFAULT[family], oif=index, table=table,
                              proto=RTPROT_PYLVS, family=family)
                else:
                    _ignore(ipr.route, errno.ESRCH, "del", dst=_DEFAULT[family], table=table,
                            proto=RTPROT_PYLVS, family=family)
        have = set()
        for rule in list(self._fwmark_rules(ipr)):
            key = (rule["family"], rule.get("fwmark"))
            if key in wanted and rule.get("table") == self.fwmark_table(key[1]) \
                    and key not in have:
                have.add(key)
            else:
                _ignore(ipr.rule, errno.ENOENT, "del", priority=self.fwmark_priority,
                        fwmark=rule.get("fwmark"), table=rule.get("table"),
                        family=rule["family"])
        for family, mark in sorted(wanted - have):
            _ignore(ipr.rule, errno.EEXIST, "add", priority=self.fwmark_priority,
                    fwmark=mark, fwmask=0xFFFFFFFF, table=self.fwmark_table(mark),
                    family=family)
        self._state.fwmark_tables = sorted(self.fwmark_table(m) for m in plan.fwmarks)

    def _del_rule(self, ipr: Any, rule: Any) -> None:
        spec: dict[str, Any] = dict(table=self.table, priority=self.rule_priority,
                                    family=rule["family"])
        for key in ("iifname", "src", "ip_proto", "sport_range"):
            if rule.get(key) is not None:
                spec[key] = rule.get(key)
        if "src" in spec:
            spec["src_len"] = rule["src_len"]
        _ignore(ipr.rule, errno.ENOENT, "del", **spec)

    def _set_nat_routers(self, ipr: Any, wanted: frozenset[IPInterface]) -> None:
        for text in list(self._state.nat_routers):
            if ip_interface(text) not in wanted:
                self._del_nat_router(ipr, ip_interface(text))
        for address in sorted(wanted, key=lambda a: (a.version, str(a))):
            self._add_nat_router(ipr, address)

    def _add_nat_router(self, ipr: Any, address: IPInterface) -> None:
        private = self._index(ipr, self.private)
        present = any(
            a.get("address") == str(address.ip) and a["prefixlen"] == address.network.prefixlen
            for a in ipr.addr("dump", index=private, family=_family(address.ip))
        )
        if present:
            return  # ours from before, or the host's own: either way nothing to add
        extra: dict[str, Any] = {}
        if address.version == 6:
            # A gateway that floats with HA must answer at once: without NODAD the address
            # stays tentative for a second of duplicate address detection after a takeover
            # (keepalived adds its IPv6 VIPs the same way).
            extra["flags"] = IFA_F_NODAD
        ipr.addr("add", index=private, address=str(address.ip),
                 prefixlen=address.network.prefixlen, family=_family(address.ip), **extra)
        if str(address) not in self._state.nat_routers:
            self._state.nat_routers.append(str(address))

    def _del_nat_router(self, ipr: Any, address: IPInterface) -> None:
        if str(address) not in self._state.nat_routers:
            return  # it was there before pylvs; not ours to remove
        private = self._index(ipr, self.private)
        _ignore(ipr.addr, errno.EADDRNOTAVAIL, "del", index=private, address=str(address.ip),
                prefixlen=address.network.prefixlen, family=_family(address.ip))
        self._state.nat_routers.remove(str(address))

    def _undo(self, ipr: Any) -> None:
        """Remove what the state and the tags say pylvs added; restore sysctls."""
        self._del_claims(ipr)
        for rule in list(self._fwmark_rules(ipr)):
            _ignore(ipr.rule, errno.ENOENT, "del", priority=self.fwmark_priority,
                    fwmark=rule.get("fwmark"), table=rule.get("table"), family=rule["family"])
        for table in (254, self.table, *self._state.fwmark_tables):
            for route in self._host_routes(ipr, table):
                family = route["family"]
                dst = route.get("dst") or _DEFAULT[family].split("/")[0]
                _ignore(ipr.route, errno.ESRCH, "del", dst=f"{dst}/{route['dst_len']}",
                        table=table, oif=route.get("oif"), type=route["type"],
                        proto=RTPROT_PYLVS, family=family)
        self._state.fwmark_tables = []
        for rule in list(self._rules(ipr)):
            self._del_rule(ipr, rule)
        self._state.ipv6 = False
        self._forget()

    def _forget(self) -> None:
        """Restore the sysctls pylvs changed and delete the state file."""
        for path, value in reversed(self._state.sysctls.items()):
            with contextlib.suppress(OSError):  # the TUN's conf vanishes with the device
                Path("/proc/sys", path).write_text(value + "\n")
        self._state.sysctls = {}
        with contextlib.suppress(FileNotFoundError):
            self._state_path.unlink()

    def _del_claims(self, ipr: Any) -> list[str]:
        """Remove the proxy ARP/NDP entries and the nat_routers pylvs added; what was removed."""
        done: list[str] = []
        public = ipr.link_lookup(ifname=self.public)
        for vip in self._state.proxies:
            if public:
                address = parse_address(vip)
                _ignore(ipr.neigh, errno.ENOENT, "del", dst=vip, ifindex=public[0],
                        flags=NTF_PROXY, family=_family(address))
                done.append(f"proxy {'NDP' if address.version == 6 else 'ARP'} {vip}")
        self._state.proxies = []
        for text in list(self._state.nat_routers):
            done.append(f"nat_router {text}")
            self._del_nat_router(ipr, ip_interface(text))
        return done

    def _recover(self) -> None:
        if not self._load():
            return
        log.warning("netconf: a previous run did not clean up; removing its configuration")
        with self._ipr() as ipr:
            self._undo(ipr)

    def _load(self) -> bool:
        """Read the saved state into ``self._state``; False if there is none (or unreadable)."""
        try:
            saved = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            log.warning("netconf: ignoring unreadable state %s: %s", self._state_path, exc)
            return False
        legacy = saved.get("nat_router")  # the single-gateway state file of earlier versions
        self._state = _State(sysctls=dict(saved.get("sysctls", {})),
                             proxies=list(saved.get("proxies", [])),
                             nat_routers=list(saved.get("nat_routers", [legacy] if legacy else [])),
                             ipv6=bool(saved.get("ipv6", False)),
                             fwmark_tables=list(saved.get("fwmark_tables", [])))
        return True

    def _sysctl(self, path: str, value: str) -> None:
        file = Path("/proc/sys", path)
        try:
            old = file.read_text().strip()
            if old != value:
                file.write_text(value + "\n")
        except OSError as exc:
            raise NetConfigError(f"sysctl {path.replace('/', '.')}: {exc.strerror}") from exc
        self._state.sysctls.setdefault(path, old)

    def _save(self) -> None:
        state = {"sysctls": self._state.sysctls, "proxies": self._state.proxies,
                 "nat_routers": self._state.nat_routers, "ipv6": self._state.ipv6,
                 "fwmark_tables": self._state.fwmark_tables}
        try:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self._state_path)
        except OSError as exc:
            log.warning("netconf: cannot save state to %s: %s", self._state_path, exc)


def release_claims(state_path: Path, public: str, private: str,
                   ipr: Any | None = None) -> list[str]:
    """After the director died: remove the nat_router addresses and proxy ARP/NDP it added.

    Run by :mod:`pylvs.guardian`.  Reads the state file the director kept current and removes
    what would answer ARP or neighbour solicitations for this node; then puts the sysctls back
    and deletes the state file (nothing is left in the state directory, even if the namespace
    goes away next).  The blackhole routes and steering rules stay: they only drop traffic
    meant for the dead director, and the next run finds them by their tags and converges them.
    Returns what it removed, for the log.  *ipr*: an open ``IPRoute`` (the guardian opens one
    in advance: the first open costs milliseconds).
    """
    conf = NetConf(public, private, "", guardian=False)
    conf._state_path = state_path
    if not conf._load():
        return []
    if ipr is not None:
        done = conf._del_claims(ipr)
    else:
        with conf._ipr() as fresh:
            done = conf._del_claims(fresh)
    conf._forget()
    return done


def _netns_id() -> str:
    """An identifier of this network namespace that is never reused while the host is up.

    /run is shared by every namespace, so the state file must say whose it is.  The namespace
    inode is reused after a namespace is deleted (a stale file would then "recover" a fresh
    namespace and remove addresses that are not ours); the netns cookie never is.
    """
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return "c" + str(int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8),
                                        sys.byteorder))
    return "i" + str(os.stat("/proc/self/ns/net").st_ino)  # kernels before 5.14


def _ignore(method: Any, code: int, *args: Any, **kwargs: Any) -> None:
    """Call a pyroute2 verb, treating ``code`` (already there / already gone) as success."""
    try:
        method(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code != code:
            raise


def _family(address: IPAddress) -> int:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _host(address: IPAddress) -> str:
    return f"{address}/{address.max_prefixlen}"


def _sorted(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    return sorted(addresses, key=lambda a: (a.version, int(a)))


def send_announcements(interface: str, addresses: Iterable[IPAddress], count: int = 1) -> int:
    """Announce ``addresses`` on ``interface`` ``count`` times each; return frames sent.

    IPv4 addresses get a gratuitous ARP, IPv6 ones an unsolicited neighbour advertisement
    (:mod:`pylvs.neighbours`), so neighbours learn at once that they now live behind this
    host's MAC, which is what a takeover or a fresh start needs.
    """
    addrs = _sorted(addresses)
    if not addrs or count <= 0:
        return 0
    mac = bytes.fromhex(Path(f"/sys/class/net/{interface}/address").read_text().strip()
                        .replace(":", ""))
    frames = announce_frames(mac, addrs)
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        sock.bind((interface, 0))
        for _ in range(count):
            for frame in frames:
                sock.send(frame)
                sent += 1
    return sent
