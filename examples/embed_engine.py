"""Embed the pylvs NAT engine: craft packets with scapy, watch them being rewritten.

The engine is sans-IO: it never touches the network, so this runs anywhere without root.
It walks one TCP connection through its life (SYN, SYN-ACK, ACK, data, FIN both ways), shows a
UDP exchange, what happens when no real server is left (the engine answers with ICMP port
unreachable), and prints the connection table, the per-server counters and the drops.

``process()`` returns the packet to send on: the rewritten one, one passed unchanged, or one
the engine *generated* in reply (an ICMP error back to the sender: port unreachable when no
real server can take a new connection, time exceeded when the TTL runs out); ``None`` is a
drop.  A generated reply is an IP packet addressed to the original sender.

    python examples/embed_engine.py
    python examples/embed_engine.py --scheduler wlc --servers 3 --persistence 300 -v
    python examples/embed_engine.py --servers 0     # every new connection gets an ICMP error

Needs scapy (``pip install scapy``, or pylvs's ``[test]`` extra).
"""

from __future__ import annotations

import argparse
import sys

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Packet, Raw

import pylvs

__all__ = ["main"]


def show(label: str, pkt: bytes | None, verbose: bool) -> None:
    """Print one packet as scapy sees it (or the drop)."""
    if pkt is None:
        print(f"  {label:<26} -> dropped")
        return
    p = IP(pkt)
    print(f"  {label:<26} -> {p.summary()}  ttl={p.ttl} ipsum={p.chksum:#06x}")
    if verbose:
        p.show2()


def send(eng: pylvs.Engine, label: str, pkt: Packet, now: float, verbose: bool) -> bytes | None:
    """Run one scapy packet through the engine and print before/after."""
    print(f"{now:7.2f}s {pkt.summary()}")
    out = eng.process(bytes(pkt), now)
    show(label, out, verbose)
    return out


def main(argv: list[str] | None = None) -> int:
    """Build an engine from the arguments and push a few conversations through it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vip", default="198.18.0.100")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--client", default="198.18.0.5")
    ap.add_argument("--servers", type=int, default=2, help="real servers 198.19.0.11, .12, ...")
    ap.add_argument("--server-port", type=int, default=8080)
    ap.add_argument("--scheduler", default="rr", choices=sorted(pylvs.engine.scheduler_names()))
    ap.add_argument("--persistence", type=int, default=0, help="seconds (ipvsadm -p)")
    ap.add_argument("-v", "--verbose", action="store_true", help="dump every rewritten header")
    args = ap.parse_args(argv)

    eng = pylvs.Engine(max_connections=10_000)
    svc = eng.add_service("tcp", args.vip, args.port, scheduler=args.scheduler,
                          persistence=args.persistence)
    servers = [eng.add_server(svc, f"198.19.0.{11 + i}", args.server_port, weight=1)
               for i in range(args.servers)]
    udp = eng.add_service("udp", args.vip, 53, scheduler=args.scheduler)
    eng.add_server(udp, "198.19.0.11", 53)
    print(f"services: {svc} with {len(servers)} servers; {udp}\n")

    c, v, cport = args.client, args.vip, 40000
    if not tcp_conversation(eng, args, c, v, cport):
        return 1

    print()
    send(eng, "UDP query, DNAT", IP(src=c, dst=v) / UDP(sport=5353, dport=53) / Raw(b"q"),
         3.0, args.verbose)
    send(eng, "UDP answer, SNAT", IP(src="198.19.0.11", dst=c) / UDP(sport=53, dport=5353) /
         Raw(b"a"), 3.1, args.verbose)
    if servers:
        print("\nquiescing every server (weight 0): a new connection gets ICMP port "
              "unreachable,\nunless a persistence template still binds the client (as in IPVS)")
        for s in servers:
            eng.edit_server(s, weight=0)
        send(eng, "SYN, nobody to take it", IP(src=c, dst=v) / TCP(
            sport=cport + 1, dport=args.port, flags="S"), 4.0, args.verbose)
    report(eng)
    return 0


def tcp_conversation(eng: pylvs.Engine, args: argparse.Namespace, c: str, v: str,
                     cport: int) -> bool:
    """One TCP connection from SYN to FIN; False if the SYN got neither a server nor a reply."""
    out = send(eng, "SYN, DNAT", IP(src=c, dst=v) / TCP(sport=cport, dport=args.port,
                                                         flags="S", seq=1000), 1.0, args.verbose)
    if out is None:
        print("the SYN was dropped", file=sys.stderr)
        return False
    reply = IP(out)
    if reply.haslayer(ICMP):
        # No real server could take the connection: the engine generated the ICMP error a
        # kernel director sends, addressed to the client; an embedder sends it back out.
        print(f"  no real server: the engine answered the client with {reply[ICMP].summary()}")
        return True
    rip, rport = reply.dst, reply[TCP].dport
    send(eng, "SYN-ACK, SNAT", IP(src=rip, dst=c) / TCP(sport=rport, dport=cport, flags="SA",
                                                         seq=5000, ack=1001), 1.1, args.verbose)
    data = Raw(b"GET / HTTP/1.0\r\n\r\n")
    send(eng, "ACK + data", IP(src=c, dst=v) / TCP(sport=cport, dport=args.port, flags="PA",
                                                    seq=1001, ack=5001) / data, 1.2, args.verbose)
    send(eng, "FIN from client", IP(src=c, dst=v) / TCP(sport=cport, dport=args.port, flags="FA"),
         2.0, args.verbose)
    send(eng, "FIN from server", IP(src=rip, dst=c) / TCP(sport=rport, dport=cport, flags="FA"),
         2.1, args.verbose)
    return True


def report(eng: pylvs.Engine) -> None:
    """The connection table, per-server counters, drops, then an expiry run."""
    print("\nconnection table:")
    for conn in eng.connections():
        kind = "template" if conn.template else conn.protocol.upper()
        print(f"  {kind:<8} {conn.client_address}:{conn.client_port} -> "
              f"{conn.virtual_address}:{conn.virtual_port} -> "
              f"{conn.server_address}:{conn.server_port}  {conn.state:<11} "
              f"expires in {conn.remaining(4.0):.0f}s")
    print("\nservers:")
    for info in eng.services():
        for d in info.servers:
            print(f"  {info.key}  {d.key.address}:{d.key.port}  weight={d.weight} "
                  f"active={d.active_conns} inactive={d.inactive_conns} "
                  f"conns={d.stats.conns} in={d.stats.inpkts}/{d.stats.inbytes}B "
                  f"out={d.stats.outpkts}/{d.stats.outbytes}B")
    st = eng.stats()
    drops = {k: n for k, n in st.drops.items() if n}
    print(f"\nengine: {st.connections} entries, {st.bytes_per_connection} bytes per entry, "
          f"drops {drops or 'none'}")
    removed = eng.expire(1000.0)
    print(f"expiring at t=1000s removed {removed}; {len(eng.connections())} left")


if __name__ == "__main__":
    sys.exit(main())
