"""Fuzz the SYN proxy: many generated packets through a synproxy service, checking that no packet
ever reaches a real server without a connection (issue 11, item 6; docs/ipvs.md#syn-proxy).

The mix: real handshakes completed end to end (so the pending and translated paths run too),
spoofed SYNs, cookie-shaped ACKs (the right cookie with one bit flipped, off by a little, from a
period before), TCP option soup (random kinds and lengths up to a 60-byte header), truncated
packets, bit-flipped copies of every kind, server answers and ICMP errors quoting any of them,
half of it over IPv6 (an IPv6 synproxy service beside the IPv4 one; ICMPv6 errors).  Most
mutants get a valid IP header checksum so they reach the TCP code.

Invariant, checked after every batch: every packet the engine sends to a real server (rewritten
or generated; a packet passed unchanged is not the engine's) belongs to a connection in the
table.  ``--syncookies``: the same mix through plain services (no synproxy) with ``[defense]
syncookies = 2``, the path every TCP service takes while a flood is on (docs/ipvs.md#syn-cookies).
Run under ASan/UBSan with a ``PYLVS_DEBUG=1`` build::

    PYLVS_DEBUG=1 python3 src/pylvs/_build.py
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
        python3 -m bench.fuzz_synproxy --packets 1000000

``tests/unit/test_synproxy_fuzz.py`` runs a short version in CI.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import struct
import sys
import time
from collections.abc import Sequence

from pylvs.engine import Defense, Engine

VIP = ipaddress.ip_address("198.18.0.100").packed
RS = tuple(ipaddress.ip_address(a).packed for a in ("198.19.0.11", "198.19.0.12"))
VIP6 = ipaddress.ip_address("2001:2::100").packed
RS6 = tuple(ipaddress.ip_address(a).packed for a in ("2001:2:2::11", "2001:2:2::12"))


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)


def _pseudo(src: bytes, dst: bytes, proto: int, n: int) -> bytes:
    """The IPv4 or IPv6 (RFC 8200 8.1) pseudo-header, by the addresses' length."""
    if len(src) == 16:
        return src + dst + struct.pack("!IxxxB", n, proto)
    return src + dst + struct.pack("!BBH", 0, proto, n)


def _ip(src: bytes, dst: bytes, l4: bytes, proto: int = 6) -> bytes:
    if len(src) == 16:
        return struct.pack("!IHBB", 6 << 28, len(l4), proto, 64) + src + dst + l4
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:] + l4


