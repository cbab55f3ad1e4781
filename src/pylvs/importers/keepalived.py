"""keepalived.conf -> :class:`pylvs.model.Config`.

Semantics from keepalived.conf(5) (Debian's keepalived 2.2) and docs/failover-health.md
(#keepalived-checkers, #vrrp).  keepalived probes each real server with its own checkers;
pylvs probes every server of a service the same way, so the first real server's first checker
becomes the service's check and any real server whose check differs gets a DROPPED note.
A failure is confirmed after ``retry`` further failed attempts (``fall = retry + 1``) and one
success brings a server back (``rise = 1``).  VRRP instances become ``[ha]``: every VIP moves
together in pylvs, so the instance holding the virtual servers' addresses gives the priority,
interval and preemption.  docs/import.md lists every key and what it becomes.
"""

from __future__ import annotations

import ipaddress
import itertools
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from pylvs.importers import common as c
from pylvs.importers.result import Notes
from pylvs.importers.tokens import ImportSyntaxError, Node
from pylvs.model import (
    CheckConfig,
    Config,
    DirectorConfig,
    Endpoint,
    HaConfig,
    IPAddress,
    IPInterface,
    RealServerConfig,
    TimeoutsConfig,
    VirtualServerConfig,
)

__all__ = ["to_config"]

_GROUP_LIMIT = 1024  # addresses one virtual_server_group range may expand to
_FAMILY = ("pylvs forwards by NAT within one address family (no NAT64): the VIP is "
           "IPv{vip}, this address IPv{other}")

_GLOBAL_NOT_NEEDED = {
    "enable_script_security", "script_user", "vrrp_skip_check_adv_addr",
    "vrrp_strict", "vrrp_garp_interval", "vrrp_gna_interval", "max_auto_priority",
    "dynamic_interfaces", "lvs_flush", "lvs_flush_onstop", "notification_email_from",
    "smtp_server", "smtp_connect_timeout", "smtp_helo_name", "vrrp_version",
    "vrrp_iptables", "vrrp_mcast_group4", "checker_process_name", "vrrp_process_name",
    "process_names", "vrrp_no_swap", "checker_no_swap", "net_namespace",
}
_CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "SMTP_CHECK", "MISC_CHECK", "UDP_CHECK",
             "PING_CHECK", "DNS_CHECK", "FILE_CHECK", "BFD_CHECK")
# Checker options that keepalived inherits virtual_server -> real_server -> checker.
_INHERITED = ("connect_timeout", "retry", "delay_before_retry", "delay_loop", "alpha",
              "warmup", "virtualhost", "inhibit_on_failure")
_DEFAULT_RETRY = {"MISC_CHECK": 0, "DNS_CHECK": 3}


@dataclass
class _Vrrp:
    node: Node
    name: str
    interface: str | None = None
    addresses: list[tuple[IPInterface, str | None, Node]] = field(default_factory=list)


def _words(node: Node) -> str:
    return " ".join(node.args)


def _flag(node: Node) -> bool:
    """A bare keyword, or keyword followed by a <BOOL>."""
    return not node.args or node.args[0].lower() in ("on", "true", "yes", "1")


