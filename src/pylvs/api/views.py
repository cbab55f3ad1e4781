"""Read-side views: the JSON the API returns, built from config, engine and director status.

A service in these views is its configuration (the same keys as in the TOML file) plus what the
engine counts (``stats``, ``rates``) and, per real server, the live numbers ipvsadm shows
(``effective_weight``, ``active_conns``, ``inactive_conns``, ``persist_conns``) and the health
verdict from the director's status (``health``: ``up``, ``down`` or ``unknown``).
This is the one module that knows the engine's and the director's result types.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pylvs import __version__, model
from pylvs.api import codec
from pylvs.api.protocol import DirectorLike

__all__ = [
    "RATE_KEYS",
    "STAT_KEYS",
    "connections",
    "engine_stats",
    "ha",
    "health_index",
    "services",
    "status",
    "sync_timeouts",
    "timeouts",
    "zero",
]

STAT_KEYS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATE_KEYS = ("cps", "inpps", "outpps", "inbps", "outbps")

Json = dict[str, Any]


def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    """First attribute (or mapping key) of *obj* among *names*."""
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return default


def _counters(obj: Any, keys: Iterable[str]) -> Json:
    return {k: int(_attr(obj, k, default=0) or 0) for k in keys}


def _zero_counters(keys: Iterable[str]) -> Json:
    return dict.fromkeys(keys, 0)


def _endpoint_text(obj: Any, addr_names: tuple[str, ...], port_names: tuple[str, ...]) -> str:
    address = _attr(obj, *addr_names)
    port = _attr(obj, *port_names)
    if isinstance(address, model.Endpoint):
        return str(address)
    if port is None and isinstance(address, str) and ":" in address:
        return address
    return f"{address}:{port}"


def _engine_index(director: DirectorLike) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for info in director.engine.services():
        protocol = str(_attr(info, "protocol", default="tcp")).lower()
        out[(protocol, _endpoint_text(info, ("address", "vip"), ("port", "vport")))] = info
    return out


def health_index(director: DirectorLike) -> dict[tuple[str, str], dict[str, Any]]:
    """``(service id, server) -> health record`` from the director's status snapshot."""
    snap = director.status().get("health") or {}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for svc in snap.get("services", ()) if isinstance(snap, Mapping) else ():
        name = str(svc.get("service", ""))  # "tcp 198.18.0.100:80"
        proto, _, addr = name.partition(" ")
        for server, record in (svc.get("servers") or {}).items():
            out[(f"{proto}/{addr}", str(server))] = dict(record)
    return out


def _health_word(record: Mapping[str, Any] | None, vs: model.VirtualServerConfig) -> str:
    if record is None:
        return "up" if vs.check.type == "none" else "unknown"
    return "up" if record.get("healthy") else "down"


def services(director: DirectorLike) -> list[Json]:
    """Every configured service with its live counters, in configuration order."""
    engine = _engine_index(director)
    health = health_index(director)
    out = []
    for vs in director.config.virtual_servers:
        sid = codec.service_id(vs.protocol, vs.address)
        body = codec.encode(vs)
        body.pop("real_server", None)
        info = engine.get((vs.protocol, str(vs.address)))
        body["id"] = sid
        body["stats"] = _counters(_attr(info, "stats"), STAT_KEYS) if info else \
            _zero_counters(STAT_KEYS)
        body["rates"] = _counters(_attr(info, "rates"), RATE_KEYS) if info else \
            _zero_counters(RATE_KEYS)
        live = {}
        for srv in _attr(info, "servers", "dests", default=()) or ():
            live[_endpoint_text(srv, ("address", "rip"), ("port", "rport"))] = srv
        servers = []
        for rs in vs.real_servers:
            key = str(rs.address)
            srv = live.get(key)
            record = health.get((sid, key))
            entry = codec.encode(rs)
            entry.update(
                forward="Masq",
                effective_weight=int(_attr(srv, "weight", default=0)) if srv else 0,
                active_conns=int(_attr(srv, "active_conns", "activeconns", default=0) or 0),
                inactive_conns=int(_attr(srv, "inactive_conns", "inactconns", default=0) or 0),
                persist_conns=int(_attr(srv, "persist_conns", "persistconns", default=0) or 0),
                overloaded=bool(_attr(srv, "overloaded", default=False)),
                in_engine=srv is not None,
                health=_health_word(record, vs),
                health_reason=None if record is None else record.get("reason"),
                stats=_counters(_attr(srv, "stats"), STAT_KEYS) if srv else
                _zero_counters(STAT_KEYS),
                rates=_counters(_attr(srv, "rates"), RATE_KEYS) if srv else
                _zero_counters(RATE_KEYS),
            )
            servers.append(entry)
        body["real_servers"] = servers
        out.append(body)
    return out


