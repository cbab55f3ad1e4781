"""``pylvs ctl`` and ``pylvs status`` end to end against the API on a real Unix socket.

The API runs on this test's event loop; ctl is blocking, so it runs in a worker thread, exactly
as a separate process would talk to the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP

from pylvs.api.client import ApiClient
from pylvs.cli import ctl
from pylvs.model import ServiceKey
from tests.support.mini_director import ApiStarter, MiniDirector, base_config, service

VIP = "198.18.0.100"


async def run_ctl(sock: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    def call() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            real_stdin = sys.stdin
            sys.stdin = io.StringIO(stdin)
            try:
                status = ctl.main(["--socket", sock, *args])
            finally:
                sys.stdin = real_stdin
        return status, out.getvalue(), err.getvalue()

    return await asyncio.to_thread(call)


@pytest.fixture
async def daemon(tmp_path: Path, running_api: ApiStarter) -> tuple[MiniDirector, str]:
    sock = str(tmp_path / "ctl.sock")
    director, _ = await running_api(base_config(sock))
    return director, sock


async def ok(sock: str, *args: str, stdin: str = "") -> str:
    status, out, err = await run_ctl(sock, *args, stdin=stdin)
    assert status == 0, (args, err)
    return out


async def test_build_a_service_and_list_it(daemon: Any) -> None:
    _, sock = daemon
    await ok(sock, "-A", "-t", f"{VIP}:80", "-s", "rr")
    await ok(sock, "-a", "-t", f"{VIP}:80", "-r", "198.19.0.12", "-m", "-w", "2")
    await ok(sock, "-a", "-t", f"{VIP}:80", "-r", "198.19.0.11:8080", "-m")
    # ipvsadm's semantics: a service made by -A is unchecked, so -Ln shows the weights at once
    # (nothing listens on these addresses)
    out = await ok(sock, "-Ln")
    lines = out.splitlines()
    assert lines[0] == f"IP Virtual Server version 1.2.1 (size={1 << 20})"
    assert lines[1:4] == [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        f"TCP  {VIP}:80 rr",
    ]
    assert lines[4:] == [
        "  -> 198.19.0.11:8080             Masq    1      0          0         ",
        "  -> 198.19.0.12:80               Masq    2      0          0         ",
    ]
    assert await ok(sock, "-Sn") == (
        f"-A -t {VIP}:80 -s rr\n"
        f"-a -t {VIP}:80 -r 198.19.0.11:8080 -m -w 1\n"
        f"-a -t {VIP}:80 -r 198.19.0.12:80 -m -w 2\n"
    )


async def test_ctl_service_is_unchecked_and_a_checked_service_probes_a_new_server_at_once(
    daemon: Any,
) -> None:
    director, sock = daemon
    await ok(sock, "-A", "-t", f"{VIP}:80")
    assert director.config.virtual_servers[0].check.type == "none"
    await ok(sock, "-a", "-t", f"{VIP}:80", "-r", "198.19.0.11", "-w", "4")
    assert "198.19.0.11:80               Masq    4" in await ok(sock, "-Ln")
    # A service with a TCP check (from the API or the file): a server added at run time is
    # probed at once, not after a random part of its 2 s interval.
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await asyncio.to_thread(ApiClient(sock).post, "/api/v1/services", {
            "protocol": "tcp", "address": "127.0.0.1:81",
            "check": {"type": "tcp", "interval": 2.0, "timeout": 1.0}})
        started = time.monotonic()
        await ok(sock, "-a", "-t", "127.0.0.1:81", "-r", f"127.0.0.1:{port}", "-w", "4")
        for _ in range(100):
            out = await ok(sock, "-Ln", "-t", "127.0.0.1:81")
            if f"127.0.0.1:{port}" in out and "Masq    4" in out:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(out)
        assert time.monotonic() - started < 0.8
    finally:
        server.close()
        await server.wait_closed()


async def test_save_clear_restore(daemon: Any) -> None:
    director, sock = daemon
    rules = (f"-A -t {VIP}:80 -s wlc -p 300 -M 255.255.255.0\n"
             f"-a -t {VIP}:80 -r 198.19.0.11:80 -m -w 3\n"
             f"-A -u {VIP}:53 -s sh -b sh-port\n"
             f"-a -u {VIP}:53 -r 198.19.0.11:53 -m -w 1\n")
    await ok(sock, "-R", stdin=rules)
    assert await ok(sock, "-Sn") == f"-A -t {VIP}:80 -s wlc -p 300 -M 255.255.255.0\n" \
        f"-a -t {VIP}:80 -r 198.19.0.11:80 -m -w 3\n" \
        f"-A -u {VIP}:53 -s sh -b sh-port\n-a -u {VIP}:53 -r 198.19.0.11:53 -m -w 1\n"
    saved = await ok(sock, "-Sn")
    await ok(sock, "-C")
    assert director.config.virtual_servers == ()
    await ok(sock, "-R", stdin=saved)
    assert await ok(sock, "-Sn") == saved
    status, _, err = await run_ctl(sock, "-R", stdin=f"-D -t {VIP}:80\n-D -t {VIP}:80\n")
    assert status == 1 and "no such service" in err
    assert await ok(sock, "-Sn") == saved  # the first line was not applied either


async def test_edit_and_delete(daemon: Any) -> None:
    director, sock = daemon
    await ok(sock, "-A", "-t", f"{VIP}:443", "-s", "sh", "-p")
    await ok(sock, "-a", "-t", f"{VIP}:443", "-r", "198.19.0.11", "-w", "4", "-x", "9", "-y", "3")
    await ok(sock, "-E", "-t", f"{VIP}:443", "-s", "lc")  # -E without -p: not persistent
    vs = director.config.virtual_servers[0]
    assert (vs.scheduler, vs.persistence) == ("lc", 0)
    await ok(sock, "-e", "-t", f"{VIP}:443", "-r", "198.19.0.11:443", "-w", "6")
    rs = director.config.virtual_servers[0].real_servers[0]
    assert (rs.weight, rs.upper_threshold, rs.lower_threshold) == (6, 0, 0)
    status, _, err = await run_ctl(sock, "-e", "-t", f"{VIP}:443", "-r", "198.19.0.99")
    assert status == 1 and "no such real server" in err
    await ok(sock, "-d", "-t", f"{VIP}:443", "-r", "198.19.0.11:443")
    await ok(sock, "-D", "-t", f"{VIP}:443")
    assert director.config.virtual_servers == ()
    status, _, err = await run_ctl(sock, "-A", "-t", f"{VIP}:443", "-s", "fastest")
    assert status == 1 and "unknown scheduler 'fastest'" in err


async def test_timeouts_and_zero_and_connections(daemon: Any, tmp_path: Path) -> None:
    director, sock = daemon
    assert await ok(sock, "-L", "--timeout") == "Timeout (tcp tcpfin udp): 900 120 300\n"
    await ok(sock, "--set", "60", "0", "20")
    assert await ok(sock, "-L", "--timeout") == "Timeout (tcp tcpfin udp): 60 120 20\n"
    assert director.config.timeouts.tcp == 60  # the config follows, so a save keeps it

    await director.apply_config(base_config(sock, (service(f"{VIP}:80", "198.19.0.11:80"),)))
    syn = IP(src="198.18.0.50", dst=VIP) / TCP(sport=40001, dport=80, flags="S")
    assert director.engine.process(bytes(syn), now=time.monotonic()) is not None
    table = (await ok(sock, "-Lcn")).splitlines()
    assert table[2].startswith("TCP 00:")
    assert table[2][11:] == ("SYN_RECV    198.18.0.50:40001  198.18.0.100:80    "
                             "198.19.0.11:80")
    stats = (await ok(sock, "-Ln", "--stats", "-t", f"{VIP}:80")).splitlines()
    assert stats[2] == f"{'TCP  ' + VIP + ':80':<33}        1        1        0       40        0"
    await ok(sock, "-Z")
    stats = (await ok(sock, "-Ln", "--stats", "--exact")).splitlines()
    assert stats[3] == f"{'TCP  ' + VIP + ':80':<33}" + "        0" * 5


async def test_status_summary(daemon: Any) -> None:
    director, sock = daemon
    await director.apply_config(base_config(sock, (service(f"{VIP}:80", "198.19.0.11:80",
                                                           "198.19.0.12:80"),)))

    def call() -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = ctl.status_main(["--socket", sock])
        return status, out.getvalue()

    status, text = await asyncio.to_thread(call)
    assert status == 0
    assert "role ACTIVE" in text
    assert f"TCP {VIP}:80  wlc  servers 2/2 up" in text
    assert "  198.19.0.11:80        up      weight 1/1 " in text


async def test_sorry_server_is_listed_but_not_saved(daemon: Any) -> None:
    director, sock = daemon
    await director.apply_config(base_config(sock, (service(f"{VIP}:80", "198.19.0.11:80"),)))
    # what the health component does when the pool loses quorum
    svc = next(iter(director._svc_keys.values()))
    director.engine.add_server(svc, "198.19.0.99", 80, weight=1)
    _, dests = (await ok(sock, "-Ln")).split("InActConn\n", 1)
    assert "  -> 198.19.0.99:80               Masq    1      " in dests
    assert "198.19.0.99" not in await ok(sock, "-Sn")


async def test_save_config_writes_the_running_state_as_toml(
    daemon: Any, tmp_path: Path
) -> None:
    from pylvs import config as config_mod

    director, sock = daemon
    await ok(sock, "-A", "-t", f"{VIP}:80", "-s", "mh", "-b", "mh-port")
    await ok(sock, "-a", "-t", f"{VIP}:80", "-r", "198.19.0.11", "-w", "4")
    text = await ok(sock, "--save-config", "-")
    back = config_mod.parse(text, "<saved>")
    assert back.virtual_servers == director.config.virtual_servers
    target = tmp_path / "saved.toml"
    assert await ok(sock, f"--save-config={target}") == ""
    assert config_mod.load(target).virtual_servers == director.config.virtual_servers
    # Without FILE the daemon writes its own file, which needs [api] write_config = true.
    status, _, err = await run_ctl(sock, "--save-config")
    assert status == 1
    assert "api.write_config: writing the config file is not enabled" in err
    assert "--save-config FILE" in err


async def test_fwmark_service_as_ipvsadm(daemon: Any) -> None:
    director, sock = daemon
    await ok(sock, "-A", "-f", "80", "-s", "wlc", "-p", "300")
    await ok(sock, "-a", "-f", "80", "-r", "198.19.0.11", "-m")
    await ok(sock, "-a", "-f", "80", "-r", "198.19.0.12", "-m", "-w", "2")
    await asyncio.to_thread(ApiClient(sock).patch, "/api/v1/services/fwm/80",
                            {"check": {"type": "none"}})
    vs = director.config.virtual_servers[0]
    assert (vs.fwmark, vs.persistence, vs.scheduler) == (80, 300, "wlc")
    assert [str(rs.address) for rs in vs.real_servers] == ["198.19.0.11:0", "198.19.0.12:0"]
    lines = (await ok(sock, "-Ln")).splitlines()
    assert lines[3:] == [
        "FWM  80 wlc persistent 300",
        "  -> 198.19.0.11:0                Masq    1      0          0         ",
        "  -> 198.19.0.12:0                Masq    2      0          0         ",
    ]
    saved = await ok(sock, "-Sn")
    assert saved == ("-A -f 80 -s wlc -p 300\n"
                     "-a -f 80 -r 198.19.0.11:0 -m -w 1\n"
                     "-a -f 80 -r 198.19.0.12:0 -m -w 2\n")
    assert "FWM  80 wlc persistent 300" in (await ok(sock, "-Ln", "-f", "80")).splitlines()
    await ok(sock, "-e", "-f", "80", "-r", "198.19.0.12", "-w", "5")
    await ok(sock, "-d", "-f", "80", "-r", "198.19.0.11")
    await ok(sock, "-Z", "-f", "80")
    await ok(sock, "-C")
    await ok(sock, "-R", stdin=saved)
    assert await ok(sock, "-Sn") == saved
    await ok(sock, "-D", "-f", "80")
    assert director.config.virtual_servers == ()


async def test_ipv6_fwmark_service_as_ipvsadm(daemon: Any) -> None:
    director, sock = daemon
    await ok(sock, "-A", "-f", "1", "-s", "rr")  # mark 1's IPv4 service beside its IPv6 one
    await ok(sock, "-A", "-f", "1", "-6", "-s", "rr", "-p", "300", "-M", "64")
    await ok(sock, "-a", "-f", "1", "-6", "-r", "[2001:2:1::11]:80", "-m")
    await ok(sock, "-a", "-f", "1", "-6", "-r", "[2001:2:1::12]:80", "-m", "-w", "2")
    status, _, err = await run_ctl(sock, "-a", "-f", "1", "-6", "-r", "198.19.0.11:80", "-m")
    assert status != 0 and "IPv6" in err, err  # a server of the other family
    keys = {vs.key for vs in director.config.virtual_servers}
    assert keys == {ServiceKey.for_fwmark(1), ServiceKey.for_fwmark(1, 6)}
    assert {s.key for s in director.engine.services()} == keys
    lines = (await ok(sock, "-Ln")).splitlines()
    assert lines[3:] == [
        "FWM  1 rr",
        "FWM  1 IPv6 rr persistent 300 mask 64",
        "  -> [2001:2:1::11]:80            Masq    1      0          0         ",
        "  -> [2001:2:1::12]:80            Masq    2      0          0         ",
    ]
    saved = await ok(sock, "-Sn")
    assert saved == ("-A -f 1 -s rr\n"
                     "-A -f 1 -6 -s rr -p 300 -M 64\n"
                     "-a -f 1 -6 -r [2001:2:1::11]:80 -m -w 1\n"
                     "-a -f 1 -6 -r [2001:2:1::12]:80 -m -w 2\n")
    single = (await ok(sock, "-Ln", "-f", "1", "-6")).splitlines()
    assert "FWM  1 IPv6 rr persistent 300 mask 64" in single and "FWM  1 rr" not in single
    await ok(sock, "-E", "-f", "1", "-6", "-s", "wlc", "-p", "300", "-M", "64")
    await ok(sock, "-e", "-f", "1", "-6", "-r", "[2001:2:1::12]:80", "-w", "5")
    await ok(sock, "-Z", "-f", "1", "-6")
    await ok(sock, "-C")
    await ok(sock, "-R", stdin=saved)
    assert await ok(sock, "-Sn") == saved
    await ok(sock, "-D", "-f", "1", "-6")
    assert [vs.key for vs in director.config.virtual_servers] == [ServiceKey.for_fwmark(1)]


async def test_port_list_service_saves_and_restores(daemon: Any) -> None:
    director, sock = daemon
    await ok(sock, "-A", "-t", f"{VIP}:0", "-s", "rr", "--ports", "80,443,10000-10100")
    await ok(sock, "-a", "-t", f"{VIP}:0", "-r", "198.19.0.11", "-m")
    assert director.config.virtual_servers[0].ports == ("80", "443", "10000-10100")
    saved = await ok(sock, "-Sn")
    assert saved == (f"-A -t {VIP}:0 -s rr --ports 80,443,10000-10100\n"
                     f"-a -t {VIP}:0 -r 198.19.0.11:0 -m -w 1\n")
    await ok(sock, "-C")
    await ok(sock, "-R", stdin=saved)
    assert await ok(sock, "-Sn") == saved


async def test_ftp_helper_flag_saves_and_restores(daemon: Any) -> None:
    director, sock = daemon
    await ok(sock, "-A", "-t", f"{VIP}:21", "-s", "rr", "--ftp")
    await ok(sock, "-a", "-t", f"{VIP}:21", "-r", "198.19.0.11", "-m")
    assert director.config.virtual_servers[0].ftp is True
    saved = await ok(sock, "-Sn")
    assert saved.startswith(f"-A -t {VIP}:21 -s rr --ftp\n"), saved
    await ok(sock, "-C")
    await ok(sock, "-R", stdin=saved)
    assert await ok(sock, "-Sn") == saved
    assert director.engine.services()[0].ftp
