"""Fuzz the SYN proxy: many generated packets through a synproxy service, checking that no packet
ever reaches a real server without a connection (issue 11, item 6; docs/ipvs.md#syn-proxy).

The mix: real handshakes completed end to end (so the pending and translated paths run too),
spoofed SYNs, cookie-shaped ACKs (the right cookie with one bit flipped, off by a little, from a
period before), TCP option soup (random kinds and lengths up to a 60-byte header), truncated
packets, bit-flipped copies of every kind, server answers and ICMP errors quoting any of them.
Most mutants get a valid IP header checksum so they reach the TCP code.

Invariant, checked after every batch: every packet the engine sends to a real server (rewritten
or generated; a packet passed unchanged is not the engine's) belongs to a connection in the
table.  Run under ASan/UBSan with a ``PYLVS_DEBUG=1`` build::

    PYLVS_DEBUG=1 python3 src/pylvs/_build.py
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
        python3 -m bench.fuzz_synproxy --packets 1000000

``tests/unit/test_synproxy_fuzz.py`` runs a short version in CI.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from collections.abc import Sequence

from pylvs.engine import Engine

VIP = "198.18.0.100"
RS = ("198.19.0.11", "198.19.0.12")
_VIP_N = struct.unpack("!I", bytes(map(int, VIP.split("."))))[0]
_RS_N = {struct.unpack("!I", bytes(map(int, a.split("."))))[0] for a in RS}


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)


def _ip(src: int, dst: int, l4: bytes, proto: int = 6) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0,
                    src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:] + l4


def _tcp(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int,
         opts: bytes = b"", payload: bytes = b"") -> bytes:
    opts += b"\0" * (-len(opts) % 4)
    th = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                     (5 + len(opts) // 4) << 4, flags, 64240, 0, 0) + opts + payload
    pseudo = src.to_bytes(4, "big") + dst.to_bytes(4, "big") + struct.pack("!BBH", 0, 6,
                                                                             len(th))
    th = th[:16] + struct.pack("!H", _csum(pseudo + th)) + th[18:]
    return _ip(src, dst, th)


def _fix_ip(p: bytearray) -> None:
    if len(p) >= 20 and p[0] >> 4 == 4 and (p[0] & 15) * 4 <= len(p):
        ihl = (p[0] & 15) * 4
        p[10:12] = b"\0\0"
        p[10:12] = struct.pack("!H", _csum(bytes(p[:ihl])))


def _tsval(p: bytes) -> bytes:
    """The TSval of a TCP packet's timestamp option (4 bytes), or zeros."""
    ihl = (p[0] & 15) * 4
    end = ihl + (p[ihl + 12] >> 4) * 4
    i = ihl + 20
    while i + 1 < end:
        if p[i] == 0:
            break
        if p[i] == 1:
            i += 1
            continue
        if p[i] == 8 and i + 10 <= end:
            return p[i + 2:i + 6]
        i += max(2, p[i + 1])
    return b"\0\0\0\0"


SYN_OPTS = bytes([2, 4, 5, 180, 4, 2, 8, 10]) + b"\0\0\0\x01\0\0\0\0" + bytes([1, 3, 3, 7])


