"""Network configuration of the director host, through pyroute2: idempotent apply and remove.

What the TUN packet path needs (docs/design.md#the-packet-path):

* the TUN device up, with a long transmit queue (the kernel -> pylvs queue; 500 drops bursts)
  and no qdisc in front of it;
* ``VIP/32 dev <tun>`` routes, so client packets for a VIP reach the dataplane (the VIP is *not*
  a local address);
* a proxy-neighbour entry per VIP on the public interface, so the director answers ARP for it,
  with ``proxy_delay`` 0 (the kernel otherwise delays proxy ARP replies by up to 0.8 s);
* reply steering: ``iif <private> from <RIP> ipproto <proto> sport <rport> lookup <table>`` and
  ``default dev <tun>`` in that table, so real servers' replies go through pylvs, not around it;
* sysctls: ``ip_forward = 1``; ``rp_filter`` 2 or 0 on the TUN (rewritten client packets come *in*
  on the TUN with the client's source, which strict mode would drop as a martian);
* the ``nat_router`` address (the real servers' gateway) on the private interface.

Every object pylvs adds is tagged (routes with protocol :data:`RTPROT_PYLVS`, rules with their own
priority and table) or written down in a small state file, so :meth:`NetConf.remove` undoes
exactly what was added and a restart after a crash first removes the leftovers and then applies
afresh.  The TUN device itself is created by the dataplane when it opens ``/dev/net/tun`` (it
is not persistent, so it vanishes with the process, and its routes with it).

If the process dies without :meth:`NetConf.remove` (``kill -9``), the guardian process that
:meth:`NetConf.setup` starts (:mod:`pylvs.guardian`) removes at once what answers for this
node on the network: the ``nat_router`` address and the proxy-ARP entries
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
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    collapse_addresses,
    ip_address,
)
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pylvs.errors import NetConfigError
from pylvs.guardian import Guardian, wait_for_previous
from pylvs.model import Config

__all__ = [
    "RTPROT_PYLVS",
    "NetConf",
    "NetPlan",
    "Steer",
    "aggregate_steering",
    "plan_from_config",
    "release_claims",
    "send_gratuitous_arp",
]

log = logging.getLogger(__name__)

RTN_BLACKHOLE = 6  # rtnetlink route type
RTPROT_PYLVS = 201  # route protocol number marking routes pylvs owns (ip route ... proto 201)
NTF_PROXY = 0x08
SO_NETNS_COOKIE = 71  # asm-generic/socket.h; not exported by Python 3.11's socket module
_IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_STATE_DIR = Path(os.environ.get("PYLVS_STATE_DIR", "/run/pylvs"))


@dataclass(frozen=True, slots=True)
class Steer:
    """One reply-steering rule: packets from ``address/prefixlen`` port ``port`` over
    ``protocol`` go to the TUN."""

    protocol: str
    address: IPv4Address | IPv6Address
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

    vips: frozenset[IPv4Address] = frozenset()
    steering: frozenset[Steer] = frozenset()
    nat_router: IPv4Interface | None = None


def plan_from_config(cfg: Config, *, active: bool = True) -> NetPlan:
    """The plan for ``cfg``; a backup (``active=False``) owns neither VIPs nor the nat_router."""
    sources: set[tuple[str, IPv4Address | IPv6Address, int]] = set()
    for vs in cfg.virtual_servers:
        endpoints = [rs.address for rs in vs.real_servers]
        if vs.sorry_server is not None:
            endpoints.append(vs.sorry_server)
        sources.update((vs.protocol, ep.address, ep.port) for ep in endpoints)
    steering = aggregate_steering(sources)
    nat = cfg.director.nat_router
    return NetPlan(
        vips=frozenset(vs.address.address for vs in cfg.virtual_servers) if active else frozenset(),
        steering=frozenset(steering),
        nat_router=IPv4Interface(nat) if (nat is not None and active) else None,
    )


def aggregate_steering(
        sources: Iterable[tuple[str, IPv4Address | IPv6Address, int]]) -> frozenset[Steer]:
    """Steering rules for exactly these ``(protocol, address, port)`` sources, as few as can be.

    The kernel keeps policy rules in a list (each insertion and each packet from the private
    side walks it), so 10,000 real servers as 10,000 rules would take seconds to install and
    slow every reply (issue 13): addresses sharing protocol, port and family are merged into
    the fewest CIDR blocks (IPv4) or prefixes (IPv6) that hold them and nothing else.
    """
    groups: dict[tuple[str, int], set[IPv4Address | IPv6Address]] = {}
    for proto, addr, port in sources:
        groups.setdefault((proto, port), set()).add(addr)
    return frozenset(
        Steer(proto, net.network_address, port, net.prefixlen)
        for (proto, port), addrs in groups.items()
        for net in _blocks(addrs))


def _blocks(addrs: Iterable[IPv4Address | IPv6Address]) -> Iterator[IPv4Network | IPv6Network]:
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
    nat_router: str | None = None  # the address pylvs added (not one that was already there)


class NetConf:
    """Applies and removes pylvs's network configuration for one TUN device.

    ``NetConf(public, private, tun)`` does nothing until :meth:`setup`.  The methods are
    idempotent: applying the same plan twice changes nothing, and every add tolerates an
    object that is already there.  :meth:`add_vips` and friends are the takeover/release
    steps the HA layer calls.
    """

    def __init__(self, public_interface: str, private_interface: str, tun_name: str, *,
                 table: int = 201, rule_priority: int = 1000, txqueuelen: int = 10000,
                 state_dir: Path | None = None, guardian: bool = True) -> None:
        self.public = public_interface
        self.private = private_interface
        self.tun = tun_name
        self.table = table
        self.rule_priority = rule_priority
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
            if Path(f"/proc/sys/net/ipv6/conf/{self.tun}").is_dir():
                # pylvs is IPv4; without this the TUN's own router solicitations and MLD
                # reports (sent when it goes up) would be read and passed back by the pump.
                self._sysctl(f"net/ipv6/conf/{self.tun}/disable_ipv6", "1")
            with self._ipr() as ipr:
                tun = self._index(ipr, self.tun)
                self._index(ipr, self.public)
                self._index(ipr, self.private)
                ipr.link("set", index=tun, state="up", txqlen=self.txqueuelen)
                # No qdisc in front of the TUN (as on veth): the TUN's own ring of txqlen
                # packets is the queue, and pfifo_fast only adds a lock and a requeue path.
                ipr.tc("replace", kind="noqueue", index=tun, handle="0:")
                ipr.route("replace", dst="0.0.0.0/0", oif=tun, table=self.table,
                          proto=RTPROT_PYLVS)
                # If this process dies, the TUN and its route vanish; steered replies must
                # then be dropped, not forwarded un-NATed (the client would answer with RSTs
                # that kill the connections the HA backup is about to take over).
                ipr.route("replace", dst="0.0.0.0/0", type="blackhole", table=self.table,
                          priority=0xFFFFFFFF, proto=RTPROT_PYLVS)
            self._sysctl("net/ipv4/ip_forward", "1")
            # The kernel applies max(all, <dev>): 2 (loose) is enough whatever "all" says, and
            # 0 when "all" is 0 saves a reverse-path FIB lookup per rewritten packet.
            loose = Path("/proc/sys/net/ipv4/conf/all/rp_filter").read_text().strip() != "0"
            self._sysctl(f"net/ipv4/conf/{self.tun}/rp_filter", "2" if loose else "0")
            self._sysctl(f"net/ipv4/conf/{self.tun}/send_redirects", "0")
            self._sysctl(f"net/ipv4/neigh/{self.public}/proxy_delay", "0")
            self._save()
            if self._want_guardian and self._guardian is None:
                try:
                    self._guardian = Guardian.start(self._state_path, self.public, self.private)
                except OSError as exc:
                    log.warning("netconf: cannot start the guardian (a crash would leave the "
                                "nat_router and proxy ARP in place): %s", exc)

    def apply(self, plan: NetPlan) -> None:
        """Converge VIPs, reply steering and the nat_router to ``plan``."""
        with self._lock:
            old = self._plan
            with self._ipr() as ipr:
                self._set_vips(ipr, plan.vips)
                self._set_steering(ipr, plan.steering)
                if plan.nat_router != old.nat_router and old.nat_router is not None:
                    self._del_nat_router(ipr, old.nat_router)
                if plan.nat_router is not None:
                    self._add_nat_router(ipr, plan.nat_router)
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
    def add_vips(self, vips: Iterable[IPv4Address]) -> None:
        """Route ``vips`` into the TUN and answer ARP for them (keeps the ones already up)."""
        with self._lock:
            self._update(vips=self._plan.vips | frozenset(vips))

    def remove_vips(self, vips: Iterable[IPv4Address]) -> None:
        """Stop routing and answering ARP for ``vips``."""
        with self._lock:
            self._update(vips=self._plan.vips - frozenset(vips))

    def add_nat_router(self, address: IPv4Interface) -> None:
        """Put the real servers' gateway address on the private interface."""
        self._update(nat_router=address)

    def remove_nat_router(self) -> None:
        """Take the gateway address off the private interface (if pylvs added it)."""
        self._update(nat_router=None)

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
                               nat_router=changes.get("nat_router", plan.nat_router)))

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

    def _set_vips(self, ipr: Any, vips: frozenset[IPv4Address]) -> None:
        tun = self._index(ipr, self.tun)
        public = self._index(ipr, self.public)
        routes = [r for r in ipr.route("dump", table=254, proto=RTPROT_PYLVS)
                  if r["dst_len"] == 32]
        current = {IPv4Address(r.get("dst")) for r in routes if r.get("oif") == tun}
        fallbacks = {IPv4Address(r.get("dst")) for r in routes if r["type"] == RTN_BLACKHOLE}
        for vip in sorted(current - vips):
            _ignore(ipr.route, errno.ESRCH, "del", dst=f"{vip}/32", oif=tun, proto=RTPROT_PYLVS)
        for vip in sorted(fallbacks - vips):
            _ignore(ipr.route, errno.ESRCH, "del", dst=f"{vip}/32", type="blackhole",
                    proto=RTPROT_PYLVS)
        for vip in sorted(set(map(IPv4Address, self._state.proxies)) - vips):
            _ignore(ipr.neigh, errno.ENOENT, "del", dst=str(vip), ifindex=public, flags=NTF_PROXY)
        for vip in sorted(vips):
            ipr.route("replace", dst=f"{vip}/32", oif=tun, proto=RTPROT_PYLVS)
            # If this process dies the TUN route vanishes with the device; this fallback then
            # drops the VIP's packets silently.  Without it the dead node's kernel would route
            # them on (often back out the public side) or answer "host unreachable", failing
            # clients whose SYN arrives before the backup has taken the VIP over; a dropped
            # SYN is simply retransmitted to the new active node.  A blackhole route is not
            # RTN_UNICAST, so the proxy-ARP entry stops answering too.
            ipr.route("replace", dst=f"{vip}/32", type="blackhole", priority=0xFFFFFFFF,
                      proto=RTPROT_PYLVS)
            ipr.neigh("replace", dst=str(vip), ifindex=public, flags=NTF_PROXY)
        self._state.proxies = sorted(map(str, vips))

    def _rules(self, ipr: Any) -> Iterator[Any]:
        for rule in ipr.rule("dump"):
            if (rule["family"] == socket.AF_INET and rule.get("priority") == self.rule_priority
                    and rule.get("table") == self.table):
                yield rule

    def _set_steering(self, ipr: Any, steering: frozenset[Steer]) -> None:
        have: dict[Steer, Any] = {}
        for rule in self._rules(ipr):
            sport = rule.get("sport_range") or "0:0"
            proto = {v: k for k, v in _IPPROTO.items()}.get(rule.get("ip_proto") or 0, "?")
            any_src = "::" if rule["family"] == socket.AF_INET6 else "0.0.0.0"
            key = Steer(proto, ip_address(rule.get("src") or any_src),
                        int(sport.split(":")[0]), int(rule.get("src_len") or 0))
            if key in steering and rule.get("iifname") == self.private and key not in have:
                have[key] = rule
            else:
                self._del_rule(ipr, rule)
        for steer in sorted(steering - have.keys()):
            spec: dict[str, Any] = dict(
                table=self.table, priority=self.rule_priority, iifname=self.private,
                src=str(steer.address), src_len=steer.prefixlen,
                ip_proto=_IPPROTO[steer.protocol])
            if steer.port:
                spec["sport_range"] = f"{steer.port}:{steer.port}"
            _ignore(ipr.rule, errno.EEXIST, "add", **spec)

    def _del_rule(self, ipr: Any, rule: Any) -> None:
        spec: dict[str, Any] = dict(table=self.table, priority=self.rule_priority)
        for key in ("iifname", "src", "ip_proto", "sport_range"):
            if rule.get(key) is not None:
                spec[key] = rule.get(key)
        if "src" in spec:
            spec["src_len"] = rule["src_len"]
        _ignore(ipr.rule, errno.ENOENT, "del", **spec)

    def _add_nat_router(self, ipr: Any, address: IPv4Interface) -> None:
        private = self._index(ipr, self.private)
        present = any(
            a.get("address") == str(address.ip) and a["prefixlen"] == address.network.prefixlen
            for a in ipr.addr("dump", index=private)
        )
        if present:
            return  # ours from before, or the host's own: either way nothing to add
        ipr.addr("add", index=private, address=str(address.ip),
                 prefixlen=address.network.prefixlen)
        self._state.nat_router = str(address)

    def _del_nat_router(self, ipr: Any, address: IPv4Interface) -> None:
        if self._state.nat_router != str(address):
            return  # it was there before pylvs; not ours to remove
        private = self._index(ipr, self.private)
        _ignore(ipr.addr, errno.EADDRNOTAVAIL, "del", index=private, address=str(address.ip),
                prefixlen=address.network.prefixlen)
        self._state.nat_router = None

    def _undo(self, ipr: Any) -> None:
        """Remove what the state and the tags say pylvs added; restore sysctls."""
        self._del_claims(ipr)
        for table in (254, self.table):
            for route in ipr.route("dump", table=table, proto=RTPROT_PYLVS):
                _ignore(ipr.route, errno.ESRCH, "del", dst=f"{route.get('dst') or '0.0.0.0'}/"
                        f"{route['dst_len']}", table=table, oif=route.get("oif"),
                        type=route["type"], proto=RTPROT_PYLVS)
        for rule in list(self._rules(ipr)):
            self._del_rule(ipr, rule)
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
        """Remove the proxy-ARP entries and the nat_router pylvs added; what was removed."""
        done: list[str] = []
        public = ipr.link_lookup(ifname=self.public)
        for vip in self._state.proxies:
            if public:
                _ignore(ipr.neigh, errno.ENOENT, "del", dst=vip, ifindex=public[0],
                        flags=NTF_PROXY)
                done.append(f"proxy ARP {vip}")
        self._state.proxies = []
        if self._state.nat_router is not None:
            done.append(f"nat_router {self._state.nat_router}")
            self._del_nat_router(ipr, IPv4Interface(self._state.nat_router))
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
        self._state = _State(sysctls=dict(saved.get("sysctls", {})),
                             proxies=list(saved.get("proxies", [])),
                             nat_router=saved.get("nat_router"))
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
                 "nat_router": self._state.nat_router}
        try:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self._state_path)
        except OSError as exc:
            log.warning("netconf: cannot save state to %s: %s", self._state_path, exc)


