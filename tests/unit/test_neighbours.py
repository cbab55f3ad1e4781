"""Announcement frames: gratuitous ARP and unsolicited neighbour advertisements, read by scapy."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from pylvs.neighbours import announce_frames, unsolicited_na_frame

MAC = bytes.fromhex("020000000001")


def test_unsolicited_na_as_rfc4861_and_keepalived_send_it() -> None:
    frame = unsolicited_na_frame(MAC, IPv6Address("2001:2::100"))
    pkt = Ether(frame)
    assert pkt.dst == "33:33:00:00:00:01" and pkt.src == "02:00:00:00:00:01"
    ip6 = pkt[IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.nh, ip6.plen) == (
        "2001:2::100", "ff02::1", 255, 58, 32)
    na = pkt[ICMPv6ND_NA]
    assert (na.type, na.code, na.R, na.S, na.O, na.tgt) == (136, 0, 1, 0, 1, "2001:2::100")
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:01"
    # the checksum scapy computes over the pseudo-header is the one we sent
    sent = na.cksum
    del na.cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NA].cksum == sent


def test_host_na_clears_the_router_flag() -> None:
    na = Ether(unsolicited_na_frame(MAC, IPv6Address("2001:2::5"), router=False))[ICMPv6ND_NA]
    assert (na.R, na.O) == (0, 1)


def test_announce_frames_pick_the_family() -> None:
    v4, v6 = announce_frames(MAC, [IPv4Address("198.18.0.100"), IPv6Address("2001:2::100")])
    arp = Ether(v4)[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (
        1, "198.18.0.100", "198.18.0.100", "02:00:00:00:00:01")
    assert Ether(v4).dst == "ff:ff:ff:ff:ff:ff"
    assert ICMPv6ND_NA in Ether(v6)