_CONN_FILTERS = ("protocol", "client", "virtual", "server", "state")


def connections(director: DirectorLike, query: Mapping[str, str]) -> list[Json]:
    """The connection table, filtered by exact ``protocol``/``state`` or address prefixes."""
    limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
    out: list[Json] = []
    for c in director.engine.connections():
        row = {
            "protocol": str(_attr(c, "protocol", default="tcp")).lower(),
            "client": _endpoint_text(c, ("client_address", "caddr", "client"),
                                     ("client_port", "cport")),
            "virtual": _endpoint_text(c, ("virtual_address", "vaddr", "vip", "virtual"),
                                      ("virtual_port", "vport")),
            "server": _endpoint_text(c, ("server_address", "daddr", "rip", "server"),
                                     ("server_port", "dport", "rport")),
            "state": str(_attr(c, "state", default="NONE")),
            "expires": int(float(_attr(c, "expires", "expires_in", default=0) or 0)),
        }
        if not _matches(row, query):
            continue
        out.append(row)
        if limit is not None and len(out) >= limit:
            break
    return out


def _matches(row: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    for key in _CONN_FILTERS:
        want = query.get(key)
        if not want:
            continue
        have = str(row[key])
        if key in ("protocol", "state"):
            if have.lower() != want.lower():
                return False
        elif not (have == want or have.startswith(want + ":")):
            return False
    return True


def engine_stats(director: DirectorLike) -> Json:
    """Engine-wide totals, drops by reason and table size."""
    s = director.engine.stats()
    drops = _attr(s, "drops", default={}) or {}
    return {
        "totals": _counters(_attr(s, "totals", default=s), STAT_KEYS),
        "rates": _counters(_attr(s, "rates", default=s), RATE_KEYS),
        "drops": {str(k): int(v) for k, v in dict(drops).items()},
        "connections": int(_attr(s, "connections", "table_entries", default=0) or 0),
        "table_size": int(_attr(s, "table_size", "size", default=4096) or 4096),
        "max_connections": int(_attr(s, "max_connections", default=0) or 0),
    }


def zero(director: DirectorLike, key: tuple[str, model.Endpoint] | None) -> None:
    """ipvsadm ``-Z``: new baseline for one service or all (the engine keeps the raw count)."""
    engine: Any = director.engine
    if key is None:
        engine.zero_stats()
        return
    try:
        engine.zero_stats(key[0], str(key[1].address), key[1].port)
    except TypeError:
        # An engine that can only zero everything: zeroing more than asked beats refusing.
        engine.zero_stats()


def timeouts(director: DirectorLike) -> Json:
    """The connection timeouts in force (the engine's, which is what expires connections)."""
    getter = getattr(director.engine, "timeouts", None)
    t: Any = getter() if getter is not None else director.config.timeouts
    return {k: int(_attr(t, k, default=0)) for k in ("tcp", "tcpfin", "udp")}


def sync_timeouts(director: DirectorLike) -> None:
    """Make the engine's timeouts follow the configuration (a no-op if they already do)."""
    setter = getattr(director.engine, "set_timeouts", None)
    want = director.config.timeouts
    if setter is not None and timeouts(director) != codec.encode(want):
        setter(tcp=want.tcp, tcpfin=want.tcpfin, udp=want.udp)


def ha(director: DirectorLike) -> Json:
    """The HA role, peer and transitions as the director reports them (config as fallback)."""
    cfg = director.config.ha
    snap = director.status().get("ha") or {}
    base: Json = {
        "enabled": cfg.enabled,
        "node_id": cfg.node_id,
        "priority": cfg.priority,
        "sync": cfg.sync,
        "role": "ACTIVE" if not cfg.enabled else "INIT",
        "peer": None,
        "transitions": 0,
    }
    if isinstance(snap, Mapping):
        base.update(snap)
    return base


def status(director: DirectorLike) -> Json:
    """Everything the status page and ``pylvs status`` show, in one document."""
    raw = director.status()
    cfg = director.config
    return {
        "version": __version__,
        "time": time.time(),
        "source": cfg.source,
        "director": {"public_interface": cfg.director.public_interface,
                     "private_interface": cfg.director.private_interface},
        "ha": ha(director),
        "engine": engine_stats(director),
        "dataplane": raw.get("dataplane"),
        "timeouts": timeouts(director),
        "services": services(director),
    }
