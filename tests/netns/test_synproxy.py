"""The SYN proxy through ``pylvs serve`` (docs/ipvs.md#syn-proxy): real clients (curl and Python)
are answered, and during a small bounded spoofed SYN flood the real servers see no SYN from a
spoofed address (an nft counter in each real server counts them)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from pylvs.api.client import ApiClient
from pylvs.testbed.hapair import HaPair
from pylvs.testbed.topology import ServiceSpec, Topology
from tests.netns.test_failover import _json, _up
from tests.support.serve_harness import VIP, Srv, client, names, wait_log

FLOOD_NET = "198.18.128.0/17"  # spoofed sources; their SYN-ACKs have no route and vanish
FLOOD_COUNT = 3000

# A bounded flooder: raw IPv4/TCP SYNs from random sources in FLOOD_NET, built by hand (no
# scapy: it runs in the client namespace and must be quick).
FLOODER = textwrap.dedent("""
    import random, socket, struct, sys
    vip, count = sys.argv[1], int(sys.argv[2])
    def csum(b):
        if len(b) % 2:
            b += b"\\0"
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return ~s & 0xFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst = socket.inet_aton(vip)
    rnd = random.Random(11)
    for i in range(count):
        src = struct.pack("!I", (198 << 24 | 18 << 16 | 128 << 8) + rnd.randrange(1, 32767))
        tcp = struct.pack("!HHIIBBHHH", rnd.randrange(1024, 65535), 80, rnd.getrandbits(32), 0,
                          5 << 4, 0x02, 64240, 0, 0)
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xFFFF, 0, 64, 6, 0, src, dst)
        s.sendto(ip + tcp, (vip, 0))
