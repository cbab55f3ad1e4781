"""TOML configuration file -> :class:`pylvs.model.Config`, and back.

The conversion is driven by the dataclasses in :mod:`pylvs.model`: every field's annotation says
what the TOML value must be, so adding a key to the model adds it to the file format.  Problems
are collected rather than raised one at a time, and each one names the file, the key path as the
operator wrote it (``virtual_server[0].real_server[2].weight``) and what was expected.

* :func:`load` / :func:`parse` read a file or text and validate it.
* :func:`validate` does the checks a single key cannot (duplicate services, unknown schedulers,
  HA settings that belong together ...).  It runs on every parsed file and on configs built in
  code (the API builds one per request).
* :func:`dump_toml` writes a config that :func:`parse` reads back equal.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import operator
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from ipaddress import AddressValueError, IPv4Address, IPv4Interface, IPv4Network, IPv6Interface
from pathlib import Path
from typing import Any, Literal

from pylvs import model
from pylvs.errors import ConfigError
from pylvs.model import Config, Endpoint

__all__ = ["ConfigFileError", "dump_toml", "load", "parse", "removals", "validate", "warnings"]

# Model field name -> TOML key where they differ (the file uses singular array-of-table names,
# like keepalived's virtual_server / real_server blocks).
_TOML_NAME = {"virtual_servers": "virtual_server", "real_servers": "real_server",
              "routers": "router"}
_SKIP_FIELDS = {"source"}  # set by the loader, never written in the file
_ALWAYS_WRITTEN = {"protocol", "scheduler", "weight"}  # defaults worth seeing in a dump
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")  # IFNAMSIZ - 1, no slash or space


class ConfigFileError(ConfigError):
    """One or more problems in a configuration; ``problems`` lists them, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class _Problems:
    """Collects ``source: path: message`` lines while a file is converted."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        where = f"{self.source}: {path}" if path else self.source
        self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigFileError(self.items)


class _Invalid(Exception):
    """A single value did not convert; the message says what was expected."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path  # set when the failure is deeper than the key (an array item)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    # Resolved once per model class: get_type_hints per table was 2.6 s of the 3 s a
    # 10,000-server file took to load, which a SIGHUP reload waits for (issue 13).
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, vars(model))
    return hints


_FIELDS: dict[type[Any], dict[str, dataclasses.Field[Any]]] = {}


