"""The control API: JSON REST, Prometheus ``/metrics`` and the status page, over aiohttp.

* :func:`make_app` builds the application for any :class:`DirectorLike`;
* :class:`ApiServer` serves it on the Unix socket (and optionally TCP with a bearer token);
* :class:`ApiClient` is the synchronous client ``pylvs ctl`` uses.

The names are loaded on first use: ``pylvs ctl`` imports :mod:`pylvs.api.client` and
:mod:`pylvs.cli.layouts` only, and should not pay for aiohttp and the engine.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pylvs.api.app import make_app
    from pylvs.api.client import ApiClient, ApiError
    from pylvs.api.protocol import DirectorLike, EngineLike
    from pylvs.api.server import ApiServer

__all__ = ["ApiClient", "ApiError", "ApiServer", "DirectorLike", "EngineLike", "make_app"]

_WHERE = {"make_app": "app", "ApiClient": "client", "ApiError": "client",
          "DirectorLike": "protocol", "EngineLike": "protocol", "ApiServer": "server"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"pylvs.api.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'pylvs.api' has no attribute {name!r}")
