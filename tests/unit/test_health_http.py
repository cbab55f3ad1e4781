"""http and https probes against real aiohttp servers on 127.0.0.1 (TLS with trustme certs)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trustme
import uvloop
from aiohttp import web

from pylvs.health import ProbeSpec, Reason, run_probe
from pylvs.model import CheckConfig, Endpoint

LOOP = IPv4Address("127.0.0.1")
PAGE = b"<html><body>status: all good, build 42</body></html>"


def spec(port: int, **kw: object) -> ProbeSpec:
    args: dict[str, object] = {"type": "http", "interval": 1.0, "timeout": 2.0}
    args.update(kw)
    return ProbeSpec(address=LOOP, port=port, **args)  # type: ignore[arg-type]


def make_app(seen: list[tuple[str, str, str]]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, request.headers.get("Host", "")))
        return web.Response(body=PAGE, content_type="text/html")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/healthz")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late")

    async def vhost(request: web.Request) -> web.Response:
        ok = request.headers.get("Host") == "shop.example"
        return web.Response(status=200 if ok else 404, text="vhost")

    app = web.Application()
    app.router.add_route("*", "/healthz", health)
    app.router.add_get("/broken", broken)
    app.router.add_get("/moved", moved)
    app.router.add_get("/vhost", vhost)
    app.router.add_get("/slow", slow)
    return app


@contextlib.asynccontextmanager
async def serve(
    seen: list[tuple[str, str, str]], ssl_ctx: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    runner = web.AppRunner(make_app(seen))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
    await site.start()
    try:
        server = site._server
        assert server is not None
        yield server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    yield str(path)


def server_ctx(ca: trustme.CA, *, require_client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "shop.example").configure_cert(ctx)
    if require_client:
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def test_http_status_method_path_and_host() -> None:
    seen: list[tuple[str, str, str]] = []
    async with serve(seen) as port:
        ok = await run_probe(spec(port, path="/healthz"))
        head = await run_probe(spec(port, path="/healthz", method="HEAD", host="api.example"))
        bad = await run_probe(spec(port, path="/broken"))
        accepted = await run_probe(spec(port, path="/broken", status=(200, 503)))
        missing = await run_probe(spec(port, path="/nope"))
        moved = await run_probe(spec(port, path="/moved"))
        vhost_ok = await run_probe(spec(port, path="/vhost", host="shop.example"))
        vhost_bad = await run_probe(spec(port, path="/vhost"))
    assert ok.ok and ok.detail == "HTTP 200"
    assert head.ok
    assert ("HEAD", "/healthz", "api.example") in seen
    assert bad.reason is Reason.BAD_STATUS and bad.detail == "HTTP 503"
    assert accepted.ok
    assert missing.reason is Reason.BAD_STATUS and "404" in missing.detail
    # A redirect is an answer to judge, not something to follow.
    assert moved.reason is Reason.BAD_STATUS and "302" in moved.detail
    assert vhost_ok.ok and vhost_bad.reason is Reason.BAD_STATUS


async def test_http_body_regex_and_digest() -> None:
    good_md5 = hashlib.md5(PAGE).hexdigest()
    async with serve([]) as port:
        rx_ok = await run_probe(spec(port, path="/healthz", body_regex=r"build \d+"))
        rx_bad = await run_probe(spec(port, path="/healthz", body_regex=r"status: degraded"))
        md5_ok = await run_probe(spec(port, path="/healthz", digest=good_md5))
        md5_bad = await run_probe(spec(port, path="/healthz", digest="0" * 32))
    assert rx_ok.ok
    assert rx_bad.reason is Reason.WRONG_REPLY and "all good" in rx_bad.detail
    assert md5_ok.ok
    assert md5_bad.reason is Reason.WRONG_REPLY and good_md5 in md5_bad.detail


async def test_http_slow_answer_is_a_timeout() -> None:
    async with serve([]) as port:
        res = await run_probe(spec(port, path="/slow?s=1", timeout=0.3))
        ok = await run_probe(spec(port, path="/slow?s=0.05", status=(200,), timeout=0.3))
    assert res.reason is Reason.TIMEOUT and 0.25 < res.duration < 1.0, res
    assert ok.ok


async def test_http_refused() -> None:
    async with serve([]) as port:
        pass
    res = await run_probe(spec(port, path="/healthz"))
    assert res.reason is Reason.REFUSED


async def test_https_verify_on_off_and_sni_host(ca: trustme.CA, ca_file: str) -> None:
    async with serve([], server_ctx(ca)) as port:
        trusted = await run_probe(spec(port, type="https", path="/healthz", ca_file=ca_file))
        by_name = await run_probe(
            spec(port, type="https", path="/vhost", host="shop.example", ca_file=ca_file)
        )
        untrusted = await run_probe(spec(port, type="https", path="/healthz"))
        unverified = await run_probe(spec(port, type="https", path="/healthz", verify_tls=False))
        wrong_name = await run_probe(
            spec(port, type="https", path="/healthz", host="other.example", ca_file=ca_file)
        )
        plain = await run_probe(spec(port, type="http", path="/healthz"))
    assert trusted.ok, trusted
    assert by_name.ok, by_name
    assert untrusted.reason is Reason.TLS, untrusted
    assert unverified.ok, unverified
    assert wrong_name.reason is Reason.TLS, wrong_name
    assert not plain.ok


async def test_https_client_certificate(ca: trustme.CA, ca_file: str, tmp_path: Path) -> None:
    client = ca.issue_cert("probe@pylvs.test")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    async with serve([], server_ctx(ca, require_client=True)) as port:
        with_cert = await run_probe(
            spec(port, type="https", path="/healthz", ca_file=ca_file,
                 client_cert=str(cert), client_key=str(key))
        )
        without = await run_probe(spec(port, type="https", path="/healthz", ca_file=ca_file))
    missing = await run_probe(
        spec(port, type="https", ca_file=ca_file, client_cert=str(tmp_path / "nope.pem"))
    )
    assert with_cert.ok, with_cert
    assert not without.ok and without.reason in (Reason.TLS, Reason.RESET), without
    assert missing.reason is Reason.TLS and "client TLS setup" in missing.detail


def test_from_check_keeps_only_http_fields() -> None:
    check = CheckConfig(type="http", path="health", method="head", digest="ABC", client_cert="x")
    s = ProbeSpec.from_check(check, Endpoint(LOOP, 8080))
    assert s is not None
    assert (s.path, s.method, s.digest, s.client_cert) == ("/health", "HEAD", "abc", None)
    tcp_a = ProbeSpec.from_check(CheckConfig(type="tcp", path="/a"), Endpoint(LOOP, 1))
    tcp_b = ProbeSpec.from_check(CheckConfig(type="tcp", path="/b"), Endpoint(LOOP, 1))
    assert tcp_a == tcp_b and hash(tcp_a) == hash(tcp_b)


def test_http_under_uvloop(ca: trustme.CA, ca_file: str) -> None:
    async def main() -> tuple[bool, bool]:
        async with serve([]) as port:
            a = await run_probe(spec(port, path="/healthz"))
        async with serve([], server_ctx(ca)) as port:
            b = await run_probe(spec(port, type="https", path="/healthz", ca_file=ca_file))
        return a.ok, b.ok

    assert uvloop.run(main()) == (True, True)
