"""``exec`` probe: run an external program (piranha ``send_program``, keepalived ``MISC_CHECK``).

``%h`` and ``%p`` in the command are replaced by the server's address and port.  The exit
status decides, not the output (piranha compared output and took a crash for success; that quirk
is not copied):

* 0: healthy at the configured weight;
* 2..255 with ``dynamic_weight``: healthy at weight ``status - 2`` (keepalived ``misc_dynamic``);
* any other status, death by a signal, or running past the timeout: failed.

The program runs in its own session so a timeout kills it *and* whatever it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal

from pylvs.health.result import ProbeResult, Reason, show_bytes
from pylvs.health.spec import ProbeSpec

__all__ = ["command_argv", "probe_exec"]

_OUTPUT_LIMIT = 4096


def command_argv(spec: ProbeSpec) -> list[str]:
    """Split the command like a shell would and substitute ``%h``/``%p`` in every word."""
    assert spec.command is not None
    words = shlex.split(spec.command)
    host, port = str(spec.address), str(spec.port)
    return [w.replace("%h", host).replace("%p", port) for w in words]


# The process groups of the check programs running now, so that a checker told to quit at
# once (SIGTERM, see pylvs.health.checker) leaves none behind.
_RUNNING: set[int] = set()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def kill_running() -> None:
    """SIGKILL every check program still running (and whatever it started)."""
    for pgid in list(_RUNNING):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


async def probe_exec(spec: ProbeSpec) -> ProbeResult:
    """Run the check program; the caller's deadline cancels it, and then it is killed."""
    try:
        argv = command_argv(spec)
    except ValueError as exc:  # unbalanced quotes
        return ProbeResult.failure(Reason.ERROR, f"bad command: {exc}")
    if not argv:
        return ProbeResult.failure(Reason.ERROR, "empty command")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeResult.failure(Reason.ERROR, f"{argv[0]}: {exc.strerror or exc}")
    _RUNNING.add(proc.pid)
    try:
        assert proc.stdout is not None
        output = b""
        # Drain to EOF so a chatty program never blocks on a full pipe; keep only the start.
        while chunk := await proc.stdout.read(65536):
            output = (output + chunk)[:_OUTPUT_LIMIT]
        status = await proc.wait()
    finally:
        if proc.returncode is None:
            # Cancelled by the deadline (or shutdown): no orphan may keep running.
            _kill_group(proc)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
        _RUNNING.discard(proc.pid)
    text = show_bytes(output.strip())
    if status == 0:
        return ProbeResult.success(text)
    if status < 0:
        return ProbeResult.failure(Reason.CRASHED, f"killed by signal {-status} {text}".strip())
    if spec.dynamic_weight and 2 <= status <= 255:
        return ProbeResult.success(text, weight=status - 2)
    return ProbeResult.failure(Reason.EXIT_STATUS, f"exit {status} {text}".strip())
