"""exec probe: real programs that succeed, fail, hang, crash, and set a dynamic weight."""

from __future__ import annotations

import os
import signal
import stat
import time
from ipaddress import IPv4Address
from pathlib import Path

import uvloop

from pylvs.health import ProbeSpec, Reason, run_probe
from pylvs.health.program import command_argv

LOOP = IPv4Address("127.0.0.1")


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for init to reap it."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


def spec(command: str, **kw: object) -> ProbeSpec:
    args: dict[str, object] = {"type": "exec", "interval": 1.0, "timeout": 2.0}
    args.update(kw)
    return ProbeSpec(address=LOOP, port=8080, command=command, **args)  # type: ignore[arg-type]


async def test_success_failure_and_substitution(tmp_path: Path) -> None:
    args_file = tmp_path / "args"
    ok = script(tmp_path, "ok.sh", f'echo "$@" > {args_file}; echo fine')
    res = await run_probe(spec(f"{ok} --host %h --port=%p %h:%p"))
    assert res.ok and res.detail == "fine"
    assert args_file.read_text().split() == [
        "--host", "127.0.0.1", "--port=8080", "127.0.0.1:8080"
    ]
    fail = script(tmp_path, "fail.sh", "echo 'db unreachable'; exit 1")
    res = await run_probe(spec(fail))
    assert res.reason is Reason.EXIT_STATUS and res.detail == "exit 1 db unreachable"


async def test_hanging_program_times_out_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # The child the script starts must die too, hence a process group kill.
    hang = script(tmp_path, "hang.sh", f"sleep 30 & echo $! > {pid_file}; wait")
    started = time.monotonic()
    res = await run_probe(spec(hang, timeout=0.5))
    assert res.reason is Reason.TIMEOUT
    assert time.monotonic() - started < 2.0
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    if _alive(child):
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the hung check program's child survived the timeout")


async def test_exit_5_sets_dynamic_weight_only_when_asked(tmp_path: Path) -> None:
    five = script(tmp_path, "five.sh", "exit 5")
    dyn = await run_probe(spec(five, dynamic_weight=True))
    assert dyn.ok and dyn.weight == 3
    plain = await run_probe(spec(five))
    assert plain.reason is Reason.EXIT_STATUS and plain.weight is None
    ok = script(tmp_path, "ok.sh", "exit 0")
    zero = await run_probe(spec(ok, dynamic_weight=True))
    assert zero.ok and zero.weight is None  # 0 = healthy at the configured weight
    one = script(tmp_path, "one.sh", "exit 1")
    assert not (await run_probe(spec(one, dynamic_weight=True))).ok


async def test_crash_and_missing_program_are_failures(tmp_path: Path) -> None:
    crash = script(tmp_path, "crash.sh", "kill -SEGV $$")
    res = await run_probe(spec(crash))
    assert res.reason is Reason.CRASHED and "signal 11" in res.detail
    res = await run_probe(spec(str(tmp_path / "does-not-exist")))
    assert res.reason is Reason.ERROR
    res = await run_probe(spec("'unbalanced"))
    assert res.reason is Reason.ERROR and "bad command" in res.detail


def test_command_argv_quotes() -> None:
    s = spec("check --url 'http://%h:%p/a b' %h")
    assert command_argv(s) == ["check", "--url", "http://127.0.0.1:8080/a b", "127.0.0.1"]


def test_exec_under_uvloop(tmp_path: Path) -> None:
    five = script(tmp_path, "five.sh", "echo weight; exit 5")
    hang = script(tmp_path, "hang.sh", "exec sleep 30")

    async def main() -> tuple[int | None, Reason]:
        a = await run_probe(spec(five, dynamic_weight=True))
        b = await run_probe(spec(hang, timeout=0.3))
        return a.weight, b.reason

    assert uvloop.run(main()) == (3, Reason.TIMEOUT)
