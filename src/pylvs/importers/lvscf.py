"""Piranha's ``lvs.cf`` -> :class:`pylvs.model.Config`.

The grammar (lvs.cf(5), piranha 0.8.6 ``lvsconfig.c``): ``key = value`` lines, ``virtual NAME {``
and ``server NAME {`` blocks, ``failover NAME {`` blocks for piranha's other mode, ``#``
comments.  The semantics follow docs/failover-health.md#piranha (pulse, nanny, lvsd): nanny's
``timeout`` is both its check interval and its probe timeout and a single failure takes a server
out; ``reentry / timeout`` consecutive successes bring it back; pulse has no automatic failback.
docs/import.md lists every key and what it becomes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from pylvs.importers import common as c
from pylvs.importers.result import Notes
from pylvs.importers.tokens import ImportSyntaxError, Node, SourceLine, parse_blocks
from pylvs.model import (
    CheckConfig,
    Config,
    DirectorConfig,
    Endpoint,
    HaConfig,
    LoadMonitorConfig,
    RealServerConfig,
    TimeoutsConfig,
    VirtualServerConfig,
)

__all__ = ["looks_like", "parse", "to_config"]

# Keys with no effect on a pylvs director (bookkeeping of piranha's GUI and daemons).
_NOT_NEEDED = {
    "serial_no": "the GUI's revision counter",
    "service": "pylvs is a virtual server director (service = lvs)",
    "debug_level": "pylvs logs with director.log_level",
    "debug": "pylvs logs with director.log_level",
    "rsh_command": "used for load_monitor = uptime only (see the load monitor command)",
    "reservation_conflict_action": "a SCSI setting of piranha's failover services",
    "syncd_iface": "pylvs syncs over the heartbeat paths (ha.peer_public / peer_private)",
    "syncd_id": "pylvs syncs only with its one peer",
    "nat_nmask": "used as the prefix length of director.nat_router",
    "hard_shutdown": "a power-switch setting of piranha's failover services",
}


def looks_like(text: str) -> bool:
    """True when ``text`` reads as an lvs.cf (``key = value`` lines, ``virtual x {`` blocks)."""
    return bool(re.search(r"^\s*(virtual|primary|service|network|serial_no)\s*(=|\S+\s*\{)",
                          text, re.M))


def parse(text: str, source: str) -> list[Node]:
    """The statement tree of an lvs.cf text; :class:`ImportSyntaxError` names file:line."""
    lines = [SourceLine(source, i, t) for i, t in enumerate(text.splitlines(), 1)]
    nodes = parse_blocks(lines, comment_chars="#", escapes=False, separators=("=",))
    for node in _walk(nodes):
        if node.children is None and "=" not in node.line.text.split("#", 1)[0]:
            raise ImportSyntaxError(node.where, f"expected 'key = value', got {node.keyword!r}")
    return nodes


def _walk(nodes: list[Node]) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        out.append(n)
        out.extend(_walk(n.children or []))
    return out


def _last(block: list[Node], key: str) -> Node | None:
    found = [n for n in block if n.keyword == key and n.children is None]
    for n in found:
        n.used = True
    return found[-1] if found else None


def _value(block: list[Node], key: str) -> tuple[Node, str] | None:
    node = _last(block, key)
    return (node, " ".join(node.args)) if node else None


def _dev(text: str) -> str:
    return text.split(":", 1)[0]  # eth0:1 -> eth0: pylvs needs no alias device


class _Mapper(c.MapperBase):
    def __init__(self, nodes: list[Node], source: str, opts: c.ImportOptions) -> None:
        super().__init__(nodes, source, opts)
        self.public_if: str | None = None
        self.private_if: str | None = None
        self.rsh = "rsh"

    # -- globals ----------------------------------------------------------------------------

    def run(self) -> Config:
        g = self.nodes
        if (v := _value(g, "rsh_command")) is not None:
            self.rsh = v[1]
        network = _value(g, "network")
        if network and network[1] != "nat":
            self.notes.dropped("director", network[0], "pylvs forwards by NAT only; the "
                               "services below are imported as NAT services")
        nat_router = self.nat_router()
        virtuals = [n for n in g if n.keyword == "virtual" and n.children is not None]
        services: list[VirtualServerConfig] = []
        for node in virtuals:
            node.used = True
            vs = self.virtual(node, len(services))
            if vs is not None:
                services.append(vs)
        for node in g:
            if node.keyword == "failover" and node.children is not None:
                node.used = True
                self.notes.dropped("", node, "piranha failover services (fos) start and stop "
                                   "local daemons; pylvs has no equivalent")
        ha = self.ha(nat_router)
        timeouts = self.timeouts()
        pub, priv = c.interfaces(self.opts, self.public_if, self.private_if, self.notes,
                                 self.source)
        director = DirectorConfig(public_interface=pub, private_interface=priv,
                                  nat_router=nat_router)
        for node in g:
            if node.used:
                continue
            why = _NOT_NEEDED.get(node.keyword)
            if why is not None:
                self.notes.info("", node, f"not needed: {why}")
            else:
                self.notes.dropped("", node, "unknown lvs.cf key, not imported")
        return Config(director=director, timeouts=timeouts, ha=ha,
                      virtual_servers=tuple(services), source=self.source)

    def nat_router(self) -> str | None:
        v = _value(self.nodes, "nat_router")
        if v is None:
            return None
        node, _ = v
        address = c.ipv4(node, c.one_arg(node))
        if len(node.args) > 1:
            self.private_if = _dev(node.args[1])
        mask = _value(self.nodes, "nat_nmask")
        if mask is not None:
            plen = c.prefix_len(mask[0], mask[1])
        else:
            plen = 24
            self.notes.info("director", node, "no nat_nmask: the real servers' network is "
                            "assumed to be a /24")
        return str(IPv4Interface(f"{address}/{plen}"))

    def timeouts(self) -> TimeoutsConfig:
        t = TimeoutsConfig()
        for key, field in (("tcp_timeout", "tcp"), ("tcpfin_timeout", "tcpfin"),
                           ("udp_timeout", "udp")):
            if (v := _value(self.nodes, key)) is not None:
                t = replace(t, **{field: c.whole(v[0], v[1], 1, 31 * 86400)})
        return t

    def ha(self, nat_router: str | None) -> HaConfig:
        g = self.nodes
        primary, backup = _value(g, "primary"), _value(g, "backup")
        pprivate, bprivate = _value(g, "primary_private"), _value(g, "backup_private")
        active = _value(g, "backup_active")
        heartbeat = _value(g, "heartbeat")
        ha = HaConfig(preempt=False)  # pulse: a repaired primary comes back as standby
        if (v := _value(g, "heartbeat_port")) is not None:
            ha = replace(ha, port=c.whole(v[0], v[1], 1, 65535))
        if (v := _value(g, "keepalive")) is not None:
            ha = replace(ha, interval=c.number(v[0], v[1]) or ha.interval)
        if (v := _value(g, "deadtime")) is not None:
            dead = c.number(v[0], v[1])
            if dead > ha.interval:
                ha = replace(ha, dead_time=dead)
            else:
                self.notes.info("ha", v[0], "not more than keepalive: pylvs's default dead "
                                "time (3 heartbeats and a skew) is used")
        sync = _value(g, "syncdaemon")
        ha = replace(ha, sync=bool(sync and sync[1] == "1"))
        links = _value(g, "monitor_links")
        if links and links[1] == "1":
            self.notes.dropped("ha", links[0], "pylvs does not watch its links; a node with a "
                               "dead link keeps heartbeating on the other path")
        cmds = {}
        if (v := _value(g, "active_cmd")) is not None:
            cmds["active"] = v[1]
        if (v := _value(g, "inactive_cmd")) is not None:
            cmds["backup|fault"] = v[1]
        if cmds:
            ha = replace(ha, notify=c.notify_dispatch(cmds))
        me_backup = self.opts.node == "backup"
        peer, peer_private = (primary, pprivate) if me_backup else (backup, bprivate)
        ha = replace(ha, node_id="backup" if me_backup else "primary",
                     priority=100 if me_backup else 150)
        if peer is not None:
            ha = replace(ha, peer_public=self.host(peer, "ha"))
        if peer_private is not None:
            ha = replace(ha, peer_private=self.host(peer_private, "ha"))
        wanted = active is not None and active[1] == "1" and backup is not None
        if wanted and heartbeat is not None and heartbeat[1] == "0":
            self.notes.dropped("ha", heartbeat[0], "a backup without heartbeats cannot take "
                               "over; ha is written disabled")
            wanted = False
        if wanted and nat_router is None:
            where = active[0] if active is not None else self.source
            self.notes.dropped("ha", where, "pylvs fails over a NAT director, whose "
                               "nat_router must move with the VIPs; without nat_router ha is "
                               "written disabled")
            wanted = False
        if wanted:
            ha = replace(ha, enabled=True, secret_file=self.opts.secret_file)
            self.notes.info("ha", self.source, f"pylvs heartbeats are signed: write the same "
                            f"random key to {self.opts.secret_file} on both directors "
                            "(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')")
            self.notes.info("ha", self.source, f"written for the {self.opts.node} director; "
                            f"run pylvs import --node "
                            f"{'primary' if me_backup else 'backup'} for the other one")
            if ha.peer_public is None and ha.peer_private is None:
                self.notes.dropped("ha", self.source, "the peer's address is not an IPv4 "
                                   "address; ha is written disabled")
                ha = replace(ha, enabled=False)
        return ha

    def host(self, v: tuple[Node, str], table: str) -> IPv4Address | None:
        try:
            return IPv4Address(v[1])
        except ValueError:
            self.notes.dropped(table, v[0], "pylvs needs the peer's IPv4 address, not a name")
            return None

    # -- virtual servers --------------------------------------------------------------------

    def virtual(self, node: Node, index: int) -> VirtualServerConfig | None:
        b = node.children or []
        table = f"virtual_server[{index}]"
        name = " ".join(node.args) or "?"
        active = _value(b, "active")
        if active is not None and active[1] == "0":
            self.notes.info("", node, f"virtual {name} is inactive (active = 0): not imported")
            self._mark_all(b)
            return None
        addr = _value(b, "address")
        if addr is None:
            raise ImportSyntaxError(node.where, f"virtual {name}: 'address' is required")
        vip = c.ipv4(addr[0], c.one_arg(addr[0]))
        if len(addr[0].args) > 1 and self.public_if is None:
            self.public_if = _dev(addr[0].args[1])
        port = 80
        if (v := _value(b, "port")) is not None:
            port = c.whole(v[0], v[1], 0, 65535)
        vs = VirtualServerConfig(address=Endpoint(vip, port))
        if (v := _value(b, "protocol")) is not None:
            if v[1].lower() not in ("tcp", "udp"):
                raise ImportSyntaxError(v[0].where, f"protocol: expected tcp or udp, got {v[1]!r}")
            vs = replace(vs, protocol="tcp" if v[1].lower() == "tcp" else "udp")
        if (v := _value(b, "scheduler")) is not None:
            sched = c.scheduler(v[0], v[1])
            if sched is None:
                self.notes.dropped(table, v[0], f"pylvs has no scheduler {v[1]!r}; wlc is used")
            else:
                vs = replace(vs, scheduler=sched)
        if (v := _value(b, "persistent")) is not None:
            vs = replace(vs, persistence=c.whole(v[0], v[1], 0, 2678400))
        if (v := _value(b, "pmask")) is not None:
            vs = replace(vs, netmask=c.netmask(v[0], v[1]))
        if (v := _value(b, "sorry_server")) is not None:
            vs = replace(vs, sorry_server=Endpoint(c.ipv4(v[0], c.one_arg(v[0])), port))
        quiesce = _value(b, "quiesce_server")
        vs = replace(vs, down_action="quiesce" if quiesce and quiesce[1] == "1" else "remove")
        if (v := _value(b, "vip_nmask")) is not None:
            self.notes.info(table, v[0], "not needed: pylvs answers ARP for the VIP itself "
                            "(proxy ARP), no alias address")
        mark = _value(b, "fwmark")
        if mark is not None:
            ftp = " (for FTP: port 21 and the passive data ports, as Red Hat's guide marks " \
                "them; ftp = true needs a port-21 service without a mark)" if port == 21 else ""
            self.notes.info(table, mark[0], c.FWMARK_NOTE + ftp)
        else:
            vs = c.ftp(vs, self.notes, table, node)
        vs = replace(vs, check=self.check(b, vs, table), load_monitor=self.load(b, table))
        if vs.load_monitor.type != "none":
            # nanny's slow start: W/32, doubling every ~20 s adjustment cycle (5 doublings).
            vs = replace(vs, slow_start=100.0)
        servers = [n for n in b if n.keyword == "server" and n.children is not None]
        reals: list[RealServerConfig] = []
        for s in servers:
            s.used = True
            rs = self.server(s, vs, f"{table}.real_server[{len(reals)}]")
            if rs is not None:
                reals.append(rs)
        vs = replace(vs, real_servers=tuple(reals))
        if mark is not None:
            # pulse adds the servers without a port; nanny probes the virtual's port.
            vs = c.as_fwmark(vs, c.whole(mark[0], mark[1], 1, 0xFFFFFFFF), port)
        for n in b:
            if not n.used:
                self.notes.dropped(table, n, "unknown key in a virtual block, not imported")
        return vs

    def _mark_all(self, nodes: list[Node]) -> None:
        for n in _walk(nodes):
            n.used = True

    def check(self, b: list[Node], vs: VirtualServerConfig, table: str) -> CheckConfig:
        timeout = 10.0
        if (v := _value(b, "timeout")) is not None:
            timeout = c.number(v[0], v[1]) or 10.0
        reentry = 180.0
        if (v := _value(b, "reentry")) is not None:
            reentry = c.number(v[0], v[1])
        # nanny: one failure takes the server out; reentry // timeout successes bring it back.
        check = CheckConfig(type="send_expect", interval=timeout, timeout=timeout, fall=1,
                            rise=max(1, int(reentry // timeout)))
        send, expect = _value(b, "send"), _value(b, "expect")
        regex = _value(b, "use_regex")
        check = replace(check, expect_regex=bool(regex and regex[1] == "1"))
        program = _value(b, "send_program")
        if program is not None:
            if send is not None:
                self.notes.info(f"{table}.check", send[0], "ignored by nanny when "
                                "send_program is set")
            return replace(check, type="exec", command=self.program(program[1], expect,
                                                                    check.expect_regex))
        if send is not None:
            check = replace(check, send=send[1])
        if expect is not None:
            check = replace(check, expect=expect[1])
        if vs.protocol == "udp":
            return replace(check, type="udp")
        if check.send is not None and check.expect is None:
            self.notes.info(f"{table}.check", send[0] if send else self.source,
                            "send without expect: nanny only writes it; pylvs checks the "
                            "connect")
            return replace(check, type="tcp", send=None)
        return check

    def program(self, prog: str, expect: tuple[Node, str] | None, regex: bool) -> str:
        # nanny compares the program's stdout with expect; pylvs's exec check reads the exit
        # status, so a small shell wrapper does the comparison.
        if expect is None:
            return f"sh -c {shlex.quote(prog + ' >/dev/null')}"
        if regex:
            test = f'printf %s "$out" | grep -Eq -e {shlex.quote(expect[1])}'
        else:
            test = f'[ "$out" = {shlex.quote(expect[1])} ]'
        return f"sh -c {shlex.quote(f'out=$({prog}); {test}')}"

    def load(self, b: list[Node], table: str) -> LoadMonitorConfig:
        v = _value(b, "load_monitor")
        kind = v[1] if v else "uptime"  # lvs.cf(5): the default method is uptime
        if kind == "none":
            return LoadMonitorConfig()
        if kind == "uptime":
            cmd = f"{self.rsh} %h uptime"
        elif kind in ("rup", "ruptime"):
            cmd = "rup %h"
            if kind == "ruptime" and v is not None:
                self.notes.info(f"{table}.load_monitor", v[0], "read with rup (rstatd) "
                                "instead of ruptime (rwhod lists host names, not addresses)")
        else:
            where: Node | str = v[0] if v else self.source
            self.notes.dropped(f"{table}.load_monitor", where, f"unknown load monitor {kind!r}")
            return LoadMonitorConfig()
        # nanny adjusts about every 20 s.
        return LoadMonitorConfig(type="loadavg", command=cmd, interval=20.0, timeout=10.0)

    def server(self, node: Node, vs: VirtualServerConfig, table: str) -> RealServerConfig | None:
        b = node.children or []
        name = " ".join(node.args) or "?"
        active = _value(b, "active")
        if active is not None and active[1] == "0":
            self.notes.info(table.rsplit(".", 1)[0], node,
                            f"server {name} is inactive (active = 0): not imported")
            self._mark_all(b)
            return None
        addr = _value(b, "address")
        if addr is None:
            raise ImportSyntaxError(node.where, f"server {name}: 'address' is required")
        port = vs.address.port
        if (v := _value(b, "port")) is not None:
            port = c.whole(v[0], v[1], 0, 65535)
        rs = RealServerConfig(address=Endpoint(c.ipv4(addr[0], c.one_arg(addr[0])), port))
        if (v := _value(b, "weight")) is not None:
            rs = replace(rs, weight=c.whole(v[0], v[1], 0, 65535))
        for n in b:
            if not n.used:
                self.notes.dropped(table, n, "unknown key in a server block, not imported")
        return rs


def to_config(nodes: list[Node], source: str, opts: c.ImportOptions) -> tuple[Config, Notes]:
    """Map a parsed lvs.cf to a Config and the notes about what did not carry over."""
    mapper = _Mapper(nodes, source, opts)
    return mapper.run(), mapper.notes


def read(path: Path) -> str:
    """The text of ``path`` (lvs.cf has no include mechanism)."""
    return path.read_text(encoding="utf-8", errors="replace")
