"""The frames between the director and its health checker process (sans-IO plus two helpers).

A frame is a 4-byte big-endian length and a pickled tuple whose first item names the message.
Pickle is safe here: both ends are the same pylvs, joined by a private ``socketpair`` that no
other process can reach, and it carries the model's frozen dataclasses without a codec of its
own.  The messages (see :mod:`pylvs.health.checker` for what the child does with each):

director -> checker
    ``("configure", config, jitter, ca_file, known)`` first, and again after a restart;
    ``known`` lists the verdicts the director holds, so a restarted checker resumes from them;
    ``("put", [VirtualServerConfig, ...])`` and ``("drop", [ServiceKey, ...])`` collect a
    change, ``("commit", order)`` applies it (``order``: the services' keys, or None if kept);
    ``("start", seq)``, answered by ``("done", seq)`` once the initial verdicts are sent;
    the end of the stream (a clean stop, or the director's death) stops the checker.

checker -> director
    ``("batch", [HealthEvent | LogLine, ...], status)``: verdict changes and log records, in
    order, with the snapshot that follows them when it is cheap (else None);
    ``("status", bytes)``: the pickled :meth:`HealthManager.snapshot`, every second or so;
    ``("done", seq)``.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any, NamedTuple

__all__ = ["LogLine", "frame", "read_frame"]

_HEADER = struct.Struct("!I")
# A frame larger than this is a bug, not a configuration (a 10,000-server snapshot is ~3 MB).
MAX_FRAME = 256 << 20


class LogLine(NamedTuple):
    """A log record of the checker, re-logged by the director under the same logger name."""

    name: str
    level: int
    message: str


def frame(message: tuple[object, ...]) -> bytes:
    """One message as a frame."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at end of stream (the other side is gone)."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if size > MAX_FRAME:
            raise ValueError(f"health checker frame of {size} bytes")
        message = pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
        raise ValueError(f"health checker frame is not a message: {type(message).__name__}")
    return message
