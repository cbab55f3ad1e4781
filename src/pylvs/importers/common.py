"""What both importers need: options, value readers that name the source line, notify hooks.

The value readers raise :class:`~pylvs.importers.tokens.ImportSyntaxError` with ``file:line``:
a value the source daemon itself would reject (``weight = x``) stops the import, as a syntax
error does; a valid setting pylvs has no equivalent for becomes a DROPPED note instead.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError

from pylvs.importers.result import Notes
from pylvs.importers.tokens import ImportSyntaxError, Node
from pylvs.model import SCHEDULERS, Endpoint, IPAddress, VirtualServerConfig

__all__ = [
    "DEFAULT_SECRET_FILE",
    "FTP_NOTE",
    "FWMARK_NOTE",
    "ImportOptions",
    "MapperBase",
    "address",
    "as_fwmark",
    "ftp",
    "interfaces",
    "ipv4",
    "netmask",
    "notify_dispatch",
    "number",
    "one_arg",
    "prefix6",
    "prefix_len",
    "scheduler",
    "whole",
]

DEFAULT_SECRET_FILE = "/etc/pylvs/ha.key"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportOptions:
    """Choices the source file cannot make: interfaces, which node this is, keepalived's -i."""

    public_interface: str | None = None  # None: from the file, else "eth0"
    private_interface: str | None = None  # None: from the file, else "eth1"
    node: str = "primary"  # piranha: write the primary's or the backup's view
    config_id: str | None = None  # keepalived -i: selects "@id" lines
    secret_file: str = DEFAULT_SECRET_FILE  # pylvs heartbeats are signed; neither source was


class MapperBase:
    """What every mapper holds: the parsed file, its name, the options and the notes."""

    def __init__(self, nodes: list[Node], source: str, opts: ImportOptions) -> None:
        self.nodes = nodes
        self.source = source
        self.opts = opts
        self.notes = Notes()


def one_arg(node: Node) -> str:
    """The single value of ``node`` (``key = value`` / ``key value``)."""
    if not node.args:
        raise ImportSyntaxError(node.where, f"{node.keyword}: a value is missing")
    return node.args[0]


def whole(node: Node, text: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    """An integer ``lo..hi`` written at ``node``."""
    try:
        value = int(text, 10)
    except ValueError:
        raise ImportSyntaxError(node.where, f"{node.keyword}: expected an integer, got "
                                f"{text!r}") from None
    if not lo <= value <= hi:
        raise ImportSyntaxError(node.where, f"{node.keyword}: expected {lo}..{hi}, got {value}")
    return value


def number(node: Node, text: str) -> float:
    """A non-negative number of seconds (``2.5``) written at ``node``."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ImportSyntaxError(node.where, f"{node.keyword}: expected a number of seconds, "
                                f"got {text!r}")
    return value


def ipv4(node: Node, text: str) -> IPv4Address:
    """An IPv4 address written at ``node``."""
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise ImportSyntaxError(node.where, f"{node.keyword}: expected an IPv4 address, got "
                                f"{text!r}") from None


def address(node: Node, text: str) -> IPAddress:
    """An IPv4 or IPv6 address written at ``node``."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ImportSyntaxError(node.where, f"{node.keyword}: expected an IPv4 or IPv6 address, "
                                f"got {text!r}") from None


def prefix6(node: Node, text: str) -> int:
    """An IPv6 persistence granularity: a prefix length 1..128 (``64`` or ``/64``)."""
    return whole(node, text.removeprefix("/"), 1, 128)


def netmask(node: Node, text: str) -> IPv4Address:
    """A contiguous dotted netmask (``255.255.255.0``) or a prefix length, as an address."""
    return IPv4Network(f"0.0.0.0/{prefix_len(node, text)}").netmask


def prefix_len(node: Node, text: str) -> int:
    """The prefix length of a dotted netmask or of ``/24``-style text."""
    try:
        return IPv4Network(f"0.0.0.0/{text.lstrip('/')}").prefixlen
    except (NetmaskValueError, ValueError):
        raise ImportSyntaxError(node.where, f"{node.keyword}: expected a netmask like "
                                f"255.255.255.0, got {text!r}") from None


def scheduler(node: Node, text: str) -> str | None:
    """A scheduler name pylvs has, or None (the caller notes it as dropped)."""
    return text if text in SCHEDULERS else None


FTP_NOTE = ("port 21: imported with ftp = true, so pylvs's FTP helper follows the data "
            "connections (docs/ipvs.md#ftp); set ftp = false if this is not FTP")


def ftp(vs: VirtualServerConfig, notes: Notes, table: str, node: Node) -> VirtualServerConfig:
    """``vs`` with ``ftp = true`` when it is an IPv4 TCP service on port 21 (noted)."""
    if (vs.protocol != "tcp" or vs.fwmark or vs.address.port != 21
            or vs.address.address.version != 4):
        return vs
    notes.info(table, node, FTP_NOTE)
    return replace(vs, ftp=True)


FWMARK_NOTE = ("a firewall-mark service: the packets need the mark, set by an nftables rule "
               "in the prerouting hook (docs/ipvs.md#fwmark)")


def as_fwmark(vs: VirtualServerConfig, mark: int, check_port: int) -> VirtualServerConfig:
    """``vs`` as the firewall-mark service ``mark``: its address (if any) and its real servers
    lose their port, so a probing check is given ``check_port`` instead."""
    check = vs.check
    if check.port is None and check.type not in ("none", "exec") and check_port:
        check = replace(check, port=check_port)
    reals = tuple(replace(rs, address=Endpoint(rs.address.address, 0))
                  for rs in vs.real_servers)
    return replace(vs, fwmark=mark, address=Endpoint(vs.address.address, 0), check=check,
                   real_servers=reals)


def notify_dispatch(commands: Mapping[str, str]) -> str:
    """One pylvs ``ha.notify`` command that runs the source's per-role commands.

    pylvs runs ``notify <new-role> <old-role>`` with roles ``active``, ``backup``, ``fault``
    (and ``init``); piranha and keepalived name one command per role instead.  The result is a
    small ``sh -c`` dispatcher on ``$1`` (``commands`` maps a role pattern such as
    ``"backup|fault"`` to the source command, run through the shell as the source daemon did).
    """
    cases = " ".join(f"{role}) {cmd} ;;" for role, cmd in commands.items())
    script = f'case "$1" in {cases} esac'
    return f"sh -c {shlex.quote(script)} pylvs-notify"


def interfaces(opts: ImportOptions, public: str | None, private: str | None,
               notes: Notes, source: str) -> tuple[str, str]:
    """``director.public_interface`` and ``private_interface``: options, then the file.

    An interface the file does not name is assumed (eth0 public, eth1 private, or the other
    one when the file names that one) and noted; pylvs needs two different interfaces.
    """
    pub = opts.public_interface or public
    priv = opts.private_interface or private
    if pub is None:
        pub = "eth1" if priv == "eth0" else "eth0"
        notes.info("director", source, f"public_interface is not in the file: assumed {pub}, "
                   "or pass --public-interface")
    if priv is None:
        priv = "eth0" if pub == "eth1" else "eth1"
        notes.info("director", source, f"private_interface is not in the file: assumed {priv}, "
                   "or pass --private-interface")
    if pub == priv:
        priv = "eth1" if pub != "eth1" else "eth0"
        notes.dropped("director", source, f"the file uses {pub} for both the clients' and the "
                      f"real servers' side; pylvs needs two interfaces: private_interface "
                      f"assumed {priv}")
    return pub, priv
