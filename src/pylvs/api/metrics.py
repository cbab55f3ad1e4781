"""``GET /metrics``: the Prometheus text exposition format (version 0.0.4).

Names follow node_exporter's IPVS collector with a ``pylvs_ipvs_`` prefix in place of
``node_ipvs_`` (``…_backend_connections_active``, ``…_incoming_bytes_total`` …) and the same
labels (``local_address``, ``local_port``, ``proto``, ``remote_address``, ``remote_port``, and
``local_mark``), so a dashboard written for a kernel director needs only the prefix changed.
A firewall-mark service is labelled as node_exporter reads it from /proc/net/ip_vs: ``proto``
``FWM``, ``local_mark`` the mark in eight hex digits (``00000050``), port 0; its
``local_address`` is its VIP, or ``0.0.0.0`` / ``::`` without one, which keeps mark 80's IPv4
and IPv6 services apart (the kernel's /proc line does not say the family).  The rest (health, HA,
drops, dataplane) is ``pylvs_*``.  Written by hand: the format is small and the daemon should
not need prometheus_client at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pylvs.api import views
from pylvs.api.protocol import DirectorLike
from pylvs.model import split_hostport

__all__ = ["MetricFamily", "render"]

_ROLES = ("INIT", "BACKUP", "ACTIVE", "FAULT")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class MetricFamily:
    """One metric name with its HELP, TYPE and samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add(self, labels: Mapping[str, str], value: float, suffix: str = "") -> None:
        """Add a sample; *suffix* is ``_bucket``/``_sum``/``_count`` for histograms."""
        self.samples.append((suffix, dict(labels), value))

    def render(self) -> list[str]:
        """The family's lines."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{self.name}{suffix}{{{label_text}}} {_number(value)}"
                         if label_text else f"{self.name}{suffix} {_number(value)}")
        return lines


_SERVICE_COUNTERS = (
    ("connections_total", "conns", "connections scheduled"),
    ("incoming_packets_total", "inpkts", "packets from clients to real servers"),
    ("outgoing_packets_total", "outpkts", "packets from real servers to clients"),
    ("incoming_bytes_total", "inbytes", "bytes from clients to real servers (IP length)"),
    ("outgoing_bytes_total", "outbytes", "bytes from real servers to clients (IP length)"),
)


def _split(endpoint: object) -> tuple[str, str]:
    # Labels carry the bare address (no IPv6 brackets), as the node exporter's IPVS collector.
    host, port = split_hostport(str(endpoint))
    return host, port or ""


def _service_labels(svc: Mapping[str, Any]) -> dict[str, str]:
    host, port = _split(svc["address"])
    if svc.get("fwmark"):
        return {"local_address": host, "local_port": "0", "proto": "FWM",
                "local_mark": f"{int(svc['fwmark']):08X}"}
    return {"local_address": host, "local_port": port, "proto": str(svc["protocol"]).upper(),
            "local_mark": ""}


def _families(director: DirectorLike,
              services: list[dict[str, Any]] | None = None) -> Iterable[MetricFamily]:
    if services is None:
        services = views.services(director)
    fams: dict[str, MetricFamily] = {}

    def fam(name: str, kind: str, help_text: str) -> MetricFamily:
        if name not in fams:
            fams[name] = MetricFamily(name, kind, help_text)
        return fams[name]

    for svc in services:
        labels = _service_labels(svc)
        for suffix, key, text in _SERVICE_COUNTERS:
            fam(f"pylvs_ipvs_service_{suffix}", "counter", f"Per virtual service: {text}.").add(
                labels, svc["stats"][key])
        for rs in svc["real_servers"]:
            host, port = _split(rs["address"])
            rl = {**labels, "remote_address": host, "remote_port": port}
            for suffix, key, text in _SERVICE_COUNTERS:
                fam(f"pylvs_ipvs_backend_{suffix}", "counter",
                    f"Per real server: {text}.").add(rl, rs["stats"][key])
            fam("pylvs_ipvs_backend_connections_active", "gauge",
                "Connections in an active TCP state.").add(rl, rs["active_conns"])
            fam("pylvs_ipvs_backend_connections_inactive", "gauge",
                "Connections in any other state (UDP is always inactive).").add(
                    rl, rs["inactive_conns"])
            fam("pylvs_ipvs_backend_weight", "gauge",
                "Weight the scheduler uses now (0 while quiesced).").add(
                    rl, rs["effective_weight"])
            fam("pylvs_backend_configured_weight", "gauge",
                "Weight set in the configuration.").add(rl, rs["weight"])
            fam("pylvs_backend_up", "gauge",
                "Health verdict: 1 up, 0 down (absent while unknown).")
            if rs["health"] in ("up", "down"):
                fams["pylvs_backend_up"].add(rl, 1 if rs["health"] == "up" else 0)

    stats = views.engine_stats(director)
    totals = stats["totals"]
    for suffix, key, text in _SERVICE_COUNTERS:
        fam(f"pylvs_ipvs_{suffix}", "counter", f"All services: {text}.").add({}, totals[key])
    fam("pylvs_engine_connections", "gauge", "Entries in the connection table.").add(
        {}, stats["connections"])
    drops = fam("pylvs_engine_drops_total", "counter", "Packets the engine dropped, by reason.")
    for reason, count in sorted(stats["drops"].items()):
        drops.add({"reason": reason}, count)
    events = fam("pylvs_engine_events_total", "counter",
                 "Engine events that are not drops (SYN proxy cookies sent, ACKs accepted).")
    for event, count in sorted(stats.get("events", {}).items()):
        events.add({"event": event}, count)
    _xdp_synproxy(director.status_section("xdp_synproxy"), events, fam)
    _fastpath(director.status_section("fastpath"), fam)
    _defense(views.defense(director), fam)

    ha = views.ha(director)
    role_fam = fam("pylvs_ha_role", "gauge", "HA role of this node: 1 for the current role.")
    role = str(ha.get("role", "")).upper()
    for name in _ROLES:
        role_fam.add({"role": name.lower()}, 1 if role == name else 0)
    fam("pylvs_ha_transitions_total", "counter", "HA role changes since start.").add(
        {}, int(ha.get("transitions") or 0))
    fam("pylvs_ha_enabled", "gauge", "1 when failover is configured.").add({}, bool(ha["enabled"]))

    _cluster(views.cluster(director), fam)
    _dataplane(director.status_section("dataplane"), fam)
    _loop_lag(director.status_section("loop_lag"), fam)
    _engine_lock(stats["lock"], fam)
    return fams.values()


_LOCK_HELP = {
    "control_hold": "How long one control-plane call held the engine lock (packets wait).",
    "worker_hold": "How long a packet worker held the engine lock exclusively.",
    "worker_wait": "How long a packet worker waited to take the engine lock.",
}


def _engine_lock(lock: Mapping[str, Any], fam: Any) -> None:
    """The engine lock's hold and wait times (core/lock.h), since start."""
    for kind, text in _LOCK_HELP.items():
        t = lock[kind]
        h = fam(f"pylvs_engine_lock_{kind}_seconds", "histogram", text)
        for bound, count in t["buckets"]:
            h.add({"le": str(bound)}, count, "_bucket")
        h.add({}, float(t["total_seconds"]), "_sum")
        h.add({}, int(t["count"]), "_count")