def _toml_fields(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """TOML key -> field of a model class (without the loader's own), built once per class."""
    found = _FIELDS.get(cls)
    if found is None:
        found = {_TOML_NAME.get(f.name, f.name): f for f in dataclasses.fields(cls)
                 if f.name not in _SKIP_FIELDS}
        _FIELDS[cls] = found
    return found


def _show(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# TOML -> model


def _endpoint(value: object, default_port: int | None = None) -> Endpoint:
    try:
        return Endpoint.parse(value, default_port)  # type: ignore[arg-type]  # checks the type
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _scalar(value: object, tp: Any) -> Any:
    """Convert one non-container TOML value to ``tp`` or raise :class:`_Invalid`."""
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise _Invalid(f"expected one of {', '.join(map(repr, choices))}, got {_show(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid(f"expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number, got {_show(value)}")
        if not math.isfinite(value):
            raise _Invalid(f"expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_show(value)}")
        return value
    if tp is IPv4Address:
        try:
            if isinstance(value, str):
                return IPv4Address(value)
        except AddressValueError:
            pass
        raise _Invalid(f'expected an IPv4 address "a.b.c.d", got {_show(value)}')
    if tp is Endpoint:
        return _endpoint(value)
    if tp == model.IPAddress:
        try:
            return model.parse_address(value)  # type: ignore[arg-type]  # checks the type
        except ValueError:
            raise _Invalid(f'expected an IPv4 or IPv6 address ("a.b.c.d" or "2001:db8::1"), '
                           f"got {_show(value)}") from None
    if tp == IPv4Address | int:
        # A persistence netmask: dotted for IPv4 services, a prefix length for IPv6 ones.
        return _scalar(value, int if isinstance(value, int) else IPv4Address)
    raise TypeError(f"config: no converter for {tp!r}")  # a model change this file must follow


class _Reader:
    """Builds model dataclasses from TOML tables, recording every problem it finds."""

    def __init__(self, problems: _Problems) -> None:
        self.problems = problems

    def value(self, value: object, tp: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(inner) > 1:
                return _scalar(value, functools.reduce(operator.or_, inner))
            return self.value(value, inner[0], path)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type) and tp is not Endpoint:
            return self.table(value, tp, path)
        if origin is tuple:
            item_tp = typing.get_args(tp)[0]
            if not isinstance(value, list):
                kind = "tables" if dataclasses.is_dataclass(item_tp) else "values"
                raise _Invalid(f"expected an array of {kind}, got {_show(value)}")
            items = []
            for i, item in enumerate(value):
                try:
                    items.append(self.value(item, item_tp, f"{path}[{i}]"))
                except _Invalid as exc:
                    raise _Invalid(str(exc), exc.path or f"{path}[{i}]") from None
            return tuple(items)
        return _scalar(value, tp)

    def table(self, table: object, cls: type[Any], path: str, *,
              read_elsewhere: tuple[str, ...] = (), **given: Any) -> Any:
        """Build ``cls`` from ``table``; returns None (after recording why) when it cannot.

        ``read_elsewhere`` names keys of the table the caller reads itself (a real server's
        ``address``): they are valid keys, offered as did-you-mean hints, but not fields here.
        """
        if not isinstance(table, dict):
            self.problems.add(path, f"expected a table, got {_show(table)}")
            return None
        hints = _hints(cls)
        fields = _toml_fields(cls)
        ok = True
        for key in table:
            if key not in fields and key not in given and key not in read_elsewhere:
                known = [*fields, *read_elsewhere]
                hint = difflib.get_close_matches(key, known, n=1)
                also = f" (did you mean {hint[0]!r}?)" if hint else ""
                valid = ", ".join(sorted(known))
                self.problems.add(_join(path, key), f"unknown key{also}; valid keys: {valid}")
                ok = False
        if cls is model.VirtualServerConfig:
            table = _multiport(table)
        kwargs: dict[str, Any] = dict(given)
        for key, f in fields.items():
            if f.name in given:
                continue
            sub = _join(path, key)
            if key not in table:
                no_default = f.default is dataclasses.MISSING
                if no_default and f.default_factory is dataclasses.MISSING:
                    self.problems.add(sub, "required key is missing")
                    ok = False
                continue
            try:
                if cls is model.VirtualServerConfig and key == "real_server":
                    converted = self.real_servers(table, sub)
                else:
                    converted = self.value(table[key], hints[f.name], sub)
            except _Invalid as exc:
                self.problems.add(exc.path or sub, str(exc))
                ok = False
                continue
            if converted is None or (isinstance(converted, tuple) and None in converted):
                ok = False  # the nested table already recorded its problem
            kwargs[f.name] = converted
        if not ok:
            return None
        built = cls(**kwargs)
        if cls is model.VirtualServerConfig:
            check = table.get("check")
            built = model.apply_default_check(built, isinstance(check, dict) and "type" in check)
        return built

    def real_servers(self, vs_table: dict[str, Any], path: str) -> tuple[Any, ...]:
        # A real server written without ":port" takes the virtual server's port (ipvsadm -r).
        servers = vs_table["real_server"]
        if not isinstance(servers, list):
            raise _Invalid(f"expected an array of tables [[...real_server]], got {_show(servers)}")
        try:
            port: int | None = _endpoint(vs_table.get("address")).port
        except _Invalid:
            port = None
        return tuple(
            self.real_server(rs, f"{path}[{i}]", port) for i, rs in enumerate(servers)
        )

    def real_server(self, table: object, path: str, port: int | None) -> Any:
        if not isinstance(table, dict):
            self.problems.add(path, f"expected a table, got {_show(table)}")
            return None
        before = len(self.problems.items)
        built = self.table({k: v for k, v in table.items() if k != "address"},
                           _RealServerShape, path, read_elsewhere=("address",))
        if "address" not in table:
            self.problems.add(_join(path, "address"), "required key is missing")
            return None
        try:
            address = _endpoint(table["address"], port)
        except _Invalid as exc:
            self.problems.add(_join(path, "address"), str(exc))
            return None
        if built is None or len(self.problems.items) != before:
            return None
        # the shape's fields are plain values: read them, no deep copy (asdict) per server
        return model.RealServerConfig(address=address, **{
            f.name: getattr(built, f.name) for f in _toml_fields(_RealServerShape).values()})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _RealServerShape:
    # RealServerConfig without its address, so the generic reader checks the other keys and
    # the address gets the virtual server's port as its default.
    weight: int = 1
    upper_threshold: int = 0
    lower_threshold: int = 0


def _split(text: str) -> tuple[str, str | None]:
    """``split_hostport``, with a malformed text left whole (the endpoint reader names it)."""
    try:
        return model.split_hostport(text)
    except ValueError:
        return text, ""


def _multiport(table: dict[str, Any]) -> dict[str, Any]:
    """A fwmark or ``ports`` service: its address may be written without a port (it is 0), and
    ``ports`` may be one number, a ``"80,443,10000-10100"`` string or a list of those.

    A fwmark service without an address takes its real servers' family, as keepalived's
    ``virtual_server fwmark`` does: IPv6 servers make it the mark's IPv6 service (``::``);
    its servers' ports then default to 0 as well.
    """
    if not (table.get("fwmark") or "ports" in table):
        return table
    out = dict(table)
    address = out.get("address")
    if isinstance(address, str):
        host, port = _split(address)
        if port is None:
            out["address"] = model.hostport(host, 0)
    elif address is None and table.get("fwmark"):
        servers = out.get("real_server")
        first = servers[0] if isinstance(servers, list) and servers else None
        v6 = isinstance(first, dict) and isinstance(first.get("address"), str) \
            and ":" in _split(first["address"])[0]
        out["address"] = "[::]:0" if v6 else "0.0.0.0:0"
    ports = out.get("ports")
    if isinstance(ports, (int, str)) and not isinstance(ports, bool):
        ports = [ports]
    if isinstance(ports, list):
        items: list[object] = []
        for p in ports:
            if isinstance(p, str):
                items += [x.strip() for x in p.split(",") if x.strip()]
            else:
                items.append(str(p) if isinstance(p, int) and not isinstance(p, bool) else p)
        out["ports"] = items
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse(text: str, source: str = "<string>") -> Config:
    """Parse TOML ``text`` into a validated :class:`Config`; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([f"{source}: TOML syntax error: {exc}"]) from None
    problems = _Problems(source)
    cfg = _Reader(problems).table(data, Config, "", source=source)
    problems.raise_if_any()
    validate(cfg)
    return typing.cast(Config, cfg)


def load(path: str | Path) -> Config:
    """Read and validate the configuration file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError([f"{path}: not UTF-8 text: {exc}"]) from None
    return parse(text, str(path))


# ---------------------------------------------------------------------------------------------
# Semantic checks


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _checks(cfg: Config) -> Iterator[tuple[str, str]]:
    d = cfg.director
    for key in ("public_interface", "private_interface", "tun_name"):
        if not _IFNAME.match(getattr(d, key)):
            yield f"director.{key}", "expected an interface name of 1..15 characters"
    if d.public_interface == d.private_interface:
        yield "director.private_interface", "expected an interface other than public_interface"
    nat_routers = list(_nat_router_checks(d))
    problems = [p for p in nat_routers if isinstance(p, tuple)]
    yield from problems
    networks = [p.network for p in nat_routers if not isinstance(p, tuple)]
    if not 1 <= d.batch_size <= 1024:
        yield "director.batch_size", f"expected 1..1024, got {d.batch_size}"
    if d.workers is not None and not 0 <= d.workers <= 256:
        yield "director.workers", f"expected 0..256 (the TUN queue limit), got {d.workers}"
    if not 0 <= d.worker_spin_us <= 1000:
        yield "director.worker_spin_us", f"expected 0..1000 microseconds, got {d.worker_spin_us}"
    if not 0 <= d.fastpath_after_packets <= 1_000_000:
        yield ("director.fastpath_after_packets",
               f"expected 0..1000000 packets, got {d.fastpath_after_packets}")
    if not -20 <= d.worker_nice <= 19:
        yield "director.worker_nice", f"expected a nice value -20..19, got {d.worker_nice}"
    if not 1 <= d.max_connections <= 1 << 26:
        yield "director.max_connections", f"expected 1..{1 << 26}, got {d.max_connections}"
    for key in ("tcp", "tcpfin", "udp"):
        value = getattr(cfg.timeouts, key)
        if not 1 <= value <= 31 * 86400:
            yield f"timeouts.{key}", f"expected 1..{31 * 86400} seconds, got {value}"
    yield from _defense_checks(cfg)
    api = cfg.api
    if not 0 <= api.socket_mode <= 0o777:
        yield "api.socket_mode", f"expected a mode 0o000..0o777, got {oct(api.socket_mode)}"
    if api.listen is not None:
        try:
            _endpoint(api.listen)
        except _Invalid as exc:
            yield "api.listen", str(exc)
        if api.token_file is None:
            yield "api.token_file", "required when api.listen is set (TCP needs a bearer token)"
    if (api.tls_cert is None) != (api.tls_key is None):
        which = "api.tls_key" if api.tls_key is None else "api.tls_cert"
        yield which, "required with the other one (tls_cert and tls_key go together)"
    elif api.tls_cert is not None and api.listen is None:
        yield "api.tls_cert", "only used by the TCP listener: set api.listen too"
    yield from _ha_checks(cfg)
    yield from _cluster_checks(cfg)
    seen: dict[model.ServiceKey, int] = {}
    for i, vs in enumerate(cfg.virtual_servers):
        path = f"virtual_server[{i}]"
        if vs.key in seen:
            yield path, f"duplicate service {vs.key.label} (also virtual_server[{seen[vs.key]}])"
        seen.setdefault(vs.key, i)
        for net in networks:
            if vs.address.address in net:
                yield f"{path}.address", f"expected a VIP outside the private network {net}"
        yield from _vs_checks(vs, path)


def _nat_router_checks(d: model.DirectorConfig) \
        -> Iterator[IPv4Interface | IPv6Interface | tuple[str, str]]:
    """The gateway addresses that parse, and a (key, problem) for each one that does not."""
    families: dict[int, str] = {}
    for key in ("nat_router", "nat_router6"):
        text = getattr(d, key)
        if text is None:
            continue
        try:
            iface = IPv6Interface(text) if ":" in text else IPv4Interface(text)
        except ValueError:
            yield f"director.{key}", f'expected "a.b.c.d/len" or "v6 address/len", got {text!r}'
            continue
        if "/" not in text:
            yield f"director.{key}", f'expected a prefix length "a.b.c.d/len" or ' \
                f'"v6 address/len", got {text!r}'
            continue
        if key == "nat_router6" and iface.version != 6:
            yield f"director.{key}", f"expected an IPv6 address/len, got {text!r}"
            continue
        if iface.version in families:
            yield f"director.{key}", f"expected one gateway per address family; " \
                f"director.{families[iface.version]} is IPv{iface.version} too"
            continue
        families[iface.version] = key
        yield iface


def _defense_checks(cfg: Config) -> Iterator[tuple[str, str]]:
    dfn = cfg.defense
    for key in ("drop_entry", "drop_packet", "secure_tcp"):
        if getattr(dfn, key) not in (0, 1, 2, 3):
            yield f"defense.{key}", "expected 0 (off), 1 or 2 (automatic) or 3 (always on), " \
                f"got {getattr(dfn, key)}"
    if dfn.syncookies not in (0, 1, 2):
        yield "defense.syncookies", "expected 0 (never), 1 (automatic: while a SYN flood is " \
            f"detected) or 2 (always), as net.ipv4.tcp_syncookies, got {dfn.syncookies}"
    limit = cfg.director.max_connections
    if dfn.amemthresh is not None and not 0 <= dfn.amemthresh <= limit:
        yield "defense.amemthresh", f"expected 0..{limit} free table slots " \
            f"(director.max_connections), got {dfn.amemthresh}"
    if not 1 <= dfn.am_droprate <= 1_000_000:
        yield "defense.am_droprate", f"expected 1..1000000, got {dfn.am_droprate}"


def _ha_checks(cfg: Config) -> Iterator[tuple[str, str]]:
    ha = cfg.ha
    if not 1 <= ha.priority <= 254:
        yield "ha.priority", f"expected 1..254 (255 is reserved), got {ha.priority}"
    for key in ("port", "sync_port"):
        if not 1 <= getattr(ha, key) <= 65535:
            yield f"ha.{key}", f"expected a port 1..65535, got {getattr(ha, key)}"
    if ha.interval <= 0:
        yield "ha.interval", f"expected a number > 0, got {ha.interval}"
    if ha.dead_time is not None and ha.dead_time <= ha.interval:
        yield "ha.dead_time", f"expected more than ha.interval ({ha.interval}), got {ha.dead_time}"
    for key in ("preempt_delay", "garp_repeat_delay", "garp_refresh"):
        if getattr(ha, key) < 0:
            yield f"ha.{key}", f"expected a number >= 0, got {getattr(ha, key)}"
    if ha.garp_count < 0:
        yield "ha.garp_count", f"expected an integer >= 0, got {ha.garp_count}"
    if ha.enabled:
        if ha.secret_file is None:
            yield "ha.secret_file", "required when ha.enabled = true (heartbeats are signed)"
        if ha.peer_public is None and ha.peer_private is None:
            yield "ha.peer_public", "expected peer_public and/or peer_private when ha.enabled"
        if cfg.director.nat_router is None and cfg.director.nat_router6 is None:
            yield "director.nat_router", "required when ha.enabled (the real servers' gateway " \
                "must move with the VIPs)"


def _cluster_checks(cfg: Config) -> Iterator[tuple[str, str]]:
    cl = cfg.cluster
    asns = [("cluster.asn", cl.asn)] + [(f"cluster.router[{i}].asn", r.asn)
                                       for i, r in enumerate(cl.routers)]
    for path, asn in asns:
        if not 1 <= asn <= 4294967294:
            yield path, f"expected an AS number 1..4294967294, got {asn}"
    for i, r in enumerate(cl.routers):
        if not 1 <= r.port <= 65535:
            yield f"cluster.router[{i}].port", f"expected a port 1..65535, got {r.port}"
    if not 0.01 <= cl.bfd_interval <= 10:
        yield "cluster.bfd_interval", f"expected 0.01..10 seconds, got {cl.bfd_interval}"
    if not 1 <= cl.bfd_multiplier <= 255:
        yield "cluster.bfd_multiplier", f"expected 1..255, got {cl.bfd_multiplier}"
    if cl.hold_time != 0 and not 3 <= cl.hold_time <= 65535:
        yield "cluster.hold_time", f"expected 0 or 3..65535 seconds, got {cl.hold_time}"
    if cl.drain_time < 0:
        yield "cluster.drain_time", f"expected a number >= 0, got {cl.drain_time}"
    if not 1 <= cl.sync_port <= 65535:
        yield "cluster.sync_port", f"expected a port 1..65535, got {cl.sync_port}"
    if not 0 <= cl.sync_id <= 255:
        yield "cluster.sync_id", f"expected 0..255, got {cl.sync_id}"
    if not 0.01 <= cl.hello_interval <= 10:
        yield "cluster.hello_interval", f"expected 0.01..10 seconds, got {cl.hello_interval}"
    if cl.node_id is not None and not 1 <= len(cl.node_id.encode()) <= 32:
        yield "cluster.node_id", "expected 1..32 bytes of UTF-8"
    if len(set(cl.members)) != len(cl.members):
        yield "cluster.members", "expected each address once"
    if cl.members and cl.secret_file is None:
        yield "cluster.secret_file", "required with cluster.members (hellos and sync are signed)"
    if cl.mode == "active-active":
        if not cl.routers:
            yield "cluster.router", "expected at least one [[cluster.router]] in active-active"
        if cfg.ha.enabled:
            yield "cluster.mode", "active-active and ha.enabled exclude each other (every " \
                "director of a cluster is active)"


_NO_ADDRESS = Endpoint(IPv4Address(0), 0)


def _vs_checks(vs: model.VirtualServerConfig, path: str) -> Iterator[tuple[str, str]]:
    if vs.scheduler not in model.SCHEDULERS:
        hint = difflib.get_close_matches(vs.scheduler, model.SCHEDULERS, n=1)
        also = f" (did you mean {hint[0]!r}?)" if hint else ""
        yield f"{path}.scheduler", f"unknown scheduler {vs.scheduler!r}{also}; expected one " \
            f"of {' '.join(model.SCHEDULERS)}"
    for j, flag in enumerate(vs.flags):
        if flag not in model.SCHEDULER_FLAGS:
            yield f"{path}.flags[{j}]", f"unknown flag {flag!r}; expected one of " \
                f"{', '.join(model.SCHEDULER_FLAGS)}"
    if len(set(vs.flags)) != len(vs.flags):
        yield f"{path}.flags", "expected each flag at most once"
    if vs.ftp and (vs.protocol != "tcp" or vs.fwmark or vs.address.port < 2
                   or vs.address.address.version != 4):
        yield f"{path}.ftp", "the FTP helper needs an IPv4 TCP service on its control port (21)"
    if vs.synproxy and vs.protocol != "tcp":
        yield f"{path}.synproxy", "a SYN proxy needs protocol = \"tcp\""
    if vs.fwmark and vs.ports:
        yield f"{path}.ports", "expected either fwmark or ports (the mark names the ports)"
    if vs.fwmark:
        if not 0 < vs.fwmark <= 0xFFFFFFFF:
            yield f"{path}.fwmark", f"expected a mark 1..4294967295, got {vs.fwmark}"
        if vs.address.port != 0:
            yield f"{path}.address", "expected an address without a port (a fwmark service " \
                "covers the ports the mark covers)"
    elif vs.ports:
        try:
            model.port_ranges(vs.ports)
        except ValueError as exc:
            yield f"{path}.ports", str(exc)
        if vs.address.port != 0:
            yield f"{path}.address", "expected an address without a port (the service takes " \
                "the ports in ports)"
        if any(rs.address.port != 0 for rs in vs.real_servers):
            yield f"{path}.real_server", "expected real servers without a port (a ports " \
                "service keeps the client's destination port)"
    elif vs.address == _NO_ADDRESS:
        yield f"{path}.address", "required key is missing (or give fwmark)"
    elif vs.address.port == 0 and vs.persistence == 0:
        # ipvsadm's rule: an all-ports service only makes sense with persistence.
        yield f"{path}.address", "expected a port 1..65535 (port 0 needs persistence > 0)"
    if not 0 <= vs.persistence <= 2678400:
        yield f"{path}.persistence", f"expected 0..2678400 seconds, got {vs.persistence}"
    yield from _family_checks(vs, path)
    limit = model.MH_MAX_TABLE_SIZE
    if vs.mh_table_size and not (_is_prime(vs.mh_table_size) and vs.mh_table_size <= limit):
        # The mh scheduler refuses a larger table (the kernel's largest is 131071 too).
        yield f"{path}.mh_table_size", f"expected 0 (4093) or a prime up to {limit}, got " \
            f"{vs.mh_table_size}"
    elif vs.scheduler == "mh" and len(vs.real_servers) > (vs.mh_table_size or 4093):
        yield f"{path}.mh_table_size", f"the mh table ({vs.mh_table_size or 4093} slots) " \
            f"must have at least one slot per real server ({len(vs.real_servers)})"
    for key in ("quorum", "quorum_hysteresis"):
        if getattr(vs, key) < 0:
            yield f"{path}.{key}", f"expected an integer >= 0, got {getattr(vs, key)}"
    if vs.slow_start < 0:
        yield f"{path}.slow_start", f"expected a number >= 0, got {vs.slow_start}"
    yield from _check_checks(vs, f"{path}.check")
    lm = vs.load_monitor
    if lm.type in ("exec", "loadavg") and lm.command is None:
        yield f"{path}.load_monitor.command", f"required for load_monitor type {lm.type!r}"
    if lm.type == "agent" and lm.port is None:
        yield f"{path}.load_monitor.port", "required for load_monitor type 'agent'"
    if lm.interval <= 0 or lm.timeout <= 0:
        yield f"{path}.load_monitor", "expected interval and timeout > 0"
    seen: dict[Endpoint, int] = {}
    for j, rs in enumerate(vs.real_servers):
        rpath = f"{path}.real_server[{j}]"
        if rs.address in seen:
            yield f"{rpath}.address", f"duplicate real server {rs.address} (also " \
                f"real_server[{seen[rs.address]}])"
        seen.setdefault(rs.address, j)
        if rs.address.port == 0 and vs.address.port != 0:
            yield f"{rpath}.address", "expected a port 1..65535 (port 0 only on port-0 services)"
        if not 0 <= rs.weight <= 65535:
            yield f"{rpath}.weight", f"expected an integer 0..65535, got {rs.weight}"
        for key in ("upper_threshold", "lower_threshold"):
            if getattr(rs, key) < 0:
                yield f"{rpath}.{key}", f"expected an integer >= 0, got {getattr(rs, key)}"
        if rs.lower_threshold > rs.upper_threshold:
            # The kernel's rule (ip_vs_add_dest: -ERANGE), also when upper_threshold is 0.
            yield f"{rpath}.lower_threshold", f"expected at most upper_threshold " \
                f"({rs.upper_threshold}), got {rs.lower_threshold}"


def _family_checks(vs: model.VirtualServerConfig, path: str) -> Iterator[tuple[str, str]]:
    """Persistence netmask and server addresses of the VIP's address family (NAT, no NAT64)."""
    family = vs.address.address.version
    if family == 6:
        if isinstance(vs.netmask, int):
            if not 1 <= vs.netmask <= 128:
                yield f"{path}.netmask", f"expected an IPv6 prefix length 1..128, got " \
                    f"{vs.netmask}"
        elif vs.netmask != model.HOST_NETMASK:
            yield f"{path}.netmask", f"expected a prefix length 1..128 for an IPv6 service " \
                f"(like ipvsadm -M 64), got {vs.netmask}"
    elif isinstance(vs.netmask, int):
        yield f"{path}.netmask", f"expected a netmask like 255.255.255.0 for an IPv4 service, " \
            f"got {vs.netmask}"
    else:
        try:
            IPv4Network(f"0.0.0.0/{vs.netmask}")
        except ValueError:
            yield f"{path}.netmask", f"expected a contiguous netmask like 255.255.255.0, got " \
                f"{vs.netmask}"
    others = [(f"real_server[{j}].address", rs.address) for j, rs in enumerate(vs.real_servers)]
    if vs.sorry_server is not None:
        others.append(("sorry_server", vs.sorry_server))
    for key, endpoint in others:
        if endpoint.address.version != family:
            yield f"{path}.{key}", f"expected an IPv{family} address like the service's " \
                f"({vs.address}), got {endpoint}"


def _check_checks(vs: model.VirtualServerConfig, path: str) -> Iterator[tuple[str, str]]:
    c = vs.check
    if c.port is not None and not 1 <= c.port <= 65535:
        yield f"{path}.port", f"expected a port 1..65535, got {c.port}"
    if c.interval <= 0:
        yield f"{path}.interval", f"expected a number > 0, got {c.interval}"
    if c.timeout <= 0:
        yield f"{path}.timeout", f"expected a number > 0, got {c.timeout}"
    if c.rise < 1 or c.fall < 1:
        yield f"{path}.rise", "expected rise and fall >= 1"
    # Neither send nor expect: piranha's default (GET / HTTP/1.0 -> "HTTP" on port 80).
    if c.type == "send_expect" and c.expect is None and c.send is not None:
        yield f"{path}.expect", "required for check type 'send_expect' when send is set"
    if c.type == "exec" and c.command is None:
        yield f"{path}.command", "required for check type 'exec'"
    if c.type in ("http", "https") and not c.path.startswith("/"):
        yield f"{path}.path", f"expected a path starting with '/', got {c.path!r}"
    if any(not 100 <= s <= 599 for s in c.status):
        yield f"{path}.status", "expected HTTP status codes 100..599"
    if c.digest is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", c.digest):
        yield f"{path}.digest", "expected 32 hex digits (an md5 digest)"
    if (c.client_cert is None) != (c.client_key is None):
        yield f"{path}.client_key", "expected client_cert and client_key together"
    for key in ("body_regex", "expect"):
        pattern = getattr(c, key)
        if pattern is not None and (key == "body_regex" or c.expect_regex):
            try:
                re.compile(pattern)
            except re.error as exc:
                yield f"{path}.{key}", f"expected a valid regular expression: {exc}"


def warnings(cfg: Config) -> list[str]:
    """``source: path: message`` lines for what is valid but probably not meant.

    ``pylvs check`` prints them and ``pylvs serve`` logs them; neither refuses the file.
    """
    out: list[str] = []
    if not cfg.virtual_servers:
        out.append(f"{cfg.source}: virtual_server: none defined; the director will forward "
                   "nothing until services are added (config file, pylvs ctl or the API)")
    for i, vs in enumerate(cfg.virtual_servers):
        for flag in model.ignored_flags(vs.scheduler, vs.flags):
            used = {"sh": "sh", "mh": "mh"}.get(model.FLAG_SCHEDULER.get(flag, ""), "")
            why = f"only {used} reads it" if used else "no built-in scheduler reads it"
            out.append(f"{cfg.source}: virtual_server[{i}].flags: {flag!r} is ignored by "
                       f"scheduler {vs.scheduler!r} ({why})")
    return out


def removals(old: Config, new: Config, *, baseline: Config | None = None) -> list[str]:
    """What applying *new* over *old* takes away: one line per service and real server.

    A line ends with "(added at run time)" when *baseline* (the file as last loaded) did not
    have it, i.e. it came from ``pylvs ctl`` or the API and the file never knew it.
    """
    def servers(cfg: Config | None) -> dict[model.ServiceKey, set[Endpoint]]:
        if cfg is None:
            return {}
        return {vs.key: {rs.address for rs in vs.real_servers} for vs in cfg.virtual_servers}

    before, after, known = servers(old), servers(new), servers(baseline)
    out: list[str] = []
    for key, endpoints in before.items():
        runtime = baseline is not None and key not in known
        tag = " (added at run time)" if runtime else ""
        if key not in after:
            out.append(f"service {key.label} and its {len(endpoints)} real server(s){tag}")
            continue
        for ep in sorted(endpoints - after[key], key=lambda e: (int(e.address), e.port)):
            added = baseline is not None and ep not in known.get(key, set())
            out.append(f"real server {ep} of {key.label}"
                       f"{' (added at run time)' if added else ''}")
    return out


def validate(cfg: Config) -> None:
    """Check what single keys cannot; raise :class:`ConfigFileError` listing every problem."""
    problems = _Problems(cfg.source)
    for path, message in _checks(cfg):
        problems.add(path, message)
    problems.raise_if_any()


# ---------------------------------------------------------------------------------------------
# model -> TOML


def _toml_value(value: object, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return oct(value) if key == "socket_mode" else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v, key) for v in value) + "]"
    # Strings, addresses and endpoints: a JSON string is a TOML basic string, except that
    # TOML also forbids a raw DEL, which JSON leaves alone.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def _emit_table(obj: Any, header: str | None, out: list[str], defaults: bool,
                notes: Sequence[str] = ()) -> None:
    """Append ``[header]`` and the scalar keys of ``obj`` that differ from their defaults.

    ``notes`` are comment lines written just above the header (``pylvs import`` says there what
    it could not carry over).
    """
    lines = []
    for f in dataclasses.fields(obj):
        if f.name in _SKIP_FIELDS:
            continue
        value = getattr(obj, f.name)
        nested = value[0] if value and isinstance(value, tuple) else value
        if dataclasses.is_dataclass(nested) and not isinstance(nested, Endpoint):
            continue  # nested tables are written by the caller
        if f.name not in _ALWAYS_WRITTEN and f.default is not dataclasses.MISSING \
                and value == f.default and not defaults:
            continue
        if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
            continue
        if value is None:
            continue
        lines.append(f"{_TOML_NAME.get(f.name, f.name)} = {_toml_value(value, f.name)}")
    comments = [f"# {n}" for note in notes for n in note.splitlines()]
    if header is not None and (lines or comments or header.startswith("[[")):
        out.extend(["", *comments, header])  # an empty table is valid: it keeps its comments
    elif comments:
        out.extend(["", *comments])
    out.extend(lines)


def dump_toml(cfg: Config, comments: Mapping[str, Sequence[str]] | None = None) -> str:
    """Write ``cfg`` as TOML that :func:`parse` reads back equal; default values are left out.

    ``comments`` maps a table's key path (``""`` for the top of the file, ``"director"``,
    ``"virtual_server[0]"``, ``"virtual_server[0].check"``,
    ``"virtual_server[0].real_server[1]"`` ...) to comment lines written above that table.
    """
    notes = comments or {}
    out: list[str] = [f"# pylvs configuration (written from {cfg.source})"]
    out.extend(f"# {n}" for note in notes.get("", ()) for n in note.splitlines())
    _emit_table(cfg.director, "[director]", out, False, notes.get("director", ()))
    for name in ("timeouts", "defense", "api", "ha", "cluster"):
        _emit_table(getattr(cfg, name), f"[{name}]", out, False, notes.get(name, ()))
    for i, router in enumerate(cfg.cluster.routers):
        _emit_table(router, "[[cluster.router]]", out, False,
                    notes.get(f"cluster.router[{i}]", ()))
    for i, vs in enumerate(cfg.virtual_servers):
        path = f"virtual_server[{i}]"
        _emit_table(vs, "[[virtual_server]]", out, False, notes.get(path, ()))
        _emit_table(vs.check, "[virtual_server.check]", out, False,
                    notes.get(f"{path}.check", ()))
        _emit_table(vs.load_monitor, "[virtual_server.load_monitor]", out, False,
                    notes.get(f"{path}.load_monitor", ()))
        for j, rs in enumerate(vs.real_servers):
            _emit_table(rs, "[[virtual_server.real_server]]", out, False,
                        notes.get(f"{path}.real_server[{j}]", ()))
    return "\n".join(out) + "\n"

