"""Load monitors: read each real server's load and report it as a :class:`LoadReport`.

Three kinds, chosen by ``LoadMonitorConfig.type`` (``[virtual_server.load_monitor]``):

``agent``
    HAProxy's agent-check protocol: connect to ``port`` on the real server and read one line
    (the agent writes it and closes).  The line holds words separated by spaces, tabs or
    commas, case-insensitive; ``#`` starts a free-text description that is ignored:

    * ``75%`` — a weight relative to the configured weight;
    * ``12`` — an absolute weight;
    * ``ready`` / ``drain`` / ``maint`` — administrative state (drain = weight 0 while
      existing connections finish; maint = out of service; ready cancels both);
    * ``up`` / ``down`` (also ``fail``, ``failed``, ``stopped``) — operational state;
    * ``maxconn:N`` and unknown words are ignored.

``exec``
    Run ``command`` (``%h`` and ``%p`` replaced by the server's address and port) through the
    shell; its first output line uses the agent syntax above.

``loadavg``
    Piranha's load monitoring: run ``command`` (default ``ssh -o BatchMode=yes %h uptime``, as
    piranha's ``<rsh|ssh> <ip> uptime``) and take the first number after the ``load`` token
    (``load average: 0.52, 0.58, 0.59``), or the output itself when it is a bare number.  The
    1-minute load average becomes a weight by :func:`pylvs.weights.piranha_adjust`.

A failed read (refused, timed out, exit status != 0, unparsable) reports ``None``: the policy
keeps the previous adjustment, as piranha and HAProxy do.

API for the director::

    mon = LoadMonitor(config.load_monitor, [ep1, ep2], on_load)   # on_load(endpoint, report)
    task = asyncio.create_task(mon.run())    # polls every interval until cancelled
    mon.set_servers([ep1, ep3])              # follow config reloads while running
    task.cancel()

``on_load`` is called from the event loop with ``(Endpoint, LoadReport | None)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable, Iterable

from pylvs.model import Endpoint, LoadMonitorConfig
from pylvs.tasks import TaskSet, cancel_and_wait
from pylvs.weights import LoadReport

__all__ = [
    "DEFAULT_LOADAVG_COMMAND",
    "LoadCallback",
    "LoadMonitor",
    "parse_agent_line",
    "parse_loadavg",
    "read_agent",
    "read_command",
]

log = logging.getLogger(__name__)

LoadCallback = Callable[[Endpoint, "LoadReport | None"], None]
DEFAULT_LOADAVG_COMMAND = "ssh -o BatchMode=yes %h uptime"
MAX_LINE = 1024  # an agent line is short; bound what we buffer
_DOWN_WORDS = frozenset({"down", "fail", "failed", "stopped"})
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_agent_line(line: str) -> LoadReport | None:
    """One agent-check reply; ``None`` when it says nothing we understand."""
    text = line.split("#", 1)[0]
    weight = percent = None
    admin: str | None = None
    oper: str | None = None
    for word in re.split(r"[\s,]+", text.strip().lower()):
        if not word:
            continue
        if word.endswith("%") and word[:-1].isdigit():
            percent, weight = int(word[:-1]), None
        elif word.isdigit():
            weight, percent = int(word), None
        elif word in ("ready", "drain", "maint"):
            admin = word
        elif word == "up":
            oper = "up"
        elif word in _DOWN_WORDS:
            oper = "down"
    if weight is None and percent is None and admin is None and oper is None:
        return None
    return LoadReport(
        weight=weight,
        percent=percent,
        admin=admin,  # type: ignore[arg-type]
        oper=oper,  # type: ignore[arg-type]
    )


def parse_loadavg(text: str) -> float | None:
    """The 1-minute load average from ``uptime``/``rup``-style output, or a bare number."""
    low = text.lower()
    idx = low.find("load")
    tail = low[idx:] if idx >= 0 else low.strip()
    if idx < 0 and not _NUMBER.fullmatch(tail):
        return None
    m = _NUMBER.search(tail)
    return float(m.group()) if m else None


def _substitute(command: str, ep: Endpoint) -> str:
    return command.replace("%h", str(ep.address)).replace("%p", str(ep.port))


async def read_agent(host: str, port: int, timeout: float) -> LoadReport | None:
    """Connect to an agent, read its line (up to EOF or newline) within ``timeout``."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            data = b""
            while b"\n" not in data and len(data) < MAX_LINE:
                chunk = await reader.read(MAX_LINE - len(data))
                if not chunk:
                    break
                data += chunk
            return data
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        data = await asyncio.wait_for(exchange(), timeout)
    except (TimeoutError, OSError) as exc:
        log.debug("agent %s:%d: %r", host, port, exc)
        return None
    line = data.split(b"\n", 1)[0].decode("ascii", "replace")
    return parse_agent_line(line)


