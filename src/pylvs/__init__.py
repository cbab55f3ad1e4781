"""pylvs: a Linux Virtual Server (LVS-NAT) director in user space.

The supported public names are listed in ``__all__``; everything else is internal.  The engine
names load the compiled C core on first use (module ``__getattr__``), so ``import pylvs`` and
the command-line front ends that never touch packets (``pylvs check``, ``ctl``, ``status``)
start without it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from pylvs.errors import ConfigError, PylvsError

if TYPE_CHECKING:
    from pylvs.engine import (
        ConnectionInfo,
        Defense,
        DefenseInfo,
        Engine,
        EngineStats,
        Rates,
        ServerInfo,
        ServerKey,
        ServiceInfo,
        Stats,
        Timeouts,
        Verdict,
        scheduler_names,
    )
    from pylvs.model import ServiceKey

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConnectionInfo",
    "Defense",
    "DefenseInfo",
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

# public name -> the module that defines it, imported on first access
_LAZY = {
    **dict.fromkeys(
        ("ConnectionInfo", "Defense", "DefenseInfo", "Engine", "EngineStats", "Rates",
         "ServerInfo", "ServerKey", "ServiceInfo", "Stats", "Timeouts", "Verdict",
         "scheduler_names"),
        "pylvs.engine",
    ),
    "ServiceKey": "pylvs.model",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(import_module(module), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    # ``pylvs.engine`` etc. after a bare ``import pylvs``: it used to load the engine eagerly,
    # and embedders may rely on that.
    try:
        return import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
