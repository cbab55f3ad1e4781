"""Cluster members and N-way sync: hellos, liveness, full dumps, warm-up, the fan-out."""

from __future__ import annotations

import os
import tempfile
from ipaddress import IPv4Address, ip_address

import pytest
from scapy.layers.inet import IP, TCP

from pylvs import Engine
from pylvs.cluster.membership import Hello, Lost, Membership, NeedsDump
from pylvs.cluster.sync import ClusterSync, is_local_address, sync_message, sync_records
from pylvs.engine import sync_record_count
from pylvs.errors import PeerProtocolError
from pylvs.ha.messages import Kind, Message, PathId, Role, config_digest
from pylvs.model import ClusterConfig

DIGEST = config_digest("services")
A, B = IPv4Address("198.19.0.3"), IPv4Address("198.19.0.4")


def _msg(node: str, epoch: int, kind: Kind = Kind.HELLO, payload: bytes = b"",
         digest: bytes = DIGEST) -> Message:
    return Message(kind=kind, path=PathId.SYNC, node_id=node, role=Role.ACTIVE, priority=100,
                   interval=0.2, epoch=epoch, seq=1, timestamp=0.0, digest=digest,
                   payload=payload)


def _membership(started: float = 0.0) -> Membership:
    return Membership(node_id="me", epoch=7, digest=DIGEST, addresses=(A, B),
                      hello_interval=0.2, started=started)


def test_hello_round_trips_and_rejects_garbage() -> None:
    h = Hello(vips=("198.18.2.100",), vip_count=1, draining=True, acks=(("d2", 5),))
    assert Hello.decode(h.encode()) == h
    with pytest.raises(PeerProtocolError):
        Hello.decode(b'{"v": 1}')


def test_a_member_coming_alive_or_restarting_needs_the_whole_table() -> None:
    m = _membership()
    assert m.heard(A, _msg("d2", 1), 0.1) == [NeedsDump(A)]
    assert m.heard(A, _msg("d2", 1), 0.2) == []  # same run, still alive
    assert m.heard(A, _msg("d2", 2), 0.3) == [NeedsDump(A)]  # restarted
    assert m.heard(IPv4Address("198.19.0.99"), _msg("x", 1), 0.3) == []
    assert m.dropped["not_a_member"] == 1
    assert m.tick(0.3 + m.dead_time + 0.01) == [Lost(A)]
    assert m.heard(A, _msg("d2", 2), 2.0) == [NeedsDump(A)]  # back after silence


def test_acks_name_members_whose_dump_left_and_warm_waits_for_theirs() -> None:
    m = _membership()
    m.heard(A, _msg("d2", 11), 0.05)
    m.heard(B, _msg("d3", 12), 0.05)
    assert m.own_hello([], False).acks == ()
    m.dump_sent(A)
    assert m.own_hello(["198.18.2.100"], False).acks == (("d2", 11),)
    assert not m.warm(0.1)
    m.hello(A, Hello(acks=(("me", 7),)))
    assert not m.warm(0.1)  # B has not sent us its table yet
    m.hello(B, Hello(acks=(("me", 6),)))  # an ack for our previous run does not count
    assert not m.warm(0.2)
    m.hello(B, Hello(acks=(("me", 7),)))
    assert m.warm(0.2)
    m.heard(B, _msg("d3", 13), 0.3)  # a restart later does not withdraw
    assert m.warm(0.3)


def test_warm_without_members_heard_after_the_dead_time_or_the_cap() -> None:
    m = _membership()
    assert not m.warm(0.1)
    assert m.warm(m.dead_time + 0.01)  # nobody answered: alone
    m = _membership()
    m.heard(A, _msg("d2", 1), 0.1)  # A is there but never acks
    assert not m.warm(2.0)
    assert m.warm(m.warmup_max)


def test_status_rows_show_address_last_seen_vips_and_liveness() -> None:
    m = _membership()
    m.heard(A, _msg("d2", 1, digest=config_digest("other")), 1.0)
    m.hello(A, Hello(vips=("198.18.2.100",), vip_count=1))
    rows = {r["address"]: r for r in m.status(1.5)}
    assert rows[str(A)]["alive"] and rows[str(A)]["node_id"] == "d2"
    assert rows[str(A)]["last_seen_ago"] == 0.5
    assert rows[str(A)]["announced"] == ["198.18.2.100"]
    assert rows[str(A)]["config_match"] is False
    assert rows[str(B)]["alive"] is False and rows[str(B)]["last_seen_ago"] is None


class FakeEngine:
    """Records sync calls."""

    def __init__(self) -> None:
        self.pending = b""
        self.applied: list[bytes] = []
        self.master = False

    def sync_collect(self) -> bytes:
        out, self.pending = self.pending, b""
        return out

    def sync_full(self, now: float | None = None) -> bytes:
        return _record(99)

    def sync_apply(self, blob: bytes, now: float) -> int:
        self.applied.append(blob)
        return len(blob) // 36

    def set_sync_master(self, enabled: bool = True, *, threshold: int = 3,
                        period: int = 50) -> None:
        self.master = enabled


