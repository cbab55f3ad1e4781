"""Pure edits of a :class:`~pylvs.model.Config`: one function per ipvsadm command.

Every API mutation goes through here to build a *new* configuration, which the director then
validates whole and applies (``Director.apply_config``).  Nothing here touches the engine, so a
request that fails half-way through leaves the running state exactly as it was.

The checks here are the ones ipvsadm and the kernel make on a single command (weight range,
threshold order, a known scheduler, duplicates); the director's validation stays the final word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pylvs import model
from pylvs.api import codec
from pylvs.errors import ConfigError

__all__ = [
    "Conflict",
    "Draft",
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


class Draft:
    """A configuration being edited by many operations (``pylvs ctl -R``, ``/api/v1/batch``).

    Services are held by key and the servers of a touched service by address, so each
    operation costs O(1) (plus the size of what it decodes) instead of copying the whole
    configuration; :meth:`build` makes the one new :class:`~pylvs.model.Config` at the end.
    Order is kept as tuples would keep it: an edit stays in place, a re-added entry goes last.
    """

    def __init__(self, cfg: model.Config) -> None:
        self._cfg = cfg
        self._services: dict[model.ServiceKey, model.VirtualServerConfig] = {
            vs.key: vs for vs in cfg.virtual_servers}
        self._servers: dict[model.ServiceKey, dict[model.Endpoint, model.RealServerConfig]] = {}
        self._timeouts = cfg.timeouts

    def _service(self, key: model.ServiceKey) -> model.VirtualServerConfig:
        vs = self._services.get(key)
        if vs is None:
            raise NotFound(f"service {codec.service_id(key)}: no such service")
        servers = self._servers.pop(key, None)
        if servers is not None:
            vs = self._services[key] = dataclasses.replace(
                vs, real_servers=tuple(servers.values()))
        return vs

    def _server_map(self, key: model.ServiceKey) -> dict[model.Endpoint, model.RealServerConfig]:
        servers = self._servers.get(key)
        if servers is None:
            vs = self._service(key)
            servers = self._servers[key] = {rs.address: rs for rs in vs.real_servers}
        return servers

    def build(self) -> model.Config:
        """The edited configuration."""
        for key in list(self._servers):
            self._service(key)
        return dataclasses.replace(self._cfg, virtual_servers=tuple(self._services.values()),
                                   timeouts=self._timeouts)

    def add_service(self, vs: model.VirtualServerConfig) -> None:
        """See :func:`add_service`."""
        check_service(vs, "virtual_server")
        if vs.key in self._services:
            raise Conflict(
                f"virtual_server.address: service {codec.service_id(vs.key)} already exists")
        self._services[vs.key] = vs

    def edit_service(self, key: model.ServiceKey, changes: Mapping[str, Any]) -> None:
        """See :func:`edit_service`."""
        old = self._service(key)
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
        self._services[key] = vs

    def delete_service(self, key: model.ServiceKey) -> None:
        """See :func:`delete_service`."""
        self._service(key)
        del self._services[key]

    def clear(self) -> None:
        """See :func:`clear`."""
        self._services.clear()
        self._servers.clear()

    def add_server(self, key: model.ServiceKey, rs: model.RealServerConfig) -> None:
        """See :func:`add_server`."""
        servers = self._server_map(key)
        check_server(rs, "real_server")
        if rs.address in servers:
            raise Conflict(f"real_server.address: real server {rs.address} already exists")
        servers[rs.address] = rs

    def _existing(self, key: model.ServiceKey,
                  endpoint: model.Endpoint) -> dict[model.Endpoint, model.RealServerConfig]:
        servers = self._server_map(key)
        if endpoint not in servers:
            raise NotFound(f"real server {endpoint} of service {codec.service_id(key)}: "
                           "no such real server")
        return servers

    def edit_server(self, key: model.ServiceKey, endpoint: model.Endpoint,
                    changes: Mapping[str, Any]) -> None:
        """See :func:`edit_server`."""
        servers = self._existing(key, endpoint)
        merged = codec.encode(servers[endpoint])
        if "address" in changes and changes["address"] != merged["address"]:
            raise ConfigError("real_server.address: cannot be changed by an edit")
        merged.update(changes)
        rs = codec.decode_server(merged)
        check_server(rs, "real_server")
        servers[endpoint] = rs

    def delete_server(self, key: model.ServiceKey, endpoint: model.Endpoint) -> None:
        """See :func:`delete_server`."""
        del self._existing(key, endpoint)[endpoint]

    def set_timeouts(self, changes: Mapping[str, Any]) -> None:
        """See :func:`set_timeouts`."""
        current = codec.encode(self._timeouts)
        for name, value in changes.items():
            if name not in current:
                raise ConfigError(
                    f"timeouts.{name}: unknown key (expected one of: tcp, tcpfin, udp)")
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"timeouts.{name}: expected an integer number of seconds")
            if not 0 <= value <= MAX_TIMEOUT:
                raise ConfigError(f"timeouts.{name}: {value} is out of range 0..{MAX_TIMEOUT}")
            if value:
                current[name] = value
        self._timeouts = codec.decode_dataclass(model.TimeoutsConfig, current, "timeouts")


def _one_edit(cfg: model.Config, edit: Callable[[Draft], object]) -> model.Config:
    """``cfg`` with the one change ``edit`` makes to a draft of it."""
    draft = Draft(cfg)
    edit(draft)
    return draft.build()


def add_service(cfg: model.Config, vs: model.VirtualServerConfig) -> model.Config:
    """``-A``: append a new service (with any real servers it carries)."""
    return _one_edit(cfg, lambda d: d.add_service(vs))


def edit_service(
    cfg: model.Config, key: model.ServiceKey, changes: Mapping[str, Any]
) -> model.Config:
    """``-E``: change some fields of a service; the identity (protocol, address) is fixed."""
    return _one_edit(cfg, lambda d: d.edit_service(key, changes))


def delete_service(cfg: model.Config, key: model.ServiceKey) -> model.Config:
    """``-D``: remove a service and its real servers."""
    return _one_edit(cfg, lambda d: d.delete_service(key))


def clear(cfg: model.Config) -> model.Config:
    """``-C``: remove every service."""
    return dataclasses.replace(cfg, virtual_servers=())


def add_server(
    cfg: model.Config, key: model.ServiceKey, rs: model.RealServerConfig
) -> model.Config:
    """``-a``: add a real server to a service."""
    return _one_edit(cfg, lambda d: d.add_server(key, rs))


def edit_server(
    cfg: model.Config, key: model.ServiceKey, endpoint: model.Endpoint, changes: Mapping[str, Any]
) -> model.Config:
    """``-e``: change weight or thresholds of a real server."""
    return _one_edit(cfg, lambda d: d.edit_server(key, endpoint, changes))


def delete_server(
    cfg: model.Config, key: model.ServiceKey, endpoint: model.Endpoint
) -> model.Config:
    """``-d``: remove a real server from a service."""
    return _one_edit(cfg, lambda d: d.delete_server(key, endpoint))


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
    return _one_edit(cfg, lambda d: d.set_timeouts(changes))