def _loop_lag(lag: Any, fam: Any) -> None:
    """How late the event loop ran its timers (pylvs.looplag), since start."""
    if not isinstance(lag, Mapping) or not isinstance(lag.get("buckets"), list):
        return
    h = fam("pylvs_loop_lag_seconds", "histogram",
            "How late the event loop woke a periodic timer (a stall delays heartbeats).")
    for bound, count in lag["buckets"]:
        h.add({"le": str(bound)}, count, "_bucket")
    h.add({}, float(lag.get("sum", 0.0)), "_sum")
    h.add({}, int(lag.get("count", 0)), "_count")


def _cluster(cl: Mapping[str, Any], fam: Callable[[str, str, str], MetricFamily]) -> None:
    if cl.get("mode") != "active-active":
        return
    announced = set(cl.get("announced") or ())
    ann = fam("pylvs_cluster_announced", "gauge",
              "1 while this director announces the VIP to its routers over BGP.")
    for vip in cl.get("vips") or ():
        ann.add({"vip": str(vip)}, 1 if vip in announced else 0)
    bgp = fam("pylvs_cluster_bgp_established", "gauge",
              "1 while the BGP session with the router is established.")
    for r in cl.get("routers") or ():
        bgp.add({"router": str(r["address"]), "asn": str(r["asn"])}, bool(r.get("established")))
    bfd = fam("pylvs_cluster_bfd_up", "gauge", "1 while the BFD session with the peer is up.")
    for b in cl.get("bfd_sessions") or ():
        bfd.add({"peer": str(b["address"]), "interface": str(b["interface"])},
                b.get("state") == "Up")
    fam("pylvs_cluster_draining", "gauge", "1 while this director drains (SIGTERM).").add(
        {}, bool(cl.get("draining")))
    _cluster_members(cl.get("members"), fam)


