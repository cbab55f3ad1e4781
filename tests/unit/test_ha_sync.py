"""The sync channel: whole records per datagram, bounded backlog, direction by role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pylvs.engine import SYNC_RECORD_SIZE_V6, sync_record_count
from pylvs.ha.messages import MAX_PAYLOAD, Kind, Message, PathId, Role, config_digest
from pylvs.ha.sync import RECORD_SIZE, SyncChannel


def _record(i: int) -> bytes:
    """A record shaped like the engine's: its size in ver_size; every 3rd one IPv6-sized."""
    size = SYNC_RECORD_SIZE_V6 if i % 3 == 2 else RECORD_SIZE
    return bytes([1 if size != RECORD_SIZE else 0, 6]) + size.to_bytes(2, "big") \
        + i.to_bytes(4, "big") + b"\x00" * (size - 8)


def _index(blob: bytes) -> int:
    return int.from_bytes(blob[4:8], "big")


class TableEngine:
    """Holds records as bytes; collect drains 'pending', full returns everything."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.table: dict[bytes, bytes] = {}
        self.applied: list[bytes] = []
        self.master = False

    def add(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            rec = _record(i)
            self.table[rec[4:8]] = rec
            self.pending += rec

    def sync_collect(self) -> bytes:
        out, self.pending = bytes(self.pending), bytearray()
        return out

    def sync_full(self, now: float | None = None) -> bytes:
        return b"".join(self.table.values())

    def set_sync_master(self, enabled: bool = True, *, threshold: int = 3,
                        period: int = 50) -> None:
        self.master = enabled

    def sync_apply(self, blob: bytes, now: float) -> int:
        self.applied.append(blob)
        return sync_record_count(blob)


def _keep(into: list[bytes]) -> Callable[[bytes], bool]:
    """A send function that keeps every datagram in *into* and reports it sent."""
    def send(datagram: bytes) -> bool:
        into.append(datagram)
        return True
    return send


def _msg(payload: bytes) -> Message:
    return Message(kind=Kind.SYNC, path=PathId.SYNC, node_id="lvs1", role=Role.ACTIVE,
                   priority=100, interval=0.2, epoch=1, seq=1, timestamp=0.0,
                   digest=config_digest("x"), payload=payload)


def test_active_streams_whole_records_that_fit_a_frame() -> None:
    eng, sent = TableEngine(), list[bytes]()
    ch = SyncChannel(eng, _keep(sent))
    eng.add(100)
    assert ch.flush() == 0  # not active: nothing leaves
    ch.set_active(True)
    assert eng.master
    n = ch.flush()
    total = len(b"".join(eng.table.values()))
    assert n == len(sent) and total // MAX_PAYLOAD < n <= total // MAX_PAYLOAD + 2
    # whole records in every datagram, IPv4 and IPv6 ones mixed
    assert all(sync_record_count(d) and len(d) <= MAX_PAYLOAD for d in sent)
    assert b"".join(sent) == b"".join(eng.table.values())
    assert ch.stats["records_sent"] == 100


def test_send_failure_keeps_the_backlog_and_it_is_bounded() -> None:
    eng, ok = TableEngine(), [False]
    ch = SyncChannel(eng, lambda b: ok[0], max_backlog=50 * RECORD_SIZE)
    ch.set_active(True)
    eng.add(80)
    ch.flush()
    dropped = ch.stats["records_dropped"]
    assert 0 < len(ch.backlog) <= 50 * RECORD_SIZE and dropped > 0
    assert _index(bytes(ch.backlog[:8])) == dropped  # the oldest went first, whole records
    ok[0] = True
    ch.flush()
    assert not ch.backlog and ch.stats["records_sent"] == 80 - dropped


def test_full_dump_only_when_active_and_stopping_clears() -> None:
    eng, sent = TableEngine(), list[bytes]()
    ch = SyncChannel(eng, _keep(sent))
    eng.add(10)
    eng.sync_collect()
    ch.queue_full()
    assert not ch.backlog
    ch.set_active(True)
    ch.queue_full()
    assert len(ch.backlog) == len(b"".join(eng.table.values()))
    ch.set_active(False)
    assert not ch.backlog


def test_backup_applies_and_rejects_partial_records() -> None:
    eng = TableEngine()
    ch = SyncChannel(eng, lambda b: True)
    assert ch.apply(_msg(_record(0) + _record(1) + _record(2)), 5.0) == 3
    assert ch.apply(_msg(_record(0) + b"\x01"), 5.0) == 0
    assert ch.apply(_msg(b"\x01" * RECORD_SIZE), 5.0) == 0  # sizes that do not add up
    assert ch.stats["batches_rejected"] == 2
    ch.set_active(True)
    assert ch.apply(_msg(_record(0)), 5.0) == 0  # an active node keeps its table
    assert len(eng.applied) == 1


def test_engine_returning_partial_records_is_refused() -> None:
    eng = TableEngine()
    ch = SyncChannel(eng, lambda b: True)
    ch.set_active(True)
    eng.pending += b"\x00" * (RECORD_SIZE - 1)
    ch.flush()
    assert not ch.backlog


@pytest.mark.parametrize("family", [4, 6])
def test_real_engines_connection_survives_the_trip_through_the_wire_format(family: int) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    from pylvs.engine import Engine
    from pylvs.ha.messages import Receiver, Sender

    vip, client, servers = "198.18.0.100", "198.18.0.2", ["198.19.0.11", "198.19.0.12"]
    ip: Any = IP
    if family == 6:
        vip, client, servers = "2001:2::100", "2001:2::2", ["2001:2:1::11", "2001:2:1::12"]
        ip = IPv6
    active, backup = Engine(), Engine()
    for eng, order in ((active, servers), (backup, servers[::-1])):  # rr would pick differently
        svc = eng.add_service("tcp", vip, 80, scheduler="rr")
        for rs in order:
            eng.add_server(svc, rs, 80)
    secret, wall = b"k" * 32, 1_800_000_000.0
    sender = Sender(node_id="dir1", secret=secret, digest=config_digest("x"), interval=0.2)
    wire: list[bytes] = []

    def send(payload: bytes) -> bool:
        wire.append(sender.build(Kind.SYNC, PathId.SYNC, Role.ACTIVE, 100, wall, payload))
        return True

    ch_a = SyncChannel(active, send)
    ch_a.set_active(True)
    picked = {}
    for port in (40000, 40001):
        syn = ip(src=client, dst=vip) / TCP(sport=port, dport=80, flags="S", seq=1000)
        out = active.process(bytes(syn), now=1.0)
        assert out is not None
        rs = ip(out).dst
        picked[port] = rs
        synack = ip(src=rs, dst=client) / TCP(sport=80, dport=port, flags="SA", seq=5000,
                                               ack=1001)
        assert active.process(bytes(synack), now=1.0) is not None
        for i in range(3):  # ESTABLISHED, and the 3rd incoming packet triggers the record
            data = ip(src=client, dst=vip) / TCP(sport=port, dport=80, flags="PA",
                                                 seq=1001 + 10 * i, ack=5001) / (b"x" * 10)
            assert active.process(bytes(data), now=1.0 + i / 100) is not None
    assert sorted(picked.values()) == servers
    assert ch_a.flush() >= 1 and wire
    receiver = Receiver(secret=secret, own_node_id="dir2")
    ch_b = SyncChannel(backup, lambda p: True)
    applied = 0
    for d in wire:
        msg = receiver.accept(d, PathId.SYNC, wall)
        assert msg is not None
        applied += ch_b.apply(msg, 2.0)
    assert applied >= 2
    assert {(c.client_port, str(c.server_address)) for c in backup.connections()} >= {
        (port, rs) for port, rs in picked.items()}
    for port, rs in picked.items():  # after a takeover: same real server, no reset
        data = ip(src=client, dst=vip) / TCP(sport=port, dport=80, flags="PA", seq=1031,
                                             ack=5001) / (b"y" * 10)
        out = backup.process(bytes(data), now=2.5)
        assert out is not None and ip(out).dst == rs
