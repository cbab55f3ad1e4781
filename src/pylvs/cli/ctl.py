"""``pylvs ctl``: ipvsadm's command line against a running director; ``pylvs status``.

The options, their checks and their messages follow ipvsadm 1.2x (``ipvsadm.c``): the first
command wins, options are checked against the same command/option table, and listings print
ipvsadm's layouts (:mod:`pylvs.cli.layouts`).  Differences, all deliberate:

* pylvs is a NAT director, so ``-m`` is the only forwarding method: ``-g`` and ``-i`` are refused,
  and a server added without any of them is masqueraded.
* one-packet scheduling (``-o``) and the kernel sync daemon (``--start-daemon``/
  ``--stop-daemon``; pylvs syncs through ``[ha]``) are refused with a reason.  Firewall-mark
  services (``-f``, IPv6 ones ``-f 1 -6``) work as in IPVS once the operator's nftables
  rules mark the packets (docs/ipvs.md#fwmark).
* ``-R`` applies all the lines it reads as one change: if any line is invalid, none is applied.
* ``-S`` saves the configured weights, not the ones a failing health check has lowered.
* ``-L`` shows the weight the scheduler uses now (0 while a health check has the server down),
  like the kernel's; ``(size=N)`` is the engine's connection limit (``max_connections``).
* Health checks: ipvsadm configures a kernel that probes nothing, so a service made by ``-A``
  (also through ``-R``) has no health check (``check.type = "none"``) and a server added to it
  with ``-a -w 4`` lists weight 4 at once.  To have its servers probed, give the service a
  check through the API (``PATCH /api/v1/services/tcp/VIP:PORT`` with ``{"check": {"type":
  "tcp"}}``) or define it in the config file.  A server added with ``-a`` to a service that
  has a check is probed at once and listed with its weight as soon as it passes (weight 0
  until then, and while it fails).
* ``--save-config [FILE]`` (pylvs only) writes the running configuration, runtime changes
  included, as TOML: without FILE to the daemon's own file (``[api] write_config = true``),
  else to FILE (``-``: stdout).  A SIGHUP reload makes the file the whole truth again.
* ``--socket PATH`` picks the daemon's control socket (default: ``[api] socket``);
  ``--url https://host:port --token-file FILE [--cacert FILE]`` talks to the TCP listener
  instead (``[api] listen``, with TLS when ``tls_cert``/``tls_key`` are set).
* ``--ports 80,443,10000-10100`` with ``-A``/``-E`` on a port-0 service limits it to those
  ports (the config's ``ports``); ``-S`` writes it so ``-R`` restores it.  ``--ftp`` likewise
  turns the FTP helper on (the config's ``ftp = true``; ipvsadm has no switch: the kernel's
  ip_vs_ftp module watches its ports).
"""

from __future__ import annotations

import shlex
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address, IPv6Address
from typing import Any

from pylvs import __version__, model
from pylvs import config as config_mod
from pylvs.api import codec
from pylvs.api.client import ApiClient, ApiError, path_for
from pylvs.cli import layouts
from pylvs.cli.status import render_status
from pylvs.errors import ConfigError

__all__ = ["CtlError", "Request", "main", "parse_args", "status_main"]

DEFAULT_SCHEDULER = "wlc"
DEFAULT_PERSISTENCE = 360  # IPVS_SVC_PERSISTENT_TIMEOUT
MAX_TIMEOUT = 86400 * 31