def _cluster_members(mb: Any, fam: Callable[[str, str, str], MetricFamily]) -> None:
    """The other members: alive, last hello, what each announces, the records exchanged."""
    if not isinstance(mb, Mapping):
        return
    up = fam("pylvs_cluster_member_up", "gauge",
             "1 while the cluster member's hellos arrive (silent 3.5 intervals: 0).")
    seen = fam("pylvs_cluster_member_last_seen_seconds", "gauge",
               "Seconds since the member was last heard.")
    ann = fam("pylvs_cluster_member_announced", "gauge",
              "1 for each VIP the member says it announces to its routers.")
    sent = fam("pylvs_cluster_sync_records_sent_total", "counter",
               "Connection records sent to the member.")
    applied = fam("pylvs_cluster_sync_records_applied_total", "counter",
                  "Connection records received from the member and installed.")
    for m in mb.get("members") or ():
        labels = {"member": str(m["address"]), "node_id": str(m.get("node_id") or "")}
        up.add(labels, bool(m.get("alive")))
        if m.get("last_seen_ago") is not None:
            seen.add(labels, float(m["last_seen_ago"]))
        for vip in m.get("announced") or ():
            ann.add({**labels, "vip": str(vip)}, 1)
        sy = m.get("sync")
        if isinstance(sy, Mapping):
            sent.add(labels, int(sy.get("records_sent", 0)))
            applied.add(labels, int(sy.get("records_applied", 0)))


def _defense(dfn: Mapping[str, Any], fam: Any) -> None:
    """Flood defence: each strategy's mode, what is engaged, entries and packets removed."""
    mode = fam("pylvs_defense_mode", "gauge",
               "Flood defence mode by strategy: 0 off, 1 automatic idle, 2 automatic engaged, "
               "3 always on.")
    for strategy, value in sorted(dfn["mode"].items()):
        mode.add({"strategy": strategy}, value)
    fam("pylvs_defense_drop_rate", "gauge",
        "drop_packet: one in this many new connections is dropped (0 idle).").add(
            {}, dfn["drop_rate"])
    fam("pylvs_defense_free_slots", "gauge", "Free connection-table slots.").add(
        {}, dfn["free_slots"])
    fam("pylvs_defense_embryonic_entries", "gauge",
        "Entries eviction may take (SYN seen, never established).").add({}, dfn["embryonic"])
    removed = fam("pylvs_defense_entries_dropped_total", "counter",
                  "Table entries removed by the flood defence, by reason.")
    for reason, count in sorted(dfn["entries_dropped"].items()):
        removed.add({"reason": reason}, count)
    packets = fam("pylvs_defense_packets_dropped_total", "counter",
                  "New-connection packets dropped by drop_packet or a full table.")
    for reason, count in sorted(dfn["packets_dropped"].items()):
        packets.add({"reason": reason}, count)
    _syncookies(dfn["syncookies"], fam)


def _syncookies(sc: Mapping[str, Any], fam: Any) -> None:
    """syncookies: mode, engaged, SYNs answered with cookies, cookie ACKs by outcome."""
    fam("pylvs_defense_syncookies_mode", "gauge",
        "syncookies setting: 0 never, 1 automatic, 2 always.").add({}, sc["mode"])
    fam("pylvs_defense_syncookies_engaged", "gauge",
        "1 while every TCP service answers SYNs with cookies.").add({}, int(sc["engaged"]))
    syns = fam("pylvs_defense_syncookies_syns_total", "counter",
               "SYNs to services without synproxy answered with a cookie, by where.")
    syns.add({"where": "engine"}, sc["syns_engine"])
    syns.add({"where": "xdp"}, sc["syns_xdp"])
    acks = fam("pylvs_defense_syncookies_acks_total", "counter",
               "ACKs to syncookies' cookies, by outcome.")
    acks.add({"outcome": "accepted"}, sc["acks_accepted"])
    for reason, count in sorted(sc["acks_refused"].items()):
        acks.add({"outcome": f"refused_{reason}"}, count)


