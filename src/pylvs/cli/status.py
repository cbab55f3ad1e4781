"""``pylvs status``: the status document as a few lines a person reads at a glance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["human_bytes", "render_status"]


def human_bytes(value: float) -> str:
    """``1536`` -> ``1.5K``: powers of 1024, one decimal below 10."""
    units = ("B", "K", "M", "G", "T")
    v = float(value)
    for unit in units:
        if v < 1024 or unit == units[-1]:
            return f"{v:.1f}{unit}" if v < 10 and unit != "B" else f"{v:.0f}{unit}"
        v /= 1024
    return f"{v:.0f}T"


def _peer(ha: Mapping[str, Any]) -> str:
    peer = ha.get("peer")
    if not peer:
        return "none"
    if isinstance(peer, Mapping):
        parts = [str(peer.get("node_id") or peer.get("address") or "?")]
        if peer.get("role"):
            parts.append(str(peer["role"]).lower())
        if peer.get("alive") is not None:
            parts.append("alive" if peer["alive"] else "silent")
        return " ".join(parts)
    return str(peer)


def _cluster_lines(cl: Mapping[str, Any]) -> list[str]:
    if cl.get("mode") != "active-active":
        return []
    announced = cl.get("announced") or []
    state = "draining" if cl.get("draining") else "announcing"
    lines = [f"cluster active-active  AS {cl.get('asn', '?')}  BIRD pid "
             f"{cl.get('bird_pid') or 'none'}  {state} "
             f"{', '.join(announced) if announced else 'nothing'}"]
    for r in cl.get("routers") or []:
        err = f"  last error: {r['last_error']}" if r.get("last_error") else ""
        lines.append(f"  router {r['address']} AS {r['asn']}  BGP {r.get('state', '?')}  "
                     f"BFD {r.get('bfd') or '-'}{err}")
    peers = [b for b in cl.get("bfd_sessions") or [] if
             b.get("address") not in {r.get("address") for r in cl.get("routers") or []}]
    if peers:
        lines.append("  BFD with real servers: " + ", ".join(
            f"{b['address']} {b['state']}" for b in peers))
    if cl.get("error"):
        lines.append(f"  error: {cl['error']}")
    return lines + _member_lines(cl.get("members"))


def _member_lines(mb: Any) -> list[str]:
    """The other directors of the cluster as this one hears them (pylvs.cluster.sync)."""
    if not isinstance(mb, Mapping):
        return []
    rows = mb.get("members") or []
    alive = sum(1 for m in rows if m.get("alive"))
    sync = "connection sync on" if mb.get("sync") else "no connection sync"
    warm = "" if mb.get("warm") else ", warming up (not announcing yet)"
    lines = [f"  members {alive + 1}/{len(rows) + 1} alive (this node {mb.get('node_id')}, "
             f"{sync}{warm})"]
    for m in rows:
        seen = m.get("last_seen_ago")
        state = "alive" if m.get("alive") else "DEAD" if seen is not None else "never heard"
        parts = [f"  member {m['address']} {m.get('node_id') or '?'}  {state}"]
        if seen is not None:
            parts.append(f"seen {seen:.1f} s ago")
        vips = m.get("announced") or []
        more = int(m.get("announced_count") or 0) - len(vips)
        parts.append("draining" if m.get("draining") else
                     "announces " + (", ".join(vips) or "nothing") + (f" +{more}" if more > 0
                                                                      else ""))
        if m.get("config_match") is False:
            parts.append("SERVICES DIFFER")
        sy = m.get("sync")
        if isinstance(sy, Mapping):
            parts.append(f"records sent {sy.get('records_sent', 0)} "
                         f"applied {sy.get('records_applied', 0)}")
        lines.append("  ".join(parts))
    return lines


_MODE_WORDS = {0: "off", 1: "auto", 2: "ENGAGED", 3: "on"}


def _defense_line(dfn: Mapping[str, Any]) -> str:
    """Flood defence: each strategy's mode, free slots, and what it removed."""
    modes = "  ".join(f"{name} {_MODE_WORDS.get(int(v), v)}"
                      for name, v in sorted((dfn.get("mode") or {}).items()))
    entries = dfn.get("entries_dropped") or {}
    packets = dfn.get("packets_dropped") or {}
    evict = "evict on" if dfn.get("evict_embryonic") else "evict off"
    return (f"defense {modes}  {evict}  {_syncookies_words(dfn.get('syncookies') or {})}  "
            f"free {dfn.get('free_slots', 0)}  "
            f"entries dropped {sum(int(v) for v in entries.values())}  "
            f"packets dropped {sum(int(v) for v in packets.values())}")