# ipvsadm's command and option names (cmdnames / optnames), in table order.
COMMANDS = (
    "add-service", "edit-service", "delete-service", "flush", "list", "add-server",
    "delete-server", "edit-server", "set", "restore", "save", "zero", "save-config",
)
OPTIONS = (
    "numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
    "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold", "timeout",
    "daemon", "stats", "rate", "thresholds", "persistent-conn", "nosort", "exact",
    "sched-flags", "synproxy",
)
# commands_v_options, one character per option in OPTIONS order: '+' required, 'x' illegal,
# '1' at most one of them, '.' optional.
_TABLE = {
    #                  ncSspMrfwxyTdSRtPNebj
    "add-service":    "xx+...xxxxxxxxxxxxx..",
    "edit-service":   "xx+...xxxxxxxxxxxxx..",
    "delete-service": "xx+xxxxxxxxxxxxxxxxxx",
    "flush":          "xxxxxxxxxxxxxxxxxxxxx",
    "list":           ".11xxxxxxxx11......xx",
    "add-server":     "xx+xxx+....xxxxxxxxxx",
    "delete-server":  "xx+xxx+xxxxxxxxxxxxxx",
    "edit-server":    "xx+xxx+....xxxxxxxxxx",
    "set":            "xxxxxxxxxxxxxxxxxxxxx",
    "restore":        "xxxxxxxxxxxxxxxxxxxxx",
    "save":           ".xxxxxxxxxxxxxxxxxxxx",
    "zero":           "xx.xxxxxxxxxxxxxxxxxx",
    "save-config":    "xxxxxxxxxxxxxxxxxxxxx",  # pylvs only: the running state as TOML
}
assert all(len(row) == len(OPTIONS) for row in _TABLE.values())

COMMAND_OPTIONS = {cmd: dict(zip(OPTIONS, row, strict=True)) for cmd, row in _TABLE.items()}

_SHORT_COMMANDS = {"A": "add-service", "E": "edit-service", "D": "delete-service", "C": "flush",
                   "L": "list", "l": "list", "a": "add-server", "e": "edit-server",
                   "d": "delete-server", "R": "restore", "S": "save", "Z": "zero"}
_LONG_COMMANDS = {"add-service": "add-service", "edit-service": "edit-service",
                  "delete-service": "delete-service", "clear": "flush", "list": "list",
                  "add-server": "add-server", "edit-server": "edit-server",
                  "delete-server": "delete-server", "restore": "restore", "save": "save",
                  "zero": "zero", "set": "set", "save-config": "save-config"}
# option letter/long name -> (option name in the table, takes an argument)
_SHORT_OPTIONS = {"t": ("tcp", True), "u": ("udp", True), "f": ("fwmark", True),
                  "s": ("scheduler", True), "p": ("persistent", None), "M": ("netmask", True),
                  "r": ("real-server", True), "m": ("masquerading", False),
                  "g": ("gatewaying", False), "i": ("ipip", False), "w": ("weight", True),
                  "x": ("u-threshold", True), "y": ("l-threshold", True),
                  "n": ("numeric", False), "c": ("connection", False), "X": ("exact", False),
                  "b": ("sched-flags", True), "j": ("synproxy", True), "o": ("ops", False),
                  "6": ("ipv6", False),
                  "h": ("help", False), "v": ("version", False)}
_LONG_OPTIONS = {"tcp-service": ("tcp", True), "udp-service": ("udp", True),
                 "fwmark-service": ("fwmark", True), "scheduler": ("scheduler", True),
                 "persistent": ("persistent", None), "netmask": ("netmask", True),
                 "real-server": ("real-server", True), "masquerading": ("masquerading", False),
                 "gatewaying": ("gatewaying", False), "ipip": ("ipip", False),
                 "weight": ("weight", True), "u-threshold": ("u-threshold", True),
                 "l-threshold": ("l-threshold", True), "numeric": ("numeric", False),
                 "connection": ("connection", False), "timeout": ("timeout", False),
                 "daemon": ("daemon", False), "stats": ("stats", False),
                 "rate": ("rate", False), "thresholds": ("thresholds", False),
                 "persistent-conn": ("persistent-conn", False), "nosort": ("nosort", False),
                 "sort": ("sort", False), "exact": ("exact", False),
                 "sched-flags": ("sched-flags", True), "ops": ("ops", False),
                 "synproxy": ("synproxy", True),
                 "ipv6": ("ipv6", False), "help": ("help", False), "version": ("version", False),
                 "start-daemon": ("start-daemon", True), "stop-daemon": ("stop-daemon", True),
                 "mcast-interface": ("mcast-interface", True), "syncid": ("syncid", True),
                 "socket": ("socket", True), "url": ("url", True),
                 "token-file": ("token-file", True), "cacert": ("cacert", True),
                 "ports": ("ports", True), "ftp": ("ftp", False)}
