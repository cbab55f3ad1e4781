"""TOML -> model: precise errors, unknown keys, semantic checks and a dump that round-trips."""

from __future__ import annotations

import dataclasses
import re
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs import config, model
from pylvs.config import ConfigFileError
from pylvs.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pylvs.toml"

MINIMAL = """\
[director]
public_interface = "eth0"        # clients and VIPs
private_interface = "br0"        # real servers
dataplane = "tun"

[[virtual_server]]
address = "198.18.0.100:80"
protocol = "tcp"
scheduler = "rr"

  [[virtual_server.real_server]]
  address = "198.19.0.11:80"
  weight = 1

  [[virtual_server.real_server]]
  address = "198.19.0.12:80"
  weight = 1
"""


def _problems(text: str, source: str = "x.toml") -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        config.parse(text, source)
    assert isinstance(info.value, ConfigError)
    return list(info.value.problems)


def test_minimal_file_from_design_works_as_written() -> None:
    cfg = config.parse(MINIMAL, "min.toml")
    assert cfg.source == "min.toml"
    assert cfg.director.public_interface == "eth0"
    assert cfg.director.tun_name == "pylvs0" and cfg.director.offload is True
    (vs,) = cfg.virtual_servers
    assert vs.key == model.ServiceKey("tcp", "198.18.0.100", 80)
    assert vs.scheduler == "rr"
    assert [str(rs.address) for rs in vs.real_servers] == ["198.19.0.11:80", "198.19.0.12:80"]
    assert cfg.timeouts == model.TimeoutsConfig()


def test_example_file_parses_and_documents_every_key() -> None:
    cfg = config.load(EXAMPLE)
    assert len(cfg.virtual_servers) == 3
    v6 = cfg.virtual_servers[2]
    assert str(v6.key) == "TCP [2001:2::100]:80" and v6.netmask == 64
    assert [str(rs.address) for rs in v6.real_servers] == ["[2001:2:1::11]:80",
                                                          "[2001:2:1::12]:80"]
    udp = cfg.virtual_servers[1]
    assert udp.protocol == "udp" and udp.real_servers[0].address.port == 5353
    # Port left out of a real server's address: the VIP's port (ipvsadm -r without :port).
    assert str(cfg.virtual_servers[0].real_servers[2].address) == "198.19.0.13:80"
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^\s*#?\s*([a-z_0-9]+)\s*=", text, re.M))
    for cls in (model.DirectorConfig, model.TimeoutsConfig, model.DefenseConfig,
                model.ApiConfig, model.HaConfig,
                model.VirtualServerConfig, model.CheckConfig, model.LoadMonitorConfig,
                model.RealServerConfig):
        for f in dataclasses.fields(cls):
            if f.name in ("check", "load_monitor", "real_servers"):
                continue
            where = f"{cls.__name__}.{f.name}"
            assert f.name in documented, f"examples/pylvs.toml does not document {where}"


def test_error_names_file_key_path_and_expectation() -> None:
    text = MINIMAL.replace('address = "198.19.0.12:80"\n  weight = 1',
                           'address = "198.19.0.12:80"\n  weight = "heavy"')
    (problem,) = _problems(text, "/etc/pylvs.toml")
    assert problem.startswith("/etc/pylvs.toml: virtual_server[0].real_server[1].weight: ")
    assert "expected an integer" in problem and "'heavy'" in problem


def test_negative_weight_is_a_semantic_error_with_path() -> None:
    text = MINIMAL.replace("weight = 1\n\n  [[", "weight = 1\n\n  [[", 1).replace(
        'address = "198.19.0.12:80"\n  weight = 1', 'address = "198.19.0.12:80"\n  weight = -1')
    (problem,) = _problems(text)
    assert "virtual_server[0].real_server[1].weight" in problem and "0..65535" in problem


