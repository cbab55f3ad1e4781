"""``pylvs demo`` end to end: a real director in namespaces, and cleanup also on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from pylvs.testbed.topology import child_env, list_namespaces

DEMO = [sys.executable, "-m", "pylvs", "demo"]


def _namespaces(out: str) -> list[str]:
    m = re.search(r"^Namespaces: (.+)$", out, re.M)
    assert m, out
    return m.group(1).split(", ")


def test_demo_spreads_requests_round_robin_and_cleans_up() -> None:
    pytest.importorskip("pylvs.cli.daemon", reason="pylvs serve is not implemented yet")
    res = subprocess.run([*DEMO, "-n", "9"], capture_output=True, text=True, timeout=180,
                         env=child_env())
    assert res.returncode == 0, res.stdout + res.stderr
    # rr over three servers: 9 fresh connections, 9 datagrams and 9 IPv6 connections, 3 each.
    for title in ("HTTP through 198.18.0.100", "UDP through", "HTTP through [2001:2::100]:80"):
        block = res.stdout.split(f"\n{title}", 1)[1]
        assert block.splitlines()[0].endswith(": 9 answered"), block
        for rs in ("rs1", "rs2", "rs3"):
            assert re.search(rf"^\s+{rs}\s+3\s", block, re.M), block
    assert "27/27 requests answered" in res.stdout
    assert 'address = "[2001:2::100]:80"' in res.stdout
    assert 'private_interface = "eth1"' in res.stdout
    left = set(_namespaces(res.stdout)) & set(list_namespaces())
    assert not left


def test_demo_ctrl_c_removes_everything() -> None:
    proc = subprocess.Popen([*DEMO, "-n", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env())
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        names = _namespaces(first)
        assert all(n in list_namespaces() for n in names)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The interrupt lands while the real servers start, long before the daemon matters.
    assert proc.returncode == 130, err
    assert not set(names) & set(list_namespaces())
    assert not [p for p in os.listdir("/tmp") if p.startswith("pylvs-" + names[0][:-3])]


def test_demo_rejects_a_bad_request_count() -> None:
    res = subprocess.run([*DEMO, "-n", "0"], capture_output=True, text=True, timeout=30,
                         env=child_env())
    assert res.returncode == 2 and "--requests must be 1..1000" in res.stderr
