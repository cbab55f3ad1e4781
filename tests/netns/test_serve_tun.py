"""The TUN pump on its own: batches, counters and the offload metadata, in a fresh namespace.

A route sends 198.18.0.200 into the TUN; with no engine attached the pump must read every
packet in batches and drop them all (nothing may loop back), counting what it saw.
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
    import asyncio, json, socket, subprocess, sys
    from pylvs.dataplane.tun import TunDataplane

    async def main(offload):
        dp = TunDataplane("srvtun1", offload=offload, batch_size=16)
        dp.open()
        subprocess.run(["ip", "link", "set", "srvtun1", "up"], check=True)
        subprocess.run(["ip", "route", "add", "198.18.0.200/32", "dev", "srvtun1"], check=True)
        dp.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(200):  # faster than the loop drains them: batches form
                s.sendto(bytes(100), ("198.18.0.200", 9))
        with socket.socket() as t:
            t.setblocking(False)
            try:
                t.connect(("198.18.0.200", 80))  # one SYN (partial checksum when offloaded)
            except BlockingIOError:
                pass
            for _ in range(100):
                await asyncio.sleep(0.01)
                if dp.stats().reads >= 201:
                    break
        st = dp.stats().as_dict()
        dp.close()
        print(json.dumps(st))

    asyncio.run(main(sys.argv[1] == "offload"))
""")


@pytest.mark.parametrize("mode", ["offload", "plain"])
def test_pump_reads_in_batches_and_counts(mode: str) -> None:
    ns = "srv" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        # No IPv6 on the TUN: its router solicitations would add to the counts.
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROG, mode],
                             capture_output=True, text=True, timeout=60,
                             env={"PYTHONPATH": SRC, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout.strip().splitlines()[-1])
        links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert st["reads"] == 201 and st["dropped"] == 201, st
    assert st["writes"] == 0 and st["forwarded"] == 0 and st["passed"] == 0
    assert st["read_bytes"] == 200 * 128 + 60  # IP + UDP headers; the SYN with its options
    assert sum(st["batch_hist"]) == st["batches"] and 1 <= st["max_batch"] <= 16
    assert st["batches"] < 201  # some wakeups read more than one packet
    if mode == "offload":
        assert st["csum_partial"] == 201  # local senders leave the L4 checksum to the device
    else:
        assert st["csum_partial"] == 0 and st["gso_packets"] == 0
    assert st["queue_dropped"] == 0
    assert "srvtun1" not in links.stdout  # closing the fd removed the device
