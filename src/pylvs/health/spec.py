"""What to probe and how: a hashable :class:`ProbeSpec` built from a service's check config.

Two services whose checks would do exactly the same thing to the same server produce equal
specs, so the manager runs that probe once and fans the result out (keepalived users asked for
this: one backend behind many VIPs got one probe per VIP).  Only the fields that matter for the
probe type are kept, so a ``tcp`` check with a leftover ``path`` still deduplicates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pylvs.errors import ConfigError
from pylvs.model import CheckConfig, CheckType, Endpoint, IPAddress, hostport

__all__ = ["PIRANHA_HTTP_EXPECT", "PIRANHA_HTTP_SEND", "ProbeSpec", "unescape"]

# nanny's back-compat default when a port-80 service has neither send nor expect.
PIRANHA_HTTP_SEND = "GET / HTTP/1.0\r\n\r\n"
PIRANHA_HTTP_EXPECT = "HTTP"

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.DOTALL)


def unescape(text: str) -> str:
    """Translate nanny-style escapes: ``\\n \\r \\t \\0 \\\\ \\' \\"`` and ``\\xHH``.

    An unknown escape is kept as written, so a regex like ``\\d`` in an expect string survives.
    """

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        return _ESCAPES.get(code, m.group(0))

    return _ESCAPE_RE.sub(one, text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeSpec:
    """Everything that determines one probe of one server, and how often it runs.

    ``send``/``expect`` are stored already unescaped.  ``ca_file`` is not a config key yet: it
    lets an https probe trust a private CA instead of the system store.
    """

    type: CheckType
    address: IPAddress  # IPv4 or IPv6; %h in an exec command is the bare address
    port: int
    interval: float
    timeout: float
    send: str | None = None
    expect: str | None = None
    expect_regex: bool = False
    path: str = "/"
    method: str = "GET"
    status: tuple[int, ...] = (200,)
    body_regex: str | None = None
    digest: str | None = None
    host: str | None = None
    verify_tls: bool = True
    client_cert: str | None = None
    client_key: str | None = None
    ca_file: str | None = None
    command: str | None = None
    dynamic_weight: bool = False

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.timeout <= 0:
            raise ConfigError(f"check interval and timeout must be > 0 (probe {self.label})")
        for pattern in (self.body_regex, self.expect if self.expect_regex else None):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"bad regex {pattern!r}: {exc}") from None
        if self.type == "exec" and not self.command:
            raise ConfigError(f"exec check needs a command (probe {self.label})")

    @property
    def label(self) -> str:
        """Short name for logs: ``http 198.19.0.11:80``, ``tcp [2001:2:1::11]:80``."""
        return f"{self.type} {hostport(str(self.address), self.port)}"

    @classmethod
    def from_check(
        cls, check: CheckConfig, server: Endpoint, *, ca_file: str | None = None
    ) -> ProbeSpec | None:
        """The spec for ``check`` against ``server``; ``None`` for ``type = "none"``."""
        if check.type == "none":
            return None
        port = check.port if check.port is not None else server.port
        # Built as a tcp spec first so validation of the type-specific fields runs once, on
        # the final value below.
        base = cls(
            type="tcp",
            address=server.address,
            port=port,
            interval=float(check.interval),
            timeout=float(check.timeout),
        )
        if check.type == "tcp":
            return base
        if check.type in ("send_expect", "udp"):
            send = None if check.send is None else unescape(check.send)
            expect = None if check.expect is None else unescape(check.expect)
            if check.type == "send_expect" and port == 80 and send is None and expect is None:
                send, expect = PIRANHA_HTTP_SEND, PIRANHA_HTTP_EXPECT
            return replace(
                base, type=check.type, send=send, expect=expect, expect_regex=check.expect_regex
            )
        if check.type in ("http", "https"):
            https = check.type == "https"
            return replace(
                base,
                type=check.type,
                path=check.path if check.path.startswith("/") else "/" + check.path,
                method=check.method.upper(),
                status=tuple(check.status),
                body_regex=check.body_regex,
                digest=check.digest.lower() if check.digest else None,
                host=check.host,
                verify_tls=check.verify_tls if https else True,
                client_cert=check.client_cert if https else None,
                client_key=check.client_key if https else None,
                ca_file=ca_file if https else None,
            )
        return replace(
            base, type="exec", command=check.command, dynamic_weight=check.dynamic_weight
        )
