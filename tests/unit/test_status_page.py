"""The status page in headless Chromium, driven over the DevTools protocol.

A real director (engine + TCP health checks + the 2 s rate estimator) watches two real servers
listening on loopback while packets flow through its engine; the page is served by the API's
TCP listener with a bearer token.  The test checks that the page renders both servers up, that
its charts (sparklines, the opened service's charts, HA and drop charts) fill with estimator
points, that a server going down shows in the table within seconds and on its health timeline
within two estimator steps after that, that a phone-width page does not scroll sideways, and
that the browser logged no console error or exception on the way.  Screenshots land in
``$PYLVS_SCREENSHOTS`` when that is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from scapy.layers.inet import IP, TCP

from pylvs import model
from pylvs.api.history import STEP
from tests.support.mini_director import ApiStarter, MiniDirector, base_config, service

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


def _ep(text: str) -> model.Endpoint:
    host, _, port = text.rpartition(":")
    return model.Endpoint(IPv4Address(host), int(port))


async def _traffic(director: MiniDirector) -> None:
    """New connections through the engine, and packets to a port with no service (drops)."""
    for i in itertools.count():
        now = time.monotonic()
        for j in range(5):
            sport = 1024 + (i * 5 + j) % 60000
            for dport in (80, 81):  # 81: no service there, dropped
                syn = IP(src="198.18.0.50", dst="198.18.0.100") / TCP(sport=sport, dport=dport,
                                                                      flags="S")
                director.engine.process(bytes(syn), now=now)
        await asyncio.sleep(0.1)


async def _screenshot(page: Page, name: str) -> None:
    where = os.environ.get("PYLVS_SCREENSHOTS")
    shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / name).write_bytes(png)


def _points(selector: str) -> str:
    return (f"Number((document.querySelector('{selector}') || {{dataset: {{}}}})"
            ".dataset.points || 0)")


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
                      (dataclasses.replace(
                          service("198.18.0.100:80", *ends, check="tcp", scheduler="wrr",
                                  flags=("sh-fallback",), persistence=300,
                                  netmask=IPv4Address("255.255.255.0")),
                          real_servers=(model.RealServerConfig(
                              address=_ep(ends[0]), upper_threshold=50, lower_threshold=40),
                              model.RealServerConfig(address=_ep(ends[1])))),),
                      listen="127.0.0.1:0", token_file=str(token_file))
    director, server = await running_api(cfg)
    assert server.tcp_address is not None
    host, port = server.tcp_address
    traffic = asyncio.create_task(_traffic(director))
    vip = "tcp/198.18.0.100:80"
    try:
        async with chromium() as page:
            await page.call("Page.navigate", url=f"http://{host}:{port}/#token={TOKEN}")
            await _wait_for(page, _health(ends[0]), "up", 15)
            await _wait_for(page, _health(ends[1]), "up", 15)
            assert await page.eval("document.getElementById('role').textContent") == "ACTIVE"
            assert await page.eval("document.getElementById('conn-state').textContent") == "live"
            # the token left the address bar once read
            assert "token" not in await page.eval("location.href")
            # scheduler flags, persistence with its mask and thresholds are shown
            meta = await page.eval("document.querySelector('section.service .meta').textContent")
            assert "wrr · flags sh-fallback · persistent 300 s mask 255.255.255.0" in meta
            assert await page.eval(
                f"document.querySelector('[data-server=\"{ends[0]}\"] td:nth-child(5)')"
                ".textContent") == "50/40"

            # sparklines fill with estimator points (one per 2 s step) while traffic flows
            spark = f"[data-service=\"{vip}\"] .meta.rates svg.spark"
            await _wait_for(page, f"{_points(spark)} >= 2", True, 4 * STEP + 2)
            row_spark = f'[data-server=\"{ends[0]}\"] svg.spark'
            await _wait_for(page, f"{_points(row_spark)} >= 2", True, 2)
            # the page shows a conn/s rate above 0 for the service
            await _wait_for(page, "/^[1-9]/.test(document.querySelector("
                            "'section.service .meta.rates span').textContent)", True, 2 * STEP)
            # open the service: its four charts and one timeline per server
            await page.eval(f"document.querySelector('[data-toggle=\"{vip}\"]').click()")
            await _wait_for(page, f"document.querySelectorAll('[data-charts=\"{vip}\"] "
                            "svg.chart polyline').length >= 7", True, 3)
            assert await page.eval(f"document.querySelectorAll('[data-charts=\"{vip}\"] "
                                   "svg.timeline').length") == 2
            legend = await page.eval(f"document.querySelector('[data-charts=\"{vip}\"]')"
                                     ".textContent")
            assert "B/s" in legend and "1 kB = 1000 B" in legend
            assert await page.eval(
                "document.querySelectorAll('#ha-timeline rect[data-state=\"ACTIVE\"]').length"
            ) >= 1
            await _wait_for(page, "document.querySelectorAll('#drops-chart polyline"
                            "[data-series=\"no service\"]').length >= 1", True, 2 * STEP + 2)
            await _screenshot(page, "status-desktop.png")

            real[1].close()
            await real[1].wait_closed()
            took = await _wait_for(page, _health(ends[1]), "down", 10)
            assert took < 10
            # the health timeline shows it within two estimator steps of the table
            down = (f"document.querySelectorAll('svg.timeline[data-server=\"{ends[1]}\"] "
                    "rect[data-state=\"down\"]').length >= 1")
            took = await _wait_for(page, down, True, 2 * STEP + 1)
            assert took <= 2 * STEP
            why = await page.eval(f"document.querySelector('svg.timeline[data-server="
                                  f"\"{ends[1]}\"] rect[data-state=\"down\"] title')"
                                  ".textContent")
            assert why.startswith(f"{ends[1]}: down ") and "(" in why  # the probe's reason
            assert await page.eval(_health(ends[0])) == "up"
            text = await page.eval("document.querySelector('section.service .meta').textContent")
            assert "1/2 up" in text
            # phone-sized viewport: still one column, no horizontal scroll of the page or a card
            await page.call("Emulation.setDeviceMetricsOverride", width=375, height=740,
                            deviceScaleFactor=2, mobile=True)
            await asyncio.sleep(1.2)
            assert await page.eval(
                "document.documentElement.scrollWidth <= window.innerWidth + 1") is True
            assert await page.eval(
                "[...document.querySelectorAll('section')].every("
                "(s) => s.scrollWidth <= s.clientWidth + 1)") is True
            await _screenshot(page, "status-phone.png")
            assert page.errors() == []
    finally:
        traffic.cancel()
        for s in real:
            s.close()
