"""The outcome of one probe: success or failure, why, and what came back.

A result is plain data so the sans-IO state code (``state.py``) and the status API can use it
without knowing which probe produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ProbeResult", "Reason", "clip", "show_bytes"]

# What came back is shown to operators in logs and the API; a reply can be a whole web page,
# so only its start is kept.
_DETAIL_LIMIT = 200


class Reason(StrEnum):
    """Why a probe ended the way it did (``ok`` for a success)."""

    OK = "ok"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    RESET = "reset"
    WRONG_REPLY = "wrong reply"
    BAD_STATUS = "bad status"
    TLS = "tls error"
    EXIT_STATUS = "exit status"
    CRASHED = "crashed"
    ERROR = "error"
    INITIAL = "initial"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict.

    ``weight`` is set only by an exec probe with ``dynamic_weight`` that exited 2..255
    (keepalived's ``misc_dynamic``): the server is healthy with that weight.
    """

    ok: bool
    reason: Reason
    detail: str = ""
    weight: int | None = None
    duration: float = 0.0

    @classmethod
    def success(cls, detail: str = "", *, weight: int | None = None) -> ProbeResult:
        """A passing result."""
        return cls(True, Reason.OK, clip(detail), weight)

    @classmethod
    def failure(cls, reason: Reason, detail: str = "") -> ProbeResult:
        """A failing result with its reason."""
        return cls(False, reason, clip(detail))

    def describe(self) -> str:
        """One human line: ``timeout``, ``wrong reply: 'HTTP/1.0 500'`` …"""
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value

    def as_dict(self) -> dict[str, object]:
        """JSON-able form for the status API."""
        return {
            "ok": self.ok,
            "reason": self.reason.value,
            "detail": self.detail,
            "weight": self.weight,
            "duration": round(self.duration, 6),
        }


def clip(text: str) -> str:
    """Shorten ``text`` for logs and status output."""
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


def show_bytes(data: bytes) -> str:
    """Render a reply for a human: printable ASCII as is, the rest escaped, clipped."""
    return clip(repr(data[: _DETAIL_LIMIT])[2:-1])
