"""BIRD's control socket: the line protocol ``birdc`` speaks, and its answers parsed.

BIRD greets with ``0001 BIRD x.y ready.``; each command is one line; each answer line starts
with a four-digit code followed by ``-`` (more follows) or a space (the last line), and a line
starting with a space continues the previous code.  Codes 8xxx and 9xxx are errors.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from pylvs.errors import PylvsError

__all__ = ["BfdSession", "BirdControl", "BirdError", "ProtocolState", "parse_bfd_sessions",
           "parse_protocols"]

_CODE = re.compile(rb"^(\d{4})([ -])(.*)$", re.S)
_ADDRESS = re.compile(r"^(\d+\.\d+\.\d+\.\d+|[0-9a-fA-F]*:[0-9a-fA-F:.]*)$")


class BirdError(PylvsError):
    """BIRD refused a command, or its control socket did not answer."""


@dataclass(frozen=True, slots=True)
class ProtocolState:
    """One line of ``show protocols all``, with the details pylvs reports."""

    name: str
    proto: str  # "BGP", "Static", "BFD" ...
    state: str  # "up", "down", "start" ...
    since: str
    info: str  # BGP: "Established", "Active  Socket: Connection refused" ...
    bgp_state: str | None = None
    last_error: str | None = None
    neighbor: str | None = None
    neighbor_as: int | None = None


@dataclass(frozen=True, slots=True)
class BfdSession:
    """One line of ``show bfd sessions``."""

    address: str
    interface: str
    state: str  # "Up", "Down", "Init", "AdminDown"
    since: str
    interval: float
    timeout: float


class BirdControl:
    """Commands over BIRD's control socket at ``path`` (one connection per command)."""

    def __init__(self, path: str, timeout: float = 3.0) -> None:
        self.path = path
        self.timeout = timeout

    async def command(self, line: str) -> list[tuple[int, str]]:
        """Run one command; return its (code, text) lines; raise BirdError on 8xxx/9xxx."""
        if "\n" in line:
            raise ValueError("one command per line")
        try:
            return await asyncio.wait_for(self._exchange(line), self.timeout)
        except (TimeoutError, OSError) as exc:
            raise BirdError(f"BIRD control socket {self.path}: {exc or 'timed out'}") from None

    async def _exchange(self, line: str) -> list[tuple[int, str]]:
        reader, writer = await asyncio.open_unix_connection(self.path)
        try:
            await _read_reply(reader)  # the greeting
            writer.write(line.encode() + b"\n")
            await writer.drain()
            reply = await _read_reply(reader)
        finally:
            writer.close()
        code, text = reply[-1]
        if code >= 8000:
            raise BirdError(f"BIRD: {line!r}: {text.strip()}")
        return reply

    async def text(self, line: str) -> list[str]:
        """Run one command and return only its text lines."""
        return [text for _, text in await self.command(line)]


async def _read_reply(reader: asyncio.StreamReader) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    code = 0
    while True:
        raw = await reader.readline()
        if not raw:
            raise ConnectionResetError("BIRD closed the control socket")
        raw = raw.rstrip(b"\n")
        m = _CODE.match(raw)
        if m is None:  # continuation: a leading space, same code as the previous line
            lines.append((code, raw[1:].decode(errors="replace")))
            continue
        code = int(m.group(1))
        lines.append((code, m.group(3).decode(errors="replace")))
        if m.group(2) == b" ":
            return lines


def parse_protocols(lines: list[str]) -> list[ProtocolState]:
    """Parse the text of ``show protocols all`` (header line skipped, details picked)."""
    out: list[ProtocolState] = []
    fields: dict[str, str] = {}
    head: list[str] | None = None

    def flush() -> None:
        if head is None:
            return
        nas = fields.get("Neighbor AS")
        out.append(ProtocolState(
            name=head[0], proto=head[1], state=head[3], since=head[4],
            info=head[5] if len(head) > 5 else "", bgp_state=fields.get("BGP state"),
            last_error=fields.get("Last error"), neighbor=fields.get("Neighbor address"),
            neighbor_as=int(nas) if nas and nas.isdigit() else None))

    for line in lines:
        if not line.strip() or line.startswith("Name "):
            continue
        if not line.startswith(" "):
            flush()
            parts = line.split(None, 5)
            head = parts + [""] * (5 - len(parts)) if len(parts) < 5 else parts
            fields = {}
            continue
        key, sep, value = line.strip().partition(":")
        if sep and key not in fields:
            fields[key] = value.strip()
    flush()
    return out


def parse_bfd_sessions(lines: list[str]) -> list[BfdSession]:
    """Parse the text of ``show bfd sessions``."""
    out: list[BfdSession] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or not _ADDRESS.match(parts[0]):
            continue
        try:
            interval, timeout = float(parts[-2]), float(parts[-1])
        except ValueError:
            continue
        out.append(BfdSession(address=parts[0], interface=parts[1], state=parts[2],
                              since=" ".join(parts[3:-2]), interval=interval, timeout=timeout))
    return out