class Fuzzer:
    """Generates the mix and keeps the state real handshakes need."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.e = Engine(max_connections=50_000, seed=seed)
        svc = self.e.add_service("tcp", VIP, 80, scheduler="rr", synproxy=True)
        for a in RS:
            self.e.add_server(svc, a, 8080)
        self.now = 1000.0
        self.recent: list[bytes] = []      # outputs and inputs to mutate and quote
        self.cookies: dict[tuple[int, int], int] = {}  # (client, port) -> our SYN-ACK seq
        self.sent_to_rs = 0

    def client(self) -> tuple[int, int]:
        return (198 << 24 | 18 << 16 | self.r.randrange(1, 1 << 16), self.r.randrange(1, 65536))

    def one(self) -> bytes:
        r = self.r
        k = r.random()
        c, port = self.client()
        if k < 0.15:   # a SYN (real or spoofed: the engine cannot tell)
            return _tcp(c, _VIP_N, port, 80, r.getrandbits(32), 0, 0x02,
                        SYN_OPTS if r.random() < 0.5 else b"")
        if k < 0.35 and self.cookies:  # an ACK for a cookie we were given, maybe damaged
            (c, port), cookie = r.choice(list(self.cookies.items()))
            ack = cookie + 1
            m = r.random()
            if m < 0.3:
                ack ^= 1 << r.randrange(32)
            elif m < 0.4:
                ack += r.randrange(-3, 4)
            opts = bytes([1, 1, 8, 10]) + r.getrandbits(32).to_bytes(4, "big") + \
                r.getrandbits(32).to_bytes(4, "big") if r.random() < 0.5 else b""
            payload = r.randbytes(r.randrange(0, 200)) if r.random() < 0.3 else b""
            return _tcp(c, _VIP_N, port, 80, r.getrandbits(32), ack, 0x10 | (0x08 * bool(payload)),
                        opts, payload)
        if k < 0.5:    # option soup on any flags
            soup = r.randbytes(r.randrange(0, 41))
            return _tcp(c, _VIP_N, port, 80, r.getrandbits(32), r.getrandbits(32),
                        r.getrandbits(8), soup, r.randbytes(r.randrange(0, 50)))
        if k < 0.6:    # a "server" answer, to any client
            return _tcp(r.choice(list(_RS_N)), c, 8080, port, r.getrandbits(32),
                        r.getrandbits(32), r.choice([0x12, 0x14, 0x04, 0x18, 0x11]))
        if k < 0.7 and self.recent:   # an ICMP error quoting something we saw
            q = r.choice(self.recent)[:r.randrange(28, 68)]
            body = bytes([3, r.randrange(16), 0, 0, 0, 0, 0, 0]) + q
            body = body[:2] + struct.pack("!H", _csum(body)) + body[4:]
            return _ip(c, r.choice([_VIP_N, *_RS_N]), body, proto=1)
        base = bytearray(r.choice(self.recent) if self.recent else
                         _tcp(c, _VIP_N, port, 80, 1, 0, 0x02))
        for _ in range(r.randrange(1, 4) if base else 0):   # bit flips
            i = r.randrange(len(base))
            base[i] ^= 1 << r.randrange(8)
        if r.random() < 0.3:
            del base[r.randrange(len(base) + 1):]
        if r.random() < 0.8:
            _fix_ip(base)
        return bytes(base)

    def handshake(self) -> list[bytes]:
        """A real client: SYN, ACK (+ data), the server's SYN-ACK, data both ways."""
        r, e = self.r, self.e
        c, port = self.client()
        isn = r.getrandbits(32)
        sa = e.process(_tcp(c, _VIP_N, port, 80, isn, 0, 0x02, SYN_OPTS), self.now)
        if sa is None:
            return []
        cookie = struct.unpack_from("!I", sa, 24)[0]
        self.cookies[(c, port)] = cookie
        if len(self.cookies) > 1000:
            self.cookies.pop(next(iter(self.cookies)))
        ts = bytes([1, 1, 8, 10]) + b"\0\0\0\x02" + _tsval(sa)
        syn = e.process(_tcp(c, _VIP_N, port, 80, isn + 1, cookie + 1, 0x18, ts,
                             b"GET /"), self.now)
        if syn is None or len(syn) < 40:
            return [sa]
        rs = struct.unpack_from("!I", syn, 16)[0]
        out = [sa, syn]
        for p in (_tcp(rs, c, 8080, port, 77, isn + 1, 0x12, bytes([2, 4, 5, 180])),
                  _tcp(rs, c, 8080, port, 78, isn + 6, 0x18, b"", b"200 OK"),
                  _tcp(c, _VIP_N, port, 80, isn + 6, cookie + 7, 0x11)):
            o = e.process(p, self.now)
            if o is not None:
                out.append(o)
        return out

    def batch(self, n: int) -> int:
        pkts = [self.one() for _ in range(n)]
        outs = self.e.process_batch(pkts, self.now)
        conns = {(c.client_address, c.client_port) for c in self.e.connections()
                 if not c.template}
        for p, o in zip(pkts, outs, strict=True):
            if o is None or len(o) < 20 or (o[9] != 6 and o[9] != 1):
                continue
            if o == p:
                continue  # passed unchanged: not to a VIP, the kernel routes it as any router
            dst = struct.unpack_from("!I", o, 16)[0]
            if dst in _RS_N and o[9] == 6:
                ihl = (o[0] & 15) * 4
                src = ".".join(map(str, o[12:16]))
                sport = struct.unpack_from("!H", o, ihl)[0]
                if (src, sport) not in conns:
                    raise AssertionError(f"forwarded to a real server without a connection: "
                                         f"{o.hex()} (input {p.hex()})")
                self.sent_to_rs += 1
            self.recent.append(o)
        self.recent.extend(pkts[:8])
        del self.recent[:-200]
        for o in self.handshake():
            self.recent.append(o)
        self.now += self.r.random() * 3.0   # cookies age across periods
        if self.r.random() < 0.05:
            self.e.expire(self.now)
        return len(pkts)


def run(packets: int, seed: int = 1, batch: int = 500) -> Fuzzer:
    """Feed ``packets`` generated packets; raise AssertionError on a violated invariant."""
    f = Fuzzer(seed)
    done = 0
    while done < packets:
        done += f.batch(min(batch, packets - done))
    f.e.expire(f.now + 10_000.0)
    return f


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packets", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    f = run(args.packets, args.seed)
    st = f.e.stats()
    print(f"{args.packets} packets in {time.monotonic() - t0:.1f} s, seed {args.seed}: "
          f"no invariant broken; {f.sent_to_rs} sent to real servers on connections; "
          f"events {dict(st.events)}; table left {st.connections}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
