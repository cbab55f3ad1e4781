"""pylvs: a Linux Virtual Server (LVS-NAT) director in user space.

The supported public names are listed in ``__all__``; everything else is internal.
"""

from __future__ import annotations

from pylvs.engine import (
    ConnectionInfo,
    Engine,
    EngineStats,
    Rates,
    ServerInfo,
    ServerKey,
    ServiceInfo,
    ServiceKey,
    Stats,
    Timeouts,
    Verdict,
    scheduler_names,
)
from pylvs.errors import ConfigError, PylvsError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConnectionInfo",
    "Engine",
    "EngineStats",
    "PylvsError",
    "Rates",
    "ServerInfo",
    "ServerKey",
    "ServiceInfo",
    "ServiceKey",
    "Stats",
    "Timeouts",
    "Verdict",
    "__version__",
    "scheduler_names",
]
