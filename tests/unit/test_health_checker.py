"""The health checker child process (issue 13): events, diffs, restart after a crash, death
with the director.  Real TCP servers on 127.0.0.1, a real child process."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from pylvs.health import ServerEvent
from pylvs.health.remote import CheckerProcess
from pylvs.model import CheckConfig, Endpoint, RealServerConfig
from tests.support.tcp_backend import LOCAL, Backend
from tests.unit.test_health_manager import Recorder, config, vs


async def test_verdicts_come_back_and_a_killed_checker_resumes_without_a_flap() -> None:
    a, b = await Backend().start(), await Backend().start()
    await b.stop()  # refused
    rec = Recorder()
    checker = CheckerProcess(config(vs(80, [a, b])), rec, jitter=0.0, restart_delay=0.05)
    await checker.start()
    try:
        # start() returns with the initial verdicts applied: both down, never probed yet
        assert [e.healthy for e in rec.server(a.endpoint)] == [False]
        await rec.wait(lambda: any(e.healthy for e in rec.server(a.endpoint)))
        snap = checker.snapshot()
        (svc,) = snap["services"]
        assert svc["servers"][str(a.endpoint)]["healthy"] is True
        assert svc["servers"][str(b.endpoint)]["reason"] == "initial"
        pid = checker.pid
        assert pid is not None and pid != os.getpid()

        seen = len(rec.events)
        os.kill(pid, signal.SIGKILL)
        await rec.wait(lambda: checker.restarts == 1 and checker.pid not in (None, pid))
        await asyncio.sleep(0.5)  # a few probes of the new child
        # the new child took over the verdicts: nothing is published again, a is still up
        assert rec.events[seen:] == []
        assert checker.snapshot()["checker"]["restarts"] == 1

        # a diff: one server added, b gone
        c = await Backend().start()
        new = vs(80, [a, c])
        await checker.apply_config(config(new))
        await rec.wait(lambda: any(e.healthy for e in rec.server(c.endpoint)))
        await rec.wait(lambda: [s["servers"].keys() for s in checker.snapshot()["services"]]
                       == [{str(a.endpoint), str(c.endpoint)}])
        # a changed check reaches the child too: port 9 (discard, nobody listens) is refused
        moved = dataclasses.replace(new, check=CheckConfig(type="tcp", port=9, interval=0.1,
                                                           timeout=0.2, rise=1, fall=1))
        await checker.apply_config(config(moved))
        await rec.wait(lambda: not rec.server(a.endpoint)[-1].healthy)
        await c.stop()
    finally:
        await checker.stop()
        await a.stop()
    assert checker.pid is None


async def test_a_server_added_at_run_time_is_probed_at_once() -> None:
    a = await Backend().start()
    rec = Recorder()
    check = CheckConfig(type="tcp", interval=30.0, timeout=0.5)
    service = vs(80, [a], check=check)
    checker = CheckerProcess(config(service), rec, jitter=1.0)
    await checker.start()
    try:
        b = await Backend().start()
        grown = dataclasses.replace(service, real_servers=(
            *service.real_servers, RealServerConfig(address=b.endpoint)))
        t0 = time.monotonic()
        await checker.apply_config(config(grown))
        await rec.wait(lambda: any(e.healthy for e in rec.server(b.endpoint)), 3.0)
        assert time.monotonic() - t0 < 3.0
        await b.stop()
    finally:
        await checker.stop()
        await a.stop()


def test_the_checker_exits_when_the_director_goes_away() -> None:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "pylvs.health.checker", "--fd",
                             str(theirs.fileno()), "--parent", str(os.getpid())],
                            pass_fds=(theirs.fileno(),))
    theirs.close()
    try:
        time.sleep(0.3)
        assert proc.poll() is None
        ours.close()  # what the kernel does when the director dies
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_events_pickle_across_the_socket() -> None:
    from pylvs.health.wire import frame

    ev = ServerEvent(config(vs(80, [])).virtual_servers[0].key, Endpoint(LOCAL, 1), True,
                     True, None, "ok")
    assert len(frame(("batch", [ev], None))) > 4


async def test_stop_is_prompt_with_a_thousand_probes_running() -> None:
    servers = tuple(RealServerConfig(address=Endpoint(IPv4Address(f"127.0.{1 + i // 250}."
                                                                  f"{1 + i % 250}"), 9))
                    for i in range(1000))
    service = dataclasses.replace(vs(80, []), real_servers=servers,
                                  check=CheckConfig(type="tcp", interval=2.0, timeout=1.0))
    rec = Recorder()
    checker = CheckerProcess(config(service), rec, jitter=1.0)
    await checker.start()
    assert len(rec.server(servers[0].address)) == 1  # the initial verdict of each server
    await asyncio.sleep(1.0)  # half of them probed (refused: nothing listens on port 9)
    t0 = time.monotonic()
    await checker.stop()
    assert time.monotonic() - t0 < 1.5


_DIRECTOR = """
import asyncio, sys
from pylvs.health.remote import CheckerProcess
from tests.unit.test_health_checker import config, vs

