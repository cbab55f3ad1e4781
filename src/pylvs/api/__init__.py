"""The control API: JSON REST, Prometheus ``/metrics`` and the status page, over aiohttp.

* :func:`make_app` builds the application for any :class:`DirectorLike`;
* :class:`ApiServer` serves it on the Unix socket (and optionally TCP with a bearer token);
* :class:`ApiClient` is the synchronous client ``pylvs ctl`` uses.
"""

from __future__ import annotations

from pylvs.api.app import make_app
from pylvs.api.client import ApiClient, ApiError
from pylvs.api.protocol import DirectorLike, EngineLike
from pylvs.api.server import ApiServer

__all__ = ["ApiClient", "ApiError", "ApiServer", "DirectorLike", "EngineLike", "make_app"]