_REFUSED = {
    "gatewaying": "-g (direct routing) is not supported: pylvs is a NAT director; use -m",
    "ipip": "-i (IPIP tunnelling) is not supported: pylvs is a NAT director; use -m",
    "ops": "-o (one-packet scheduling) is not supported",
    "start-daemon": "--start-daemon is not supported: connection sync runs with [ha] sync = true",
    "stop-daemon": "--stop-daemon is not supported: connection sync runs with [ha] sync = true",
    "mcast-interface": "--mcast-interface is not supported: see [ha] in the config file",
    "syncid": "--syncid is not supported: see [ha] in the config file",
}


class CtlError(Exception):
    """A command-line mistake; ``status`` is the exit code (2, like ipvsadm's ``fail(2, …)``)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    """One parsed ipvsadm command line."""

    command: str = "list"
    options: set[str] = field(default_factory=set)
    protocol: str = "tcp"
    service: model.Endpoint | None = None  # 0.0.0.0:0 for a fwmark service
    fwmark: int = 0  # -f
    ftp: bool | None = None  # --ftp (pylvs only: the FTP helper on this service)
    ports: str | None = None  # --ports 80,443,10000-10100 (pylvs only: a port-list service)
    server: model.Endpoint | None = None
    scheduler: str = DEFAULT_SCHEDULER
    persistence: int = 0
    netmask: str | int = "255.255.255.255"  # an IPv6 service: a prefix length 1..128
    flags: list[str] = field(default_factory=list)
    synproxy: bool | None = None  # -j enable|disable (Alibaba LVS's ipvsadm)
    weight: int = 1
    upper_threshold: int = 0
    lower_threshold: int = 0
    timeouts: tuple[int, int, int] | None = None
    save_to: str | None = None  # --save-config=FILE ("-": stdout); None: the daemon's file
    socket: str | None = None
    connect: dict[str, str] = field(default_factory=dict)  # url, token-file, cacert
    help: bool = False
    version: bool = False


def _number(text: str, low: int, high: int, what: str) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise CtlError(f"illegal {what} specified")
    return int(text)


def _endpoint(
    text: str, protocol: str, what: str, default_port: int
) -> tuple[model.Endpoint, bool]:
    """``parse_service``: host[:port] or [v6]:port, names resolved; (endpoint, port given).

    As ipvsadm: brackets need a port after them, a bare IPv6 address has none, and names
    resolve to IPv4 only (``host_to_addr`` asks for AF_INET).
    """
    illegal = CtlError(f"illegal {what} address[:port] specified")
    if text.isdigit():
        raise illegal
    try:
        host, port_text = model.split_hostport(text)
    except ValueError:
        raise illegal from None
    if text.startswith("[") and port_text is None:
        raise illegal
    port_text = port_text or ""
    if not host:
        raise illegal
    address: model.IPAddress
    try:
        address = model.parse_address(host)
    except ValueError:
        if text.startswith("["):
            raise illegal from None
        try:
            address = IPv4Address(socket.gethostbyname(host))
        except (OSError, UnicodeError):
            raise illegal from None
    if not port_text:
        return model.Endpoint(address, default_port), False
    if port_text.isdigit() and int(port_text) <= 65535:
        return model.Endpoint(address, int(port_text)), True
    try:
        return model.Endpoint(address, socket.getservbyname(port_text, protocol)), True
    except OSError:
        raise CtlError(f"illegal {what} address[:port] specified") from None


def _tokens(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """Split argv into (name, value) items, expanding ``-Ln`` and ``--opt=value``."""
    out: list[tuple[str, str | None]] = []
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            spec = _LONG_OPTIONS.get(name)
            if name in _LONG_COMMANDS:
                out.append((_LONG_COMMANDS[name], None))
                if eq:
                    out.append(("", value))  # --save-config=FILE
                continue
            if spec is None:
                raise CtlError(f"invalid option `{arg}'")
            takes = spec[1]
            if eq:
                out.append((spec[0], value))
            elif takes or (takes is None and i < len(args) and not args[i].startswith("-")):
                if takes and i >= len(args):
                    raise CtlError(f"{arg}: missing argument")
                out.append((spec[0], args[i] if i < len(args) else None))
                i += 1
            else:
                out.append((spec[0], None))
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            j = 0
            while j < len(letters):
                ch = letters[j]
                j += 1
                if ch in _SHORT_COMMANDS:
                    out.append((_SHORT_COMMANDS[ch], None))
                    continue
                spec = _SHORT_OPTIONS.get(ch)
                if spec is None:
                    raise CtlError(f"invalid option `-{ch}'")
                name, takes = spec
                if takes is False:
                    out.append((name, None))
                    continue
                rest = letters[j:]
                j = len(letters)
                if rest:
                    out.append((name, rest))
                elif takes or (i < len(args) and not args[i].startswith("-")):
                    if i >= len(args):
                        raise CtlError(f"-{ch}: missing argument")
                    out.append((name, args[i]))
                    i += 1
                else:
                    out.append((name, None))
        else:
            out.append(("", arg))  # positional (only --set takes them)
    return out


def parse_args(argv: Sequence[str]) -> Request:
    """Parse an ipvsadm command line into a :class:`Request`; :class:`CtlError` on mistakes."""
    req = Request()
    command: str | None = None
    positional: list[str] = []
    pending_server: str | None = None
    pending_netmask: str | None = None
    for name, value in _tokens(argv):
        if name in COMMAND_OPTIONS:
            if command is not None:
                raise CtlError("multiple commands specified")
            command = name
            continue
        if name in _REFUSED:
            raise CtlError(_REFUSED[name])
        if name == "ipv6":
            # ipvsadm's -6 only qualifies a -f given before it (a firewall mark has no address
            # to say its family); an IPv6 -t/-u/-r address is written [2001:2::100]:80.
            if not req.fwmark:
                raise CtlError("-6 used before -f")
            req.service = model.Endpoint(IPv6Address(0), 0)
            continue
        if name == "":
            positional.append(str(value))
            continue
        if name == "help":
            req.help = True
            continue
        if name == "version":
            req.version = True
            continue
        if name == "socket":
            req.socket = value
            continue
        if name in ("url", "token-file", "cacert"):
            req.connect[name] = value or ""
            continue
        if name == "sort":
            continue
        if name in ("ports", "ftp"):  # pylvs's own service options, outside ipvsadm's table
            setattr(req, name, value if name == "ports" else True)
            continue
        option = {"tcp": "service-address", "udp": "service-address",
                  "fwmark": "service-address",
                  "masquerading": "forwarding-method"}.get(name, name)
        if option in req.options:
            raise CtlError(f"multiple '{option}' options specified")
        req.options.add(option)
        text = value or ""
        if name in ("tcp", "udp"):
            req.protocol = name
            req.service, _ = _endpoint(text, name, "virtual server", 0)
        elif name == "fwmark":
            req.fwmark = _number(text, 1, 2**32 - 1, "fwmark")
            req.service = model.Endpoint(IPv4Address(0), 0)
        elif name == "scheduler":
            req.scheduler = text
        elif name == "persistent":
            req.persistence = (DEFAULT_PERSISTENCE if value is None
                               else _timeout(text, 1))
        elif name == "netmask":
            pending_netmask = text
        elif name == "real-server":
            pending_server = text
        elif name == "weight":
            req.weight = _number(text, 0, 65535, "weight")
        elif name == "u-threshold":
            req.upper_threshold = _number(text, 0, 2**31 - 1, "u_threshold")
        elif name == "l-threshold":
            req.lower_threshold = _number(text, 0, 2**31 - 1, "l_threshold")
        elif name == "sched-flags":
            req.flags = [f for f in text.split(",") if f]
            for flag in req.flags:
                if flag not in model.SCHEDULER_FLAGS:
                    raise CtlError(f"invalid scheduler flag `{flag}'")
        elif name == "synproxy":
            if text not in ("enable", "disable"):
                raise CtlError(f"invalid synproxy value `{text}' (expected enable or disable)")
            req.synproxy = text == "enable"
    if command is None:
        if req.help or req.version:
            command = "list"
        elif not req.options and not positional:
            command = "list"  # ipvsadm with no arguments lists the table
        else:
            raise CtlError("no command specified (try -h)")
    req.command = command
    if pending_netmask is not None:
        req.netmask = _netmask(pending_netmask, req.service)
    for flag in req.flags:
        # parse_sched_flags runs once the scheduler is known (-s may follow -b); wlc without -s.
        wants = model.FLAG_SCHEDULER.get(flag)
        if wants is not None and wants != req.scheduler:
            raise CtlError(f"incompatible scheduler flag `{flag}'")
    if pending_server is not None:
        port = req.service.port if req.service else 0
        req.server, _ = _endpoint(pending_server, req.protocol, "real server", port)
    if command == "save-config":
        if len(positional) > 1:
            raise CtlError(f"unexpected argument {positional[1]}")
        req.save_to = positional[0] if positional else None
    elif command == "set":
        if len(positional) != 3:
            raise CtlError("--set option requires 3 timeout values")
        tcp, tcpfin, udp = (_timeout(v, 0) for v in positional)
        req.timeouts = (tcp, tcpfin, udp)
    elif positional:
        raise CtlError(f"unexpected argument {positional[0]}")
    if not (req.help or req.version):
        _check_table(command, req.options)
    if (command in ("add-service", "edit-service") and req.service is not None
            and req.service.port == 0 and not req.persistence and not req.fwmark
            and not req.ports):
            raise CtlError("Zero port specified for non-persistent service")
    return req


def _netmask(text: str, service: model.Endpoint | None) -> str | int:
    """``-M``: a dotted mask for an IPv4 service, a prefix length 1..128 for an IPv6 one."""
    if service is not None and service.address.version == 6:
        if not text.isdigit() or not 1 <= int(text) <= 128:
            raise CtlError("illegal ipv6 netmask specified")
        return int(text)
    try:
        return str(IPv4Address(text))
    except AddressValueError:
        raise CtlError("illegal virtual server persistent mask specified") from None


def _timeout(text: str, low: int) -> int:
    if not text.isdigit() or not low <= int(text) <= MAX_TIMEOUT:
        raise CtlError(f"invalid timeout value `{text}' specified")
    return int(text)


def _check_table(command: str, options: set[str]) -> None:
    """``generic_opt_check``: the command/option compatibility table."""
    row = COMMAND_OPTIONS[command]
    exclusive: str | None = None
    for opt in OPTIONS:
        rule = row[opt]
        if opt not in options:
            if rule == "+":
                raise CtlError(f"You need to supply the '{opt}' option for the '{command}' command")
            continue
        if rule == "x":
            raise CtlError(f"Illegal '{opt}' option with the '{command}' command")
        if rule == "1":
            if exclusive is not None:
                raise CtlError(f"The option '{opt}' conflicts with the '{exclusive}' option "
                               f"in the '{command}' command")
            exclusive = opt
    # --persistent-conn also goes with -c (ipvsadm adds the persistence-engine columns).
    if command == "list" and options & {"connection", "timeout", "daemon"} and options & {
        "stats", "rate", "thresholds"
    }:
        raise CtlError("options conflicts in the list command")
    if command == "list" and options & {"timeout", "daemon"} and "persistent-conn" in options:
        raise CtlError("options conflicts in the list command")


# ---------------------------------------------------------------------------------------------
# requests to the daemon


def _service_body(req: Request) -> dict[str, Any]:
    assert req.service is not None
    ident: dict[str, Any] = ({"fwmark": req.fwmark} if req.fwmark else
                             {"protocol": req.protocol, "address": str(req.service)})
    body = {**ident, "scheduler": req.scheduler, "persistence": req.persistence,
            "netmask": req.netmask, "flags": req.flags}
    if req.synproxy is not None:
        body["synproxy"] = req.synproxy
    if req.ftp is not None:
        body["ftp"] = req.ftp
    if req.ports is not None:
        body["ports"] = [p for p in req.ports.split(",") if p]
    return body


def _sid(req: Request) -> tuple[str, str]:
    """The service's (protocol, address) in API paths: ``("fwm", "80")`` for ``-f 80``,
    ``("fwm6", "80")`` for ``-f 80 -6``."""
    if req.fwmark:
        assert req.service is not None
        return ("fwm6" if req.service.address.version == 6 else "fwm"), str(req.fwmark)
    return req.protocol, str(req.service)


def _server_body(req: Request) -> dict[str, Any]:
    return {"weight": req.weight, "upper_threshold": req.upper_threshold,
            "lower_threshold": req.lower_threshold}


def _new_service_body(req: Request) -> dict[str, Any]:
    # ipvsadm's kernel probes nothing: a service made by -A is unchecked (see the module doc).
    body = {**_service_body(req), "check": {"type": "none"}}
    if req.fwmark and req.service is not None and req.service.address.version == 6:
        body["address"] = str(req.service)  # -f 1 -6: the address says the family ([::]:0)
    return body


def to_operation(req: Request) -> dict[str, Any]:
    """The ``/api/v1/batch`` operation for a mutating command (used by ``-R``)."""
    proto, address = _sid(req)
    svc = {"protocol": proto, "address": address}
    if req.command == "add-service":
        return {"op": "add_service", "service": _new_service_body(req)}
    if req.command == "edit-service":
        changes = _service_body(req)
        return {"op": "edit_service", **svc, "changes": changes}
    if req.command == "delete-service":
        return {"op": "delete_service", **svc}
    if req.command == "flush":
        return {"op": "clear"}
    if req.command == "add-server":
        return {"op": "add_server", **svc,
                "server": {"address": str(req.server), **_server_body(req)}}
    if req.command == "edit-server":
        return {"op": "edit_server", **svc, "server_address": str(req.server),
                "changes": _server_body(req)}
    if req.command == "delete-server":
        return {"op": "delete_server", **svc, "server_address": str(req.server)}
    if req.command == "set":
        assert req.timeouts is not None
        return {"op": "set_timeouts",
                "timeouts": dict(zip(("tcp", "tcpfin", "udp"), req.timeouts, strict=True))}
    raise CtlError(f"the '{req.command}' command cannot be restored")


def _format(req: Request) -> layouts.Format:
    o = req.options
    return layouts.Format(numeric="numeric" in o, stats="stats" in o, rate="rate" in o,
                          thresholds="thresholds" in o, persistent_conn="persistent-conn" in o,
                          exact="exact" in o, nosort="nosort" in o)


def run(req: Request, client: ApiClient, stdin: Any = None) -> str:
    """Carry out *req* against the daemon and return what ipvsadm would print."""
    cmd = req.command
    if cmd == "list":
        return _list(req, client)
    if cmd == "save":
        services = client.get("/api/v1/services")["services"]
        return layouts.rules(services, numeric="numeric" in req.options)
    if cmd == "restore":
        return _restore(client, sys.stdin if stdin is None else stdin)
    if cmd == "zero":
        body = {} if req.service is None else {"service": "/".join(_sid(req))}
        client.post("/api/v1/zero", body)
        return ""
    if cmd == "set":
        assert req.timeouts is not None
        client.put("/api/v1/timeouts", dict(zip(("tcp", "tcpfin", "udp"), req.timeouts,
                                                strict=True)))
        return ""
    if cmd == "flush":
        client.delete("/api/v1/services")
        return ""
    if cmd == "save-config":
        return _save_config(client, req.save_to)
    assert req.service is not None
    svc_path = path_for(*_sid(req))
    if cmd == "add-service":
        client.post("/api/v1/services", _new_service_body(req))
    elif cmd == "edit-service":
        client.patch(svc_path, _service_body(req))
    elif cmd == "delete-service":
        client.delete(svc_path)
    elif cmd == "add-server":
        client.post(svc_path + "/servers", {"address": str(req.server), **_server_body(req)})
    elif cmd == "edit-server":
        client.patch(path_for(*_sid(req), str(req.server)),
                     _server_body(req))
    elif cmd == "delete-server":
        client.delete(path_for(*_sid(req), str(req.server)))
    return ""


def _list(req: Request, client: ApiClient) -> str:
    o = req.options
    if "connection" in o:
        conns = client.get("/api/v1/connections")["connections"]
        return layouts.connections(conns, numeric="numeric" in o,
                                   persistent_conn="persistent-conn" in o)
    if "timeout" in o:
        return layouts.timeouts(client.get("/api/v1/timeouts"))
    if "daemon" in o:
        return _daemon_lines(client.get("/api/v1/status"))
    fmt = _format(req)
    if req.service is not None:
        svc = client.get(path_for(*_sid(req)))
        return layouts.listing([svc], fmt, single=True)
    services = client.get("/api/v1/services")["services"]
    size = int(client.get("/api/v1/stats").get("table_size", 4096))
    return layouts.listing(services, fmt, table_size=size)


def _save_config(client: ApiClient, target: str | None) -> str:
    """``--save-config [FILE]``: the running configuration (with every runtime change) as TOML.

    Without FILE the daemon rewrites its own file (``[api] write_config = true`` required), so
    the next SIGHUP keeps what ``pylvs ctl`` changed; with FILE (``-`` for stdout) the TOML is
    written here, from ``GET /api/v1/config``, and the daemon needs no write permission.
    """
    if target is None:
        try:
            written = client.post("/api/v1/config/save")
        except ApiError as exc:
            if exc.status == 403:
                raise CtlError(f"{exc.message} (set it in [api], or use --save-config FILE to "
                               "write the TOML here)", 1) from None
            raise
        return f"written: {written['written']}\n"
    data = dict(client.get("/api/v1/config"))
    data.pop("source", None)
    try:
        cfg = codec.decode_dataclass(model.Config, data, "config")
    except ConfigError as exc:
        raise CtlError(f"the daemon's configuration did not decode: {exc}", 1) from None
    text = config_mod.dump_toml(cfg)
    if target == "-":
        return text
    try:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise CtlError(f"{target}: {exc.strerror or exc}", 1) from None
    return ""


def _daemon_lines(status: dict[str, Any]) -> str:
    """``--daemon``: the HA connection sync stands in for the kernel's sync daemon."""
    ha = status.get("ha") or {}
    if not ha.get("enabled") or not ha.get("sync"):
        return ""
    role = str(ha.get("role", "")).lower()
    iface = status.get("director", {}).get("public_interface", "eth0")
    kind = "master" if role in ("master", "active") else "backup"
    return f"{kind} sync daemon (mcast={iface}, syncid=0)\n"


