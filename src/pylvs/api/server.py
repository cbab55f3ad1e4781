"""Run the control API: always on a Unix socket, optionally on TCP behind a bearer token.

The Unix socket gets its mode (0600 by default) *before* ``listen()``, so there is no moment
where another user could connect.  The TCP listener serves a second application instance that
demands ``Authorization: Bearer <token>``; the token is read from ``[api] token_file``, which
must not be readable by group or others (the daemon refuses to start otherwise, as sshd does
with a private key).  With ``tls_cert`` and ``tls_key`` the TCP listener speaks HTTPS
(TLS 1.2 or later), so the token does not cross the network in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import stat
from pathlib import Path

from aiohttp import web

from pylvs import model
from pylvs.api.app import make_app
from pylvs.api.codec import parse_endpoint
from pylvs.api.history import History
from pylvs.api.protocol import DirectorLike
from pylvs.api.sampler import HistorySampler
from pylvs.errors import ConfigError

__all__ = ["ApiServer", "read_token", "tls_context"]

log = logging.getLogger("pylvs.api")

# How long stop() lets requests in flight finish before cancelling them, and then lets them
# unwind: SIGTERM must be handled within a second even in the middle of a large restore
# (issue 13), and a read is answered within this.  (Not 0: aiohttp reads 0 as no limit.)
SHUTDOWN_TIMEOUT = 0.05


def read_token(path: str) -> str:
    """The bearer token in *path* (surrounding whitespace dropped); ConfigError if unusable.

    A token file that group or others may read or write is refused: anyone who can read it can
    drive the director over TCP.
    """
    try:
        with open(path, encoding="utf-8") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            token = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"api.token_file: cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o066:
        raise ConfigError(f"api.token_file: {path} is accessible by group or others "
                          f"(mode {mode:04o}); run chmod 600 {path}")
    if len(token) < 16:
        raise ConfigError(f"api.token_file: the token in {path} is shorter than 16 characters")
    return token


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the TCP listener (TLS 1.2+); ConfigError naming the bad file."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"api.tls_cert: cannot read {exc.filename or cert}: "
                          f"{exc.strerror}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"api.tls_cert: cannot load {cert} with key {key}: {exc}") from None
    return ctx


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _unix_listener(path: str, mode: int) -> socket.socket:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(p.lstat().st_mode):
            if _answers(path):
                raise ConfigError(f"api.socket: {path} is in use (is another pylvs running?)")
            p.unlink()  # a stale socket from a previous run; anything else is left alone
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class ApiServer:
    """The API's listeners for one director; ``start()`` then ``stop()``.

    It also keeps the director's recent history (:class:`~pylvs.api.history.History`), fed
    after each rate estimation while the API runs, for ``GET /api/v1/history``.
    """

    #: The director may stop this together with the other components marked so (health,
    #: load monitors): none needs another to stop first.
    stops_with_others = True

    def __init__(self, director: DirectorLike, api: model.ApiConfig | None = None) -> None:
        self.director = director
        self.api = api if api is not None else director.config.api
        self._runners: list[web.AppRunner] = []
        self._owns_socket = False
        self.tcp_address: tuple[str, int] | None = None
        self.history = History()
        self.sampler = HistorySampler(director, self.history)

    async def start(self) -> None:
        """Open the Unix socket and, if configured, the TCP listener."""
        token = None
        if self.api.listen is not None:
            if self.api.token_file is None:
                raise ConfigError("api.token_file: required when api.listen is set")
            token = read_token(self.api.token_file)
            endpoint = parse_endpoint(self.api.listen, "api.listen")
        tls = None
        if self.api.tls_cert is not None and self.api.tls_key is not None:
            tls = tls_context(self.api.tls_cert, self.api.tls_key)
        try:
            unix_runner = web.AppRunner(make_app(self.director, history=self.history),
                                        access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
            await unix_runner.setup()
            self._runners.append(unix_runner)
            sock = _unix_listener(self.api.socket, self.api.socket_mode)
            self._owns_socket = True
            await web.SockSite(unix_runner, sock).start()
            log.info("control API on unix:%s (mode %o)", self.api.socket, self.api.socket_mode)
            if token is not None:
                tcp_runner = web.AppRunner(
                    make_app(self.director, token=token, history=self.history), access_log=None,
                    shutdown_timeout=SHUTDOWN_TIMEOUT)
                await tcp_runner.setup()
                self._runners.append(tcp_runner)
                site = web.TCPSite(tcp_runner, str(endpoint.address), endpoint.port,
                                   ssl_context=tls)
                await site.start()
                # aiohttp has no public accessor for the bound port (needed for port 0).
                sockets = getattr(site._server, "sockets", None) or ()
                if sockets:
                    host, port = sockets[0].getsockname()[:2]
                    self.tcp_address = (str(host), int(port))
                log.info("control API on %s://%s:%s (bearer token required)",
                         "https" if tls else "http",
                         *(self.tcp_address or (endpoint.address, endpoint.port)))
            self.director.rate_listeners.append(self.sampler.on_rates)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, *, handover: bool = True) -> None:
        """Close every listener and remove the socket file (``handover`` is HA's business)."""
        if self.sampler.on_rates in self.director.rate_listeners:
            self.director.rate_listeners.remove(self.sampler.on_rates)
        await self.sampler.close()
        runners, self._runners = self._runners, []
        await asyncio.gather(*(runner.cleanup() for runner in reversed(runners)))
        if self._owns_socket:
            self._owns_socket = False
            with contextlib.suppress(FileNotFoundError):
                p = Path(self.api.socket)
                if stat.S_ISSOCK(p.lstat().st_mode):
                    p.unlink()
