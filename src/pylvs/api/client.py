"""A small synchronous client for the control API: its Unix socket, or its TCP listener.

``pylvs ctl`` runs once per command, so a blocking ``http.client`` connection is all it needs;
it avoids starting an event loop and importing aiohttp for a single request.  The target is a
socket path, or an ``http://host:port`` / ``https://host:port`` URL of the TCP listener (which
needs the bearer token; for HTTPS the server's certificate is checked against *cafile*, or the
system's trust store).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = ["ApiClient", "ApiError", "path_for"]


class ApiError(Exception):
    """The daemon answered with an error status, or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def path_for(protocol: str, endpoint: str, server: str | None = None) -> str:
    """The URL path of a service (and optionally one of its real servers)."""
    path = f"/api/v1/services/{quote(protocol)}/{quote(endpoint)}"
    if server is not None:
        path += f"/servers/{quote(server)}"
    return path


_NOT_RUNNING = "is `pylvs serve` running?"


class ApiClient:
    """JSON requests to the daemon at *path*: a Unix socket path or an http(s):// URL."""

    def __init__(self, path: str, *, timeout: float = 10.0, token: str | None = None,
                 cafile: str | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.token = token
        self.cafile = cafile
        self._url = urlsplit(path) if path.startswith(("http://", "https://")) else None
        if self._url is not None and not self._url.hostname:
            raise ApiError(0, f"{path}: expected http://host:port or https://host:port")

    def _connection(self) -> http.client.HTTPConnection:
        url = self._url
        if url is None:
            return _UnixConnection(self.path, self.timeout)
        host, port = url.hostname or "", url.port
        if url.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.cafile)
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=ctx)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def request(self, method: str, url: str, body: Any = None) -> Any:
        """Send one request and return the decoded JSON answer; raise :class:`ApiError`."""
        conn = self._connection()
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, url, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except FileNotFoundError:
            raise ApiError(0, f"{self.path}: no such socket ({_NOT_RUNNING})") from None
        except ConnectionRefusedError:
            # A socket file left by a killed daemon, or nothing listening on the TCP port.
            raise ApiError(0, f"{self.path}: connection refused ({_NOT_RUNNING})") from None
        except PermissionError:
            raise ApiError(0, f"{self.path}: permission denied (the socket is mode 0600; "
                              "run as the daemon's user)") from None
        except ssl.SSLError as exc:
            raise ApiError(0, f"{self.path}: TLS failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise ApiError(0, f"{self.path}: {exc.strerror or exc}") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if resp.status >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            raise ApiError(resp.status, str(message or f"HTTP {resp.status} {resp.reason}"))
        return data

    def get(self, url: str) -> Any:
        """``GET url``."""
        return self.request("GET", url)

    def post(self, url: str, body: Any = None) -> Any:
        """``POST url`` with a JSON body."""
        return self.request("POST", url, {} if body is None else body)

    def patch(self, url: str, body: Any) -> Any:
        """``PATCH url`` with a JSON body."""
        return self.request("PATCH", url, body)

    def put(self, url: str, body: Any) -> Any:
        """``PUT url`` with a JSON body."""
        return self.request("PUT", url, body)

    def delete(self, url: str) -> Any:
        """``DELETE url``."""
        return self.request("DELETE", url)
