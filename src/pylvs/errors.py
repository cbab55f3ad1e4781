"""Exception hierarchy: every error says whose fault it is.

``PylvsError`` is the root and is never raised directly.
"""

from __future__ import annotations

__all__ = ["ConfigError", "CoreError", "NetConfigError", "PeerProtocolError", "PylvsError"]


class PylvsError(Exception):
    """Root of every pylvs error; never raised directly."""


class ConfigError(PylvsError, ValueError):
    """The operator or an API caller asked for something invalid (maps to HTTP 4xx)."""


class PeerProtocolError(PylvsError):
    """A peer (heartbeat partner, packet source) sent something malformed; count and drop."""


class CoreError(PylvsError):
    """The C core failed in a way that is not the caller's fault (e.g. out of memory)."""


class NetConfigError(PylvsError):
    """Applying network configuration (netlink, sysctl) failed."""
