"""Frames that tell a link an address has moved: gratuitous ARP (IPv4), unsolicited NA (IPv6).

A takeover (and a director starting in front of neighbours that cached another MAC) announces
every VIP on the public side and the gateway address on the private side.  IPv4 neighbours
learn from a gratuitous ARP request; IPv6 neighbours from an unsolicited Neighbour
Advertisement (RFC 4861 section 7.2.6) with the Override flag, as keepalived's ``vrrp_ndisc.c``
sends it (docs/failover-health.md#ipv6-takeover):

* Ethernet to 33:33:00:00:00:01, IPv6 from the announced address to ff02::1 (all nodes),
  hop limit 255 (receivers drop neighbour discovery with any other, RFC 4861 7.1.2);
* ICMPv6 type 136, Solicited 0, Override 1 (replace the cached link-layer address), Router 1
  when the host forwards (the gateway and the VIPs of a forwarding director), the target, and
  the Target Link-Layer Address option carrying our MAC.

A Linux receiver updates an *existing* entry from it (to STALE with the new MAC, so the next
packet goes to us and confirms it); it creates none, which is what a takeover wants.

Pure byte building; the callers own the sockets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from pylvs.model import IPAddress

__all__ = ["announce_frame", "announce_frames", "garp_frame", "unsolicited_na_frame"]

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ND_OPT_TARGET_LL_ADDR = 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20  # the first byte of the NA flags word
ALL_NODES = IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"  # RFC 2464 section 7: 33:33 + the low 32 bits


def garp_frame(mac: bytes, address: IPv4Address) -> bytes:
    """An ARP *request* with sender = target = ``address``, broadcast.

    Every OS updates an existing entry from it, and some switches only snoop requests.
    """
    ip = address.packed
    return (b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def unsolicited_na_frame(mac: bytes, address: IPv6Address, *, router: bool = True) -> bytes:
    """An unsolicited Neighbour Advertisement for ``address`` from ``mac`` to all nodes."""
    flags = NA_OVERRIDE | (NA_ROUTER if router else 0)
    option = struct.pack("!BB", ND_OPT_TARGET_LL_ADDR, 1) + mac
    body = struct.pack("!BBHB3x", ND_NEIGHBOR_ADVERT, 0, 0, flags) + address.packed + option
    pseudo = (address.packed + ALL_NODES.packed
              + struct.pack("!I3xB", len(body), IPPROTO_ICMPV6))
    csum = _checksum(pseudo + body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ip6 = (struct.pack("!IHBB", 6 << 28, len(body), IPPROTO_ICMPV6, 255)
           + address.packed + ALL_NODES.packed)
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def announce_frame(mac: bytes, address: IPAddress, *, router: bool = True) -> bytes:
    """The announcement for one address of either family."""
    if isinstance(address, IPv6Address):
        return unsolicited_na_frame(mac, address, router=router)
    return garp_frame(mac, address)


def announce_frames(mac: bytes, addresses: Iterable[IPAddress], *,
                    router: bool = True) -> list[bytes]:
    """One announcement per address, in the order given."""
    return [announce_frame(mac, a, router=router) for a in addresses]
