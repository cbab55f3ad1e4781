"""What the control API needs from a director: a small structural type.

The real :class:`pylvs.director.Director` satisfies it, and so does any object with these
attributes, which lets the API be tested against a real engine without root or a network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pylvs import model
from pylvs.engine_types import (
    ConnectionInfo,
    DefenseInfo,
    EngineStats,
    ServerKey,
    ServiceInfo,
    Timeouts,
)

__all__ = ["DirectorLike", "EngineLike"]


class EngineLike(Protocol):
    """The read and counter side of :class:`pylvs.engine.Engine` that the API uses."""

    def services(self) -> Sequence[ServiceInfo]:
        """Services with their servers, counters and rates."""
        ...

    def connections(self) -> Sequence[ConnectionInfo]:
        """The connection table."""
        ...

    def stats(self) -> EngineStats:
        """Engine-wide totals and drops by reason."""
        ...

    def zero_stats(self, service: model.ServiceKey | None = None) -> None:
        """Take the current counters as the new zero (ipvsadm ``-Z``)."""
        ...

    def timeouts(self) -> Timeouts:
        """The connection timeouts in force."""
        ...

    def set_timeouts(self, tcp: int = 0, tcpfin: int = 0, udp: int = 0) -> None:
        """Change timeouts; 0 keeps a value."""
        ...

    def defense(self) -> DefenseInfo:
        """The flood defence now: modes, what is engaged, entries removed."""
        ...

    def lock_stats(self) -> dict[str, Any]:
        """How long the engine lock stopped packets (JSON, see the engine)."""
        ...

    RATE_ROW: int
    """Integers per row of :meth:`rate_rows`."""

    def rate_rows(self) -> Sequence[int]:
        """Every service's and server's rates and weight, in one C call (see the engine)."""
        ...

    def rate_row_key(self, rows: Sequence[int], i: int, service: model.ServiceKey | None,
                     ) -> tuple[model.ServiceKey, ServerKey | None]:
        """Name one row of :meth:`rate_rows`."""
        ...


class DirectorLike(Protocol):
    """The composition root as the API sees it."""

    rate_listeners: list[Callable[[float], None]]
    """Called after each rate estimation (every 2 s) with the engine's clock."""

    @property
    def health_verdicts(self) -> Mapping[tuple[model.ServiceKey, model.Endpoint],
                                         tuple[bool, str]]:
        """The last health verdict (healthy, reason) of each checked server (kept by health)."""
        ...

    active: bool
    """Whether this node owns the VIPs (always, without HA)."""

    def status_section(self, name: str) -> Any:
        """One component's section of :meth:`status` (``"ha"`` …) without the rest; None."""
        ...

    @property
    def config(self) -> model.Config:
        """The configuration currently applied."""
        ...

    @property
    def engine(self) -> EngineLike:
        """The packet engine."""
        ...

    async def edit_config(
        self, edit: Callable[[model.Config], model.Config]
    ) -> model.Config:
        """Apply ``edit(current config)`` as one step (validated whole; ConfigError changes
        nothing) and return the config applied."""
        ...

    def status(self) -> Mapping[str, Any]:
        """A JSON-able snapshot: health verdicts, HA role and peer, dataplane counters."""
        ...
