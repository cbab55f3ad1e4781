"""``http`` and ``https`` probes with aiohttp (keepalived ``HTTP_GET``/``SSL_GET``).

Each probe opens a fresh connection (no keep-alive) so that it tests what a new client would
meet, checks the status against the expected list and, when asked, the body against a regex or
an MD5 digest.  Redirects are not followed: a 302 from a health URL is an answer to judge.
"""

from __future__ import annotations

import functools
import hashlib
import re
import ssl

import aiohttp

from pylvs.health.probes import classify_error
from pylvs.health.result import ProbeResult, Reason, clip, show_bytes
from pylvs.health.spec import ProbeSpec
from pylvs.model import hostport

__all__ = ["probe_http", "tls_context"]

# A health page is small; a server that streams more than this is judged on what came first.
_BODY_LIMIT = 1 << 20


@functools.lru_cache(maxsize=64)
def tls_context(
    verify: bool, client_cert: str | None, client_key: str | None, ca_file: str | None
) -> ssl.SSLContext:
    """A client TLS context, cached: loading the CA store costs milliseconds per probe."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    while len(body) < _BODY_LIMIT:
        chunk = await resp.content.read(_BODY_LIMIT - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _judge(spec: ProbeSpec, status: int, body: bytes | None) -> ProbeResult:
    if status not in spec.status:
        return ProbeResult.failure(Reason.BAD_STATUS, f"HTTP {status}")
    if body is not None and spec.body_regex is not None:
        text = body.decode("utf-8", "replace")
        if not re.search(spec.body_regex, text):
            return ProbeResult.failure(Reason.WRONG_REPLY, show_bytes(body))
    if body is not None and spec.digest is not None:
        digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
        if digest != spec.digest:
            return ProbeResult.failure(Reason.WRONG_REPLY, f"md5 {digest}")
    return ProbeResult.success(f"HTTP {status}")


async def probe_http(spec: ProbeSpec) -> ProbeResult:
    """Request ``spec.path`` and judge status, then body (regex or MD5) when configured."""
    https = spec.type == "https"
    ssl_arg: ssl.SSLContext | bool = False
    if https:
        try:
            ssl_arg = tls_context(spec.verify_tls, spec.client_cert, spec.client_key, spec.ca_file)
        except (OSError, ssl.SSLError) as exc:
            return ProbeResult.failure(Reason.TLS, f"client TLS setup: {exc}")
    url = f"{'https' if https else 'http'}://{hostport(str(spec.address), spec.port)}{spec.path}"
    headers = {"Host": spec.host} if spec.host else None
    # SNI and certificate name follow the configured Host when there is one.
    server_hostname = spec.host.split(":")[0] if (https and spec.host) else None
    connector = aiohttp.TCPConnector(force_close=True, ssl=ssl_arg, limit=1)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.request(
                spec.method,
                url,
                headers=headers,
                allow_redirects=False,
                server_hostname=server_hostname,
            ) as resp,
        ):
            need_body = spec.body_regex is not None or spec.digest is not None
            body = await _read_body(resp) if need_body else None
            return _judge(spec, resp.status, body)
    except TimeoutError:
        # aiohttp's own timeouts (ServerTimeoutError …) are ClientErrors too: name them right.
        return ProbeResult.failure(Reason.TIMEOUT)
    except aiohttp.ClientConnectorCertificateError as exc:
        return ProbeResult.failure(Reason.TLS, clip(str(exc.certificate_error)))
    except aiohttp.ClientSSLError as exc:
        return ProbeResult.failure(Reason.TLS, clip(str(exc)))
    except aiohttp.ClientConnectorError as exc:
        return classify_error(exc.os_error)
    except aiohttp.ServerDisconnectedError:
        return ProbeResult.failure(Reason.RESET, "server disconnected")
    except aiohttp.ClientPayloadError as exc:
        return ProbeResult.failure(Reason.WRONG_REPLY, clip(str(exc)))
    except aiohttp.ClientResponseError as exc:
        return ProbeResult.failure(Reason.WRONG_REPLY, clip(f"{exc.status} {exc.message}"))
    except aiohttp.ClientError as exc:
        return ProbeResult.failure(Reason.ERROR, clip(f"{type(exc).__name__}: {exc}"))
