"""JSON <-> configuration model, with errors that name the offending field.

The REST API speaks the same shape as the TOML file: a virtual service in JSON has the keys of a
``[[virtual_server]]`` table (``real_server`` may be spelled ``real_servers``), so what an operator
learned from the config file carries over.  Decoding is driven by the dataclass type hints of
:mod:`pylvs.model`, so a field added to the model is accepted by the API without touching this
module.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Hashable, Mapping
from ipaddress import AddressValueError, IPv4Address, IPv6Address
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from pylvs import model
from pylvs.errors import ConfigError

__all__ = [
    "decode_dataclass",
    "decode_server",
    "decode_service",
    "encode",
    "kind",
    "parse_endpoint",
    "service_id",
    "service_key",
]

T = TypeVar("T")

# JSON spellings that differ from the attribute names (the TOML file uses the singular).
_ALIASES = {"real_server": "real_servers"}
_OUT_NAMES = {"real_servers": "real_server"}


def service_id(key: model.ServiceKey) -> str:
    """The path segment naming a service in URLs: ``tcp/198.18.0.100:80``, ``fwm/80``,
    ``fwm6/80`` (the IPv6 service of mark 80)."""
    return f"{key.kind}/{key.hostport}"


def service_key(protocol: object, address: object, where: str) -> model.ServiceKey:
    """Parse a service named by *protocol* (tcp, udp, fwm or fwm6, checked first) and
    ``a.b.c.d:port`` (for fwm and fwm6: the mark)."""
    if protocol in ("fwm", "fwm6"):
        text = str(address)
        if not text.isdigit() or not 0 < int(text) <= 0xFFFFFFFF:
            raise ConfigError(f"{where}: {address!r} is not a firewall mark 1..4294967295")
        return model.ServiceKey.for_fwmark(int(text), 6 if protocol == "fwm6" else 4)
    if protocol not in ("tcp", "udp"):
        raise ConfigError(f"protocol: {protocol!r} is not one of 'tcp', 'udp', 'fwm', 'fwm6'")
    proto: model.Protocol = "udp" if protocol == "udp" else "tcp"
    endpoint = parse_endpoint(address, where)
    return model.ServiceKey(proto, str(endpoint.address), endpoint.port)


def parse_endpoint(text: object, where: str, *, default_port: int | None = None) -> model.Endpoint:
    """Parse ``a.b.c.d:port`` or ``[v6]:port`` (port optional when *default_port* is given)."""
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a string 'a.b.c.d:port' or '[v6 address]:port', "
                          f"got {kind(text)}")
    try:
        return model.Endpoint.parse(text, default_port)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def encode(value: Any) -> Any:
    """Turn a model value (dataclass, address, tuple …) into plain JSON data."""
    if isinstance(value, model.Endpoint):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            out[_OUT_NAMES.get(f.name, f.name)] = encode(getattr(value, f.name))
        return out
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    return value


def decode_service(data: object, where: str = "virtual_server") -> model.VirtualServerConfig:
    """Decode one virtual service (with its real servers) from JSON."""
    vs = decode_dataclass(model.VirtualServerConfig, data, where)
    check = data.get("check") if isinstance(data, Mapping) else None
    return model.apply_default_check(vs, isinstance(check, Mapping) and "type" in check)


def decode_server(data: object, where: str = "real_server") -> model.RealServerConfig:
    """Decode one real server from JSON."""
    return decode_dataclass(model.RealServerConfig, data, where)


def decode_dataclass(cls: type[T], data: object, where: str) -> T:
    """Build the frozen dataclass *cls* from a JSON object, checking every key and type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected an object, got {kind(data)}")
    hints, fields = _shape(cast(Hashable, cls))
    kwargs: dict[str, Any] = {}
    for key, raw in data.items():
        name = _ALIASES.get(key, key)
        if name not in fields or name == "source":
            known = ", ".join(sorted(_OUT_NAMES.get(n, n) for n in fields if n != "source"))
            raise ConfigError(f"{where}.{key}: unknown key (expected one of: {known})")
        kwargs[name] = _decode(hints[name], raw, f"{where}.{key}")
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required key is missing")
    return cls(**kwargs)


@functools.cache
def _shape(cls: Any) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    # get_type_hints evaluates every annotation: far too slow to repeat for each of the
    # 10,000 servers of a large restore.
    return get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _decode(tp: Any, raw: object, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _decode(inner[0], raw, where)
        if set(inner) == {IPv4Address, IPv6Address}:
            try:
                return model.parse_address(raw)  # type: ignore[arg-type]  # checks the type
            except ValueError:
                raise ConfigError(f"{where}: {raw!r} is not an IPv4 or IPv6 address") from None
        if set(inner) == {IPv4Address, int}:  # a netmask: dotted (IPv4) or a prefix length
            return _decode(int if isinstance(raw, int) else IPv4Address, raw, where)
        raise ConfigError(f"{where}: unsupported type")  # the model has no other unions
    if origin is Literal:
        allowed = get_args(tp)
        if raw not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{where}: {raw!r} is not one of {choices}")
        return raw
    if origin is tuple:
        if not isinstance(raw, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {kind(raw)}")
        item_tp = get_args(tp)[0]
        return tuple(_decode(item_tp, item, f"{where}[{i}]") for i, item in enumerate(raw))
    if tp is model.Endpoint:
        return parse_endpoint(raw, where)
    if tp is IPv4Address:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected an IPv4 address string, got {kind(raw)}")
        try:
            return IPv4Address(raw)
        except AddressValueError:
            raise ConfigError(f"{where}: {raw!r} is not an IPv4 address") from None
    if dataclasses.is_dataclass(tp):
        return decode_dataclass(typing.cast(type[Any], tp), raw, where)
    if tp is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {kind(raw)}")
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected an integer, got {kind(raw)}")
        return raw
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: expected a number, got {kind(raw)}")
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string, got {kind(raw)}")
        return raw
    raise ConfigError(f"{where}: unsupported type {tp!r}")


def kind(value: object) -> str:
    """How *value* is described in an error message ("a list", "the number 3" …)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
