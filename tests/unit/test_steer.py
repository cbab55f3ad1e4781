"""The TUN steering program (dataplane/_steer.c), run by the kernel on real packets through
BPF_PROG_TEST_RUN: both directions of a connection, and the ICMP errors about it, pick the
same queue; the pick is the C reference hash; VIPs added and removed change the direction."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterator

import pytest

from pylvs.dataplane import tun
from pylvs.dataplane.steer import TunSteering, steer_queue
from pylvs.errors import CoreError
from tests.support.packets import build, icmp_error, tcp, udp

VIP, VIP6 = "198.18.0.100", "2001:2::100"
RS, RS6 = "198.19.0.11", "2001:2:1::11"


@pytest.fixture
def steering() -> Iterator[TunSteering]:
    try:
        s = TunSteering.load()
    except CoreError as exc:  # no bpf(2) for this user
        pytest.skip(str(exc))
    s.set_vips([ipaddress.ip_address(VIP), ipaddress.ip_address(VIP6)])
    yield s
    s.close()


def _client(i: int, v6: bool) -> tuple[str, int]:
    if v6:
        return f"2001:2::{0x1000 + i // 7:x}", 1024 + 13 * i
    return f"198.18.{1 + i // 200}.{1 + i % 200}", 1024 + 13 * i


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_both_directions_and_icmp_errors_pick_one_queue(steering: TunSteering, v6: bool,
                                                       proto: str) -> None:
    vip, rs = (VIP6, RS6) if v6 else (VIP, RS)
    make = tcp if proto == "tcp" else udp
    queues = {0: 0, 1: 0}
    for i in range(200):
        caddr, cport = _client(i, v6)
        to_vip = make(caddr, cport, vip, 80)
        reply = make(rs, 8080, caddr, cport)
        # a router on the client's path about the director's packet to the client, and one on
        # the servers' side about the packet the director sent to the server
        err_in = icmp_error("198.18.9.1" if not v6 else "2001:2::9:1", vip,
                            make(vip, 80, caddr, cport), icmp_type=1 if v6 else 3)
        err_out = icmp_error("198.19.9.1" if not v6 else "2001:2:1::9:1", caddr,
                             make(caddr, cport, rs, 8080), icmp_type=1 if v6 else 3)
        got = {steering.run(build(p)) for p in (to_vip, reply, err_in, err_out)}
        want = steer_queue(ipaddress.ip_address(caddr), cport, 1 << 16)
        assert got == {want}, (i, caddr, cport)
        queues[want % 2] += 1
    assert min(queues.values()) > 70  # both queues of two get a fair share


def test_other_protocols_hash_the_client_address(steering: TunSteering) -> None:
    ping = icmp_error("198.18.5.5", VIP, tcp(VIP, 80, "198.18.5.5", 4000), icmp_type=8)
    assert steering.run(build(ping)) == steer_queue(ipaddress.ip_address("198.18.5.5"), 0,
                                                    1 << 16)


def test_vip_map_decides_the_direction(steering: TunSteering) -> None:
    pkt = build(tcp("198.18.1.1", 5000, VIP, 80))
    as_request = steering.run(pkt)
    assert as_request == steer_queue(ipaddress.ip_address("198.18.1.1"), 5000, 1 << 16)
    steering.set_vips([ipaddress.ip_address(VIP6)])  # VIP removed: now a "reply" to the VIP
    assert steering.run(pkt) == steer_queue(ipaddress.ip_address(VIP), 80, 1 << 16)
    assert steering.vips == {ipaddress.ip_address(VIP6)}


def test_short_and_foreign_packets_go_to_queue_zero(steering: TunSteering) -> None:
    header_only = build(tcp("198.18.1.1", 5000, VIP, 80))[:20]
    assert steering.run(header_only) == 0  # a load past the end stops the program at 0
    assert steering.run(bytes(40)) == 0  # IP version 0


def _fake_queues(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """open_tun replaced by pipes: the dataplane opens its queues without a TUN device."""
    opened: list[int] = []

    def fake_open(name: str, offload: bool, multi_queue: bool = False) -> int:
        r, w = os.pipe()
        os.close(w)
        opened.append(r)
        return r

    monkeypatch.setattr(tun, "open_tun", fake_open)
    return opened


def test_dataplane_falls_back_when_the_program_cannot_load(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _fake_queues(monkeypatch)

    def refuse() -> TunSteering:
        raise CoreError("cannot load the TUN steering program: Operation not permitted")

    monkeypatch.setattr(TunSteering, "load", staticmethod(refuse))
    dp = tun.TunDataplane("pylvs-t0", workers=2)
    with caplog.at_level(logging.WARNING, logger="pylvs.dataplane.tun"):
        dp.open()
    try:
        assert dp.steering is None and len(dp.fds) == 2
        assert "kernel's flow hash picks the queues" in caplog.text
        assert "Operation not permitted" in caplog.text
    finally:
        dp.close()


def test_dataplane_falls_back_when_the_device_refuses_the_program(
        steering: TunSteering, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # A pipe is no TUN queue: TUNSETSTEERINGEBPF fails and the loaded program is freed.
    _fake_queues(monkeypatch)
    dp = tun.TunDataplane("pylvs-t0", workers=2)
    with caplog.at_level(logging.WARNING, logger="pylvs.dataplane.tun"):
        dp.open()
    try:
        assert dp.steering is None
        assert "steering program not attached" in caplog.text
    finally:
        dp.close()


def test_dataplane_keeps_the_vips_for_the_program(steering: TunSteering,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # set_vips before the queues exist is remembered; after attach it reaches the map.
    _fake_queues(monkeypatch)
    monkeypatch.setattr(TunSteering, "attach", lambda self, fd: None)
    dp = tun.TunDataplane("pylvs-t0", workers=2)
    vip = ipaddress.ip_address(VIP)
    dp.set_vips(frozenset({vip}))
    dp.open()
    try:
        assert dp.steering is not None and dp.steering.vips == {vip}
        pkt = build(tcp("198.18.1.1", 5000, VIP, 80))
        assert dp.steering.run(pkt) == steer_queue(ipaddress.ip_address("198.18.1.1"), 5000,
                                                   1 << 16)
        dp.set_vips(frozenset())
        assert dp.steering.run(pkt) == steer_queue(vip, 80, 1 << 16)
    finally:
        dp.close()
    assert dp.steering is None