async def main() -> None:
    checker = CheckerProcess(config(vs(80, [])), None)
    await checker.start()
    print(checker.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_the_checker_dies_with_a_killed_director() -> None:
    director = subprocess.Popen([sys.executable, "-c", _DIRECTOR], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    sys.path)})
    try:
        assert director.stdout is not None
        pid = int(director.stdout.readline())
        os.kill(pid, 0)  # the checker runs
        director.kill()  # SIGKILL: no clean stop, only the kernel's PR_SET_PDEATHSIG and EOF
        director.wait()
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                    if fh.read().split(") ")[1].startswith("Z"):
                        break  # dead, waiting for init to reap it
            except FileNotFoundError:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the checker outlived its director by 2 s")
    finally:
        if director.poll() is None:
            director.kill()
            director.wait()


async def test_sigterm_makes_the_checker_quit_and_kill_its_programs(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}.tmp\nmv {pidfile}.tmp {pidfile}\n"
                      "exec sleep 30\n")
    script.chmod(0o755)
    a = await Backend().start()
    check = CheckConfig(type="exec", command=str(script), interval=0.2, timeout=20.0)
    checker = CheckerProcess(config(vs(80, [a], check=check)), Recorder(), jitter=0.0)
    await checker.start()
    try:
        for _ in range(300):
            if pidfile.exists():
                break
            await asyncio.sleep(0.01)
        program = int(pidfile.read_text())
        os.kill(program, 0)  # the check program runs (as "sleep 30")
        pid = checker.pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            if not _alive(program):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the check program outlived its checker")
    finally:
        await checker.stop()
        await a.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return not fh.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


async def test_unchecked_servers_first_up_verdict_is_not_sent_but_a_pool_without_quorum_is(
        ) -> None:
    from pylvs.model import VirtualServerConfig

    def unchecked(port: int, quorum: int) -> VirtualServerConfig:
        return VirtualServerConfig(
            address=Endpoint(IPv4Address("127.0.0.1"), port), scheduler="rr", quorum=quorum,
            check=CheckConfig(type="none"), sorry_server=Endpoint(IPv4Address("127.0.0.9"), port),
            real_servers=tuple(RealServerConfig(address=Endpoint(IPv4Address(f"127.0.0.{i}"),
                                                                 port)) for i in (2, 3)))

    rec = Recorder()
    plain, starved = unchecked(81, 1), unchecked(82, 100)
    checker = CheckerProcess(config(plain, starved), rec, jitter=0.0)
    await checker.start()
    try:
        # what the director assumes of a server without a check is not said 10,000 times
        assert [e for _, e in rec.events if e.service == plain.key] == []
        # a pool the quorum takes out (the sorry server stands in) is news
        out = [e for _, e in rec.events if isinstance(e, ServerEvent) and e.service == starved.key]
        assert len(out) == 2 and not any(e.in_pool for e in out)
        # given a check, they are published (up, as they were, until the check says otherwise)
        checked = dataclasses.replace(plain, check=CheckConfig(type="tcp", interval=30.0))
        await checker.apply_config(config(checked, starved))
        await rec.wait(lambda: len([e for _, e in rec.events if e.service == plain.key]) == 2)
        assert all(isinstance(e, ServerEvent) and e.healthy and e.in_pool
                   for _, e in rec.events if e.service == plain.key)
    finally:
        await checker.stop()
