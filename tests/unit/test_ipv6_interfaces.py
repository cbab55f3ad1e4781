"""IPv6 at the director's interfaces: config, API codec, ctl parsing and ipvsadm's layouts.

The layouts are checked against text written from ipvsadm's printf formats for ``AF_INET6``
(``addrport_to_anyname`` brackets, no 33/28 truncation, ``mask 64``), over a fake listing.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address, IPv6Interface
from typing import Any

import pytest

from pylvs import config, model
from pylvs.api import codec
from pylvs.cli import ctl, layouts
from pylvs.errors import ConfigError
from pylvs.model import Endpoint

BASE = """
[director]
public_interface = "eth0"
private_interface = "eth1"
{director}

[[virtual_server]]
address = "{vip}"
{vs}

  [[virtual_server.real_server]]
  address = "{rip}"
"""


def _parse(vip: str = "[2001:2::100]:80", rip: str = "[2001:2:1::11]:8080", *,
           director: str = "", vs: str = "") -> model.Config:
    return config.parse(BASE.format(vip=vip, rip=rip, director=director, vs=vs), "t.toml")


def _problems(**kw: str) -> str:
    with pytest.raises(config.ConfigFileError) as err:
        _parse(**kw)
    return "\n".join(err.value.problems)


# ---- config -----------------------------------------------------------------------------------


def test_config_accepts_bracketed_ipv6_service_and_server() -> None:
    cfg = _parse()
    vs = cfg.virtual_servers[0]
    assert vs.address == Endpoint(IPv6Address("2001:2::100"), 80)
    assert str(vs.key) == "TCP [2001:2::100]:80"
    assert str(vs.real_servers[0].address) == "[2001:2:1::11]:8080"
    assert vs.prefix_length == 128


def test_config_server_without_port_takes_the_vip_port() -> None:
    for rip in ("[2001:2:1::11]", "2001:2:1::11"):
        assert str(_parse(rip=rip).virtual_servers[0].real_servers[0].address) == \
            "[2001:2:1::11]:80"


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"vip": "[2001:2::100:80"}, "virtual_server[0].address: expected"),
        ({"vip": "[2001:2::zz]:80"}, "virtual_server[0].address: expected"),
        ({"vip": "[2001:2::100]:99999"}, "virtual_server[0].address: expected a port"),
        ({"vip": "2001:2::100"}, "virtual_server[0].address: expected"),  # no port
        ({"rip": "198.19.0.11:80"},
         "virtual_server[0].real_server[0].address: expected an IPv6 address"),
        ({"vs": "persistence = 60\nnetmask = 129"},
         "virtual_server[0].netmask: expected an IPv6 prefix length 1..128"),
        ({"vs": 'persistence = 60\nnetmask = "255.255.255.0"'},
         "virtual_server[0].netmask: expected a prefix length 1..128 for an IPv6 service"),
        ({"vip": "198.18.0.100:80", "rip": "198.19.0.11", "vs": "netmask = 24"},
         "virtual_server[0].netmask: expected a netmask like 255.255.255.0"),
        ({"director": 'nat_router = "2001:2:1::1/64"\nnat_router6 = "2001:2:1::2/64"'},
         "director.nat_router6: expected one gateway per address family"),
        ({"director": 'nat_router6 = "198.19.0.1/24"'},
         "director.nat_router6: expected an IPv6 address/len"),
        ({"director": 'nat_router6 = "2001:2:1::1"'}, "director.nat_router6: expected a prefix"),
        ({"director": 'nat_router6 = "2001:2::1/64"'},
         "virtual_server[0].address: expected a VIP outside the private network 2001:2::/64"),
    ],
)
def test_config_errors_name_the_key(kw: dict[str, str], expected: str) -> None:
    assert expected in _problems(**kw)


def test_config_sorry_server_of_the_other_family_is_refused() -> None:
    assert "virtual_server[0].sorry_server: expected an IPv6 address" in _problems(
        vs='sorry_server = "198.19.0.99:80"')


def test_config_dual_stack_gateways_and_ipv6_ha_peers_round_trip() -> None:
    cfg = _parse(vs="persistence = 300\nnetmask = 64",
                 director='nat_router = "198.19.0.1/24"\nnat_router6 = "2001:2:1::1/64"')
    assert [str(n) for n in cfg.director.nat_routers] == ["198.19.0.1/24", "2001:2:1::1/64"]
    assert cfg.virtual_servers[0].prefix_length == 64
    ha = dataclasses.replace(cfg.ha, peer_public=IPv6Address("2001:2::3"),
                             peer_private=IPv4Address("198.19.0.3"))
    cfg = dataclasses.replace(cfg, ha=ha)
    again = config.parse(config.dump_toml(cfg), cfg.source)
    assert again == cfg
    text = config.dump_toml(cfg)
    assert 'peer_public = "2001:2::3"' in text and "netmask = 64" in text


FWMARK6 = """
[director]
public_interface = "eth0"
private_interface = "eth1"

