"""Socket probes (``tcp``, ``send_expect``, ``udp``) and the error classification they share.

The probes here raise on failure to connect; ``check.run_probe`` puts each under its total
deadline and turns every exception into a failed result with :func:`classify_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import ssl

from pylvs.health.result import ProbeResult, Reason, show_bytes
from pylvs.health.spec import ProbeSpec

__all__ = [
    "classify_error",
    "match_reply",
    "probe_send_expect",
    "probe_tcp",
    "probe_udp",
    "to_bytes",
]

# Regex mode reads at most this much before giving up (nanny read 254 bytes; a status line or
# banner is rarely longer than a few hundred).
_REGEX_READ_LIMIT = 4096
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def to_bytes(text: str) -> bytes:
    """Encode a send/expect string: latin-1 when possible, else UTF-8."""
    # latin-1 keeps \xHH escapes as the raw byte the operator wrote.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def classify_error(exc: BaseException) -> ProbeResult:
    """Map a connect/read/TLS exception to a failed result with a precise reason."""
    if isinstance(exc, TimeoutError):
        return ProbeResult.failure(Reason.TIMEOUT)
    if isinstance(exc, ConnectionRefusedError):
        return ProbeResult.failure(Reason.REFUSED)
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ProbeResult.failure(Reason.RESET, str(exc))
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return ProbeResult.failure(Reason.TLS, str(exc))
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return ProbeResult.failure(Reason.UNREACHABLE, exc.strerror or str(exc))
    return ProbeResult.failure(Reason.ERROR, f"{type(exc).__name__}: {exc}")


def match_reply(spec: ProbeSpec, data: bytes) -> ProbeResult:
    """Check a reply against ``spec.expect`` (prefix, ``*`` = anything, or regex)."""
    if spec.expect is None:
        return ProbeResult.success(show_bytes(data))
    if spec.expect_regex:
        if re.search(to_bytes(spec.expect), data):
            return ProbeResult.success(show_bytes(data))
        return ProbeResult.failure(Reason.WRONG_REPLY, show_bytes(data))
    ok = len(data) > 0 if spec.expect == "*" else data.startswith(to_bytes(spec.expect))
    if ok:
        return ProbeResult.success(show_bytes(data))
    return ProbeResult.failure(Reason.WRONG_REPLY, show_bytes(data) if data else "<empty>")


async def probe_tcp(spec: ProbeSpec) -> ProbeResult:
    """Connect and close (keepalived ``TCP_CHECK``, ldirectord ``connect``).

    A bare non-blocking ``connect`` and a wait for the socket to become writable: the
    event loop's ``create_connection`` resolves even a numeric address through
    ``getaddrinfo``, which at 5,000 probes a second was most of the checker's CPU (issue 13).
    """
    family = socket.AF_INET6 if spec.address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex((str(spec.address), spec.port))
        if err == errno.EINPROGRESS:
            await _writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    finally:
        sock.close()
    return ProbeResult.success()


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await done
    finally:
        loop.remove_writer(fd)


async def _read_reply(spec: ProbeSpec, reader: asyncio.StreamReader, got: bytearray) -> bytes:
    assert spec.expect is not None
    pattern = re.compile(to_bytes(spec.expect)) if spec.expect_regex else None
    want = 1 if spec.expect == "*" else len(to_bytes(spec.expect))
    # Read until the reply can be judged, the peer closes, or the limit: a reply may come in
    # several segments.  ``got`` is the caller's, so a timeout can still say what came back.
    while len(got) < _REGEX_READ_LIMIT:
        if pattern is not None and pattern.search(got):
            break
        if pattern is None and len(got) >= want:
            break
        chunk = await reader.read(_REGEX_READ_LIMIT - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got) if pattern is not None else bytes(got[:want])


async def probe_send_expect(spec: ProbeSpec, got: bytearray | None = None) -> ProbeResult:
    """Connect, send ``spec.send`` (may be empty), read and match ``spec.expect`` (nanny).

    The reply read so far accumulates in ``got`` (when given) for the caller's error report.
    """
    got = bytearray() if got is None else got
    reader, writer = await asyncio.open_connection(str(spec.address), spec.port)
    try:
        if spec.send:
            writer.write(to_bytes(spec.send))
            await writer.drain()
        if spec.expect is None:
            return ProbeResult.success()
        return match_reply(spec, await _read_reply(spec, reader, got))
    finally:
        writer.close()
        # The verdict is already made; a reset on close changes nothing.
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def probe_udp(spec: ProbeSpec) -> ProbeResult:
    """Send one datagram and wait for a reply; an ICMP port unreachable means refused.

    Like nanny (and unlike keepalived's default) a reply is always required: silence from a
    UDP service proves nothing.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if spec.address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        # A connected UDP socket receives the ICMP errors for its peer as ECONNREFUSED.
        sock.connect((str(spec.address), spec.port))
        sock.send(to_bytes(spec.send or ""))
        data = await loop.sock_recv(sock, 65535)
        return match_reply(spec, data)
    finally:
        sock.close()