""")


def _syn_counters(topo: Topology) -> None:
    """Count SYNs arriving at every real server: all of them, and the spoofed ones."""
    rules = textwrap.dedent(f"""
        table inet synproxy_test {{
            counter syn_all {{}}
            counter syn_spoofed {{}}
            chain input {{
                type filter hook input priority 0;
                tcp flags & (syn | ack) == syn counter name syn_all
                ip saddr {FLOOD_NET} tcp flags & (syn | ack) == syn counter name syn_spoofed
            }}
        }}
    """)
    for rs in topo.real_servers:
        topo.run(rs.ns, ["nft", "-f", "-"], input=rules)


def _read_counter(topo: Topology, name: str) -> int:
    total = 0
    for rs in topo.real_servers:
        out = topo.run(rs.ns, ["nft", "list", "counter", "inet", "synproxy_test", name]).stdout
        total += int(out.split("packets")[1].split()[0])
    return total


def test_synproxied_service_answers_clients_and_servers_see_no_spoofed_syn(srv: Srv) -> None:
    # the TUN path: the engine answers every SYN (the XDP responder is the next test's)
    toml = srv.topo.director_config([ServiceSpec(scheduler="rr", synproxy=True)],
                                    director_options={"xdp_synproxy": "off"})
    _syn_counters(srv.topo)
    srv.serve(toml)
    before = _read_counter(srv.topo, "syn_all")  # serve's readiness probe connected once
    got = names(srv.topo, 9)
    assert sorted(got) == ["rs1"] * 3 + ["rs2"] * 3 + ["rs3"] * 3, got
    curl = srv.topo.run(srv.topo.client.ns, ["curl", "-sS", "-m", "5", f"http://{VIP}/"])
    assert curl.stdout.strip() in ("rs1", "rs2", "rs3")
    # a request larger than one segment after the handshake, and a kept-alive connection
    out = client(srv.topo, """
        s = socket.create_connection((VIP, 80), timeout=5)
        out['a'] = [http(path='/' + 'x' * 3000, sock=s) for _ in range(3)]
        s.close()
    """)
    assert len(set(out["a"])) == 1
    legit = _read_counter(srv.topo, "syn_all")
    assert legit == before + 11  # one SYN per real connection, none retransmitted

    flood = srv.topo.popen(srv.topo.client.ns, [sys.executable, "-c", FLOODER, VIP,
                                                str(FLOOD_COUNT)])
    during = names(srv.topo, 6)
    assert flood.wait(timeout=60) == 0
    assert len(during) == 6
    assert _read_counter(srv.topo, "syn_spoofed") == 0
    assert _read_counter(srv.topo, "syn_all") == legit + 6
    sock = os.path.join(srv.topo.workdir, f"{srv.topo.director.name}.sock")
    stats = ApiClient(sock).request("GET", "/api/v1/stats")
    # the flood did reach the engine: each spoofed SYN got a cookie, none opened a connection
    assert stats["events"]["synproxy_syn"] >= FLOOD_COUNT + 17
    assert stats["events"]["synproxy_ack_ok"] == before + 17
    assert stats["connections"] <= before + 17

    listing = subprocess.run([sys.executable, "-m", "pylvs", "ctl", "--socket", sock, "-L", "-n"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert f"TCP  {VIP}:80 rr synproxy" in listing.stdout, listing.stdout + listing.stderr


def test_xdp_answers_the_syns_and_the_engine_completes_the_handshakes(srv: Srv) -> None:
    """With the XDP responder on the public interface the engine sees no SYN (its synproxy_syn
    stays where it was) yet accepts every real client's ACK; the spoofed flood is answered
    in XDP and reaches neither the engine nor the real servers."""
    toml = srv.topo.director_config([ServiceSpec(scheduler="rr", synproxy=True)],
                                    director_options={"xdp_synproxy": "on"})
    _syn_counters(srv.topo)
    wait_log(srv.serve(toml), r"ready: ")  # the VIP answers before the components are up
    sock = os.path.join(srv.topo.workdir, f"{srv.topo.director.name}.sock")
    api = ApiClient(sock)
    xdp = api.request("GET", "/api/v1/status")["xdp_synproxy"]
    assert xdp["state"] == "attached" and xdp["attached"] == {"eth0": "generic"}, xdp
    # serve's readiness probe came before the program was attached: the engine answered it
    engine_syns = api.request("GET", "/api/v1/stats")["events"]["synproxy_syn"]
    before = _read_counter(srv.topo, "syn_all")
    flood = srv.topo.popen(srv.topo.client.ns, [sys.executable, "-c", FLOODER, VIP,
                                                str(FLOOD_COUNT)])
    got = names(srv.topo, 9)  # fresh connections during the flood
    assert flood.wait(timeout=60) == 0
    assert sorted(got) == ["rs1"] * 3 + ["rs2"] * 3 + ["rs3"] * 3, got
    assert _read_counter(srv.topo, "syn_spoofed") == 0
    assert _read_counter(srv.topo, "syn_all") == before + 9
    stats = api.request("GET", "/api/v1/stats")
    xdp = api.request("GET", "/api/v1/status")["xdp_synproxy"]
    assert stats["events"]["synproxy_syn"] == engine_syns  # not one SYN more reached it
    assert stats["events"]["synproxy_ack_ok"] >= 9
    assert xdp["synproxy_xdp_syn"] >= FLOOD_COUNT + 9, xdp
    assert stats["connections"] <= stats["events"]["synproxy_ack_ok"]
    metrics = srv.topo.run(srv.topo.director.ns, ["curl", "-s", "--unix-socket", sock,
                                                  "http://pylvs/metrics"]).stdout
    assert 'pylvs_engine_events_total{event="synproxy_xdp_syn"}' in metrics
    assert "pylvs_xdp_synproxy_attached 1" in metrics
    text = subprocess.run([sys.executable, "-m", "pylvs", "status", "--socket", sock],
                          capture_output=True, text=True, timeout=30, check=False).stdout
    assert "xdp synproxy on: attached on eth0 (generic)" in text, text

    def xdp_attached() -> bool:
        link = srv.topo.run(srv.topo.director.ns, ["ip", "-d", "link", "show", "eth0"]).stdout
        return "xdpgeneric" in link

    assert xdp_attached()
    assert srv.daemon is not None
    srv.daemon.kill()  # kill -9: the kernel closes the BPF link, which detaches the program
    deadline = time.monotonic() + 5
    while xdp_attached() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not xdp_attached()


def test_synproxied_streams_survive_a_failover() -> None:
    """The sequence delta travels in connection sync: after kill -9 of the active director the
    backup translates the proxied streams exactly as the master did."""
    with HaPair(ha={"preempt": False}, synproxy=True) as pair:
        _up(pair)
        streams = [pair.client("stream", "--duration", "5", "--gap", "0.01") for _ in range(3)]
        time.sleep(1.5)  # ESTABLISHED, and synced (3rd packet, then every 50th)
        pair.kill(0)
        pair.wait(lambda: pair.owns_vip(1), 5, "the backup to take over")
        for stream in streams:
            res = _json(stream, 40)
            assert isinstance(res, dict)
            assert res["error"] is None, res
            assert res["verified"] == res["sent"] > 100_000
