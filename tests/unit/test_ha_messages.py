"""The HA wire format: round trip, authentication, strict parsing, replay refusal."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylvs.errors import ConfigError, PeerProtocolError
from pylvs.ha.messages import (
    MAC_SIZE,
    Kind,
    Message,
    PathId,
    Receiver,
    Role,
    Sender,
    config_digest,
    decode,
    encode,
    load_secret,
)

SECRET = b"0123456789abcdef-shared"
DIGEST = config_digest("services")
WALL = 1_800_000_000.0


def _sender(node: str = "lvs1") -> Sender:
    return Sender(node_id=node, secret=SECRET, digest=DIGEST, interval=0.2)


def _hb(s: Sender, path: PathId = PathId.PUBLIC, wall: float = WALL, prio: int = 100) -> bytes:
    return s.build(Kind.HEARTBEAT, path, Role.ACTIVE, prio, wall)


def test_round_trip_keeps_every_field() -> None:
    msg = Message(kind=Kind.SYNC, path=PathId.SYNC, node_id="dïrector-2", role=Role.BACKUP,
                  priority=254, interval=0.05, epoch=2**64 - 1, seq=7, timestamp=WALL + 0.25,
                  digest=DIGEST, payload=b"\x00\x01" * 300)
    assert decode(encode(msg, SECRET), SECRET) == msg


def test_wrong_secret_and_any_flipped_bit_are_refused() -> None:
    data = _hb(_sender())
    with pytest.raises(PeerProtocolError, match="bad mac"):
        decode(data, b"another secret of enough length")
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        with pytest.raises(PeerProtocolError):
            decode(bytes(flipped), SECRET)


def _signed(body: bytes) -> bytes:
    import hashlib
    import hmac

    return body + hmac.new(SECRET, body, hashlib.sha256).digest()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + b"\x02" + b[5:], "version"),
        (lambda b: b[:5] + b"\x09" + b[6:], "unknown kind"),
        (lambda b: b[:7] + b"\x07" + b[8:], "unknown role"),
        (lambda b: b[:6] + b"\x02" + b[7:], "kind does not match path"),
        (lambda b: b + b"extra", "length mismatch"),
        (lambda b: b[:9] + b"\x00" + b[10:], "node id length"),
    ],
)
def test_malformed_but_correctly_signed_is_refused(
    mutate: Callable[[bytes], bytes], reason: str
) -> None:
    body = _hb(_sender())[:-MAC_SIZE]
    with pytest.raises(PeerProtocolError, match=reason):
        decode(_signed(mutate(body)), SECRET)


@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    with contextlib.suppress(PeerProtocolError):
        decode(data, SECRET)
    with contextlib.suppress(PeerProtocolError):
        decode(_signed(data), SECRET)


def test_receiver_accepts_then_refuses_the_replay() -> None:
    s, r = _sender(), Receiver(secret=SECRET, own_node_id="lvs2")
    data = _hb(s)
    assert r.accept(data, PathId.PUBLIC, WALL) is not None
    assert r.accept(data, PathId.PUBLIC, WALL + 0.1) is None
    assert r.dropped["replay"] == 1
    # an older datagram of the same run is a replay too
    old, new = _hb(s, wall=WALL + 0.2), _hb(s, wall=WALL + 0.4)
    assert r.accept(new, PathId.PUBLIC, WALL + 0.4) is not None
    assert r.accept(old, PathId.PUBLIC, WALL + 0.4) is None
    assert r.dropped["replay"] == 2


def test_paths_have_their_own_window_and_cannot_be_swapped() -> None:
    s, r = _sender(), Receiver(secret=SECRET, own_node_id="lvs2")
    pub, priv = _hb(s, PathId.PUBLIC), _hb(s, PathId.PRIVATE)
    # the private datagram has the higher sequence number but must not shadow the public one
    assert r.accept(priv, PathId.PRIVATE, WALL) is not None
    assert r.accept(pub, PathId.PUBLIC, WALL) is not None
    # a public datagram injected on the private network is refused
    assert r.accept(_hb(s, PathId.PUBLIC), PathId.PRIVATE, WALL) is None
    assert r.dropped["wrong_path"] == 1


def test_restart_is_accepted_but_an_old_run_is_not() -> None:
    r = Receiver(secret=SECRET, own_node_id="lvs2")
    run1 = _sender()
    captured = _hb(run1, wall=WALL)
    assert r.accept(_hb(run1, wall=WALL + 1), PathId.PUBLIC, WALL + 1) is not None
    run2 = _sender()  # restart: new epoch, sequence from 1 again
    assert r.accept(_hb(run2, wall=WALL + 2), PathId.PUBLIC, WALL + 2) is not None
    assert r.accept(captured, PathId.PUBLIC, WALL + 2) is None
    assert r.dropped["replay"] == 1
    assert r.accept(_hb(run2, wall=WALL + 3), PathId.PUBLIC, WALL + 3) is not None


def test_stale_own_and_unsigned_are_counted_by_reason() -> None:
    r = Receiver(secret=SECRET, own_node_id="lvs1", max_skew=30)
    s = _sender("lvs2")
    assert r.accept(_hb(s, wall=WALL - 31), PathId.PUBLIC, WALL) is None
    assert r.accept(_hb(_sender("lvs1")), PathId.PUBLIC, WALL) is None
    assert r.accept(b"\x00" * 10, PathId.PUBLIC, WALL) is None
    signed = _hb(s)
    # Flip the MAC's last byte: setting it to 0 left it unchanged when the MAC (keyed by a
    # random epoch) already ended in 0, one run in 256.
    assert r.accept(signed[:-1] + bytes([signed[-1] ^ 0xFF]), PathId.PUBLIC, WALL) is None
    assert dict(r.dropped) == {"stale": 1, "own_node_id": 1, "malformed": 1, "bad_mac": 1}
    assert r.accepted == 0


def test_message_validates_fields() -> None:
    with pytest.raises(ValueError):
        Message(kind=Kind.HEARTBEAT, path=PathId.PUBLIC, node_id="x" * 33, role=Role.INIT,
                priority=1, interval=0.2, epoch=1, seq=1, timestamp=WALL, digest=DIGEST)
    with pytest.raises(ValueError):
        Message(kind=Kind.HEARTBEAT, path=PathId.PUBLIC, node_id="x", role=Role.INIT,
                priority=256, interval=0.2, epoch=1, seq=1, timestamp=WALL, digest=DIGEST)


def test_load_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "secret"
    good.write_bytes(b"  a-long-enough-secret\n")
    good.chmod(0o600)
    assert load_secret(good) == b"a-long-enough-secret"
    assert "readable by others" not in caplog.text
    good.chmod(0o644)
    assert load_secret(good) == b"a-long-enough-secret"
    assert "readable by others" in caplog.text
    short = tmp_path / "short"
    short.write_bytes(b"short")
    with pytest.raises(ConfigError, match="need >= 16"):
        load_secret(short)
    with pytest.raises(ConfigError, match="cannot read"):
        load_secret(tmp_path / "missing")


def test_header_layout_is_stable() -> None:
    data = _hb(_sender())
    magic, version, kind, path, role, prio = struct.unpack_from("!4sBBBBB", data)
    assert (magic, version, kind, path, role, prio) == (b"PLHA", 1, 1, 0, 2, 100)
