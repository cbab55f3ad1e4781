"""BIRD 2 configuration text for a director of a cluster, and for a real server's return route.

Pure functions from the model to text; :mod:`pylvs.cluster.component` writes and loads them.
Each VIP gets its own ``static`` protocol holding one /32, so announcing and withdrawing a VIP
is ``enable``/``disable`` of that protocol over the control socket: no reload, and the other
VIPs' sessions and routes are untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address

from pylvs.model import ClusterConfig

__all__ = ["BFD_PROTOCOL", "director_config", "real_server_config", "router_protocol",
           "vip_protocol"]

BFD_PROTOCOL = "pylvs_bfd"


def vip_protocol(vip: IPv4Address | str) -> str:
    """The name of the static protocol that announces ``vip`` (``vip_198_18_2_100``)."""
    return "vip_" + str(vip).replace(".", "_")


def router_protocol(index: int) -> str:
    """The name of the BGP protocol of the ``index``-th ``[[cluster.router]]`` (``router1``)."""
    return f"router{index + 1}"


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))} ms"


def _bfd_interface(interval: float, multiplier: int) -> str:
    return (f'interface "*" {{ min rx interval {_ms(interval)}; '
            f"min tx interval {_ms(interval)}; multiplier {multiplier}; }};")


def director_config(cl: ClusterConfig, vips: Iterable[IPv4Address],
                    announced: Iterable[IPv4Address] = (),
                    real_servers: Iterable[IPv4Address] = ()) -> str:
    """The whole ``bird.conf`` of one director.

    ``vips``: every VIP the director may announce; those not in ``announced`` start disabled.
    ``real_servers``: BFD neighbours whose return routes follow this director's liveness (only
    with ``real_server_bfd``).  The director's BIRD has no kernel protocol: it only announces,
    the director's own routes are pylvs's business.
    """
    up = set(announced)
    out = ["# written by pylvs (cluster); changes are overwritten"]
    if cl.router_id is not None:
        out.append(f"router id {cl.router_id};")
    out += ["log stderr { info, remote, warning, error, auth, fatal, bug };",
            "protocol device { scan time 10; }"]
    if cl.bfd:
        out.append(f"protocol bfd {BFD_PROTOCOL} {{")
        out.append("  " + _bfd_interface(cl.bfd_interval, cl.bfd_multiplier))
        if cl.real_server_bfd:
            out += [f"  neighbor {rs};" for rs in sorted(set(real_servers))]
        out.append("}")
    for vip in sorted(set(vips)):
        state = "" if vip in up else " disabled;"
        out.append(f"protocol static {vip_protocol(vip)} {{{state} ipv4; "
                   f"route {vip}/32 blackhole; }}")
    # A BFD or session failure must not hold the session down for BIRD's default 60-300 s
    # (error wait time): reconnect after 1 s, back off to 5 s (docs/performance.md#scale-out).
    keepalive = max(1, cl.hold_time // 3) if cl.hold_time else 0
    for i, r in enumerate(cl.routers):
        out += [f"protocol bgp {router_protocol(i)} {{",
                f"  local as {cl.asn};",
                f"  neighbor {r.address} port {r.port} as {r.asn};",
                f"  hold time {cl.hold_time}; keepalive time {keepalive};"
                if cl.hold_time else "  hold time 0;",
                "  connect retry time 1; error wait time 1, 5;"]
        if r.password is not None:
            out.append(f'  password "{_quoted(r.password)}";')
        if cl.bfd:
            out.append("  bfd on;")
        out += ["  ipv4 { import none; export where source = RTS_STATIC; next hop self; };",
                "}"]
    return "\n".join(out) + "\n"


def real_server_config(directors: Sequence[IPv4Address], *, router_id: IPv4Address,
                       bfd_interval: float = 0.1, bfd_multiplier: int = 3) -> str:
    """``bird.conf`` for a real server: its default route over every director, kept by BFD.

    One static route with a next hop per director's private address, each watched by BFD, goes
    into the kernel as one multipath route; with ``net.ipv4.fib_multipath_hash_policy = 1``
    the kernel spreads replies by their 4-tuple.  A director whose BFD session goes down (it
    died, or drains) leaves the route within ``bfd_interval * bfd_multiplier``; the survivors
    un-NAT the replies that move to them (sloppy pickup, docs/cluster.md#return-path).
    """
    hops = " ".join(f"via {d} bfd on" for d in directors)
    return "\n".join([
        "# the real server's return route over the pylvs cluster (docs/cluster.md)",
        f"router id {router_id};",
        "protocol device { scan time 10; }",
        f"protocol bfd {{ {_bfd_interface(bfd_interval, bfd_multiplier)} }}",
        f"protocol static return_route {{ ipv4; route 0.0.0.0/0 {hops}; }}",
        "protocol kernel { ipv4 { export all; import none; }; merge paths on; }",
    ]) + "\n"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