def release_claims(state_path: Path, public: str, private: str,
                   ipr: Any | None = None) -> list[str]:
    """After the director died: remove the nat_router address and proxy-ARP entries it added.

    Run by :mod:`pylvs.guardian`.  Reads the state file the director kept current and removes
    what would answer ARP for this node; then puts the sysctls back and deletes the state file
    (nothing is left in the state directory, even if the namespace goes away next).  The
    blackhole routes and steering rules stay: they only drop traffic meant for the dead
    director, and the next run finds them by their tags and converges them.  Returns what it
    removed, for the log.  *ipr*: an open ``IPRoute`` (the guardian opens one in advance: the
    first open costs milliseconds).
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


def send_gratuitous_arp(interface: str, addresses: Iterable[IPv4Address],
                        count: int = 1) -> int:
    """Broadcast ``count`` gratuitous ARP requests per address on ``interface``; return sent.

    Neighbours (and switches) learn at once that the VIPs now live behind this host's MAC,
    which is what a takeover needs.
    """
    addrs = list(addresses)
    if not addrs or count <= 0:
        return 0
    mac = bytes.fromhex(Path(f"/sys/class/net/{interface}/address").read_text().strip()
                        .replace(":", ""))
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
        sock.bind((interface, 0))
        for _ in range(count):
            for addr in addrs:
                ip = addr.packed
                frame = (b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
                         + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
                         + mac + ip + b"\x00" * 6 + ip)
                sock.send(frame)
                sent += 1
    return sent