_DATAPLANE_COUNTERS = (
    ("reads", "packets read from the TUN device"),
    ("writes", "packets written back to the TUN device"),
    ("forwarded", "packets the engine rewrote and forwarded"),
    ("passed", "packets that matched nothing and passed unchanged"),
    ("replies", "packets the engine answered itself (e.g. ICMP)"),
    ("dropped", "packets the engine dropped"),
    ("write_eagain", "packets lost because the kernel queue was full on write"),
    ("write_errors", "write errors"),
    ("read_errors", "read errors"),
    ("batches", "batches handed to the engine"),
)


def _xdp_synproxy(xdp: Any, events: MetricFamily, fam: Any) -> None:
    """The XDP SYN proxy: its SYN-ACKs beside the engine's synproxy events, and whether it is
    attached (dataplane/xdp_component.py)."""
    if not isinstance(xdp, Mapping):
        return
    for key in ("synproxy_xdp_syn", "synproxy_xdp_no_secret", "syncookie_xdp_syn"):
        events.add({"event": key}, int(xdp.get(key, 0)))
    fam("pylvs_xdp_synproxy_attached", "gauge",
        "1 while the XDP SYN proxy answers SYNs on the public interface.").add(
            {}, 1 if xdp.get("attached") else 0)


def _fastpath(fp: Any, fam: Any) -> None:
    """The established-flow fast path: attached, its entries, and what the kernel forwarded
    (folded into the engine's stats; dataplane/fastpath_component.py)."""
    if not isinstance(fp, Mapping):
        return
    fam("pylvs_fastpath_attached", "gauge",
        "1 while the fast path's TC program is attached and offloading.").add(
            {}, 1 if fp.get("offloading") else 0)
    fam("pylvs_fastpath_entries", "gauge",
        "Fast-path map entries at the last fold (two per offloaded connection).").add(
            {}, int(fp.get("entries", 0)))
    fam("pylvs_fastpath_packets_total", "counter",
        "Packets forwarded by the fast path in the kernel, as folded into the engine.").add(
            {}, int(fp.get("packets", 0)))
    fam("pylvs_fastpath_bytes_total", "counter",
        "Bytes forwarded by the fast path in the kernel, as folded into the engine.").add(
            {}, int(fp.get("bytes", 0)))
    fam("pylvs_fastpath_connections_total", "counter",
        "Connections put in the fast path's map.").add({}, int(fp.get("adds", 0)))


def _dataplane(dp: Any, fam: Any) -> None:
    """TUN pump counters and the batch-size histogram, when a dataplane runs."""
    if not isinstance(dp, Mapping):
        return
    for key, text in _DATAPLANE_COUNTERS:
        if isinstance(dp.get(key), int):
            fam(f"pylvs_dataplane_{key}_total", "counter", f"Dataplane: {text}.").add({}, dp[key])
    if isinstance(dp.get("queue_dropped"), int):
        fam("pylvs_dataplane_queue_dropped_total", "counter",
            "Packets the kernel dropped because the TUN queue to pylvs was full.").add(
                {}, dp["queue_dropped"])
    hist = dp.get("batch_hist")
    if isinstance(hist, list | tuple) and hist:
        # Bucket i holds batches of 2**i .. 2**(i+1)-1 packets (non-cumulative).
        h = fam("pylvs_dataplane_batch_size", "histogram", "Packets per batch read from TUN.")
        running = 0
        for i, count in enumerate(hist):
            running += int(count)
            h.add({"le": str(2 ** (i + 1) - 1)}, running, "_bucket")
        h.add({"le": "+Inf"}, running, "_bucket")
        h.add({}, int(dp.get("reads", 0) or 0), "_sum")
        h.add({}, running, "_count")


def render(director: DirectorLike, services: list[dict[str, Any]] | None = None) -> str:
    """The whole exposition (*services*: :func:`pylvs.api.views.services`, if built already)."""
    lines: list[str] = []
    for family in _families(director, services):
        lines.extend(family.render())
    return "\n".join(lines) + "\n"