def test_unknown_key_is_an_error_with_suggestion() -> None:
    problems = _problems(MINIMAL.replace('scheduler = "rr"', 'scheduler = "rr"\nschedular = "rr"'))
    assert len(problems) == 1
    assert "virtual_server[0].schedular: unknown key" in problems[0]
    assert "did you mean 'scheduler'" in problems[0]
    assert _problems(MINIMAL + "\n[bogus]\nx = 1\n")[0].startswith("x.toml: bogus: unknown key")


def test_all_problems_reported_at_once() -> None:
    text = MINIMAL.replace('protocol = "tcp"', 'protocol = "sctp"').replace(
        'address = "198.19.0.11:80"', 'address = "198.19.0.300:80"')
    problems = _problems(text)
    assert len(problems) == 2
    assert any("virtual_server[0].protocol: expected one of 'tcp', 'udp'" in p for p in problems)
    assert any("virtual_server[0].real_server[0].address" in p for p in problems)


def test_missing_required_key() -> None:
    (problem,) = _problems(MINIMAL.replace('private_interface = "br0"', ""))
    assert "director.private_interface: required key is missing" in problem
    (problem,) = _problems("")
    assert "director: required key is missing" in problem


def test_toml_syntax_error_names_file() -> None:
    (problem,) = _problems("[director\n", "broken.toml")
    assert problem.startswith("broken.toml: TOML syntax error") and "line 1" in problem


def test_load_missing_file() -> None:
    with pytest.raises(ConfigFileError, match=r"/nonexistent/p\.toml: cannot read"):
        config.load("/nonexistent/p.toml")


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ('scheduler = "rr"', 'scheduler = "rrr"', r"virtual_server\[0\]\.scheduler: unknown "
         r"scheduler 'rrr' \(did you mean 'rr'\?\)"),
        ('scheduler = "rr"', 'scheduler = "rr"\nflags = ["sh-pork"]',
         r"flags\[0\]: unknown flag 'sh-pork'"),
        ('scheduler = "rr"', 'scheduler = "rr"\nnetmask = "255.0.255.0"', r"netmask: expected a "
         r"contiguous netmask"),
        ('scheduler = "rr"', 'scheduler = "mh"\nmh_table_size = 4094', r"mh_table_size"),
        ('scheduler = "rr"', 'scheduler = "rr"\npersistence = -5', r"persistence: expected 0\.\."),
        ('address = "198.19.0.12:80"', 'address = "198.19.0.11:80"',
         r"real_server\[1\]\.address: duplicate real server 198\.19\.0\.11:80"),
        ('dataplane = "tun"', 'dataplane = "tun"\nbatch_size = 0', r"director\.batch_size"),
        ('dataplane = "tun"', 'dataplane = "tun"\nworker_spin_us = 1001',
         r"director\.worker_spin_us: expected 0\.\.1000 microseconds"),
        ('dataplane = "tun"', 'dataplane = "tun"\nworker_nice = -21',
         r"director\.worker_nice: expected a nice value -20\.\.19, got -21"),
        ('private_interface = "br0"', 'private_interface = "eth0"', r"other than public"),
        ('private_interface = "br0"', 'private_interface = "a-name-much-too-long"',
         r"1\.\.15 characters"),
        ('dataplane = "tun"', 'dataplane = "tun"\nnat_router = "198.19.0.1"', r"prefix length"),
        ('dataplane = "tun"', 'dataplane = "tun"\nnat_router = "198.18.0.1/24"',
         r"virtual_server\[0\]\.address: expected a VIP outside the private network"),
        ('address = "198.18.0.100:80"', 'address = "198.18.0.100:0"', r"port 0 needs persist"),
        ('address = "198.18.0.100:80"', 'address = "198.18.0.100:65536"', r"port 0\.\.65535"),
        ('address = "198.19.0.11:80"', 'address = "198.19.0.11:0"', r"port 0 only on port-0"),
        ('weight = 1\n\n  [[', 'weight = 1\n  lower_threshold = 5\n\n  [[',
         r"real_server\[0\]\.lower_threshold: expected at most upper_threshold \(0\), got 5"),
        ('address = "198.18.0.100:80"', 'address = "198.18.0.100"', r"no port"),
        ('dataplane = "tun"', 'dataplane = "tun"\n[defense]\ndrop_entry = 4',
         r"defense\.drop_entry: expected 0 \(off\), 1 or 2 \(automatic\) or 3 \(always on\), "
         r"got 4"),
        ('dataplane = "tun"', 'dataplane = "tun"\nmax_connections = 100\n[defense]\n'
         'amemthresh = 101', r"defense\.amemthresh: expected 0\.\.100 free table slots"),
        ('dataplane = "tun"', 'dataplane = "tun"\n[defense]\nsecure_tcp = true',
         r"defense\.secure_tcp: expected an integer, got true"),
        ('dataplane = "tun"', 'dataplane = "tun"\n[defense]\nam_droprate = 0',
         r"defense\.am_droprate: expected 1\.\.1000000"),
    ],
)
def test_semantic_and_value_errors(old: str, new: str, expect: str) -> None:
    assert old in MINIMAL
    problems = _problems(MINIMAL.replace(old, new, 1))
    assert any(re.search(expect, p) for p in problems), problems