def _restore(client: ApiClient, stream: Any) -> str:
    ops = []
    for lineno, line in enumerate(stream, 1):
        # shlex is most of the cost of a large restore; plain lines need none of it
        words = (shlex.split(line, comments=True) if any(c in line for c in "'\"\\#")
                 else line.split())
        if words[:1] == ["ipvsadm"]:
            words = words[1:]
        elif words[:2] == ["pylvs", "ctl"]:
            words = words[2:]
        if not words:
            continue
        try:
            sub = parse_args(words)
            ops.append(to_operation(sub))
        except CtlError as exc:
            raise CtlError(f"line {lineno}: {exc}", exc.status) from None
    client.post("/api/v1/batch", {"operations": ops})
    return ""


USAGE = """\
pylvs ctl {version} (ipvsadm-compatible; IPVS v{ipvs})
Usage:
  pylvs ctl -A|E -t|u|f service-address [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
                  [-j enable|disable]
  pylvs ctl -D -t|u|f service-address
  pylvs ctl -C
  pylvs ctl -R
  pylvs ctl -S [-n]
  pylvs ctl -a|e -t|u|f service-address -r server-address [-m] [-w weight] [-x upper] [-y lower]
  pylvs ctl -d -t|u|f service-address -r server-address
  pylvs ctl -L|l [-t|u|f service-address] [-n] [-c] [--timeout] [--daemon] [--stats] [--rate]
            [--thresholds] [--persistent-conn] [--exact] [--nosort]
  pylvs ctl -Z [-t|u|f service-address]
  pylvs ctl --set tcp tcpfin udp
  pylvs ctl --save-config [FILE|-]   the running state as TOML (no FILE: the daemon's own file)
  pylvs ctl -h
Every form also takes --socket PATH (default {socket}), or
--url http[s]://host:port --token-file FILE [--cacert FILE] for the TCP listener.
Schedulers: {schedulers}. Forwarding is always NAT (-m); -g and -i are refused.
"""