class _Mapper(c.MapperBase):
    def __init__(self, nodes: list[Node], source: str, opts: c.ImportOptions) -> None:
        super().__init__(nodes, source, opts)
        self.groups: dict[str, Node] = {}
        self.sync: Node | None = None
        self.sync_port: int | None = None
        self.router_id: str | None = None
        self.timeouts = TimeoutsConfig()

    def run(self) -> Config:
        vrrps: list[_Vrrp] = []
        pending: list[Node] = []
        for node in self.nodes:
            kw = node.keyword
            if kw == "global_defs" and node.children is not None:
                self.global_defs(node)
            elif kw == "virtual_server_group" and node.children is not None:
                self.groups[_words(node)] = node
            elif kw == "virtual_server" and node.children is not None:
                pending.append(node)
            elif kw == "vrrp_instance" and node.children is not None:
                vrrps.append(self.vrrp_instance(node))
            elif kw == "vrrp_sync_group":
                self.notes.info("ha", node, "not needed: pylvs moves every address together")
            elif kw in ("vrrp_script", "track_file", "track_process", "linkbeat_use_polling",
                        "static_ipaddress", "static_routes", "static_rules", "bfd_instance",
                        "garp_group", "SSL"):
                self.notes.dropped("", node, "no pylvs equivalent")
            else:
                self.notes.dropped("", node, "unknown keepalived block or keyword, not imported")
        services: list[VirtualServerConfig] = []
        for node in pending:
            for vs in self.virtual_server(node, len(services)):
                services.append(vs)
        vips = {a for vs in services if not (a := vs.address.address).is_unspecified}
        reals = {rs.address.address for vs in services for rs in vs.real_servers}
        routers, private_if = self.nat_routers(vrrps, vips, reals)
        public_if = self.public_interface(vrrps, vips)
        ha = self.ha(vrrps, vips, routers)
        pub, priv = c.interfaces(self.opts, public_if, private_if, self.notes, self.source)
        # nat_router holds the IPv4 gateway, or the IPv6 one of an IPv6-only site.
        first = routers[0] if routers else None
        director = DirectorConfig(public_interface=pub, private_interface=priv,
                                  nat_router=str(first) if first else None,
                                  nat_router6=str(routers[1]) if len(routers) > 1 else None)
        return Config(director=director, timeouts=self.timeouts, ha=ha,
                      virtual_servers=tuple(services), source=self.source)

    # -- global_defs ------------------------------------------------------------------------

    def global_defs(self, block: Node) -> None:
        for n in block.children or []:
            if n.keyword == "lvs_sync_daemon":
                self.sync = n
                args = n.args
                for key, value in itertools.pairwise(args):
                    if key == "port":
                        self.sync_port = c.whole(n, value, 1, 65535)
            elif n.keyword == "lvs_timeouts":
                self.lvs_timeouts(n)
            elif n.keyword == "router_id":
                self.router_id = c.one_arg(n)
            elif n.keyword == "notification_email":
                self.notes.dropped("", n, "pylvs sends no e-mail (its log and ha.notify report "
                                   "state changes)")
            elif n.keyword in _GLOBAL_NOT_NEEDED:
                self.notes.info("", n, "not needed by pylvs")
            else:
                self.notes.dropped("", n, "global setting without a pylvs equivalent")

    def lvs_timeouts(self, n: Node) -> None:
        names = {"tcp": "tcp", "tcpfin": "tcpfin", "udp": "udp"}
        for key, value in zip(n.args[::2], n.args[1::2], strict=False):
            if key in names:
                self.timeouts = replace(self.timeouts,
                                        **{names[key]: c.whole(n, value, 1, 31 * 86400)})

    # -- virtual servers --------------------------------------------------------------------

    def addresses(self, node: Node) -> Iterator[tuple[IPAddress, int, int, Node]]:
        """The (VIP, port, fwmark) of a ``virtual_server`` line (``group`` expanded)."""
        args = node.args
        if args[:1] == ["group"]:
            group = self.groups.get(" ".join(args[1:]))
            if group is None:
                raise ImportSyntaxError(node.where, f"virtual_server group "
                                        f"{' '.join(args[1:])!r}: no such virtual_server_group")
            group.used = True
            for entry in group.children or []:
                if entry.keyword == "fwmark":
                    yield from self.fwmark(node, entry)
                    continue
                port = c.whole(entry, entry.args[0], 0, 65535) if entry.args else 0
                for addr in self.expand(entry, entry.keyword):
                    yield addr, port, 0, entry
            return
        if args[:1] == ["fwmark"]:
            yield from self.fwmark(node, Node("fwmark", args[1:], node.line, None))
            return
        if not args:
            raise ImportSyntaxError(node.where, "virtual_server: an address is missing")
        try:
            any_addr = ipaddress.ip_address(args[0])
        except ValueError:
            raise ImportSyntaxError(node.where, f"virtual_server: expected an address, got "
                                    f"{args[0]!r}") from None
        port = c.whole(node, args[1], 0, 65535) if len(args) > 1 else 0
        yield any_addr, port, 0, node

    def fwmark(self, service: Node, entry: Node) -> Iterator[tuple[IPAddress, int, int, Node]]:
        """The firewall-mark service of ``fwmark N`` (``service`` holds its ``ip_family``:
        ``inet6`` makes it the mark's IPv6 service, ``ipvsadm -f N -6``)."""
        mark = c.whole(entry, c.one_arg(entry), 1, 0xFFFFFFFF)
        family = [c.one_arg(n) for n in service.find("ip_family")]
        yield (IPv6Address(0) if family[-1:] == ["inet6"] else IPv4Address(0)), 0, mark, entry

    def expand(self, node: Node, text: str) -> list[IPAddress]:
        """``a.b.c.d``, ``a.b.c.d-e``, ``a.b.c.d-e.f.g.h`` or ``a.b.c.d/nn`` as addresses.

        IPv6 alike: ``2001:2::10-1f`` ends the range in the last group, written in hex as
        keepalived reads it (``2001:2::10-2001:2::1f`` and ``2001:2::/120`` work too).
        """
        try:
            if "/" in text:
                net = ipaddress.ip_network(text, strict=False)
                first, last, version = (int(net.network_address), int(net.broadcast_address),
                                        net.version)
            elif "-" in text:
                lo, hi = text.split("-", 1)
                low = ipaddress.ip_address(lo)
                version = low.version
                first = int(low)
                if ("." if version == 4 else ":") in hi:
                    high = ipaddress.ip_address(hi)
                    if high.version != version:
                        raise ValueError(text)
                    last = int(high)
                elif version == 4:
                    last = (first & ~0xFF) | int(hi, 10)
                else:
                    last = (first & ~0xFFFF) | int(hi, 16)
            else:
                one = ipaddress.ip_address(text)
                first = last = int(one)
                version = one.version
        except ValueError:
            raise ImportSyntaxError(node.where, f"expected an address or range, got "
                                    f"{text!r}") from None
        if last < first or last - first >= _GROUP_LIMIT:
            raise ImportSyntaxError(node.where, f"address range {text!r}: expected 1.."
                                    f"{_GROUP_LIMIT} addresses")
        kind = IPv4Address if version == 4 else IPv6Address
        return [kind(a) for a in range(first, last + 1)]

    def virtual_server(self, node: Node, first: int) -> list[VirtualServerConfig]:
        out: list[VirtualServerConfig] = []
        addresses = list(self.addresses(node))
        if not addresses:
            return out
        table = f"virtual_server[{first}]"
        template, options, granularity = self.vs_settings(node, table, addresses[0][1])
        for vip, port, mark, entry in addresses:
            vs = replace(template, address=Endpoint(vip, port), fwmark=mark)
            if granularity is not None:
                vs = replace(vs, netmask=c.prefix6(granularity, c.one_arg(granularity))
                             if vip.version == 6 else c.netmask(granularity,
                                                                c.one_arg(granularity)))
            if vs.sorry_server is not None and vs.sorry_server.address.version != vip.version:
                sink = self.notes if not out else Notes()  # once for a group's copies
                sink.dropped(f"virtual_server[{first + len(out)}]", node.find("sorry_server")[-1],
                             _FAMILY.format(vip=vip.version,
                                            other=vs.sorry_server.address.version))
                vs = replace(vs, sorry_server=None)
            if mark:
                self.notes.info(f"virtual_server[{first + len(out)}]", entry, c.FWMARK_NOTE)
            vs = c.ftp(vs, self.notes, f"virtual_server[{first + len(out)}]", node)
            if vs.sorry_server is not None and vs.sorry_server.port == 0:
                vs = replace(vs, sorry_server=Endpoint(vs.sorry_server.address, port))
            vs = self.real_servers(node, vs, options, f"virtual_server[{first + len(out)}]",
                                   notes=not out)
            out.append(vs)
        if len(addresses) > 1:
            self.notes.info(table, node, f"expanded to {len(addresses)} services "
                            f"(virtual_server[{first}]..[{first + len(addresses) - 1}])")
        return out

    def vs_settings(self, node: Node, table: str,
                    port: int) -> tuple[VirtualServerConfig, dict[str, Node], Node | None]:
        """The service settings, the checker options real servers inherit, and the
        ``persistence_granularity`` (a netmask for IPv4, a prefix length for IPv6)."""
        vs = VirtualServerConfig(address=Endpoint(IPv4Address(0), port),
                                 check=CheckConfig(interval=60.0))
        inherited: dict[str, Node] = {}
        granularity: Node | None = None
        flags: list[str] = []
        for n in node.children or []:
            kw, args = n.keyword, n.args
            if kw in ("lb_algo", "lvs_sched"):
                sched = c.scheduler(n, c.one_arg(n))
                if sched is None:
                    self.notes.dropped(table, n, "pylvs has no such scheduler; wlc is used")
                else:
                    vs = replace(vs, scheduler=sched)
            elif kw in ("lb_kind", "lvs_method"):
                if c.one_arg(n).upper() != "NAT":
                    self.notes.dropped(table, n, "pylvs forwards by NAT only; imported as NAT")
            elif kw == "persistence_timeout":
                vs = replace(vs, persistence=c.whole(n, args[0], 0, 2678400) if args else 360)
            elif kw == "persistence_granularity":
                granularity = n
            elif kw == "protocol":
                proto = c.one_arg(n).upper()
                if proto not in ("TCP", "UDP"):
                    self.notes.dropped(table, n, "pylvs balances TCP and UDP only; imported "
                                       "as TCP")
                else:
                    vs = replace(vs, protocol="tcp" if proto == "TCP" else "udp")
            elif kw == "sorry_server":
                sport = c.whole(n, args[1], 0, 65535) if len(args) > 1 else 0
                vs = replace(vs, sorry_server=Endpoint(c.address(n, c.one_arg(n)), sport))
            elif kw == "quorum":
                vs = replace(vs, quorum=c.whole(n, c.one_arg(n)))
            elif kw == "hysteresis":
                vs = replace(vs, quorum_hysteresis=c.whole(n, c.one_arg(n)))
            elif kw in ("sh-port", "sh-fallback", "mh-port", "mh-fallback"):
                flags.append(kw)
            elif kw in ("flag-1", "flag-2"):
                flags.append(kw)  # named once the scheduler is known (it may come later)
            elif kw in _INHERITED:
                inherited[kw] = n
            elif kw == "real_server":
                continue
            elif kw in ("ha_suspend", "snmp_name", "ip_family", "smtp_alert") and (
                    kw != "smtp_alert" or not _flag(n)):
                self.notes.info(table, n, "not needed by pylvs")
            elif kw in ("quorum_up", "quorum_down"):
                self.notes.dropped(table, n, "pylvs runs no command when the quorum changes "
                                   "(it switches to the sorry server and logs it)")
            elif kw == "omega":
                self.notes.dropped(table, n, "pylvs runs no quorum or real server commands "
                                   "at shutdown")
            else:
                self.notes.dropped(table, n, "no pylvs equivalent")
        family = "mh" if vs.scheduler == "mh" else "sh"
        named = {"flag-1": f"{family}-fallback", "flag-2": f"{family}-port"}
        if flags:
            vs = replace(vs, flags=tuple(dict.fromkeys(named.get(f, f) for f in flags)))
        return vs, inherited, granularity

    def real_servers(self, node: Node, vs: VirtualServerConfig, inherited: dict[str, Node],
                     table: str, notes: bool) -> VirtualServerConfig:
        """Add the real servers of ``node`` to ``vs``; ``notes`` is False for group copies."""
        sink = self.notes if notes else Notes()
        reals: list[RealServerConfig] = []
        checks: list[tuple[CheckConfig, Node]] = []
        inhibit: list[bool] = []
        for n in node.find("real_server"):
            rtable = f"{table}.real_server[{len(reals)}]"
            if n.children is None:
                n = Node(n.keyword, n.args, n.line, [])
            addr = c.address(n, c.one_arg(n))
            # A firewall-mark service is IPv4 (its address 0.0.0.0 says so).
            if addr.version != vs.address.address.version:
                sink.dropped(table, n, _FAMILY.format(vip=vs.address.address.version,
                                                      other=addr.version))
                continue
            port = c.whole(n, n.args[1], 0, 65535) if len(n.args) > 1 else vs.address.port
            rs = RealServerConfig(address=Endpoint(addr, port))
            opts = dict(inherited)
            checkers: list[Node] = []
            for o in n.children or []:
                kw = o.keyword
                if kw == "weight":
                    rs = replace(rs, weight=c.whole(o, c.one_arg(o), 0, 65535))
                elif kw == "uthreshold":
                    rs = replace(rs, upper_threshold=c.whole(o, c.one_arg(o)))
                elif kw == "lthreshold":
                    rs = replace(rs, lower_threshold=c.whole(o, c.one_arg(o)))
                elif kw in _INHERITED:
                    opts[kw] = o
                elif kw in _CHECKERS:
                    checkers.append(o)
                elif kw == "lvs_method":
                    if c.one_arg(o).upper() != "NAT":
                        sink.dropped(rtable, o, "pylvs forwards by NAT only")
                elif kw in ("notify_up", "notify_down"):
                    sink.dropped(rtable, o, "pylvs runs no command when a real server changes "
                                 "state (it logs it and shows it in pylvs status)")
                elif kw in ("snmp_name", "smtp_alert"):
                    sink.info(rtable, o, "not needed by pylvs")
                else:
                    sink.dropped(rtable, o, "no pylvs equivalent")
            inhibit_node = opts.get("inhibit_on_failure")
            inhibit.append(inhibit_node is not None and _flag(inhibit_node))
            check = self.check(checkers, opts, vs, rs, rtable, sink)
            checks.append((check, n))
            reals.append(rs)
        if checks:
            chosen = checks[0][0]
            for check, n in checks[1:]:
                if check != chosen:
                    sink.dropped(table, n, "this real server's checker differs from the "
                                 "first one's; pylvs probes every server of a service alike "
                                 "(the first one's check is used)")
            vs = replace(vs, check=chosen)
        else:
            vs = replace(vs, check=replace(vs.check, type="none"))
        if inhibit and all(inhibit):
            vs = replace(vs, down_action="quiesce")
        else:
            vs = replace(vs, down_action="remove")
            if any(inhibit):
                sink.dropped(table, node, "inhibit_on_failure on some real servers only: pylvs "
                             "quiesces or removes per service; 'remove' is used")
        return replace(vs, real_servers=tuple(reals))

    # -- checkers ---------------------------------------------------------------------------

    def check(self, checkers: list[Node], opts: dict[str, Node], vs: VirtualServerConfig,
              rs: RealServerConfig, table: str, sink: Notes) -> CheckConfig:
        base = vs.check
        if not checkers:
            return replace(base, type="none")
        for extra in checkers[1:]:
            sink.dropped(table, extra, "pylvs runs one check per service; only the first "
                         "checker of a real server is used")
        ck = checkers[0]
        local = dict(opts)
        body: list[Node] = []
        for o in ck.children or []:
            if o.keyword in _INHERITED:
                local[o.keyword] = o
            else:
                body.append(o)
        interval = base.interval
        if (n := local.get("delay_loop")) is not None:
            interval = c.number(n, c.one_arg(n)) or interval
        timeout = 5.0  # keepalived's default connect_timeout
        if (n := local.get("connect_timeout")) is not None:
            timeout = c.number(n, c.one_arg(n)) or timeout
        retry = _DEFAULT_RETRY.get(ck.keyword, 1)
        if (n := local.get("retry")) is not None:
            retry = c.whole(n, c.one_arg(n), 0, 1000)
        alpha = local.get("alpha")
        check = CheckConfig(interval=interval, timeout=timeout, rise=1, fall=retry + 1,
                            initial_state="down" if alpha is not None and _flag(alpha)
                            else "up")
        if (n := local.get("delay_before_retry")) is not None:
            sink.info(f"{table}", n, "pylvs retries at the check interval; the fall count "
                      "(retry + 1) is kept")
        if (n := local.get("virtualhost")) is not None:
            check = replace(check, host=c.one_arg(n))
        kind = ck.keyword
        rest: list[Node] = []
        for o in body:
            if o.keyword == "connect_port":
                port = c.whole(o, c.one_arg(o), 1, 65535)
                check = replace(check, port=None if port == rs.address.port else port)
            elif o.keyword == "connect_ip":
                if c.address(o, c.one_arg(o)) != rs.address.address:
                    sink.dropped(table, o, "pylvs probes the real server's own address")
            elif o.keyword in ("bindto", "bind_port", "bind_if", "fwmark"):
                sink.dropped(table, o, "pylvs probes from the director's own address")
            elif o.keyword == "log_all_failures":
                sink.info(table, o, "pylvs logs every state change")
            else:
                rest.append(o)
        if kind == "TCP_CHECK":
            check = replace(check, type="tcp")
        elif kind in ("HTTP_GET", "SSL_GET"):
            check = self.http(check, kind, rest, table, sink)
            rest = []
        elif kind == "MISC_CHECK":
            check, rest = self.misc(check, rest, ck)
        elif kind == "SMTP_CHECK":
            check = replace(check, type="send_expect", expect="220")
            sink.dropped(table, ck, "pylvs checks the SMTP banner (220) only, not the HELO "
                         "(250) step")
            hosts = [o for o in rest if o.keyword == "host"]
            rest = [o for o in rest if o.keyword not in ("host", "helo_name")]
            for h in hosts[1:]:
                sink.dropped(table, h, "pylvs probes one address per real server")
        elif kind == "UDP_CHECK":
            check, rest = self.udp(check, rest)
        elif kind == "PING_CHECK":
            wait = max(1, int(check.timeout))
            check = replace(check, type="exec", command=f"ping -n -q -c 1 -W {wait} %h")
            sink.info(table, ck, "run as the exec check 'ping -c 1 %h'")
        else:
            sink.dropped(table, ck, f"pylvs has no {kind}; the server is not probed")
            return replace(check, type="none")
        for o in rest:
            sink.dropped(table, o, f"{kind} option without a pylvs equivalent")
        return check

    def http(self, check: CheckConfig, kind: str, body: list[Node], table: str,
             sink: Notes) -> CheckConfig:
        check = replace(check, type="https" if kind == "SSL_GET" else "http",
                        status=tuple(range(200, 300)))
        if kind == "SSL_GET":
            check = replace(check, verify_tls=False)  # keepalived does not verify the cert
        urls = [o for o in body if o.keyword == "url"]
        for o in body:
            if o.keyword in ("http_protocol", "fast_recovery", "enable_sni"):
                sink.info(table, o, "not needed by pylvs (HTTP/1.1 with Host; SNI from host)")
            elif o.keyword != "url":
                sink.dropped(table, o, f"{kind} option without a pylvs equivalent")
        for extra in urls[1:]:
            sink.dropped(table, extra, "pylvs checks one URL per service; the first is used")
        if not urls:
            return check
        for o in urls[0].children or []:
            kw = o.keyword
            if kw == "path":
                check = replace(check, path=c.one_arg(o))
            elif kw == "digest":
                check = replace(check, digest=c.one_arg(o).lower())
            elif kw == "status_code":
                check = replace(check, status=self.status_codes(o))
            elif kw == "virtualhost":
                check = replace(check, host=c.one_arg(o))
            elif kw == "regex":
                check = replace(check, body_regex=c.one_arg(o))
            else:
                sink.dropped(table, o, "url option without a pylvs equivalent")
        return check

    def status_codes(self, node: Node) -> tuple[int, ...]:
        codes: list[int] = []
        for word in node.args:
            lo, _, hi = word.partition("-")
            first = c.whole(node, lo, 100, 599)
            last = c.whole(node, hi, 100, 599) if hi else first
            codes.extend(range(first, last + 1))
        return tuple(dict.fromkeys(codes))

    def misc(self, check: CheckConfig, body: list[Node],
             ck: Node) -> tuple[CheckConfig, list[Node]]:
        rest: list[Node] = []
        path: str | None = None
        for o in body:
            if o.keyword == "misc_path":
                path = " ".join(shlex.quote(a) if " " in a and len(o.args) > 1 else a
                                for a in o.args)
            elif o.keyword == "misc_timeout":
                check = replace(check, timeout=float(c.whole(o, c.one_arg(o), 1)))
            elif o.keyword == "misc_dynamic":
                check = replace(check, dynamic_weight=True)
            else:
                rest.append(o)
        if path is None:
            raise ImportSyntaxError(ck.where, "MISC_CHECK: misc_path is required")
        return replace(check, type="exec", command=path), rest

    def udp(self, check: CheckConfig, body: list[Node]) -> tuple[CheckConfig, list[Node]]:
        rest: list[Node] = []
        check = replace(check, type="udp")
        for o in body:
            if o.keyword == "payload":
                check = replace(check, send=_hex_escapes(o))
            elif o.keyword == "require_reply":
                check = replace(check, expect=_hex_escapes(o) if o.args else "*")
            elif o.keyword in ("min_reply_length", "max_reply_length"):
                rest.append(o)
            else:
                rest.append(o)
        return check, rest

    # -- VRRP -------------------------------------------------------------------------------

    def vrrp_instance(self, node: Node) -> _Vrrp:
        v = _Vrrp(node, _words(node))
        for n in node.children or []:
            if n.keyword == "interface":
                v.interface = c.one_arg(n)
            elif n.keyword in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
                for a in n.children or []:
                    words = [a.keyword, *a.args]
                    try:
                        iface = ipaddress.ip_interface(words[0])
                    except ValueError:
                        self.notes.dropped("ha", a, "not an IP address; not imported")
                        continue
                    dev = words[words.index("dev") + 1] if "dev" in words[:-1] else None
                    v.addresses.append((iface, dev, a))
        return v

    def public_interface(self, vrrps: list[_Vrrp], vips: set[IPAddress]) -> str | None:
        for v in vrrps:
            for iface, dev, _ in v.addresses:
                if iface.ip in vips:
                    return dev or v.interface
        return None

    def nat_routers(self, vrrps: list[_Vrrp], vips: set[IPAddress], reals: set[IPAddress]
                    ) -> tuple[list[IPInterface], str | None]:
        """The real servers' gateways (the IPv4 one first, at most one a family) and their
        interface."""
        found: dict[int, IPInterface] = {}
        private_if: str | None = None
        for v in vrrps:
            for iface, dev, node in v.addresses:
                if iface.ip in vips or iface.version in found:
                    continue
                host, assumed = (32, 24) if iface.version == 4 else (128, 64)
                plen = iface.network.prefixlen if iface.network.prefixlen < host else assumed
                net: IPInterface = (IPv4Interface if iface.version == 4 else IPv6Interface)(
                    f"{iface.ip}/{plen}")
                if any(vip in net.network for vip in vips):
                    continue  # a one-armed site: not a NAT gateway pylvs can float
                if any(r in net.network for r in reals):
                    if iface.network.prefixlen == host:
                        self.notes.info("director", node, "the real servers' gateway: its "
                                        f"network is assumed to be a /{assumed}")
                    found[iface.version] = net
                    private_if = private_if or dev or v.interface
        return [found[f] for f in sorted(found)], private_if

    def ha(self, vrrps: list[_Vrrp], vips: set[IPAddress],
           routers: list[IPInterface]) -> HaConfig:
        ha = HaConfig()
        if self.sync is not None:
            ha = replace(ha, sync=True)
            if self.sync_port is not None:
                ha = replace(ha, sync_port=self.sync_port)
        else:
            ha = replace(ha, sync=False)
        if not vrrps:
            return ha
        main = next((v for v in vrrps if any(i.ip in vips for i, _, _ in v.addresses)),
                    vrrps[0])
        gateways = {r.ip for r in routers}
        for v in vrrps:
            for iface, _, node in v.addresses:
                if iface.ip not in vips and iface.ip not in gateways:
                    self.notes.dropped("ha", node, f"{iface.ip} is neither a virtual server's "
                                       "address nor the real servers' gateway: pylvs does not "
                                       "move it")
        peers: list[IPAddress] = []
        for v in vrrps:
            ha, found = self.instance_settings(v, ha, v is main)
            peers.extend(p for p in found if p not in peers)
        ha = replace(ha, node_id=self.node_id(main, ha))
        for p in peers:
            if any(p in r.network for r in routers):
                ha = replace(ha, peer_private=ha.peer_private or p)
            else:
                ha = replace(ha, peer_public=ha.peer_public or p)
        if ha.peer_public is None and ha.peer_private is None:
            self.notes.dropped("ha", main.node, "multicast VRRP: pylvs heartbeats go to the "
                               "peer's address; set ha.peer_public (and peer_private), "
                               "secret_file and enabled = true")
            return ha
        if not routers:
            self.notes.dropped("ha", main.node, "no VRRP address on the real servers' network "
                               "to use as director.nat_router, which pylvs needs for "
                               "failover; ha is written disabled")
            return ha
        self.notes.info("ha", main.node, f"pylvs heartbeats are signed: write the same random "
                        f"key to {self.opts.secret_file} on both directors")
        return replace(ha, enabled=True, secret_file=self.opts.secret_file)

    def node_id(self, main: _Vrrp, ha: HaConfig) -> str:
        """This director's name in heartbeats: it must differ from the peer's."""
        src = main.node.find("unicast_src_ip")
        if self.router_id is not None:
            return self.router_id
        if src:
            return f"lvs-{c.one_arg(src[0])}"
        self.notes.info("ha", main.node, "no router_id or unicast_src_ip: ha.node_id is made "
                        "from the priority; it must differ on the two directors")
        return f"lvs-{ha.priority}"

    def instance_settings(self, v: _Vrrp, ha: HaConfig,
                          main: bool) -> tuple[HaConfig, list[IPAddress]]:
        notify: dict[str, list[str]] = {}
        peers: list[IPAddress] = []
        sink = self.notes if main else Notes()
        other = "" if main else f" (instance {v.name}: pylvs uses {v.name}'s peers only)"
        for n in v.node.children or []:
            kw = n.keyword
            if kw == "priority":
                prio = c.whole(n, c.one_arg(n), 1, 255)
                if prio == 255:
                    sink.info("ha", n, "255 (address owner) is reserved in pylvs: 254")
                ha = replace(ha, priority=min(prio, 254))
            elif kw == "advert_int":
                ha = replace(ha, interval=c.number(n, c.one_arg(n)) or ha.interval)
            elif kw == "nopreempt":
                ha = replace(ha, preempt=False)
            elif kw == "preempt":
                ha = replace(ha, preempt=True)
            elif kw == "preempt_delay":
                ha = replace(ha, preempt_delay=c.number(n, c.one_arg(n)))
            elif kw == "garp_master_delay":
                ha = replace(ha, garp_repeat_delay=c.number(n, c.one_arg(n)))
            elif kw == "garp_master_repeat":
                ha = replace(ha, garp_count=c.whole(n, c.one_arg(n), 0, 1000))
            elif kw == "garp_master_refresh":
                ha = replace(ha, garp_refresh=c.number(n, c.one_arg(n)))
            elif kw in ("notify_master", "notify_backup", "notify_fault"):
                role = {"notify_master": "active", "notify_backup": "backup",
                        "notify_fault": "fault"}[kw]
                notify.setdefault(role, []).append(_words(n))
            elif kw == "notify":
                for role, state in (("active", "MASTER"), ("backup", "BACKUP"),
                                    ("fault", "FAULT")):
                    notify.setdefault(role, []).append(
                        f"{_words(n)} INSTANCE {shlex.quote(v.name)} {state} {{priority}}")
            elif kw == "unicast_peer":
                for p in n.children or []:
                    peers.append(c.address(p, p.keyword))
            elif kw == "lvs_sync_daemon_interface":
                ha = replace(ha, sync=True)
            elif kw in ("interface", "virtual_ipaddress", "virtual_ipaddress_excluded",
                        "state", "virtual_router_id", "authentication", "unicast_src_ip",
                        "version", "dont_track_primary", "smtp_alert"):
                if kw in ("state", "authentication", "virtual_router_id"):
                    sink.info("ha", n, "not needed: pylvs elects by priority and signs its "
                              "heartbeats with ha.secret_file")
            else:
                sink.dropped("ha", n, f"no pylvs equivalent{other}")
        if notify:
            # keepalived passes the instance's priority to a generic notify script.
            ha = replace(ha, notify=c.notify_dispatch(
                {role: "; ".join(cmds).replace("{priority}", str(ha.priority))
                 for role, cmds in notify.items()}))
        return ha, peers


def _hex_escapes(node: Node) -> str:
    digits = "".join(node.args).replace(" ", "")
    if len(digits) % 2:
        digits = "0" + digits
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise ImportSyntaxError(node.where, f"{node.keyword}: expected hex digits") from None
    return "".join(f"\\x{b:02x}" for b in data)


def to_config(nodes: list[Node], source: str, opts: c.ImportOptions) -> tuple[Config, Notes]:
    """Map a parsed keepalived.conf to a Config and the notes about what did not carry over."""
    mapper = _Mapper(nodes, source, opts)
    return mapper.run(), mapper.notes
