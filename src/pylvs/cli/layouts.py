"""ipvsadm's output layouts, rendered from the control API's JSON.

Each function reproduces one ``printf`` family of ipvsadm 1.2x (``ipvsadm.c``): the column
widths, the 33/28-character truncation of names (IPv4 only: ipvsadm never cuts an IPv6 name),
the ``largenum`` K/M/G/T abbreviation in powers of 1000, IPv6 addresses in brackets
(``[2001:2::100]:80``, also around a resolved name), and the sort order of libipvs's
``ipvs_cmp_services`` (family, protocol, address, port: every IPv4 service before the IPv6
ones) and ``ipvs_cmp_dests`` (address, port).
Inputs are the dictionaries ``GET /api/v1/services``, ``/connections`` and ``/timeouts`` return.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pylvs.model import parse_address, scheduler_flag_names, split_hostport

__all__ = [
    "IPVS_VERSION",
    "Format",
    "connections",
    "largenum",
    "listing",
    "rules",
    "timeouts",
]

IPVS_VERSION = "1.2.1"  # IP_VS_VERSION_CODE 0x010201, what every kernel since 2.6 reports
_PROTO_NUMBER = {"tcp": 6, "udp": 17}

Json = Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Format:
    """The listing modifiers of ``-L``: which table and how numbers and names are shown."""

    numeric: bool = False
    stats: bool = False
    rate: bool = False
    thresholds: bool = False
    persistent_conn: bool = False
    exact: bool = False
    nosort: bool = False


def largenum(value: int, exact: bool = False) -> str:
    """ipvsadm's ``print_largenum``: 9 columns, abbreviated by powers of 1000 when large."""
    if exact:
        text = str(value)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    if value < 100_000_000:
        return f"{value:9d}"
    if value < 1_000_000_000:
        return f"{value // 1000:8d}K"
    if value < 100_000_000_000:
        return f"{value // 1_000_000:8d}M"
    if value < 100_000_000_000_000:
        return f"{value // 1_000_000_000:8d}G"
    return f"{value // 1_000_000_000_000:8d}T"


@lru_cache(maxsize=1024)
def _host(address: str) -> str:
    try:
        return socket.gethostbyaddr(address)[0]
    except (OSError, UnicodeError):
        return address


@lru_cache(maxsize=1024)
def _port(port: int, protocol: str) -> str:
    try:
        return socket.getservbyport(port, protocol)
    except (OSError, OverflowError):
        return str(port)


def _name(endpoint: str, protocol: str, numeric: bool) -> str:
    """``addrport_to_anyname``: numeric, or host and service names where they resolve.

    An IPv6 address keeps its brackets around whatever is printed for it, as in ipvsadm.
    """
    if numeric:
        return endpoint
    host, port = split_hostport(endpoint)
    name = _host(host)
    service = _port(int(port or 0), protocol)
    return f"[{name}]:{service}" if _is_v6(endpoint) else f"{name}:{service}"


def _service_name(svc: Json, numeric: bool, width: int) -> str:
    """``FWM  80`` for a firewall-mark service (``FWM  80 IPv6``), else
    ``TCP  198.18.0.100:80`` (an IPv4 name cut to ``width`` as ipvsadm does, an IPv6 one
    whole)."""
    if svc.get("fwmark"):
        return f"FWM  {int(svc['fwmark'])}{' IPv6' if _is_v6(str(svc['address'])) else ''}"
    protocol, address = str(svc["protocol"]), str(svc["address"])
    return _cut(f"{protocol.upper()}  {_name(address, protocol, numeric)}", address, width)


def _is_v6(endpoint: str) -> bool:
    return endpoint.startswith("[")


def _cut(name: str, endpoint: str, width: int) -> str:
    # ipvsadm truncates IPv4 names to its column and leaves IPv6 ones whole.
    return name if _is_v6(endpoint) else name[:width]


def _address_key(endpoint: str) -> tuple[int, int, int]:
    host, port = split_hostport(endpoint)
    address = parse_address(host)
    return (address.version, int(address), int(port or 0))


def _sort_key_service(svc: Json) -> tuple[int, int, int, int, int]:
    # ipvsadm's service_cmp: the mark first (address services have 0), then the family,
    # protocol, address and port
    family, address, port = _address_key(str(svc["address"]))
    return (int(svc.get("fwmark") or 0), family, _PROTO_NUMBER.get(str(svc["protocol"]), 255),
            address, port)


