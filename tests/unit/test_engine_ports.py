"""A service on a port list or range (``ports = [80, 443]``, ``"10000-10100"``): a port-0
service limited to those ports, one scheduler and one persistence across them, no nftables."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP

from pylvs import config
from pylvs.engine import Engine, Verdict
from pylvs.errors import ConfigError
from tests.support.packets import VIP, build, tcp

CLIENT = "198.18.0.1"


def _engine(persistence: int) -> Engine:
    eng = Engine(max_connections=1024)
    svc = eng.add_service("tcp", VIP, 0, scheduler="rr", persistence=persistence,
                          ports=((80, 80), (443, 443), (10000, 10100)))
    eng.add_server(svc, "198.19.0.11", 0)
    eng.add_server(svc, "198.19.0.12", 0)
    return eng


def test_listed_ports_are_the_service_others_are_not() -> None:
    eng = _engine(persistence=0)
    for i, port in enumerate((80, 443, 10000, 10050, 10100)):
        out = eng.process(build(tcp(CLIENT, 40000 + i, VIP, port)), 1.0)
        assert out is not None and IP(out)[TCP].dport == port
    for i, port in enumerate((81, 9999, 10101, 22)):
        v, _ = eng.process_detailed(build(tcp(CLIENT, 41000 + i, VIP, port)), 1.0)
        assert v == Verdict.DROP
    assert eng.stats().drops["no_service"] == 4


def test_without_persistence_each_connection_is_scheduled() -> None:
    eng = _engine(persistence=0)
    dests = {IP(o).dst for i in range(4)
             if (o := eng.process(build(tcp(CLIENT, 40000 + i, VIP, 80)), 1.0)) is not None}
    assert dests == {"198.19.0.11", "198.19.0.12"}


def test_persistence_spans_the_ports() -> None:
    eng = _engine(persistence=300)
    dests = {IP(o).dst for i, port in enumerate((80, 443, 10007, 80))
             if (o := eng.process(build(tcp(CLIENT, 40000 + i, VIP, port)), 1.0)) is not None}
    assert len(dests) == 1
    assert sum(c.template for c in eng.connections()) == 1


def test_edit_keeps_or_replaces_the_ports() -> None:
    eng = _engine(persistence=0)
    svc = eng.services()[0].key
    eng.edit_service(svc, scheduler="wlc")
    assert eng.service_ports(svc) == ((80, 80), (443, 443), (10000, 10100))
    eng.edit_service(svc, ports=((8080, 8080),))
    v, _ = eng.process_detailed(build(tcp(CLIENT, 40000, VIP, 80)), 1.0)
    assert v == Verdict.DROP
    assert eng.process(build(tcp(CLIENT, 40001, VIP, 8080)), 1.0) is not None


def test_engine_refuses_bad_ranges() -> None:
    eng = Engine(max_connections=16)
    with pytest.raises(ConfigError):
        eng.add_service("tcp", VIP, 80, ports=((80, 80),))
    with pytest.raises(ConfigError):
        eng.add_service("tcp", VIP, 0, ports=((90, 80),))


BASE = """
[director]
public_interface = "eth0"
private_interface = "eth1"

[[virtual_server]]
address = "198.18.0.100"
scheduler = "rr"
"""


@pytest.mark.parametrize("value, expect", [
    ("[80, 443]", ("80", "443")),
    ('"10000-10100"', ("10000-10100",)),
    ('"80,443, 8000-8010"', ("80", "443", "8000-8010")),
    ('[80, "8000-8010"]', ("80", "8000-8010")),
    ("8080", ("8080",)),
])
def test_config_spellings(value: str, expect: tuple[str, ...]) -> None:
    cfg = config.parse(BASE + f"ports = {value}\n")
    vs = cfg.virtual_servers[0]
    assert vs.ports == expect and vs.address.port == 0
    assert config.parse(config.dump_toml(cfg)).virtual_servers[0].ports == expect


@pytest.mark.parametrize("extra, expect", [
    ('ports = "100-90"', r"ports: '100-90' is not a port"),
    ('ports = "http"', r"ports: 'http' is not a port or a range"),
    ('ports = [80]\nfwmark = 3', r"either fwmark or ports"),
    ('ports = [80]\n[[virtual_server.real_server]]\naddress = "198.19.0.11:80"',
     r"real servers without a port"),
])
def test_config_errors(extra: str, expect: str) -> None:
    with pytest.raises(ConfigError, match=expect):
        config.parse(BASE + extra + "\n")