[[virtual_server]]
fwmark = 1
{address}
persistence = 300
netmask = 64

  [[virtual_server.real_server]]
  address = "{rip}"
"""


@pytest.mark.parametrize("address", ['address = "[2001:2::100]"', 'address = "2001:2::100"',
                                     'address = "[2001:2::100]:0"'])
def test_config_ipv6_fwmark_service_with_its_vip(address: str) -> None:
    cfg = config.parse(FWMARK6.format(address=address, rip="[2001:2:1::11]:80"), "t.toml")
    vs = cfg.virtual_servers[0]
    assert vs.address == Endpoint(IPv6Address("2001:2::100"), 0)
    assert vs.key == model.ServiceKey.for_fwmark(1, 6) and str(vs.key) == "FWM 1 IPv6"
    assert codec.service_id(vs.key) == "fwm6/1" and vs.prefix_length == 64


def test_config_ipv6_fwmark_service_without_vip_takes_its_servers_family() -> None:
    # keepalived's virtual_server fwmark: the family of the real servers
    cfg = config.parse(FWMARK6.format(address="", rip="2001:2:1::11"), "t.toml")
    vs = cfg.virtual_servers[0]
    assert vs.address == Endpoint(IPv6Address(0), 0) and vs.key.family == 6
    text = FWMARK6.format(address="", rip="198.19.0.11").replace("netmask = 64\n", "")
    assert config.parse(text, "t.toml").virtual_servers[0].key == model.ServiceKey.for_fwmark(1)
    with pytest.raises(config.ConfigFileError) as err:
        config.parse(FWMARK6.format(address='address = "[2001:2::100]"', rip="198.19.0.11:80"),
                     "t.toml")
    assert "virtual_server[0].real_server[0].address: expected an IPv6 address" in \
        "\n".join(err.value.problems)


def test_codec_names_the_ipv6_service_of_a_mark() -> None:
    assert codec.service_key("fwm6", "1", "x") == model.ServiceKey.for_fwmark(1, 6)
    assert codec.service_key("fwm", "1", "x") == model.ServiceKey.for_fwmark(1)
    with pytest.raises(ConfigError, match="fwm6"):
        codec.service_key("fwm7", "1", "x")


def test_config_ha_peer_must_be_an_address() -> None:
    text = BASE.format(vip="[2001:2::100]:80", rip="[2001:2:1::11]", director="", vs="")
    text += '\n[ha]\npeer_public = "lvs2.example"\n'
    with pytest.raises(config.ConfigFileError) as err:
        config.parse(text, "t.toml")
    assert "ha.peer_public: expected an IPv4 or IPv6 address" in str(err.value)


def test_endpoints_sort_ipv4_first_then_by_address() -> None:
    eps = [Endpoint.parse("[2001:2::2]:80"), Endpoint.parse("198.19.0.12:80"),
           Endpoint.parse("[2001:2::1]:90"), Endpoint.parse("198.19.0.11:81")]
    assert [str(e) for e in sorted(eps)] == [
        "198.19.0.11:81", "198.19.0.12:80", "[2001:2::1]:90", "[2001:2::2]:80"]


# ---- API codec --------------------------------------------------------------------------------


def test_codec_decodes_ipv6_service_with_prefix_length() -> None:
    vs = codec.decode_service({"address": "[2001:2::100]:443", "persistence": 60, "netmask": 56,
                               "real_server": [{"address": "[2001:2:1::11]:443"}]})
    assert vs.netmask == 56 and str(vs.real_servers[0].address) == "[2001:2:1::11]:443"
    assert codec.encode(vs)["address"] == "[2001:2::100]:443"
    assert codec.service_id(vs.key) == "tcp/[2001:2::100]:443"
    with pytest.raises(ConfigError, match=r"real_server\[0\]\.address: expected"):
        codec.decode_service({"address": "[2001:2::100]:443",
                              "real_server": [{"address": "[2001:2:1::zz]:80"}]})


# ---- ctl parsing ------------------------------------------------------------------------------


def test_ctl_parses_ipv6_like_ipvsadm() -> None:
    req = ctl.parse_args(["-A", "-t", "[2001:2::100]:80", "-s", "sh", "-p", "300", "-M", "64"])
    assert req.service == Endpoint(IPv6Address("2001:2::100"), 80)
    assert req.netmask == 64
    body = ctl.to_operation(req)["service"]
    assert body["address"] == "[2001:2::100]:80" and body["netmask"] == 64
    # -M before -t: the family is known once every option is read
    assert ctl.parse_args(["-A", "-M", "48", "-p", "-t", "[2001:2::100]:80"]).netmask == 48
    req = ctl.parse_args(["-a", "-t", "[2001:2::100]:80", "-r", "2001:2:1::11", "-w", "3"])
    assert req.server == Endpoint(IPv6Address("2001:2:1::11"), 80)  # bare: the VIP's port
    req = ctl.parse_args(["-a", "-t", "[2001:2::100]:80", "-r", "[2001:2:1::11]:8080", "-m"])
    assert str(req.server) == "[2001:2:1::11]:8080"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-A", "-t", "[2001:2::100]"], "illegal virtual server address[:port] specified"),
        (["-A", "-t", "[2001:2::100]x80"], "illegal virtual server address[:port] specified"),
        (["-A", "-t", "[2001:2::zz]:80"], "illegal virtual server address[:port] specified"),
        (["-A", "-t", "[2001:2::100]:80", "-p", "-M", "129"], "illegal ipv6 netmask specified"),
        (["-A", "-t", "[2001:2::100]:80", "-p", "-M", "255.255.255.0"],
         "illegal ipv6 netmask specified"),
        (["-a", "-t", "[2001:2::100]:80", "-r", "[2001:2:1::11]"],
         "illegal real server address[:port] specified"),
        (["-A", "-t", "[2001:2::100]:80", "-6"], "-6 used before -f"),
        (["-A", "-6", "-f", "1"], "-6 used before -f"),
        (["-A", "-f", "1", "-6", "-p", "-M", "129"], "illegal ipv6 netmask specified"),
    ],
)
def test_ctl_refuses_bad_ipv6_as_ipvsadm(argv: list[str], message: str) -> None:
    with pytest.raises(ctl.CtlError) as err:
        ctl.parse_args(argv)
    assert str(err.value).startswith(message)


# ---- layouts ----------------------------------------------------------------------------------


def _svc(address: str, servers: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    zero = dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), 0)
    base: dict[str, Any] = {"protocol": "tcp", "address": address, "scheduler": "rr",
                            "persistence": 0, "netmask": "255.255.255.255", "flags": [],
                            "stats": zero, "rates": {}, "real_servers": servers}
    base.update(kw)
    return base


def _rs(address: str, weight: int = 1, **kw: Any) -> dict[str, Any]:
    zero = dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), 0)
    base: dict[str, Any] = {"address": address, "weight": weight, "effective_weight": weight,
                            "active_conns": 0, "inactive_conns": 0, "stats": zero}
    base.update(kw)
    return base


LISTING = [
    _svc("[2001:2::100]:80", [_rs("[2001:2:1::12]:80"), _rs("[2001:2:1::11]:80", 2)],
         persistence=300, netmask=64, scheduler="sh"),
    _svc("[2001:2::100]:53", [_rs("[2001:2:1::11]:5353")], protocol="udp"),
    _svc("198.18.0.100:80", [_rs("198.19.0.11:80")]),
    _svc("[2001:db8:ffff:ffff:ffff:ffff:ffff:100]:8080",
         [_rs("[2001:db8:ffff:ffff:ffff:ffff:ffff:11]:8080")]),
]


def _dest(name: str, weight: int) -> str:
    # ipvsadm: printf("  -> %-28s %-7s %-6d %-10u %-10u\n", dname, "Masq", weight, 0, 0)
    return f"  -> {name:<28} {'Masq':<7} {weight:<6d} {0:<10d} {0:<10d}"


def test_listing_numeric_orders_family_protocol_address_port() -> None:
    out = layouts.listing(LISTING, layouts.Format(numeric=True))
    assert out.splitlines() == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "TCP  198.18.0.100:80 rr",
        _dest("198.19.0.11:80", 1),
        "TCP  [2001:2::100]:80 sh persistent 300 mask 64",
        _dest("[2001:2:1::11]:80", 2),
        _dest("[2001:2:1::12]:80", 1),
        "TCP  [2001:db8:ffff:ffff:ffff:ffff:ffff:100]:8080 rr",
        _dest("[2001:db8:ffff:ffff:ffff:ffff:ffff:11]:8080", 1),
        "UDP  [2001:2::100]:53 rr",
        _dest("[2001:2:1::11]:5353", 1),
    ]
    assert len("  -> [2001:db8:ffff:ffff:ffff:ffff:ffff:11]:8080") > 4 + 28  # not cut


def test_listing_stats_does_not_truncate_ipv6_names() -> None:
    out = layouts.listing(LISTING[3:], layouts.Format(numeric=True, stats=True), single=True)
    lines = out.splitlines()
    assert lines[2] == "TCP  [2001:db8:ffff:ffff:ffff:ffff:ffff:100]:8080" + "        0" * 5
    assert lines[3] == "  -> [2001:db8:ffff:ffff:ffff:ffff:ffff:11]:8080" + "        0" * 5


def test_save_writes_prefix_lengths_and_brackets() -> None:
    out = layouts.rules(LISTING, numeric=True)
    assert out.splitlines() == [
        "-A -t 198.18.0.100:80 -s rr",
        "-a -t 198.18.0.100:80 -r 198.19.0.11:80 -m -w 1",
        "-A -t [2001:2::100]:80 -s sh -p 300 -M 64",
        "-a -t [2001:2::100]:80 -r [2001:2:1::11]:80 -m -w 2",
        "-a -t [2001:2::100]:80 -r [2001:2:1::12]:80 -m -w 1",
        "-A -t [2001:db8:ffff:ffff:ffff:ffff:ffff:100]:8080 -s rr",
        "-a -t [2001:db8:ffff:ffff:ffff:ffff:ffff:100]:8080 -r "
        "[2001:db8:ffff:ffff:ffff:ffff:ffff:11]:8080 -m -w 1",
        "-A -u [2001:2::100]:53 -s rr",
        "-a -u [2001:2::100]:53 -r [2001:2:1::11]:5353 -m -w 1",
    ]
    # what -S writes, -R reads back
    for line in out.splitlines():
        ctl.to_operation(ctl.parse_args(line.split()))


def test_save_leaves_out_the_host_prefix() -> None:
    svc = _svc("[2001:2::100]:80", [], persistence=60, netmask=128)
    assert layouts.rules([svc], numeric=True) == "-A -t [2001:2::100]:80 -s rr -p 60\n"


def test_connections_print_bracketed_ipv6() -> None:
    conn = {"protocol": "tcp", "expires": 65, "state": "ESTABLISHED",
            "client": "[2001:2::2]:40000", "virtual": "[2001:2::100]:80",
            "server": "[2001:2:1::11]:80"}
    out = layouts.connections([conn], numeric=True).splitlines()
    assert out[2] == ("TCP 01:05  ESTABLISHED [2001:2::2]:40000  [2001:2::100]:80   "
                      "[2001:2:1::11]:80")


def test_names_keep_brackets_when_resolving(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layouts, "_host", lambda address: "web6" if ":" in address else address)
    monkeypatch.setattr(layouts, "_port", lambda port, proto: "http" if port == 80 else str(port))
    out = layouts.listing(LISTING[:1], layouts.Format(), single=True).splitlines()
    assert out[2] == "TCP  [web6]:http sh persistent 300 mask 64"


def test_nat_router_interfaces_parse_per_family() -> None:
    d = model.DirectorConfig(public_interface="eth0", private_interface="eth1",
                             nat_router="2001:2:1::1/64")
    assert d.nat_routers == (IPv6Interface("2001:2:1::1/64"),)


def test_metrics_label_the_two_services_of_a_mark_apart() -> None:
    from pylvs.api.metrics import _service_labels

    v4 = _service_labels({"fwmark": 80, "address": "0.0.0.0:0", "protocol": "tcp"})
    v6 = _service_labels({"fwmark": 80, "address": "[2001:2::100]:0", "protocol": "tcp"})
    # node_exporter's reading of /proc/net/ip_vs: proto FWM, the mark in 8 hex digits
    assert v4 == {"local_address": "0.0.0.0", "local_port": "0", "proto": "FWM",
                  "local_mark": "00000050"}
    assert v6 == {**v4, "local_address": "2001:2::100"}
