"""The TOML that pylvs.testbed.topology renders is a valid pylvs config describing the topology."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pylvs.config import parse
from pylvs.testbed.config import ServiceSpec, render_director_config

RS = ["198.19.0.11", "198.19.0.12", "198.19.0.13"]


def _render(**kwargs: object) -> str:
    base: dict[str, object] = dict(
        services=[ServiceSpec()], vip="198.18.0.100", real_servers=RS,
        public_interface="eth0", private_interface="eth1", nat_router=None,
        socket="/tmp/x/dir1.sock")
    base.update(kwargs)
    return render_director_config(**base)  # type: ignore[arg-type]


def test_default_service_covers_every_real_server() -> None:
    cfg = parse(_render())
    assert cfg.director.private_interface == "eth1" and cfg.director.nat_router is None
    assert cfg.api.socket == "/tmp/x/dir1.sock"
    (vs,) = cfg.virtual_servers
    assert (str(vs.address), vs.protocol, vs.scheduler, vs.check.type) == (
        "198.18.0.100:80", "tcp", "rr", "none")
    assert [str(r.address) for r in vs.real_servers] == [f"{a}:80" for a in RS]


def test_services_weights_port_translation_ha_and_director_options() -> None:
    text = _render(
        services=[ServiceSpec(port=8080, real_port=80, scheduler="wrr", servers=(0, 2),
                              weights=(3, 1)),
                  ServiceSpec(port=53, protocol="udp", scheduler="sh", persistence=60)],
        nat_router="198.19.0.1/24", ha_node="dir2", ha_priority=90,
        peer_public="198.18.0.1", peer_private="198.19.0.2", secret_file="/tmp/x/secret",
        director_options={"offload": False, "batch_size": 32})
    cfg = parse(text)
    assert cfg.director.offload is False and cfg.director.batch_size == 32
    assert cfg.director.nat_router == "198.19.0.1/24"
    assert cfg.ha.enabled and cfg.ha.priority == 90
    assert cfg.ha.peer_public == IPv4Address("198.18.0.1")
    web, dns = cfg.virtual_servers
    assert [(str(r.address), r.weight) for r in web.real_servers] == [
        ("198.19.0.11:80", 3), ("198.19.0.13:80", 1)]
    assert dns.protocol == "udp" and dns.persistence == 60 and len(dns.real_servers) == 3


def test_weights_must_pair_with_servers() -> None:
    with pytest.raises(ValueError, match="pair"):
        _render(services=[ServiceSpec(servers=(0,), weights=(1, 2))])
