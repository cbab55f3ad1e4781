"""The XDP SYN proxy's director side (dataplane/xdp_component.py): ``xdp_synproxy = "auto"``
falls back to the TUN path with a warning when the program cannot be used, ``"on"`` refuses to
start, ``"off"`` never loads it, and without a synproxy service nothing is attached unless
``[defense] syncookies`` may engage, whose state the component mirrors into the program."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from pylvs import config
from pylvs.dataplane.xdp import SVC_COOKIES, XdpSynproxy
from pylvs.dataplane.xdp_component import (
    XdpSynproxyComponent,
    answered_services,
    synproxy_services,
)
from pylvs.engine import Defense, Engine
from pylvs.errors import CoreError
from pylvs.model import Config


def _config(mode: str, synproxy: bool = True, syncookies: int = 1) -> Config:
    return config.parse(f"""
        [director]
        public_interface = "pylvs-absent0"
        private_interface = "eth1"
        xdp_synproxy = "{mode}"
        [defense]
        syncookies = {syncookies}
        [[virtual_server]]
        address = "198.18.0.100:80"
        synproxy = {str(synproxy).lower()}
        [[virtual_server.real_server]]
        address = "198.19.0.11:80"
        [[virtual_server]]
        address = "198.18.0.100:0"
        persistence = 60
        synproxy = true
        [[virtual_server.real_server]]
        address = "198.19.0.12"
    """)


class Host:
    """The three things the component uses of a director."""

    def __init__(self, cfg: Config) -> None:
        self.engine = Engine(max_connections=16)
        self.status_providers: dict[str, Callable[[], Any]] = {}
        self.config_listeners: list[Callable[[Config], Awaitable[None]]] = []
        self._config = cfg

    @property
    def config(self) -> Config:
        return self._config


def _refuse() -> XdpSynproxy:
    raise CoreError("the kernel refused the XDP program: Operation not permitted")


def test_only_exact_port_synproxy_services_go_to_the_program() -> None:
    assert {f"{a}:{p}" for a, p in synproxy_services(_config("auto"))} == {"198.18.0.100:80"}
    assert synproxy_services(_config("auto", synproxy=False)) == frozenset()


def test_with_syncookies_every_exact_port_tcp_service_goes_to_the_program() -> None:
    """... marked SVC_COOKIES: answered only while the engine's syncookies is engaged."""
    plain = answered_services(_config("auto", synproxy=False))
    assert {f"{a}:{p}": k for (a, p), k in plain.items()} == {"198.18.0.100:80": SVC_COOKIES}
    assert answered_services(_config("auto", synproxy=False, syncookies=0)) == {}


class FakeProgram:
    """The loaded program as the component uses it; attaches in generic mode (a veth)."""

    def __init__(self) -> None:
        self.cookies_engaged = False
        self.cookie_syns = 0
        self.links: dict[str, tuple[int, str]] = {}
        self.services: dict[Any, int] = {}

    def set_cookies_engaged(self, engaged: bool) -> None:
        self.cookies_engaged = engaged

    def counters(self) -> dict[str, int]:
        return {"syn": self.cookie_syns, "no_secret": 0, "cookie_syn": self.cookie_syns}

    def push_secrets(self, engine: Engine, now: float) -> None:
        pass

    def set_services(self, services: dict[Any, int]) -> None:
        self.services = dict(services)

    def attach(self, ifname: str, mode: str | None = None) -> str:
        self.links.setdefault(ifname, (-1, "generic"))
        return "generic"

    def detach(self, ifname: str) -> None:
        self.links.pop(ifname, None)

    def close(self) -> None:
        self.links.clear()