def test_duplicate_service() -> None:
    block = MINIMAL[MINIMAL.index("[[virtual_server]]"):]
    problems = _problems(MINIMAL + "\n" + block)
    assert any("virtual_server[1]: duplicate service tcp 198.18.0.100:80 (also "
               "virtual_server[0])" in p for p in problems)
    # The same VIP:port over UDP is a different service.
    config.parse(MINIMAL + "\n" + block.replace('"tcp"', '"udp"'))


def test_ha_requires_secret_and_peer() -> None:
    problems = _problems(MINIMAL + '\n[ha]\nenabled = true\npriority = 255\n')
    joined = "\n".join(problems)
    assert "ha.priority: expected 1..254" in joined
    assert "ha.secret_file: required" in joined
    assert "director.nat_router: required" in joined


def test_types_of_optional_and_tuple_fields() -> None:
    text = MINIMAL.replace('scheduler = "rr"', 'scheduler = "sh"\nflags = ["sh-port"]\n'
                           'sorry_server = "198.19.0.99:8080"\nslow_start = 3\n'
                           '[virtual_server.check]\ntype = "http"\nstatus = [200, 204]\n'
                           'interval = 1')
    vs = config.parse(text).virtual_servers[0]
    assert vs.flags == ("sh-port",)
    assert vs.sorry_server == model.Endpoint(IPv4Address("198.19.0.99"), 8080)
    assert vs.slow_start == 3.0 and isinstance(vs.slow_start, float)
    assert vs.check.status == (200, 204) and vs.check.interval == 1.0
    bad = _problems(text.replace("status = [200, 204]", 'status = [200, "204"]'))
    assert any("check.status[1]: expected an integer" in p for p in bad)
    bad = _problems(text.replace("slow_start = 3", "slow_start = true"))
    assert any("slow_start: expected a number, got true" in p for p in bad)


def test_validate_catches_configs_built_in_code() -> None:
    cfg = config.parse(MINIMAL)
    vs = dataclasses.replace(cfg.virtual_servers[0], scheduler="nope")
    bad = dataclasses.replace(cfg, virtual_servers=(vs,), source="api")
    with pytest.raises(ConfigFileError, match=r"^api: virtual_server\[0\]\.scheduler"):
        config.validate(bad)


def test_dump_round_trips_minimal_and_example() -> None:
    for cfg in (config.parse(MINIMAL, "a.toml"), config.load(EXAMPLE)):
        text = config.dump_toml(cfg)
        assert config.parse(text, cfg.source) == cfg


