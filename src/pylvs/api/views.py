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
from pylvs.engine_types import DefenseInfo, EngineStats, Rates, ServiceInfo, Stats
from pylvs.errors import ConfigError
from pylvs.looplag import SLICE, Slices

__all__ = [
    "RATE_KEYS",
    "STAT_KEYS",
    "cluster",
    "connections",
    "engine_stats",
    "ha",
    "one_service",
    "service",
    "services",
    "services_sliced",
    "status",
    "sync_timeouts",
    "timeouts",
    "zero",
]

STAT_KEYS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATE_KEYS = ("cps", "inpps", "outpps", "inbps", "outbps")

Json = dict[str, Any]


def _counters(obj: Stats | Rates | None, keys: Iterable[str]) -> Json:
    return {k: int(getattr(obj, k)) if obj is not None else 0 for k in keys}


def _engine_index(director: DirectorLike) -> dict[model.ServiceKey, ServiceInfo]:
    return {info.key: info for info in director.engine.services()}


def _health_word(verdict: tuple[bool, str] | None, vs: model.VirtualServerConfig) -> str:
    if verdict is None:
        return "up" if vs.check.type == "none" else "unknown"
    return "up" if verdict[0] else "down"


def services(director: DirectorLike) -> list[Json]:
    """Every configured service with its live counters, in configuration order."""
    engine = _engine_index(director)
    return [service(director, vs, engine.get(vs.key)) for vs in director.config.virtual_servers]


async def services_sliced(director: DirectorLike, budget: float = SLICE) -> list[Json]:
    """:func:`services`, built a service at a time with the loop given a turn every *budget*
    seconds: at 10,000 servers the whole listing takes ~0.3 s (issue 13)."""
    slices = Slices(budget)
    out = []
    for vs in director.config.virtual_servers:
        out.append(one_service(director, vs))
        await slices.tick()
    return out


def one_service(director: DirectorLike, vs: model.VirtualServerConfig) -> Json:
    """One configured service, looked up in the engine by key (not by listing it)."""
    try:
        info: ServiceInfo | None = director.engine.service(vs.key)
    except ConfigError:
        info = None  # not in the engine (not applied yet)
    return service(director, vs, info)


def service(director: DirectorLike, vs: model.VirtualServerConfig,
            info: ServiceInfo | None) -> Json:
    """The view of configured service *vs* with *info*, what the engine holds of it."""
    sid = codec.service_id(vs.key)
    verdicts = director.health_verdicts
    body: Json = codec.encode(vs)
    body.pop("real_server", None)
    body["id"] = sid
    body["in_engine"] = info is not None
    body["stats"] = _counters(info.stats if info else None, STAT_KEYS)
    body["rates"] = _counters(info.rates if info else None, RATE_KEYS)
    live = {model.hostport(str(srv.key.address), srv.key.port): srv
            for srv in (info.servers if info else ())}
    servers = []
    for rs in vs.real_servers:
        key = str(rs.address)
        srv = live.get(key)
        verdict = verdicts.get((vs.key, rs.address))
        servers.append({
            # the server's configuration (codec.encode's keys, without its generic walk)
            "address": key, "weight": rs.weight, "upper_threshold": rs.upper_threshold,
            "lower_threshold": rs.lower_threshold,
            "forward": "Masq",
            # Not in the engine: a server taken out by health ("remove") or not applied yet.
            "in_engine": srv is not None,
            "effective_weight": srv.weight if srv else 0,
            "active_conns": srv.active_conns if srv else 0,
            "inactive_conns": srv.inactive_conns if srv else 0,
            "persist_conns": srv.persist_conns if srv else 0,
            "overloaded": srv.overloaded if srv else False,
            "health": _health_word(verdict, vs),
            "health_reason": None if verdict is None else verdict[1],
            "stats": _counters(srv.stats if srv else None, STAT_KEYS),
            "rates": _counters(srv.rates if srv else None, RATE_KEYS),
        })
    configured = {str(rs.address) for rs in vs.real_servers}
    for key, srv in live.items():
        if key in configured:
            continue
        # In the engine but not configured: the sorry server standing in for the pool.
        servers.append({
            "address": key, "weight": srv.weight, "upper_threshold": srv.upper_threshold,
            "lower_threshold": srv.lower_threshold, "forward": "Masq", "in_engine": True,
            "effective_weight": srv.weight, "active_conns": srv.active_conns,
            "inactive_conns": srv.inactive_conns, "persist_conns": srv.persist_conns,
            "overloaded": srv.overloaded, "health": "sorry", "health_reason": None,
            "sorry": True, "stats": _counters(srv.stats, STAT_KEYS),
            "rates": _counters(srv.rates, RATE_KEYS),
        })
    body["real_servers"] = servers
    return body


_CONN_FILTERS = ("protocol", "client", "virtual", "server", "state")


