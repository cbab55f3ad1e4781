"""Pure edits of a :class:`~pylvs.model.Config`: one function per ipvsadm command.

Every API mutation goes through here to build a *new* configuration, which the director then
validates whole and applies (``Director.apply_config``).  Nothing here touches the engine, so a
request that fails half-way through leaves the running state exactly as it was.

The checks here are the ones ipvsadm and the kernel make on a single command (weight range,
threshold order, a known scheduler, duplicates); the director's validation stays the final word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pylvs import model
from pylvs.api import codec
from pylvs.errors import ConfigError

__all__ = [
    "Conflict",
    "NotFound",
    "add_server",
    "add_service",
    "check_server",
    "check_service",
    "clear",
    "delete_server",
    "delete_service",
    "edit_server",
    "edit_service",
    "find_service",
    "set_defense",
    "set_timeouts",
]

MAX_PERSISTENCE = 86400 * 31  # ipvsadm's MAX_TIMEOUT
MAX_TIMEOUT = 86400 * 31
MAX_THRESHOLD = 2**31 - 1


class NotFound(ConfigError):
    """The named service or server does not exist (HTTP 404)."""


class Conflict(ConfigError):
    """The service or server already exists (HTTP 409)."""


def find_service(cfg: model.Config, key: model.ServiceKey) -> int:
    """Index of the service *key* in ``cfg.virtual_servers``; :class:`NotFound` if absent."""
    for i, vs in enumerate(cfg.virtual_servers):
        if vs.key == key:
            return i
    raise NotFound(f"service {codec.service_id(key)}: no such service")


def check_service(vs: model.VirtualServerConfig, where: str) -> None:
    """The per-service checks ipvsadm and the kernel make."""
    if vs.scheduler not in model.SCHEDULERS:
        raise ConfigError(
            f"{where}.scheduler: unknown scheduler {vs.scheduler!r} "
            f"(expected one of: {' '.join(model.SCHEDULERS)})"
        )
    for i, flag in enumerate(vs.flags):
        if flag not in model.SCHEDULER_FLAGS:
            raise ConfigError(
                f"{where}.flags[{i}]: unknown scheduler flag {flag!r} "
                f"(expected one of: {', '.join(model.SCHEDULER_FLAGS)})"
            )
    if vs.synproxy and vs.protocol != "tcp":
        raise ConfigError(f"{where}.synproxy: a SYN proxy needs a TCP service")
    if not 0 <= vs.persistence <= MAX_PERSISTENCE:
        raise ConfigError(
            f"{where}.persistence: {vs.persistence} is out of range 0..{MAX_PERSISTENCE}"
        )
    if vs.address.port == 0 and vs.persistence == 0 and not vs.fwmark and not vs.ports:
        raise ConfigError(f"{where}.address: zero port specified for non-persistent service")
    # A prefix length (IPv6) and the family rules are checked by config.validate.
    inverted = ~int(vs.netmask) & 0xFFFFFFFF
    if not isinstance(vs.netmask, int) and inverted & (inverted + 1):
        raise ConfigError(f"{where}.netmask: {vs.netmask} is not a contiguous netmask")
    seen: set[model.Endpoint] = set()
    for i, rs in enumerate(vs.real_servers):
        check_server(rs, f"{where}.real_server[{i}]")
        if rs.address in seen:
            raise Conflict(f"{where}.real_server[{i}].address: duplicate real server {rs.address}")
        seen.add(rs.address)


def check_server(rs: model.RealServerConfig, where: str) -> None:
    """Weight and threshold ranges as the kernel enforces them."""
    if not 0 <= rs.weight <= 65535:
        raise ConfigError(f"{where}.weight: {rs.weight} is out of range 0..65535")
    for name in ("upper_threshold", "lower_threshold"):
        value = getattr(rs, name)
        if not 0 <= value <= MAX_THRESHOLD:
            raise ConfigError(f"{where}.{name}: {value} is out of range 0..{MAX_THRESHOLD}")
    if rs.lower_threshold > rs.upper_threshold:
        raise ConfigError(
            f"{where}.lower_threshold: {rs.lower_threshold} is above "
            f"upper_threshold {rs.upper_threshold}"
        )


def _with_service(
    cfg: model.Config, index: int, vs: model.VirtualServerConfig
) -> model.Config:
    services = list(cfg.virtual_servers)
    services[index] = vs
    return dataclasses.replace(cfg, virtual_servers=tuple(services))


def add_service(cfg: model.Config, vs: model.VirtualServerConfig) -> model.Config:
    """``-A``: append a new service (with any real servers it carries)."""
    check_service(vs, "virtual_server")
    try:
        find_service(cfg, vs.key)
    except NotFound:
        return dataclasses.replace(cfg, virtual_servers=(*cfg.virtual_servers, vs))
    raise Conflict(f"virtual_server.address: service {codec.service_id(vs.key)} already exists")


def edit_service(
    cfg: model.Config, key: model.ServiceKey, changes: Mapping[str, Any]
) -> model.Config:
    """``-E``: change some fields of a service; the identity (protocol, address) is fixed."""
    index = find_service(cfg, key)
    old = cfg.virtual_servers[index]
    merged = codec.encode(old)
    for name in ("protocol", "address", "fwmark"):
        if name in changes and changes[name] != merged[name]:
            raise ConfigError(
                f"virtual_server.{name}: cannot be changed by an edit "
                "(delete the service and add it again)"
            )
    merged.update(changes)
    vs = codec.decode_service(merged)
    check_service(vs, "virtual_server")
    return _with_service(cfg, index, vs)


def delete_service(cfg: model.Config, key: model.ServiceKey) -> model.Config:
    """``-D``: remove a service and its real servers."""
    index = find_service(cfg, key)
    services = cfg.virtual_servers[:index] + cfg.virtual_servers[index + 1 :]
    return dataclasses.replace(cfg, virtual_servers=services)


def clear(cfg: model.Config) -> model.Config:
    """``-C``: remove every service."""
    return dataclasses.replace(cfg, virtual_servers=())


def _server_index(vs: model.VirtualServerConfig, endpoint: model.Endpoint) -> int:
    for i, rs in enumerate(vs.real_servers):
        if rs.address == endpoint:
            return i
    raise NotFound(
        f"real server {endpoint} of service {codec.service_id(vs.key)}: no such real server"
    )


def add_server(
    cfg: model.Config, key: model.ServiceKey, rs: model.RealServerConfig
) -> model.Config:
    """``-a``: add a real server to a service."""
    index = find_service(cfg, key)
    vs = cfg.virtual_servers[index]
    check_server(rs, "real_server")
    if any(r.address == rs.address for r in vs.real_servers):
        raise Conflict(f"real_server.address: real server {rs.address} already exists")
    return _with_service(cfg, index, dataclasses.replace(vs, real_servers=(*vs.real_servers, rs)))


def edit_server(
    cfg: model.Config, key: model.ServiceKey, endpoint: model.Endpoint, changes: Mapping[str, Any]
) -> model.Config:
    """``-e``: change weight or thresholds of a real server."""
    index = find_service(cfg, key)
    vs = cfg.virtual_servers[index]
    rindex = _server_index(vs, endpoint)
    merged = codec.encode(vs.real_servers[rindex])
    if "address" in changes and changes["address"] != merged["address"]:
        raise ConfigError("real_server.address: cannot be changed by an edit")
    merged.update(changes)
    rs = codec.decode_server(merged)
    check_server(rs, "real_server")
    servers = list(vs.real_servers)
    servers[rindex] = rs
    return _with_service(cfg, index, dataclasses.replace(vs, real_servers=tuple(servers)))


def delete_server(
    cfg: model.Config, key: model.ServiceKey, endpoint: model.Endpoint
) -> model.Config:
    """``-d``: remove a real server from a service."""
    index = find_service(cfg, key)
    vs = cfg.virtual_servers[index]
    rindex = _server_index(vs, endpoint)
    servers = vs.real_servers[:rindex] + vs.real_servers[rindex + 1 :]
    return _with_service(cfg, index, dataclasses.replace(vs, real_servers=servers))


def set_defense(cfg: model.Config, changes: Mapping[str, Any]) -> model.Config:
    """``[defense]`` keys to change (the others keep their values); validated with the whole
    config when applied."""
    current = codec.encode(cfg.defense)
    for name, value in changes.items():
        if name not in current:
            known = ", ".join(sorted(current))
            raise ConfigError(f"defense.{name}: unknown key (expected one of: {known})")
        current[name] = value
    defense = codec.decode_dataclass(model.DefenseConfig, current, "defense")
    return dataclasses.replace(cfg, defense=defense)


def set_timeouts(cfg: model.Config, changes: Mapping[str, Any]) -> model.Config:
    """``--set tcp tcpfin udp``: a value of 0 keeps the current one, as in ipvsadm."""
    current = codec.encode(cfg.timeouts)
    for name, value in changes.items():
        if name not in current:
            raise ConfigError(f"timeouts.{name}: unknown key (expected one of: tcp, tcpfin, udp)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"timeouts.{name}: expected an integer number of seconds")
        if not 0 <= value <= MAX_TIMEOUT:
            raise ConfigError(f"timeouts.{name}: {value} is out of range 0..{MAX_TIMEOUT}")
        if value:
            current[name] = value
    timeouts = codec.decode_dataclass(model.TimeoutsConfig, current, "timeouts")
    return dataclasses.replace(cfg, timeouts=timeouts)

