"""The fast path's director side (dataplane/fastpath_component.py): ``fastpath = "auto"`` falls
back to the TUN path with a warning that names the cause (no workers, an absent interface, a
refused program), ``"on"`` refuses to start, ``"off"`` never loads it; a bad value is a clear
config error; a stats read folds first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pylvs import config
from pylvs.dataplane import fastpath_component
from pylvs.dataplane.fastpath import FastPath
from pylvs.dataplane.fastpath_component import READ_FOLD_MAX_ENTRIES, FastPathComponent
from pylvs.engine import Engine
from pylvs.errors import ConfigError, CoreError
from pylvs.model import Config


def _config(mode: str) -> Config:
    return config.parse(f"""
        [director]
        public_interface = "pylvs-absent0"
        private_interface = "pylvs-absent1"
        fastpath = "{mode}"
        [[virtual_server]]
        address = "198.18.0.100:80"
        [[virtual_server.real_server]]
        address = "198.19.0.11:80"
    """)


class Host:
    """What the component uses of a director; ``workers`` stands for the workers' handle."""

    def __init__(self, cfg: Config, workers: Any = None) -> None:
        self.engine = Engine(max_connections=16)
        self.status_providers: dict[str, Callable[[], Any]] = {}
        self.config_listeners: list[Callable[[Config], Awaitable[None]]] = []
        self._config = cfg
        self._workers = workers
        self.is_active = True  # the HA role: False on a backup

    @property
    def config(self) -> Config:
        return self._config

    @property
    def active(self) -> bool:
        return self.is_active

    def workers_handle(self) -> Any:
        return self._workers


@pytest.fixture(autouse=True)
def no_firewall(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's own netfilter tables must not decide these tests."""
    monkeypatch.setattr(fastpath_component, "netfilter_tables", lambda: [])


def _run(comp: FastPathComponent, host: Host) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        await comp.start()
        try:
            status: dict[str, Any] = host.status_providers["fastpath"]()
            return status
        finally:
            await comp.stop()

    return asyncio.run(run())


def test_auto_without_workers_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    host = Host(_config("auto"))
    with caplog.at_level(logging.WARNING, logger="pylvs.dataplane.fastpath"):
        status = _run(FastPathComponent(host), host)
    assert status["state"] == "unavailable" and "workers" in status["error"], status
    assert "every packet takes the TUN" in caplog.text and "workers >= 1" in caplog.text


def test_auto_names_a_refused_program_and_on_refuses_to_start(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(max_connections: int) -> FastPath:
        raise CoreError("the kernel refused the TC fast path: Operation not permitted")

    monkeypatch.setattr(FastPath, "load", staticmethod(refuse))
    host = Host(_config("auto"), workers=object())
    with caplog.at_level(logging.WARNING, logger="pylvs.dataplane.fastpath"):
        status = _run(FastPathComponent(host), host)
    assert "Operation not permitted" in status["error"] and not status["attached"]
    host = Host(_config("on"), workers=object())
    with pytest.raises(CoreError, match='fastpath = "on": the kernel refused'):
        asyncio.run(FastPathComponent(host).start())


def test_auto_stays_off_beside_a_netfilter_ruleset(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(max_connections: int) -> FastPath:
        raise AssertionError("loaded beside a firewall")

    monkeypatch.setattr(FastPath, "load", staticmethod(never))
    monkeypatch.setattr(fastpath_component, "netfilter_tables", lambda: ["inet filter"])
    host = Host(_config("auto"), workers=object())
    status = _run(FastPathComponent(host), host)
    assert "netfilter tables in the director's namespace (inet filter)" in status["error"]


def test_off_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(max_connections: int) -> FastPath:
        raise AssertionError("loaded although off")

    monkeypatch.setattr(FastPath, "load", staticmethod(never))
    host = Host(_config("off"), workers=object())
    status = _run(FastPathComponent(host), host)
    assert status == {"mode": "off", "attached": [], "offloading": False, "state": "off"}


def _counting_program(entries: int) -> tuple[Host, FastPathComponent, list[int]]:
    """A component whose program counts its folds and reports ``entries`` left in the map."""
    host = Host(_config("off"))
    comp = FastPathComponent(host)
    folds: list[int] = []

    class Prog:
        def collect(self) -> int:
            folds.append(1)
            return entries

    comp.program = Prog()  # type: ignore[assignment]
    return host, comp, folds


def test_a_stats_read_folds_first() -> None:
    host, comp, folds = _counting_program(0)
    host.engine.services()
    host.engine.stats()
    assert len(folds) == 1  # the second read came within READ_FOLD_AGE of the first
    comp.program = None


def test_a_stats_read_leaves_a_large_map_to_the_periodic_fold() -> None:
    host, comp, folds = _counting_program(READ_FOLD_MAX_ENTRIES + 1)
    comp.fold()  # the periodic fold finds a large map
    comp._last_fold -= 1.0  # as if it ran a second ago
    host.engine.services()
    host.engine.stats()
    assert len(folds) == 1  # the reads did not walk the map on the loop
    comp.program = None


def test_a_bad_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fastpath"):
        _config("maybe")


class FakeProgram:
    """Records what the component asks of a loaded program."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.bound = True
        self.links = {"eth0": 3, "eth1": 4}

    def collect(self) -> int:
        self.calls.append("collect")
        return 0

    def unbind(self) -> None:
        self.calls.append("unbind")
        self.bound = False

    def bind(self, engine: Engine, max_connections: int, workers: Any, *,
             after_packets: int = 0) -> None:
        self.calls.append(f"bind after={after_packets}")
        self.bound = True


def test_an_ha_backup_offloads_nothing_and_a_new_master_offloads_again() -> None:
    host = Host(_config("auto"), workers=object())
    comp = FastPathComponent(host)
    prog = FakeProgram()
    comp.program = prog  # type: ignore[assignment]
    host.is_active = False
    comp._follow_role()  # backup: fold what is left, empty the map, stop offering
    assert prog.calls == ["collect", "unbind"]
    comp._follow_role()
    assert prog.calls == ["collect", "unbind"]
    host.is_active = True
    comp._follow_role()  # master again
    assert prog.calls[-1] == "bind after=0" and prog.bound
    comp.program = None


def test_the_status_line() -> None:
    from pylvs.cli.status import render_status

    text = render_status({"fastpath": {"mode": "auto", "state": "attached",
                                       "attached": ["eth0", "eth1"], "entries": 6,
                                       "packets": 1234, "bytes": 5 << 20}})
    assert "fastpath auto: attached on eth0, eth1  connections 3  forwarded 1234 pkt" in text
    text = render_status({"fastpath": {"mode": "auto", "state": "unavailable",
                                       "attached": [], "error": "no workers"}})
    assert "fastpath auto: unavailable (no workers)" in text