def _usage() -> str:
    return USAGE.format(version=__version__, ipvs=layouts.IPVS_VERSION,
                        socket=model.ApiConfig().socket, schedulers=" ".join(model.SCHEDULERS))


def main(argv: Sequence[str]) -> int:
    """Run ``pylvs ctl`` with ipvsadm's *argv*; return the exit status."""
    try:
        req = parse_args(argv)
    except CtlError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    if req.help:
        print(_usage(), end="")
        return 0
    if req.version:
        print(f"pylvs ctl {__version__} (ipvsadm-compatible; IPVS v{layouts.IPVS_VERSION})")
        return 0
    try:
        client = make_client(req.socket, req.connect)
        out = run(req, client)
    except CtlError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except ApiError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


def make_client(socket_path: str | None, connect: dict[str, str]) -> ApiClient:
    """The client for ``--socket`` or ``--url``/``--token-file``/``--cacert``."""
    url = connect.get("url")
    if url is None:
        if set(connect) - {"url"}:
            raise CtlError("--token-file and --cacert need --url")
        return ApiClient(socket_path or model.ApiConfig().socket)
    if socket_path is not None:
        raise CtlError("--socket and --url are exclusive")
    token = None
    if "token-file" in connect:
        try:
            with open(connect["token-file"], encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise CtlError(f"--token-file: cannot read {connect['token-file']}: "
                           f"{exc.strerror or exc}") from None
    try:
        return ApiClient(url, token=token, cafile=connect.get("cacert"))
    except ApiError as exc:
        raise CtlError(exc.message) from None


STATUS_HELP = """\
usage: pylvs status [--socket PATH | --url http[s]://host:port --token-file FILE [--cacert FILE]]

Print a summary of a running director (`pylvs serve`): its role in the HA pair and the
peer, the packet engine's counters and drops, and every virtual service with its real
servers, their health and weights.  It asks the daemon's control API
(the Unix socket, default {socket}; or the TCP listener with its bearer token).
For ipvsadm's tables use `pylvs ctl -Ln`; for metrics, GET /metrics.
"""


def status_main(argv: Sequence[str]) -> int:
    """``pylvs status [--socket PATH | --url URL ...]``: a human summary of a running director."""
    socket_path: str | None = None
    connect: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(STATUS_HELP.format(socket=model.ApiConfig().socket).rstrip())
            return 0
        name, eq, value = arg.partition("=")
        if name in ("--socket", "--url", "--token-file", "--cacert"):
            if not eq:
                if not args:
                    print(f"pylvs status: {name}: missing argument", file=sys.stderr)
                    return 2
                value = args.pop(0)
            if name == "--socket":
                socket_path = value
            else:
                connect[name[2:]] = value
        else:
            print(f"pylvs status: unexpected argument {arg!r} (try --help)", file=sys.stderr)
            return 2
    try:
        status = make_client(socket_path, connect).get("/api/v1/status")
    except CtlError as exc:
        print(f"pylvs status: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"pylvs status: {exc.message}", file=sys.stderr)
        return 1
    sys.stdout.write(render_status(status))
    return 0
