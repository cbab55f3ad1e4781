"""The director's side of the health checker process (:mod:`pylvs.health.checker`).

:class:`CheckerProcess` offers what :class:`~pylvs.health.manager.HealthManager` offers
(``start``, ``apply_config``, ``snapshot``, ``stop``) but the probes run in a child process with
its own event loop, so 10,000 probes every 2 s cost the director's loop nothing while no
verdict changes.  What crosses the socket, and why it is cheap:

* ``apply_config`` sends only the services that differ from what the child has (compared in
  slices, sent in chunks), so a reload of 1,000 services never holds the loop for long and an
  API change of one server sends one service;
* verdict changes arrive as the same :data:`~pylvs.health.state.HealthEvent` objects, in order,
  and go to ``on_event`` as the in-process manager would deliver them; the child's log records
  are logged here under their own logger names;
* the status snapshot arrives pickled once a second and is only decoded when asked for.

A checker that dies is logged and started again (after ``restart_delay``, doubling up to 30 s
while it keeps dying) with the verdicts the director holds, so the pool does not fall back to
``initial_state`` because of a crash.  The child dies with the director (see the checker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import sys
from pathlib import Path
from typing import Any

from pylvs.health.manager import EventCallback
from pylvs.health.state import HealthEvent, ServerEvent, SorryEvent
from pylvs.health.wire import LogLine, frame, read_frame
from pylvs.looplag import Slices
from pylvs.model import Config, Endpoint, ServiceKey, VirtualServerConfig
from pylvs.tasks import cancel_and_wait

__all__ = ["CheckerProcess"]

log = logging.getLogger("pylvs.health")

# Services per "put" frame: pickling 50 services of 10 servers takes ~2 ms.
_CHUNK = 50
# How long start waits for the child's initial verdicts before going on without them.
_ANSWER_TIMEOUT = 30.0
# How long stop waits for the child to exit after a SIGTERM, before SIGKILL.
_EXIT_TIMEOUT = 1.0
_MAX_RESTART_DELAY = 30.0


class CheckerProcess:
    """Run the health checks of ``config`` in a child process; events go to ``on_event``."""

    def __init__(self, config: Config, on_event: EventCallback | None = None, *,
                 jitter: float = 1.0, ca_file: str | None = None,
                 restart_delay: float = 1.0) -> None:
        self.on_event = on_event
        self._config = config
        self._jitter = float(jitter)
        self._ca_file = ca_file
        self._restart_delay = restart_delay
        self._running = False
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sent: dict[ServiceKey, VirtualServerConfig] = {}
        self._answers: dict[int, asyncio.Future[None]] = {}
        self._seq = 0
        self._status: bytes | None = None
        self._decoded: dict[str, Any] | None = None
        # The last verdict published per server and the sorry servers standing in: handed to
        # a restarted child so it resumes from them.
        self._servers: dict[ServiceKey, dict[Endpoint, ServerEvent]] = {}
        self._sorry: dict[tuple[ServiceKey, Endpoint], SorryEvent] = {}
        self.restarts = 0
        # The niceness the checker runs at: the director's before HA favours its loop thread
        # (a checker restarted later would inherit that).
        self._nice = os.getpriority(os.PRIO_PROCESS, 0)

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._running

    @property
    def pid(self) -> int | None:
        """The checker process's pid while it runs."""
        return None if self._proc is None else self._proc.pid

    async def start(self) -> None:
        """Start the child; return once it published every server's initial state."""
        if self._running:
            return
        self._running = True
        await self._spawn()

    async def stop(self) -> None:
        """Stop the child: the end of the socket and a SIGTERM tell it to stop probing
        (running exec programs are killed) and exit at once, so a SIGTERM of the director is
        handled within a second even with 10,000 probes running (SIGKILL if it hangs)."""
        if not self._running:
            return
        self._running = False
        reader, self._reader = self._reader, None
        if self._writer is not None:
            self._writer.close()
        proc, self._proc = self._proc, None
        if proc is not None:
            # Not waiting for it to notice the end of the socket first: busy with thousands
            # of probes it took 0.2 s and more; SIGTERM makes it quit at once and kill its
            # check programs.
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), _EXIT_TIMEOUT)
            except TimeoutError:
                log.warning("health checker pid %d did not exit; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        if reader is not None:
            await cancel_and_wait([reader])

    async def apply_config(self, config: Config) -> None:
        """Follow a new configuration: send the child the services that changed."""
        self._config = config
        wanted = {vs.key: vs for vs in config.virtual_servers}
        slices = Slices()
        changed: list[VirtualServerConfig] = []
        for vs in config.virtual_servers:
            old = self._sent.get(vs.key)
            if old is not vs and old != vs:
                changed.append(vs)
                self._forget(vs.key, {rs.address for rs in vs.real_servers}, vs.sorry_server)
            await slices.tick()
        dropped = [key for key in self._sent if key not in wanted]
        for key in dropped:
            self._forget(key, set(), None)
        if self._writer is None:
            self._sent = wanted
            return  # not started (or restarting): the next start sends the whole config
        reordered = list(wanted) != [k for k in self._sent if k in wanted] + [
            vs.key for vs in changed if vs.key not in self._sent]
        for i in range(0, len(changed), _CHUNK):
            self._write(("put", changed[i:i + _CHUNK]))
            await slices.tick()
        if dropped:
            self._write(("drop", dropped))
        self._write(("commit", list(wanted) if reordered else None))
        self._sent = wanted

    def _forget(self, key: ServiceKey, keep: set[Endpoint], sorry: Endpoint | None) -> None:
        # Verdicts of servers no longer configured must not resume in a restarted child.
        servers = self._servers.get(key, {})
        for endpoint in [ep for ep in servers if ep not in keep]:
            del servers[endpoint]
        for slot in [s for s in self._sorry if s[0] == key and s[1] != sorry]:
            del self._sorry[slot]

    def snapshot(self) -> dict[str, Any]:
        """The child's last snapshot (at most a second old), decoded on first use."""
        if self._status is None:
            return {"running": self._running, "services": [], "probes": []}
        if self._decoded is None:
            self._decoded = pickle.loads(self._status)
        snap = dict(self._decoded)
        snap["running"] = self._running
        snap["checker"] = {"pid": self.pid, "restarts": self.restarts}
        return snap

    # -- the child -------------------------------------------------------------------------

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pylvs.health.checker", "--fd", str(theirs.fileno()),
                "--parent", str(os.getpid()),
                "--log-level", str(logging.getLogger("pylvs.health").getEffectiveLevel()),
                "--nice", str(self._nice),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": _import_path()})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours)
        self._reader = asyncio.create_task(self._read(reader, self._proc),
                                           name="health checker")
        known: list[HealthEvent] = [ev for servers in self._servers.values()
                                    for ev in servers.values()]
        known += self._sorry.values()
        self._sent = {vs.key: vs for vs in self._config.virtual_servers}
        self._write(("configure", self._config, self._jitter, self._ca_file, known))
        await self._ask("start")

    def _write(self, message: tuple[object, ...]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(frame(message))

    async def _ask(self, tag: str) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        self._seq += 1
        answer = asyncio.get_running_loop().create_future()
        self._answers[self._seq] = answer
        self._write((tag, self._seq))
        try:
            async with asyncio.timeout(_ANSWER_TIMEOUT):
                await answer  # directly (not wait_for): it resumes one step after the answer
        except TimeoutError:
            log.warning("health checker did not answer %r within %.0f s", tag, _ANSWER_TIMEOUT)
        finally:
            self._answers.pop(self._seq, None)

    async def _read(self, reader: asyncio.StreamReader,
                    proc: asyncio.subprocess.Process) -> None:
        delay = self._restart_delay
        slices = Slices()
        while True:
            try:
                while (message := await read_frame(reader)) is not None:
                    if await self._dispatch(message, slices):
                        # Let whoever waited for this answer run before the next frame, as
                        # when the checks ran in this process: start() returns with exactly
                        # the initial verdicts applied.
                        await asyncio.sleep(0)
            except ValueError as exc:
                log.error("health checker: %s", exc)
            for answer in self._answers.values():
                if not answer.done():
                    answer.set_result(None)  # the child is gone: nothing to wait for
            if not self._running:
                return
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            try:
                code = await asyncio.wait_for(proc.wait(), 2.0)
            except TimeoutError:
                proc.kill()
                code = await proc.wait()
            log.error("health checker pid %d exited (%s); restarting it in %.1f s, the "
                      "servers keep their verdicts", proc.pid, _exit_text(code), delay)
            await asyncio.sleep(delay)
            if not self._running:
                return
            self.restarts += 1
            delay = min(delay * 2, _MAX_RESTART_DELAY)
            self._reader = None
            await self._spawn()
            return  # _spawn started a new reader for the new child

    async def _dispatch(self, message: tuple[Any, ...], slices: Slices) -> bool:
        """Handle one message; True if it answered a waiting request."""
        tag = message[0]
        if tag == "batch":
            # A reload or a start brings thousands of verdicts at once: applied in slices.
            for item in message[1]:
                if isinstance(item, LogLine):
                    logging.getLogger(item.name).log(item.level, "%s", item.message)
                else:
                    self._deliver(item)
                await slices.tick()
            if isinstance(message[2], bytes):
                self._status, self._decoded = message[2], None
        elif tag == "status":
            status = message[1]
            assert isinstance(status, bytes)
            self._status, self._decoded = status, None
        elif tag == "done":
            answer = self._answers.get(message[1])
            if answer is not None and not answer.done():
                answer.set_result(None)
                return True
        return False

    def _deliver(self, event: HealthEvent) -> None:
        if isinstance(event, ServerEvent):
            self._servers.setdefault(event.service, {})[event.endpoint] = event
        elif event.active:
            self._sorry[(event.service, event.endpoint)] = event
        else:
            self._sorry.pop((event.service, event.endpoint), None)
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            # A failing consumer must not stop health checking for everyone else.
            log.exception("health event handler failed for %s", event)


def _exit_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def _import_path() -> str:
    # The child must import this same pylvs (a source tree on PYTHONPATH included).
    here = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return here if not rest else f"{here}{os.pathsep}{rest}"
