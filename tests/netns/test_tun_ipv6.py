"""IPv6 through the TUN pump and the engine, in one fresh namespace (issue 12).

The TUN is IFF_NO_PI, so the kernel takes each written packet's family from its version nibble;
this checks the whole loop for IPv6 with and without offloads:

* a UDP datagram to an IPv6 VIP whose service has no server: the engine answers ICMPv6 port
  unreachable, the pump writes it back, the kernel delivers it to the connected socket
  (ECONNREFUSED);
* a TCP connection to ``[2001:2::100]:80`` reaching a local listener on
  ``[2001:2:1::11]:8080`` (DNAT), its replies steered back into the TUN by a policy rule (SNAT),
  and data echoed both ways;
* the same TCP connection through a SYN-proxied service (docs/ipvs.md#syn-proxy): the engine
  answers the kernel's SYN with a cookie, opens the server's handshake itself and translates
  the sequence numbers for the life of the connection.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

PROG = textwrap.dedent("""
    import asyncio, json, socket, subprocess, sys, time
    from pylvs.engine import Engine
    from pylvs.dataplane.tun import TunDataplane

    def sh(*args):
        subprocess.run(args, check=True)

    async def main(offload, synproxy):
        eng = Engine(max_connections=1024)
        udp = eng.add_service("udp", "2001:2::100", 53)
        tcp = eng.add_service("tcp", "2001:2::100", 80, scheduler="rr", synproxy=synproxy)
        eng.add_server(tcp, "2001:2:1::11", 8080)
        dp = TunDataplane("v6tun1", offload=offload, batch_size=16,
                          engine_ptr=eng._c_handle, clock=time.monotonic)
        dp.open()
        sh("ip", "-6", "addr", "add", "2001:2::9/128", "dev", "lo")
        sh("ip", "-6", "addr", "add", "2001:2:1::11/128", "dev", "lo")
        sh("ip", "link", "set", "v6tun1", "up")
        sh("ip", "-6", "route", "add", "2001:2::100/128", "dev", "v6tun1")
        # the real server's replies go through the engine, as the director's steering rules do;
        # client and server share this namespace, so the steering rule must come before the
        # local table (moved from preference 0 to 1000)
        sh("ip", "-6", "rule", "add", "pref", "1000", "lookup", "local")
        sh("ip", "-6", "rule", "del", "pref", "0")
        sh("ip", "-6", "rule", "add", "pref", "10", "from", "2001:2:1::11", "ipproto", "tcp",
           "sport", "8080", "lookup", "100")
        sh("ip", "-6", "route", "add", "default", "dev", "v6tun1", "table", "100")
        dp.start()
        loop = asyncio.get_running_loop()
        out = {}

        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u.setblocking(False)
        u.bind(("2001:2::9", 0))
        u.connect(("2001:2::100", 53))
        u.send(b"q")
        out["udp"] = "timeout"
        for _ in range(200):
            await asyncio.sleep(0.01)
            try:
                u.recv(100)
            except BlockingIOError:
                continue
            except ConnectionRefusedError:
                out["udp"] = "refused"
            break
        u.close()

        srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("2001:2:1::11", 8080))
        srv.listen(4)
        srv.setblocking(False)

        async def serve():
            conn, peer = await loop.sock_accept(srv)
            data = await loop.sock_recv(conn, 100000)
            await loop.sock_sendall(conn, data.upper() * 40)
            conn.close()
            return peer[0]

        server = asyncio.create_task(serve())
        c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        c.setblocking(False)
        c.bind(("2001:2::9", 0))
        try:
            await asyncio.wait_for(loop.sock_connect(c, ("2001:2::100", 80)), 5)
        except asyncio.TimeoutError:
            print(json.dumps({"error": "connect timeout", "tun": dp.stats().as_dict(),
                              "drops": {k: v for k, v in eng.stats().drops.items() if v},
                              "conns": [str(x) for x in eng.connections()]}))
            raise
        await loop.sock_sendall(c, b"hello over ipv6 " * 100)
        got = b""
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(c, 100000), 5)
            if not chunk:
                break
            got += chunk
        c.close()
        out["peer"] = await asyncio.wait_for(server, 5)
        out["echo_ok"] = got == b"HELLO OVER IPV6 " * 100 * 40
        out["conns"] = [(x.client_address, x.virtual_address, x.server_address, x.state,
                         x.synproxy) for x in eng.connections()]
        out["events"] = dict(eng.stats().events)
        out["drops"] = {k: v for k, v in eng.stats().drops.items() if v}
        out["tun"] = dp.stats().as_dict()
        dp.close()
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1] != "plain", sys.argv[1] == "synproxy"))
""")


@pytest.mark.parametrize("mode", ["offload", "plain", "synproxy"])
def test_ipv6_through_the_tun(mode: str) -> None:
    ns = "v6t" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROG, mode],
                             capture_output=True, text=True, timeout=60,
                             env={"PYTHONPATH": SRC, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["udp"] == "refused", out  # ICMPv6 port unreachable made it back
    assert out["peer"] == "2001:2::9" and out["echo_ok"], out
    conns = {tuple(c[:3]) for c in out["conns"]}
    assert ("2001:2::9", "2001:2::100", "2001:2:1::11") in conns, out
    assert out["tun"]["replies"] >= 1 and out["tun"]["forwarded"] > 4, out
    if mode == "synproxy":
        # one cookie SYN-ACK, one valid ACK; the conn is marked and was translated both ways
        # (the echo above went through it)
        assert out["events"]["synproxy_syn"] >= 1 and out["events"]["synproxy_ack_ok"] == 1, out
        assert any(c[4] for c in out["conns"] if c[0] == "2001:2::9"), out
    if mode != "plain":
        # big local writes become TSO6 super-packets with partial checksums
        assert out["tun"]["csum_partial"] > 0, out
