"""The XDP SYN proxy's director side (dataplane/xdp_component.py): ``xdp_synproxy = "auto"``
falls back to the TUN path with a warning when the program cannot be used, ``"on"`` refuses to
start, ``"off"`` never loads it, and without a synproxy service nothing is attached."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pylvs import config
from pylvs.dataplane.xdp import XdpSynproxy
from pylvs.dataplane.xdp_component import XdpSynproxyComponent, synproxy_services
from pylvs.engine import Engine
from pylvs.errors import CoreError
from pylvs.model import Config


def _config(mode: str, synproxy: bool = True) -> Config:
    return config.parse(f"""
        [director]
        public_interface = "pylvs-absent0"
        private_interface = "eth1"
        xdp_synproxy = "{mode}"
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


def test_auto_falls_back_to_the_tun_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(XdpSynproxy, "load", staticmethod(_refuse))
    host = Host(_config("auto"))
    comp = XdpSynproxyComponent(host)

    async def run() -> dict[str, Any]:
        await comp.start()
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
    def fail() -> XdpSynproxy:
        raise AssertionError("loaded")

    monkeypatch.setattr(XdpSynproxy, "load", staticmethod(fail))
    host = Host(_config(mode, synproxy))
    comp = XdpSynproxyComponent(host)

    async def run() -> dict[str, Any]:
        await comp.start()
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
        status: dict[str, Any] = host.status_providers["xdp_synproxy"]()
        await comp.stop()
        return status

    with caplog.at_level(logging.WARNING, logger="pylvs.dataplane.xdp"):
        status = asyncio.run(run())
    assert status["state"] == "unavailable" and comp.program is None
    assert "cannot attach the XDP SYN proxy to pylvs-absent0" in caplog.text