def test_in_generic_mode_a_syncookies_only_program_is_attached_only_while_engaged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Generic XDP copies every non-linear skb before the program runs: without a flood (and
    without a synproxy service) the program waits loaded, detached ("standby")."""
    prog = FakeProgram()
    monkeypatch.setattr(XdpSynproxy, "load", staticmethod(lambda: prog))
    host = Host(_config("auto", synproxy=False))
    comp = XdpSynproxyComponent(host)
    status = host.status_providers["xdp_synproxy"]

    async def run() -> list[str]:
        await comp.start()
        await comp.synced()
        states = [status()["state"]]
        assert prog.links == {}
        host.engine.set_defense(Defense(syncookies=2))
        for _ in range(50):  # the refresh task follows within POLL_INTERVAL
            await asyncio.sleep(0.02)
            if prog.links:
                break
        states.append(status()["state"])
        assert prog.cookies_engaged and "pylvs-absent0" in prog.links
        host.engine.set_defense(Defense(syncookies=0))
        for _ in range(50):
            await asyncio.sleep(0.02)
            if not prog.links:
                break
        states.append(status()["state"])
        await comp.stop()
        return states

    assert asyncio.run(run()) == ["standby", "attached", "standby"]
    assert not prog.cookies_engaged


def test_with_a_synproxy_service_the_program_stays_attached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    prog = FakeProgram()
    monkeypatch.setattr(XdpSynproxy, "load", staticmethod(lambda: prog))
    host = Host(_config("auto"))
    comp = XdpSynproxyComponent(host)

    async def run() -> str:
        await comp.start()
        await comp.synced()
        await asyncio.sleep(0.15)
        state: str = host.status_providers["xdp_synproxy"]()["state"]
        await comp.stop()
        return state

    assert asyncio.run(run()) == "attached"


def test_the_program_follows_syncookies_and_its_syns_reach_the_engine() -> None:
    host = Host(_config("auto", synproxy=False))
    comp = XdpSynproxyComponent(host)
    prog = FakeProgram()
    as_program = cast(XdpSynproxy, prog)
    comp._follow_cookies(as_program)
    assert not prog.cookies_engaged
    host.engine.set_defense(Defense(syncookies=2))
    prog.cookie_syns = 700
    comp._follow_cookies(as_program)
    prog.cookie_syns = 1000
    comp._follow_cookies(as_program)
    sc = host.engine.defense().syncookies
    assert sc is not None and sc.xdp_syns == 1000  # deltas, each reported once
    assert prog.cookies_engaged
    host.engine.set_defense(Defense(syncookies=0))
    comp._follow_cookies(as_program)
    assert not prog.cookies_engaged


def test_auto_falls_back_to_the_tun_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(XdpSynproxy, "load", staticmethod(_refuse))
    host = Host(_config("auto"))
    comp = XdpSynproxyComponent(host)

    async def run() -> dict[str, Any]:
        await comp.start()
        await comp.synced()
        try:
            status: dict[str, Any] = host.status_providers["xdp_synproxy"]()
            return status
        finally:
            await comp.stop()

    with caplog.at_level(logging.WARNING, logger="pylvs.dataplane.xdp"):
        status = asyncio.run(run())
    assert status["state"] == "unavailable" and status["attached"] == {}
    assert "Operation not permitted" in status["error"]
    assert "SYNs are answered through the TUN" in caplog.text


def test_on_refuses_to_start_without_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(XdpSynproxy, "load", staticmethod(_refuse))
    comp = XdpSynproxyComponent(Host(_config("on")))
    with pytest.raises(CoreError, match='xdp_synproxy = "on"'):
        asyncio.run(comp.start())


@pytest.mark.parametrize(("mode", "synproxy", "state"),
                         [("off", True, "off"), ("auto", False, "idle")])
def test_nothing_is_loaded_when_off_or_without_a_synproxy_service(
        monkeypatch: pytest.MonkeyPatch, mode: str, synproxy: bool, state: str) -> None:
    """(and syncookies = 0: otherwise any TCP service may need the program)"""
    def fail() -> XdpSynproxy:
        raise AssertionError("loaded")

    monkeypatch.setattr(XdpSynproxy, "load", staticmethod(fail))
    host = Host(_config(mode, synproxy, syncookies=0))
    comp = XdpSynproxyComponent(host)

    async def run() -> dict[str, Any]:
        await comp.start()
        await comp.synced()
        await host.config_listeners[0](host.config)  # a reload changes nothing
        status: dict[str, Any] = host.status_providers["xdp_synproxy"]()
        await comp.stop()
        return status

    assert asyncio.run(run())["state"] == state


def test_a_missing_interface_is_a_warning_and_frees_the_program(
        caplog: pytest.LogCaptureFixture) -> None:
    # The real program (when it loads here): attaching to an absent interface fails cleanly.
    try:
        XdpSynproxy.load().close()
    except CoreError as exc:
        pytest.skip(str(exc))
    host = Host(_config("auto"))
    comp = XdpSynproxyComponent(host)

    async def run() -> dict[str, Any]:
        await comp.start()
        await comp.synced()
        status: dict[str, Any] = host.status_providers["xdp_synproxy"]()
        await comp.stop()
        return status

    with caplog.at_level(logging.WARNING, logger="pylvs.dataplane.xdp"):
        status = asyncio.run(run())
    assert status["state"] == "unavailable" and comp.program is None
    assert "cannot attach the XDP SYN proxy to pylvs-absent0" in caplog.text


def test_without_a_synproxy_service_an_unusable_program_is_said_quietly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """For syncookies alone XDP is the faster of two ways: info, not a warning, when absent."""
    monkeypatch.setattr(XdpSynproxy, "load", staticmethod(_refuse))
    host = Host(_config("auto", synproxy=False))
    comp = XdpSynproxyComponent(host)

    async def run() -> str:
        await comp.start()
        await comp.synced()
        state: str = host.status_providers["xdp_synproxy"]()["state"]
        await comp.stop()
        return state

    with caplog.at_level(logging.INFO, logger="pylvs.dataplane.xdp"):
        assert asyncio.run(run()) == "unavailable"
    [record] = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert record.levelno == logging.INFO