def _record(i: int) -> bytes:
    return bytes([0, 6]) + (36).to_bytes(2, "big") + i.to_bytes(4, "big") + bytes(28)


def test_records_fan_out_once_to_live_members_and_peer_records_are_applied() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        secret = os.path.join(tmp, "s")
        with open(secret, "w", encoding="ascii") as fh:
            fh.write("x" * 32)
        os.chmod(secret, 0o600)
        cfg = ClusterConfig(mode="active-active", members=(A, B), secret_file=secret)
        engine = FakeEngine()
        now = [0.0]
        cs = ClusterSync(cfg, interface="lo", node_id="me", digest=DIGEST, engine=engine,
                         hello_state=lambda: (["198.18.2.100"], False),
                         clock=lambda: now[0])
        sent: list[tuple[Kind, IPv4Address, bytes]] = []

        def send(kind: Kind, addr: IPv4Address, payload: bytes) -> bool:
            sent.append((kind, addr, payload))
            return True
        cs._send = send  # type: ignore[method-assign,assignment]  # no socket in a unit test
        cs._received(A, _msg("d2", 1))  # A alive: it gets the whole table
        engine.pending = _record(1) + _record(2)
        now[0] = 0.05
        cs._tick()
        syncs = [(a, p) for k, a, p in sent if k is Kind.SYNC]
        assert syncs == [(A, sync_message(0, _record(99) + _record(1) + _record(2)))]
        assert syncs[0][1][:8] == bytes([0, 0, 0, 8 + 108, 3, 1, 0, 0])  # ip_vs_sync_mesg
        hellos = [Hello.decode(p) for k, a, p in sent if k is Kind.HELLO]
        assert len(hellos) == 2 and hellos[0].vips == ("198.18.2.100",)
        cs._received(A, _msg("d2", 1, Kind.SYNC, sync_message(9, _record(5))))
        assert engine.applied == [_record(5)]  # our sync id 0 takes any
        cs._received(A, _msg("d2", 1, Kind.SYNC, _record(6)))  # no message header
        assert engine.applied == [_record(5)]
        assert cs.status()["dropped"]["sync_header"] == 1
        st = cs.status()
        row = next(r for r in st["members"] if r["address"] == str(A))
        assert row["synced_to_it"] and row["sync"]["records_applied"] == 1
        assert row["config_match"]
        cs.update_config(cfg, config_digest("reloaded"))  # our services changed
        cs._received(A, _msg("d2", 1))
        row = next(r for r in cs.status()["members"] if r["address"] == str(A))
        assert row["config_match"] is False


def test_sync_messages_carry_the_kernels_v1_header_and_sync_id() -> None:
    msg = sync_message(7, _record(1) + _record(2))
    assert msg[:8] == bytes([0, 7, 0, 80, 2, 1, 0, 0])
    assert sync_records(7, msg) == _record(1) + _record(2)
    assert sync_records(0, msg) == _record(1) + _record(2)
    assert sync_records(8, msg) is None
    assert sync_records(7, msg[:-1]) is None  # size field disagrees


def test_own_addresses_are_recognised() -> None:
    assert is_local_address(ip_address("127.0.0.1"))
    assert not is_local_address(ip_address("198.18.255.254"))


VIP, SERVERS = "198.18.2.100", ["198.19.0.11", "198.19.0.12", "198.19.0.13"]


def _director() -> Engine:
    """One cluster member's engine: rr (no hash), sloppy pickup, recording its connections."""
    eng = Engine(max_connections=1024)
    eng.set_option("sloppy_tcp", True)
    svc = eng.add_service("tcp", VIP, 80, scheduler="rr")
    for rs in SERVERS:
        eng.add_server(svc, rs, 80)
    eng.set_sync_master(True)
    return eng


def _active(eng: Engine) -> dict[str, int]:
    return {str(s.key.address): s.active_conns for s in eng.services()[0].servers}


def test_a_synced_flow_is_installed_once_never_sent_on_and_keeps_its_server() -> None:
    a, b = _director(), _director()
    client = "198.18.1.10"

    def c2v(flags: str, t: float, eng: Engine) -> bytes | None:
        return eng.process(bytes(IP(src=client, dst=VIP) / TCP(sport=40000, dport=80,
                                                                flags=flags)), t)
    out = c2v("S", 1.0, a)
    assert out is not None
    server = IP(out).dst
    a.process(bytes(IP(src=server, dst=client) / TCP(sport=80, dport=40000, flags="SA")), 1.0)
    c2v("A", 1.1, a)
    c2v("PA", 1.2, a)  # the 3rd packet: ESTABLISHED, recorded
    records = a.sync_collect()
    assert sync_record_count(records) == 1
    assert b.sync_apply(records, 1.3) == 1
    assert b.sync_collect() == b"", "an installed entry is not sent on (no sync storm)"
    assert _active(b) == {s: int(s == server) for s in SERVERS}, "counted once, on its server"
    out = c2v("PA", 2.0, b)  # the router moved the flow to b
    assert out is not None and IP(out).dst == server
    assert b.stats().events.get("sloppy_in", 0) == 0, "found, not scheduled anew"
    assert b.sync_collect() == b"", "b records it from its 53rd packet on, as IPVS would"