def _sort_key_server(rs: Json) -> tuple[int, int, int]:
    return _address_key(str(rs["address"]))


def _ordered(services: Iterable[Json], fmt: Format) -> list[Json]:
    items = list(services)
    return items if fmt.nosort else sorted(items, key=_sort_key_service)


def _servers(svc: Json, fmt: Format) -> list[Json]:
    items = list(svc.get("real_servers", ()))
    return items if fmt.nosort else sorted(items, key=_sort_key_server)


def _title(fmt: Format) -> list[str]:
    columns: tuple[str, ...]
    if fmt.stats or fmt.rate:
        if fmt.stats:
            columns = ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
        else:
            columns = ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
        head = f"{'Prot LocalAddress:Port':<33}" + "".join(f" {c:>8}" for c in columns)
        return [head, "  -> RemoteAddress:Port"]
    if fmt.thresholds:
        columns = ("Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
        head = f"{'Prot LocalAddress:Port':<33}" + "".join(f" {c:<10}" for c in columns)
        return [head, "  -> RemoteAddress:Port"]
    if fmt.persistent_conn:
        head = (f"{'Prot LocalAddress:Port':<33} {'Weight':<9} {'PersistConn':<11} "
                f"{'ActiveConn':<10} {'InActConn':<10}")
        return [head, "  -> RemoteAddress:Port"]
    return [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]


def _counters(block: Json, names: Sequence[str], exact: bool) -> str:
    return "".join(largenum(int(block.get(n, 0)), exact) for n in names)


_STATS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
_RATES = ("cps", "inpps", "outpps", "inbps", "outbps")


def _service_lines(svc: Json, fmt: Format) -> list[str]:
    protocol = str(svc["protocol"])
    name = _service_name(svc, fmt.numeric, 33)
    if fmt.stats:
        head = f"{name:<33}" + _counters(svc.get("stats", {}), _STATS, fmt.exact)
    elif fmt.rate:
        head = f"{name:<33}" + _counters(svc.get("rates", {}), _RATES, fmt.exact)
    else:
        head = _plain_service(name, svc)
    lines = [head]
    for rs in _servers(svc, fmt):
        dname = _cut(_name(str(rs["address"]), protocol, fmt.numeric), str(rs["address"]), 28)
        if fmt.stats:
            lines.append(f"  -> {dname:<28}" + _counters(rs.get("stats", {}), _STATS, fmt.exact))
        elif fmt.rate:
            rates = rs.get("rates", {})
            lines.append(
                f"  -> {dname:<28} {int(rates.get('cps', 0)):8d} {int(rates.get('inpps', 0)):8d}"
                f" {int(rates.get('outpps', 0)):8d}"
                + _counters(rates, ("inbps", "outbps"), fmt.exact)
            )
        elif fmt.thresholds:
            lines.append(
                f"  -> {dname:<28} {rs.get('upper_threshold', 0):<10} "
                f"{rs.get('lower_threshold', 0):<10} {rs.get('active_conns', 0):<10} "
                f"{rs.get('inactive_conns', 0):<10}"
            )
        elif fmt.persistent_conn:
            lines.append(
                f"  -> {dname:<28} {_weight(rs):<9} {rs.get('persist_conns', 0):<11} "
                f"{rs.get('active_conns', 0):<10} {rs.get('inactive_conns', 0):<10}"
            )
        else:
            lines.append(
                f"  -> {dname:<28} {rs.get('forward', 'Masq'):<7} {_weight(rs):<6} "
                f"{rs.get('active_conns', 0):<10} {rs.get('inactive_conns', 0):<10}"
            )
    return lines


def _weight(rs: Json) -> int:
    """The weight the scheduler uses now (0 while quiesced), as the kernel would report it."""
    return int(rs.get("effective_weight", rs.get("weight", 0)))


def _persistence(svc: Json, timeout_word: str, mask_word: str) -> str:
    """`` persistent 360 mask 255.255.255.0`` (listing) or `` -p 360 -M …`` (save).

    An IPv6 service's granularity is a prefix length: `` mask 64`` / `` -M 64``, left out at
    128 as ipvsadm does.
    """
    persistence = int(svc.get("persistence", 0))
    if not persistence:
        return ""
    text = f" {timeout_word} {persistence}"
    mask = str(svc.get("netmask", "255.255.255.255"))
    if _is_v6(str(svc["address"])):
        if mask not in ("128", "255.255.255.255"):
            text += f" {mask_word} {mask}"
    elif mask != "255.255.255.255":
        text += f" {mask_word} {mask}"
    return text


def _sched_flags(svc: Json) -> str:
    """``print_sched_flags``: the set scheduler bits under the scheduler's names, comma-joined."""
    return ",".join(scheduler_flag_names(str(svc["scheduler"]), svc.get("flags") or ()))


def _plain_service(name: str, svc: Json) -> str:
    flags = _sched_flags(svc)
    return (f"{name} {svc['scheduler']}" + (f" ({flags})" if flags else "")
            + _persistence(svc, "persistent", "mask")
            + (" synproxy" if svc.get("synproxy") else ""))


def listing(
    services: Iterable[Json], fmt: Format, *, table_size: int = 4096, single: bool = False
) -> str:
    """``ipvsadm -L``: the whole table, or (``single``) one service without the version line."""
    lines = [] if single else [f"IP Virtual Server version {IPVS_VERSION} (size={table_size})"]
    lines += _title(fmt)
    for svc in _ordered(services, fmt):
        lines += _service_lines(svc, fmt)
    return "\n".join(lines) + "\n"


def rules(services: Iterable[Json], *, numeric: bool = False) -> str:
    """``ipvsadm -S``: one command per line, readable back by ``-R``.

    Weights are the configured ones, so a save/restore round trip keeps what the operator set
    even while a health check has a server quiesced.
    """
    fmt = Format(numeric=numeric)
    out = []
    for svc in _ordered(services, fmt):
        protocol = str(svc["protocol"])
        switch = "-t" if protocol == "tcp" else "-u"
        if svc.get("fwmark"):  # the address of a fwmark service says its family
            name = f"-f {int(svc['fwmark'])}{' -6' if _is_v6(str(svc['address'])) else ''}"
        else:
            name = f"{switch} {_name(str(svc['address']), protocol, numeric)}"
        line = f"-A {name} -s {svc['scheduler']}" + _persistence(svc, "-p", "-M")
        flags = _sched_flags(svc)
        if flags:
            line += f" -b {flags}"
        if svc.get("synproxy"):
            line += " -j enable"
        if svc.get("ftp"):
            line += " --ftp"  # pylvs: the FTP helper (ip_vs_ftp is a module in the kernel)
        if svc.get("ports"):
            line += f" --ports {','.join(svc['ports'])}"  # pylvs's port-list service
        out.append(line)
        for rs in _servers(svc, fmt):
            if rs.get("sorry"):
                continue  # put there by the health checker, not by the operator
            dname = _name(str(rs["address"]), protocol, numeric)
            out.append(f"-a {name} -r {dname} -m -w {int(rs.get('weight', 1))}")
    return "".join(line + "\n" for line in out)


def connections(conns: Iterable[Json], *, numeric: bool = False,
                persistent_conn: bool = False) -> str:
    """``ipvsadm -L -c``: the connection table with expiry as MM:SS.

    With ``--persistent-conn`` ipvsadm adds the persistence engine's two columns (``pe name``,
    ``pe_data``); pylvs has no persistence engine (IPVS's only one is SIP), so both stay empty.
    """
    head = f"pro expire {'state':<11} {'source':<18} {'virtual':<18} "
    head += (f"{'destination':<18} {'pe name':<16} pe_data" if persistent_conn
             else "destination")
    lines = ["IPVS connection entries", head]
    for c in conns:
        protocol = str(c["protocol"])
        expires = max(0, int(c.get("expires", 0)))
        expire = f"{expires // 60:02d}:{expires % 60:02d}"
        dest = _name(str(c["server"]), protocol, numeric)
        row = (f"{protocol.upper():<3} {expire:<6} {c.get('state', 'NONE')!s:<11} "
               f"{_name(str(c['client']), protocol, numeric):<18} "
               f"{_name(str(c['virtual']), protocol, numeric):<18} ")
        row += f"{dest:<18} {'':<16} " if persistent_conn else dest
        lines.append(row)
    return "\n".join(lines) + "\n"


def timeouts(values: Json) -> str:
    """``ipvsadm -L --timeout``."""
    return f"Timeout (tcp tcpfin udp): {values['tcp']} {values['tcpfin']} {values['udp']}\n"