def test_dump_round_trips_non_defaults() -> None:
    cfg = config.parse(MINIMAL, "a.toml")
    vs = dataclasses.replace(
        cfg.virtual_servers[0], persistence=300, netmask=IPv4Address("255.255.255.0"),
        sorry_server=model.Endpoint(IPv4Address("198.19.0.99"), 80),
        check=model.CheckConfig(type="send_expect", send='HELO "x"\r\n\t\\', expect="250",
                                status=(200, 301)),
    )
    cfg = dataclasses.replace(
        cfg, virtual_servers=(vs,),
        api=model.ApiConfig(socket_mode=0o640, listen="127.0.0.1:9180", token_file="/t"),
        ha=model.HaConfig(enabled=True, peer_public=IPv4Address("198.18.0.3"), secret_file="/s",
                          dead_time=1.5),
        director=dataclasses.replace(cfg.director, nat_router="198.19.0.1/24", offload=False),
    )
    text = config.dump_toml(cfg)
    assert "socket_mode = 0o640" in text
    assert config.parse(text, "a.toml") == cfg


_names = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF,
                                        exclude_categories=["Cs"]), max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(0, 65535), min_size=1, max_size=5),
    scheduler=st.sampled_from([s for s in model.SCHEDULERS]),
    persistence=st.integers(0, 2678400),
    node_id=_names,
    interval=st.floats(0.01, 100, allow_nan=False),
)
def test_dump_round_trip_property(weights: list[int], scheduler: str, persistence: int,
                                  node_id: str, interval: float) -> None:
    servers = tuple(
        model.RealServerConfig(address=model.Endpoint(IPv4Address(f"198.19.0.{11 + i}"), 80 + i),
                               weight=w)
        for i, w in enumerate(weights)
    )
    vs = model.VirtualServerConfig(address=model.Endpoint(IPv4Address("198.18.0.100"), 80),
                                   scheduler=scheduler, persistence=persistence,
                                   real_servers=servers)
    cfg = model.Config(director=model.DirectorConfig(public_interface="eth0",
                                                     private_interface="br0"),
                       ha=model.HaConfig(node_id=node_id, interval=interval),
                       virtual_servers=(vs,), source="p.toml")
    config.validate(cfg)
    assert config.parse(config.dump_toml(cfg), "p.toml") == cfg


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pylvs.cli.daemon import check_main

    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    assert check_main(["-c", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: OK (1 virtual servers, 2 real servers)"
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("weight = 1", "weight = -2", 1))
    assert check_main(["-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: virtual_server[0].real_server[0].weight: expected an integer 0..65535" in err


def test_json_log_lines() -> None:
    import json
    import logging

    from pylvs.cli.daemon import JsonFormatter

    record = logging.LogRecord("pylvs.director", logging.WARNING, __file__, 1,
                               "server %s down: %s", ("198.19.0.11:80", 'said "no"'), None)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "warning" and doc["logger"] == "pylvs.director"
    assert doc["msg"] == 'server 198.19.0.11:80 down: said "no"'


def test_real_server_shape_follows_the_model() -> None:
    # config reads real servers through a copy of RealServerConfig without its address.
    shape = {f.name for f in dataclasses.fields(config._RealServerShape)}
    assert shape == {f.name for f in dataclasses.fields(model.RealServerConfig)} - {"address"}


def test_udp_service_without_probe_type_runs_unchecked() -> None:
    # A TCP connect can never succeed against a UDP port; an unnamed probe would keep every
    # server down forever.  Naming a type (TCP for DNS over both, say) is respected.
    udp = MINIMAL.replace('protocol = "tcp"', 'protocol = "udp"')
    assert config.parse(udp).virtual_servers[0].check.type == "none"
    named = udp.replace('scheduler = "rr"', 'scheduler = "rr"\n  check = { type = "tcp" }')
    assert config.parse(named).virtual_servers[0].check.type == "tcp"
    assert config.parse(MINIMAL).virtual_servers[0].check.type == "tcp"
    cfg = config.parse(udp)
    assert config.parse(config.dump_toml(cfg)) == dataclasses.replace(cfg, source="<string>")
