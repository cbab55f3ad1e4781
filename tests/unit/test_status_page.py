"""The status page in headless Chromium, driven over the DevTools protocol.

A real director (engine + TCP health checks) watches two real servers listening on loopback;
the page is served by the API's TCP listener with a bearer token.  The test checks that the
page renders both servers up, that it shows one going down within seconds of its listener
closing, and that the browser logged no console error or exception on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.mini_director import ApiStarter, base_config, service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
TOKEN = "page-test-token-0123456789abcdef"


class Page:
    """The smallest DevTools client: commands by id, events collected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def call(self, method: str, **params: Any) -> Any:
        ident = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[ident] = fut
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        data = await asyncio.wait_for(fut, 15)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails", {}))[:300])
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error",
                                                                                   "assert"):
                out.append(json.dumps(p.get("args", []))[:300])
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", "")[:300])
        return out


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Page]:
    """Headless Chromium with a fresh profile, one page attached over DevTools."""
    assert CHROMIUM is not None
    profile = Path(tempfile.mkdtemp(prefix="pylvs-chromium-"))
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    pages = [t for t in await resp.json() if t.get("type") == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Runtime.enable")
                await page.call("Log.enable")
                await page.call("Page.enable")
                try:
                    yield page
                finally:
                    page.reader.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _wait_for(page: Page, expression: str, want: Any, timeout: float) -> float:
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        last = await page.eval(expression)
        if last == want:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"{expression} stayed {last!r}, wanted {want!r} within {timeout}s")


def _health(server: str) -> str:
    return (f"(document.querySelector('[data-server=\"{server}\"]') || {{dataset: {{}}}})"
            ".dataset.health || null")


async def test_page_shows_a_server_going_down(tmp_path: Path, running_api: ApiStarter) -> None:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    real = [await asyncio.start_server(accept, "127.0.0.1", 0) for _ in range(2)]
    ends = [f"127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in real]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    cfg = base_config(str(tmp_path / "p.sock"),
                      (service("198.18.0.100:80", *ends, check="tcp"),),
                      listen="127.0.0.1:0", token_file=str(token_file))
    _, server = await running_api(cfg)
    assert server.tcp_address is not None
    host, port = server.tcp_address
    try:
        async with chromium() as page:
            await page.call("Page.navigate", url=f"http://{host}:{port}/#token={TOKEN}")
            await _wait_for(page, _health(ends[0]), "up", 15)
            await _wait_for(page, _health(ends[1]), "up", 15)
            assert await page.eval("document.getElementById('role').textContent") == "ACTIVE"
            assert await page.eval("document.getElementById('conn-state').textContent") == "live"
            # the token left the address bar once read
            assert "token" not in await page.eval("location.href")

            real[1].close()
            await real[1].wait_closed()
            took = await _wait_for(page, _health(ends[1]), "down", 10)
            assert took < 10
            assert await page.eval(_health(ends[0])) == "up"
            text = await page.eval("document.querySelector('section.service .meta').textContent")
            assert "1/2 up" in text
            # phone-sized viewport: still one column, no horizontal scroll of the page
            await page.call("Emulation.setDeviceMetricsOverride", width=375, height=740,
                            deviceScaleFactor=2, mobile=True)
            await asyncio.sleep(0.3)
            assert await page.eval(
                "document.documentElement.scrollWidth <= window.innerWidth + 1") is True
            assert page.errors() == []
    finally:
        for s in real:
            s.close()
