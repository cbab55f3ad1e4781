"""Render ``pylvs serve`` TOML files for the namespace topology (see :mod:`pylvs.testbed.topology`).

Kept apart from the namespace builder: this is pure text generation and is unit-testable
without root.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ServiceSpec", "render_director_config"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpec:
    """One virtual service of a rendered config.

    ``servers`` are 0-based indexes into the topology's real servers (None: all of them);
    ``weights`` pairs with ``servers`` (None: weight 1 each); ``real_port`` None means the
    service's own port (no port translation).
    """

    port: int = 80
    protocol: str = "tcp"
    scheduler: str = "rr"
    real_port: int | None = None
    servers: tuple[int, ...] | None = None
    weights: tuple[int, ...] | None = None
    persistence: int = 0
    flags: tuple[str, ...] = ()
    synproxy: bool = False
    check: str = "none"  # a [virtual_server.check] type; "none" makes runs deterministic
    family: int = 4  # 6: the IPv6 VIP and the real servers' IPv6 addresses


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_scalar(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else _q(value)


def render_director_config(
    *,
    services: Sequence[ServiceSpec],
    vip: str,
    real_servers: Sequence[str],
    public_interface: str,
    private_interface: str,
    nat_router: str | None,
    socket: str,
    ha_node: str | None = None,
    ha_priority: int = 100,
    peer_public: str | None = None,
    peer_private: str | None = None,
    secret_file: str | None = None,
    director_options: Mapping[str, str | int | bool] | None = None,
    extra: str = "",
    vip6: str | None = None,
    real_servers6: Sequence[str] = (),
    nat_router6: str | None = None,
) -> str:
    """Return the TOML text of a director config for the given services and servers.

    ``director_options`` adds keys to ``[director]`` (e.g. ``{"offload": False}``).  A
    service with ``family=6`` uses ``vip6`` and ``real_servers6`` (same indexes).
    """
    lines = [
        "# Rendered by pylvs.testbed.topology for a namespace topology.",
        "[director]",
        f"public_interface = {_q(public_interface)}",
        f"private_interface = {_q(private_interface)}",
    ]
    if nat_router is not None:
        lines.append(f"nat_router = {_q(nat_router)}")
    if nat_router6 is not None:
        lines.append(f"nat_router6 = {_q(nat_router6)}")
    lines.append('dataplane = "tun"')
    for key, value in (director_options or {}).items():
        lines.append(f"{key} = {_toml_scalar(value)}")
    lines += ["", "[api]", f"socket = {_q(socket)}"]
    if ha_node is not None:
        lines += ["", "[ha]", "enabled = true", f"node_id = {_q(ha_node)}",
                  f"priority = {ha_priority}"]
        if peer_public:
            lines.append(f"peer_public = {_q(peer_public)}")
        if peer_private:
            lines.append(f"peer_private = {_q(peer_private)}")
        if secret_file:
            lines.append(f"secret_file = {_q(secret_file)}")
    for svc in services:
        address, servers = vip, real_servers
        if svc.family == 6:
            if vip6 is None:
                raise ValueError("an IPv6 ServiceSpec needs vip6 (an IPv6 topology)")
            address, servers = vip6, real_servers6
        indexes = svc.servers if svc.servers is not None else tuple(range(len(servers)))
        weights = svc.weights if svc.weights is not None else (1,) * len(indexes)
        if len(weights) != len(indexes):
            raise ValueError("ServiceSpec.weights must pair with ServiceSpec.servers")
        lines += ["", "[[virtual_server]]", f"address = {_q(_hostport(address, svc.port))}",
                  f"protocol = {_q(svc.protocol)}", f"scheduler = {_q(svc.scheduler)}"]
        if svc.persistence:
            lines.append(f"persistence = {svc.persistence}")
        if svc.flags:
            lines.append("flags = [" + ", ".join(_q(f) for f in svc.flags) + "]")
        if svc.synproxy:
            lines.append("synproxy = true")
        lines += ["", "  [virtual_server.check]", f"  type = {_q(svc.check)}"]
        port = svc.real_port if svc.real_port is not None else svc.port
        for idx, weight in zip(indexes, weights, strict=True):
            lines += ["", "  [[virtual_server.real_server]]",
                      f"  address = {_q(_hostport(servers[idx], port))}",
                      f"  weight = {weight}"]
    text = "\n".join(lines) + "\n"
    if extra:
        text += "\n" + extra.rstrip("\n") + "\n"
    return text