def connections(director: DirectorLike, query: Mapping[str, str]) -> list[Json]:
    """The connection table, filtered by exact ``protocol``/``state`` or address prefixes.

    ``expires`` is the seconds left, on the director's clock (``time.monotonic``).
    """
    limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
    now = time.monotonic()
    out: list[Json] = []
    for c in director.engine.connections():
        row = {
            "protocol": c.protocol,
            "client": model.hostport(str(c.client_address), c.client_port),
            "virtual": model.hostport(str(c.virtual_address), c.virtual_port),
            "server": model.hostport(str(c.server_address), c.server_port),
            "state": c.state,
            "expires": int(c.remaining(now)),
            "template": c.template,
            "active": c.active,
            "synced": c.synced,
            "in_pkts": c.in_pkts,
            "synproxy": c.synproxy,
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
        elif not (have == want or model.split_hostport(have)[0] == want.strip("[]")):
            return False
    return True


def engine_stats(director: DirectorLike) -> Json:
    """Engine-wide totals, drops by reason and table occupancy."""
    s = director.engine.stats()
    return {
        "totals": _counters(s.totals, STAT_KEYS),
        "rates": _counters(s.rates, RATE_KEYS),
        "drops": dict(s.drops),
        "passes": dict(s.passes),
        "events": dict(s.events),
        "connections": s.connections,
        "templates": s.templates,
        "max_connections": s.max_connections,
        "bytes_per_connection": s.bytes_per_connection,
        "table_size": s.max_connections,
        "lock": director.engine.lock_stats(),
    }


def zero(director: DirectorLike, key: model.ServiceKey | None) -> None:
    """ipvsadm ``-Z``: new baseline for one service or all (the engine keeps the raw count)."""
    director.engine.zero_stats(key)


def timeouts(director: DirectorLike) -> Json:
    """The connection timeouts in force (the engine's, which is what expires connections)."""
    t = director.engine.timeouts()
    return {"tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp}


def defense(director: DirectorLike) -> Json:
    """The flood defence (docs/ipvs.md#flood-defence): the configured ``[defense]``, each
    strategy's mode now (an automatic one reads 1 idle or 2 engaged), what is engaged, and the
    entries and packets it removed."""
    d = director.engine.defense()
    s = d.settings
    st = director.engine.stats()
    drops = st.drops
    return {
        "configured": codec.encode(director.config.defense),
        "mode": {"drop_entry": s.drop_entry, "drop_packet": s.drop_packet,
                 "secure_tcp": s.secure_tcp},
        "amemthresh": s.amemthresh,
        "am_droprate": s.am_droprate,
        "evict_embryonic": s.evict_embryonic,
        "drop_entry_active": d.drop_entry_active,
        "secure_tcp_active": d.secure_tcp_active,
        "drop_rate": d.drop_rate,
        "free_slots": d.free_slots,
        "available": d.available,
        "embryonic": d.embryonic,
        "entries_dropped": dict(d.entries_dropped),
        "packets_dropped": {k: drops.get(k, 0) for k in ("defense_drop_packet", "table_full")},
        "syncookies": _syncookies(d, st),
    }


def _syncookies(d: DefenseInfo, st: EngineStats) -> Json:
    """syncookies (docs/ipvs.md#syn-cookies): the mode, engaged or not, the SYNs answered
    with cookies (engine and XDP) and the cookie ACKs accepted and refused."""
    ev, drops, info = st.events, st.drops, d.syncookies
    out: dict[str, Any] = {
        "mode": d.settings.syncookies,
        "engaged": bool(info and info.engaged),
        "syns": ev.get("syncookie_syn", 0) + (info.xdp_syns if info else 0),
        "syns_engine": ev.get("syncookie_syn", 0),
        "syns_xdp": info.xdp_syns if info else 0,
        "acks_accepted": ev.get("syncookie_ack_ok", 0),
        "acks_refused": {k: drops.get(f"syncookie_{k}_cookie", 0) for k in ("bad", "expired")},
    }
    if info is not None:
        out.update(threshold=info.threshold, unanswered_last_second=info.unanswered,
                   quiet_seconds=info.quiet_seconds, times_engaged=info.times_engaged)
    return out


def sync_timeouts(director: DirectorLike) -> None:
    """Make the engine's timeouts follow the configuration (a no-op if they already do)."""
    want = director.config.timeouts
    if timeouts(director) != codec.encode(want):
        director.engine.set_timeouts(tcp=want.tcp, tcpfin=want.tcpfin, udp=want.udp)


def ha(director: DirectorLike) -> Json:
    """The HA role, peer and transitions as the HA component reports them.

    Without HA the node serves alone: its role is ACTIVE (or BACKUP if the director was told
    not to own the VIPs).  ``peer.alive`` is true while heartbeats arrive on any path.
    """
    cfg = director.config.ha
    snap = director.status_section("ha")
    base: Json = {
        "enabled": cfg.enabled,
        "node_id": cfg.node_id,
        "priority": cfg.priority,
        "sync": cfg.sync,
        "role": "active" if director.active else "backup",
        "peer": None,
        "transitions": 0,
    }
    if isinstance(snap, Mapping):
        base.update(snap)
        paths = snap.get("paths")
        if isinstance(base.get("peer"), Mapping) and isinstance(paths, Mapping):
            alive = any(isinstance(p, Mapping) and p.get("alive") for p in paths.values())
            base["peer"] = {**base["peer"], "alive": alive}
    base["role"] = str(base.get("role") or "init").upper()
    return base


def cluster(director: DirectorLike) -> Json:
    """The cluster section: mode, and with active-active what the cluster component reports
    (announced VIPs, each router's BGP state and last error, BFD sessions)."""
    snap = director.status_section("cluster")
    base: Json = {"mode": director.config.cluster.mode}
    if isinstance(snap, Mapping):
        base.update(snap)
    return base


def status(director: DirectorLike, services_view: list[Json] | None = None) -> Json:
    """Everything the status page and ``pylvs status`` show, in one document
    (*services_view*: :func:`services`, if built already)."""
    cfg = director.config
    return {
        "version": __version__,
        "time": time.time(),
        "source": cfg.source,
        "director": {"public_interface": cfg.director.public_interface,
                     "private_interface": cfg.director.private_interface},
        "ha": ha(director),
        "cluster": cluster(director),
        "engine": engine_stats(director),
        "dataplane": director.status_section("dataplane"),
        "loop_lag": director.status_section("loop_lag"),
        "timeouts": timeouts(director),
        "defense": defense(director),
        "xdp_synproxy": director.status_section("xdp_synproxy"),
        "fastpath": director.status_section("fastpath"),
        "services": services(director) if services_view is None else services_view,
    }
