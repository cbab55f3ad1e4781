"""What ``pylvs check`` refuses and warns about, and what a reload reports it removes."""

from __future__ import annotations

import dataclasses
import logging
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pylvs import config, model
from pylvs.cli import daemon
from pylvs.config import ConfigFileError

HEAD = """\
[director]
public_interface = "eth0"
private_interface = "br0"
"""


def _svc(body: str, servers: int = 1) -> str:
    text = f'[[virtual_server]]\naddress = "198.18.0.100:80"\n{body}\n'
    for i in range(servers):
        text += f'[[virtual_server.real_server]]\naddress = "198.19.{i // 250}.{i % 250 + 1}:80"\n'
    return text


def test_mh_table_size_above_what_the_scheduler_takes_is_refused() -> None:
    with pytest.raises(ConfigFileError, match=r"mh_table_size: expected 0 \(4093\) or a prime "
                       r"up to 131071, got 262139"):
        config.parse(HEAD + _svc('scheduler = "mh"\nmh_table_size = 262139'))
    config.parse(HEAD + _svc('scheduler = "mh"\nmh_table_size = 131071'))  # the largest


def test_mh_table_needs_a_slot_per_server() -> None:
    with pytest.raises(ConfigFileError, match=r"at least one slot per real server \(5\)"):
        config.parse(HEAD + _svc('scheduler = "mh"\nmh_table_size = 3', servers=5))


def test_model_limit_is_the_c_schedulers() -> None:
    from pylvs import _core

    assert model.MH_MAX_TABLE_SIZE == _core.lib.LVS_MH_MAX_SIZE


def test_engine_refuses_what_check_refuses() -> None:
    from pylvs.engine import Engine
    from pylvs.errors import ConfigError

    eng = Engine()
    with pytest.raises(ConfigError):
        svc = eng.add_service("tcp", "198.18.0.100", 80, scheduler="mh", mh_table_size=262139)
        eng.add_server(svc, "198.19.0.1", 80)


def test_real_server_typo_suggests_address_and_lists_it() -> None:
    text = HEAD + '[[virtual_server]]\naddress = "198.18.0.100:80"\n' \
        '[[virtual_server.real_server]]\nadress = "198.19.0.11:80"\n'
    with pytest.raises(ConfigFileError) as info:
        config.parse(text)
    line = next(p for p in info.value.problems if ".adress" in p)
    assert "did you mean 'address'?" in line
    assert "valid keys: address, lower_threshold, upper_threshold, weight" in line


def test_warnings_no_services_and_ignored_flags() -> None:
    empty = config.parse(HEAD)
    assert config.warnings(empty) == [
        "<string>: virtual_server: none defined; the director will forward nothing until "
        "services are added (config file, pylvs ctl or the API)"]
    cfg = config.parse(HEAD + _svc('scheduler = "rr"\nflags = ["sh-port", "flag-3"]'))
    assert config.warnings(cfg) == [
        "<string>: virtual_server[0].flags: 'sh-port' is ignored by scheduler 'rr' "
        "(only sh reads it)",
        "<string>: virtual_server[0].flags: 'flag-3' is ignored by scheduler 'rr' "
        "(no built-in scheduler reads it)",
    ]
    assert config.warnings(config.parse(HEAD + _svc('scheduler = "sh"\nflags = ["sh-port"]'))) \
        == []


def test_check_command_prints_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.toml"
    path.write_text(HEAD)
    assert daemon.check_main(["-c", str(path)]) == 0
    captured = capsys.readouterr()
    assert "OK (0 virtual servers, 0 real servers)" in captured.out
    assert f"warning: {path}: virtual_server: none defined" in captured.err


def test_removals_name_what_only_existed_at_run_time() -> None:
    file_cfg = config.parse(HEAD + _svc('scheduler = "rr"', servers=1))
    vs = file_cfg.virtual_servers[0]
    extra = model.RealServerConfig(address=model.Endpoint(IPv4Address("198.19.9.9"), 80))
    added_svc = dataclasses.replace(vs, address=model.Endpoint(vs.address.address, 81),
                                    real_servers=())
    running = dataclasses.replace(file_cfg, virtual_servers=(
        dataclasses.replace(vs, real_servers=(*vs.real_servers, extra)), added_svc))
    # The file was edited: its only server is gone too.
    new = dataclasses.replace(file_cfg, virtual_servers=(
        dataclasses.replace(vs, real_servers=()),))
    assert config.removals(running, new, baseline=file_cfg) == [
        "real server 198.19.0.1:80 of tcp 198.18.0.100:80",
        "real server 198.19.9.9:80 of tcp 198.18.0.100:80 (added at run time)",
        "service tcp 198.18.0.100:81 and its 0 real server(s) (added at run time)",
    ]


def test_reload_logs_runtime_removals_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pylvs"):
        daemon._log_removals("/etc/pylvs.toml", [
            "real server 198.19.0.1:80 of tcp 198.18.0.100:80",
            "real server 198.19.9.9:80 of tcp 198.18.0.100:80 (added at run time)"])
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "does not have 1 change(s) made at run time" in warning[0].getMessage()
    assert "pylvs ctl --save-config" in warning[0].getMessage()
    assert any("removed real server 198.19.0.1:80" in r.getMessage() for r in caplog.records)