def _syncookies_words(sc: Mapping[str, Any]) -> str:
    """``syncookies auto ENGAGED (syns 120000 acks 300 refused 2)``."""
    mode = {0: "off", 1: "auto", 2: "on"}.get(int(sc.get("mode", 1)), "?")
    state = " ENGAGED" if sc.get("engaged") else ""
    refused = sum(int(v) for v in (sc.get("acks_refused") or {}).values())
    return (f"syncookies {mode}{state} (syns {sc.get('syns', 0)} "
            f"acks {sc.get('acks_accepted', 0)} refused {refused})")


def _xdp_line(xdp: Mapping[str, Any]) -> str:
    """The XDP SYN proxy: knob, state, where it is attached, SYN-ACKs it sent."""
    where = ", ".join(f"{name} ({m})" for name, m in sorted((xdp.get("attached") or {}).items()))
    why = f" ({xdp['error']})" if xdp.get("error") else ""
    cookies = "  syncookies ENGAGED" if xdp.get("syncookies_engaged") else ""
    return (f"xdp synproxy {xdp.get('mode', '?')}: {xdp.get('state', '?')}{why}"
            f"{' on ' + where if where else ''}  syn-acks {xdp.get('synproxy_xdp_syn', 0)} "
            f"(syncookies {xdp.get('syncookie_xdp_syn', 0)}){cookies}")


def _fastpath_line(fp: Mapping[str, Any]) -> str:
    """The fast path: knob, state, interfaces, connections in it, what the kernel forwarded."""
    where = ", ".join(fp.get("attached") or [])
    why = f" ({fp['error']})" if fp.get("error") else ""
    return (f"fastpath {fp.get('mode', '?')}: {fp.get('state', '?')}{why}"
            f"{' on ' + where if where else ''}  connections {int(fp.get('entries', 0)) // 2}  "
            f"forwarded {fp.get('packets', 0)} pkt {human_bytes(int(fp.get('bytes', 0)))}")


def render_status(status: Mapping[str, Any]) -> str:
    """The summary: role and peer, then each service and its servers."""
    ha = status.get("ha") or {}
    eng = status.get("engine") or {}
    lines = [
        f"pylvs {status.get('version', '?')}  node {ha.get('node_id', '?')}  "
        f"role {str(ha.get('role', '?')).upper()}  peer {_peer(ha)}  "
        f"transitions {ha.get('transitions', 0)}",
        f"connections {eng.get('connections', 0)}  "
        f"drops {sum(int(v) for v in (eng.get('drops') or {}).values())}  "
        f"config {status.get('source', '?')}",
    ]
    lag = status.get("loop_lag")
    if isinstance(lag, Mapping) and lag.get("window_samples"):
        lines.append(
            f"loop lag (last {lag['window_samples']} samples) p50 {lag['p50'] * 1e3:.1f} ms  "
            f"p99 {lag['p99'] * 1e3:.1f} ms  max {lag['max'] * 1e3:.1f} ms  "
            f"(max since start {lag['max_ever'] * 1e3:.1f} ms)")
    dfn = status.get("defense")
    if dfn:
        lines.append(_defense_line(dfn))
    xdp = status.get("xdp_synproxy")
    if isinstance(xdp, Mapping):
        lines.append(_xdp_line(xdp))
    fastpath = status.get("fastpath")
    if isinstance(fastpath, Mapping):
        lines.append(_fastpath_line(fastpath))
    lines += _cluster_lines(status.get("cluster") or {})
    services = status.get("services") or []
    if not services:
        lines.append("no virtual services")
    for svc in services:
        servers = svc.get("real_servers") or []
        up = sum(1 for rs in servers if rs.get("health") == "up")
        r = svc.get("rates") or {}
        persist = f" persistent {svc['persistence']}" if svc.get("persistence") else ""
        persist += " synproxy" if svc.get("synproxy") else ""
        lines.append("")
        lines.append(
            f"{str(svc['protocol']).upper()} {svc['address']}  {svc['scheduler']}{persist}  "
            f"servers {up}/{len(servers)} up  {r.get('cps', 0)} conn/s  "
            f"in {r.get('inpps', 0)} pkt/s {human_bytes(r.get('inbps', 0))}/s  "
            f"out {r.get('outpps', 0)} pkt/s {human_bytes(r.get('outbps', 0))}/s"
        )
        for rs in servers:
            rr = rs.get("rates") or {}
            weight = f"{rs.get('effective_weight', 0)}/{rs.get('weight', 0)}"
            lines.append(
                f"  {rs['address']:<21} {rs.get('health', '?')!s:<7} weight {weight:<9} "
                f"active {rs.get('active_conns', 0):<6} inactive {rs.get('inactive_conns', 0):<6}"
                f" {rr.get('cps', 0)} conn/s  {human_bytes(rr.get('inbps', 0))}/s in"
            )
    return "\n".join(lines) + "\n"