def _icmp_error(src: bytes, dst: bytes, code: int, quoted: bytes) -> bytes:
    """ICMP destination unreachable (IPv4) or an ICMPv6 error (types 1..4) quoting *quoted*."""
    if len(src) == 16:
        body = bytes([1 + code % 4, code, 0, 0, 0, 0, 0, 0]) + quoted
        body = body[:2] + struct.pack("!H", _csum(_pseudo(src, dst, 58, len(body)) + body)) \
            + body[4:]
        return _ip(src, dst, body, proto=58)
    body = bytes([3, code, 0, 0, 0, 0, 0, 0]) + quoted
    body = body[:2] + struct.pack("!H", _csum(body)) + body[4:]
    return _ip(src, dst, body, proto=1)


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
         opts: bytes = b"", payload: bytes = b"") -> bytes:
    opts += b"\0" * (-len(opts) % 4)
    th = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                     (5 + len(opts) // 4) << 4, flags, 64240, 0, 0) + opts + payload
    th = th[:16] + struct.pack("!H", _csum(_pseudo(src, dst, 6, len(th)) + th)) + th[18:]
    return _ip(src, dst, th)


def _l3(p: bytes | bytearray) -> int:
    """Bytes before the L4 header of a packet this module built (no IPv6 extensions)."""
    return 40 if p[0] >> 4 == 6 else (p[0] & 15) * 4


def _fix_ip(p: bytearray) -> None:
    if len(p) >= 20 and p[0] >> 4 == 4 and (p[0] & 15) * 4 <= len(p):
        ihl = (p[0] & 15) * 4
        p[10:12] = b"\0\0"
        p[10:12] = struct.pack("!H", _csum(bytes(p[:ihl])))


def _tsval(p: bytes) -> bytes:
    """The TSval of a TCP packet's timestamp option (4 bytes), or zeros."""
    ihl = _l3(p)
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

    def __init__(self, seed: int, syncookies: bool = False) -> None:
        self.r = random.Random(seed)
        self.e = Engine(max_connections=50_000, seed=seed,
                        defense=Defense(syncookies=2) if syncookies else None)
        for vip, servers in ((VIP, RS), (VIP6, RS6)):
            svc = self.e.add_service("tcp", ipaddress.ip_address(vip), 80, scheduler="rr",
                                     synproxy=not syncookies)
            for a in servers:
                self.e.add_server(svc, ipaddress.ip_address(a), 8080)
        self.now = 1000.0
        self.recent: list[bytes] = []      # outputs and inputs to mutate and quote
        self.cookies: dict[tuple[bytes, int], int] = {}  # (client, port) -> our SYN-ACK seq
        self.sent_to_rs = 0

    def client(self) -> tuple[bytes, int]:
        """A client address (IPv4 or IPv6, even odds) and port."""
        if self.r.random() < 0.5:
            return (bytes.fromhex("20010002000100000000") + self.r.randbytes(6),
                    self.r.randrange(1, 65536))
        return bytes([198, 18]) + self.r.randbytes(2), self.r.randrange(1, 65536)

    @staticmethod
    def ends(c: bytes) -> tuple[bytes, tuple[bytes, ...]]:
        """The VIP and real servers of the client's family."""
        return (VIP6, RS6) if len(c) == 16 else (VIP, RS)

    def one(self) -> bytes:
        r = self.r
        k = r.random()
        c, port = self.client()
        vip, servers = self.ends(c)
        if k < 0.15:   # a SYN (real or spoofed: the engine cannot tell)
            return _tcp(c, vip, port, 80, r.getrandbits(32), 0, 0x02,
                        SYN_OPTS if r.random() < 0.5 else b"")
        if k < 0.35 and self.cookies:  # an ACK for a cookie we were given, maybe damaged
            (c, port), cookie = r.choice(list(self.cookies.items()))
            vip = self.ends(c)[0]
            ack = cookie + 1
            m = r.random()
            if m < 0.3:
                ack ^= 1 << r.randrange(32)
            elif m < 0.4:
                ack += r.randrange(-3, 4)
            opts = bytes([1, 1, 8, 10]) + r.getrandbits(32).to_bytes(4, "big") + \
                r.getrandbits(32).to_bytes(4, "big") if r.random() < 0.5 else b""
            payload = r.randbytes(r.randrange(0, 200)) if r.random() < 0.3 else b""
            return _tcp(c, vip, port, 80, r.getrandbits(32), ack, 0x10 | (0x08 * bool(payload)),
                        opts, payload)
        if k < 0.5:    # option soup on any flags
            soup = r.randbytes(r.randrange(0, 41))
            return _tcp(c, vip, port, 80, r.getrandbits(32), r.getrandbits(32),
                        r.getrandbits(8), soup, r.randbytes(r.randrange(0, 50)))
        if k < 0.6:    # a "server" answer, to any client
            return _tcp(r.choice(servers), c, 8080, port, r.getrandbits(32),
                        r.getrandbits(32), r.choice([0x12, 0x14, 0x04, 0x18, 0x11]))
        if k < 0.7 and self.recent:   # an ICMP error quoting something we saw
            q = r.choice(self.recent)
            q = q[:r.randrange(28, 68) if q[0] >> 4 == 4 else r.randrange(48, 88)]
            if (q[0] >> 4 == 6) != (len(c) == 16):
                c = c[-4:] if len(c) == 16 else bytes.fromhex("2001000200010000") + c * 2
                vip, servers = self.ends(c)
            return _icmp_error(c, r.choice([vip, *servers]), r.randrange(16), q)
        base = bytearray(r.choice(self.recent) if self.recent else
                         _tcp(c, vip, port, 80, 1, 0, 0x02))
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
        vip = self.ends(c)[0]
        isn = r.getrandbits(32)
        sa = e.process(_tcp(c, vip, port, 80, isn, 0, 0x02, SYN_OPTS), self.now)
        if sa is None:
            return []
        cookie = struct.unpack_from("!I", sa, _l3(sa) + 4)[0]
        self.cookies[(c, port)] = cookie
        if len(self.cookies) > 1000:
            self.cookies.pop(next(iter(self.cookies)))
        ts = bytes([1, 1, 8, 10]) + b"\0\0\0\x02" + _tsval(sa)
        syn = e.process(_tcp(c, vip, port, 80, isn + 1, cookie + 1, 0x18, ts,
                             b"GET /"), self.now)
        if syn is None or len(syn) < _l3(syn) + 20:
            return [sa]
        rs = syn[24:40] if len(c) == 16 else syn[16:20]
        out = [sa, syn]
        for p in (_tcp(rs, c, 8080, port, 77, isn + 1, 0x12, bytes([2, 4, 5, 180])),
                  _tcp(rs, c, 8080, port, 78, isn + 6, 0x18, b"", b"200 OK"),
                  _tcp(c, vip, port, 80, isn + 6, cookie + 7, 0x11)):
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
            if o is None or len(o) < 20 or o == p:
                continue  # passed unchanged: not to a VIP, the kernel routes it as any router
            v6 = o[0] >> 4 == 6
            if v6 and len(o) < 40:
                continue
            proto = o[6] if v6 else o[9]
            if proto not in (6, 1, 58):
                continue
            dst = o[24:40] if v6 else o[16:20]
            ihl = _l3(o)
            if dst in (RS6 if v6 else RS) and proto == 6 and len(o) >= ihl + 2:
                src = str(ipaddress.ip_address(o[8:24] if v6 else o[12:16]))
                sport = struct.unpack_from("!H", o, ihl)[0]
                if (src, sport) not in conns:
                    raise AssertionError(f"forwarded to a real server without a connection: "
                                         f"{o.hex()} (input {p.hex()})")
                self.sent_to_rs += 1
            self.recent.append(o)
        self.recent.extend(p for p in pkts[:8] if p)  # a cut to nothing has nothing to quote
        del self.recent[:-200]
        for o in self.handshake():
            self.recent.append(o)
        self.now += self.r.random() * 3.0   # cookies age across periods
        if self.r.random() < 0.05:
            self.e.expire(self.now)
        return len(pkts)


def run(packets: int, seed: int = 1, batch: int = 500, syncookies: bool = False) -> Fuzzer:
    """Feed ``packets`` generated packets; raise AssertionError on a violated invariant."""
    f = Fuzzer(seed, syncookies)
    done = 0
    while done < packets:
        done += f.batch(min(batch, packets - done))
    f.e.expire(f.now + 10_000.0)
    return f


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packets", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--syncookies", action="store_true",
                   help="plain services with syncookies = 2 instead of synproxy services")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    f = run(args.packets, args.seed, syncookies=args.syncookies)
    st = f.e.stats()
    print(f"{args.packets} packets in {time.monotonic() - t0:.1f} s, seed {args.seed}: "
          f"no invariant broken; {f.sent_to_rs} sent to real servers on connections; "
          f"events {dict(st.events)}; table left {st.connections}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