async def read_command(command: str, timeout: float, loadavg: bool) -> LoadReport | None:
    """Run a shell command; parse its output as a load average or an agent line."""
    proc = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so a timeout kills the children too
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        log.debug("command %r timed out", command)
        return None
    if proc.returncode != 0:
        log.debug("command %r exited %s", command, proc.returncode)
        return None
    text = out[: MAX_LINE * 4].decode("utf-8", "replace")
    if loadavg:
        value = parse_loadavg(text)
        return None if value is None else LoadReport(loadavg=value)
    lines = text.splitlines()
    return parse_agent_line(lines[0]) if lines else None


class LoadMonitor:
    """Polls every server of one virtual service and reports through ``on_load``."""

    def __init__(
        self, config: LoadMonitorConfig, servers: Iterable[Endpoint], on_load: LoadCallback
    ) -> None:
        self.config = config
        self.on_load = on_load
        self._servers: set[Endpoint] = set(servers)
        self._tasks: dict[Endpoint, asyncio.Task[None]] = {}
        self._retiring = TaskSet()  # polls of removed servers, until they have ended
        self._running = False

    async def read(self, ep: Endpoint) -> LoadReport | None:
        """One reading of one server (no callback)."""
        cfg = self.config
        if cfg.type == "agent":
            return await read_agent(str(ep.address), cfg.port or ep.port, cfg.timeout)
        if cfg.type in ("exec", "loadavg"):
            cmd = cfg.command or (DEFAULT_LOADAVG_COMMAND if cfg.type == "loadavg" else None)
            if cmd is None:
                return None
            return await read_command(_substitute(cmd, ep), cfg.timeout, cfg.type == "loadavg")
        return None

    async def _poll(self, ep: Endpoint) -> None:
        while True:
            try:
                report = await self.read(ep)
            except OSError as exc:  # e.g. the shell cannot be spawned
                log.warning("load monitor %s: %s", ep, exc)
                report = None
            try:
                self.on_load(ep, report)
            except Exception:  # a callback bug must not stop the monitoring of this server
                log.exception("load callback for %s failed", ep)
            await asyncio.sleep(self.config.interval)

    def set_servers(self, servers: Iterable[Endpoint]) -> None:
        """Replace the monitored set; new servers start polling now, gone ones stop."""
        self._servers = set(servers)
        if self._running:
            self._sync_tasks()

    def _sync_tasks(self) -> None:
        for ep in list(self._tasks):
            if ep not in self._servers:
                self._retiring.retire(self._tasks.pop(ep))
        for ep in self._servers:
            if ep not in self._tasks:
                self._tasks[ep] = asyncio.create_task(self._poll(ep), name=f"loadmon {ep}")

    async def run(self) -> None:
        """Poll until cancelled (does nothing but wait when the type is ``none``)."""
        if self.config.type == "none":
            await asyncio.Event().wait()
        self._running = True
        self._sync_tasks()
        try:
            await asyncio.Event().wait()
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            self._tasks.clear()
            await cancel_and_wait(tasks)
            await self._retiring.close()
