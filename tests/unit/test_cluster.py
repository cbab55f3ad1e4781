"""The cluster's pure parts: [cluster] config, BIRD config text, control-socket parsing, views."""

from __future__ import annotations

import asyncio
import os
import tempfile
from ipaddress import IPv4Address

import pytest

from pylvs import config, model
from pylvs.api.metrics import MetricFamily, _cluster
from pylvs.cli.status import render_status
from pylvs.cluster.birdconf import director_config, real_server_config, vip_protocol
from pylvs.cluster.birdctl import BirdControl, BirdError, parse_bfd_sessions, parse_protocols
from pylvs.errors import ConfigError

BASE = """
[director]
public_interface = "eth0"
private_interface = "eth1"

[cluster]
mode = "active-active"
asn = 65010
{extra}

[[cluster.router]]
address = "198.18.0.254"
asn = 65000

[[virtual_server]]
address = "198.18.2.100:80"
scheduler = "mh"

[[virtual_server.real_server]]
address = "198.19.0.11"
"""


def test_cluster_config_round_trips_through_toml() -> None:
    cfg = config.parse(BASE.format(extra="drain_time = 2.5\nbfd_interval = 0.05"), "t.toml")
    assert cfg.cluster.mode == "active-active"
    assert cfg.cluster.routers[0].address == IPv4Address("198.18.0.254")
    assert cfg.cluster.drain_time == 2.5
    again = config.parse(config.dump_toml(cfg), "t.toml")
    assert again.cluster == cfg.cluster


def test_cluster_members_round_trip_and_need_a_secret() -> None:
    extra = 'members = ["198.19.0.2", "198.19.0.3"]\nsecret_file = "/etc/pylvs/cluster.key"\n' \
        'node_id = "d1"\nsync = false'
    cfg = config.parse(BASE.format(extra=extra), "t.toml")
    assert cfg.cluster.members == (IPv4Address("198.19.0.2"), IPv4Address("198.19.0.3"))
    assert config.parse(config.dump_toml(cfg), "t.toml").cluster == cfg.cluster
    with pytest.raises(ConfigError, match=r"cluster\.secret_file: required"):
        config.parse(BASE.format(extra='members = ["198.19.0.2"]'), "t.toml")
    with pytest.raises(ConfigError, match=r"cluster\.members: expected each address once"):
        config.parse(BASE.format(extra='members = ["198.19.0.2", "198.19.0.2"]\n'
                                       'secret_file = "/k"'), "t.toml")


@pytest.mark.parametrize(("extra", "message"), [
    ("hold_time = 2", "cluster.hold_time"),
    ("bfd_multiplier = 0", "cluster.bfd_multiplier"),
    ("drain_time = -1", "cluster.drain_time"),
    ("asn = 0", "cluster.asn"),
    ("sync_id = 256", "cluster.sync_id"),
    ("hello_interval = 0", "cluster.hello_interval"),
    ("sync_port = 0", "cluster.sync_port"),
])
def test_cluster_config_errors_name_the_key(extra: str, message: str) -> None:
    text = BASE.format(extra="").replace("asn = 65010\n", "") + ""
    text = text.replace('mode = "active-active"', f'mode = "active-active"\n{extra}')
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config.parse(text, "t.toml")


def test_active_active_needs_a_router_and_excludes_ha() -> None:
    no_router = BASE.format(extra="").replace(
        '[[cluster.router]]\naddress = "198.18.0.254"\nasn = 65000\n', "")
    with pytest.raises(ConfigError, match="at least one"):
        config.parse(no_router, "t.toml")
    with_ha = BASE.format(extra="") + '\n[ha]\nenabled = true\nsecret_file = "/x"\n' \
        'peer_public = "198.18.0.3"\n'
    with_ha = with_ha.replace("[director]\n", '[director]\nnat_router = "198.19.0.1/24"\n')
    with pytest.raises(ConfigError, match="exclude each other"):
        config.parse(with_ha, "t.toml")


def test_director_bird_config_has_one_protocol_per_vip_and_bfd() -> None:
    cfg = config.parse(BASE.format(extra='router_id = "198.18.0.1"'), "t.toml").cluster
    vips = [IPv4Address("198.18.2.100"), IPv4Address("198.18.2.101")]
    text = director_config(cfg, vips, announced=[vips[1]],
                           real_servers=[IPv4Address("198.19.0.11")])
    assert "router id 198.18.0.1;" in text
    assert "protocol static vip_198_18_2_100 { disabled; ipv4; route 198.18.2.100/32" in text
    assert "protocol static vip_198_18_2_101 { ipv4; route 198.18.2.101/32" in text
    assert "neighbor 198.18.0.254 port 179 as 65000;" in text
    assert "local as 65010;" in text and "bfd on;" in text
    assert "min rx interval 100 ms" in text and "multiplier 3" in text
    assert "neighbor 198.19.0.11;" in text
    assert "error wait time 1, 5;" in text
    assert vip_protocol("198.18.2.100") == "vip_198_18_2_100"


def test_real_server_config_is_one_multipath_route_watched_by_bfd() -> None:
    text = real_server_config([IPv4Address("198.19.0.2"), IPv4Address("198.19.0.3")],
                              router_id=IPv4Address("198.19.0.11"))
    assert "route 0.0.0.0/0 via 198.19.0.2 bfd on via 198.19.0.3 bfd on;" in text
    assert "merge paths on" in text


PROTOCOLS = """Name       Proto      Table      State  Since         Info
device1    Device     ---        up     22:53:56.958

vip_198_18_2_100 Static     master4    up     22:53:59.998
  Channel ipv4
    State:          UP
router1    BGP        ---        start  22:54:07.257  Active        Received: Bad peer AS
  BGP state:          Active
    Neighbor address: 198.18.0.254
    Neighbor AS:      65000
    Local AS:         65010
    Last error:       Received: Bad peer AS
  Channel ipv4
    State:          DOWN
""".splitlines()


def test_parse_show_protocols_all() -> None:
    protos = {p.name: p for p in parse_protocols(PROTOCOLS)}
    assert set(protos) == {"device1", "vip_198_18_2_100", "router1"}
    r = protos["router1"]
    assert (r.proto, r.state, r.bgp_state) == ("BGP", "start", "Active")
    assert r.last_error == "Received: Bad peer AS"
    assert (r.neighbor, r.neighbor_as) == ("198.18.0.254", 65000)
    assert protos["vip_198_18_2_100"].state == "up"


def test_parse_bfd_sessions() -> None:
    lines = ["pylvs_bfd:",
             "IP address                Interface  State      Since         Interval  Timeout",
             "198.18.0.254              eth0       Up         22:54:03.272    0.100    0.300",
             "198.19.0.11               eth1       Down       22:54:03.272    1.000    0.000"]
    sessions = parse_bfd_sessions(lines)
    assert [(s.address, s.interface, s.state) for s in sessions] == [
        ("198.18.0.254", "eth0", "Up"), ("198.19.0.11", "eth1", "Down")]
    assert sessions[0].timeout == 0.3


def test_control_socket_protocol_against_a_fake_bird() -> None:
    async def scenario(path: str) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"0001 BIRD 2.0.12 ready.\n")
            line = (await reader.readline()).decode().strip()
            if line == "show status":
                writer.write(b"1000-BIRD 2.0.12\n1011-Router ID is 1.2.3.4\n"
                             b" Current server time is now\n0013 Daemon is up and running\n")
            else:
                writer.write(b"9001 syntax error, unexpected CF_SYM_UNDEFINED\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(handle, path)
        async with server:
            ctl = BirdControl(path, timeout=2)
            lines = await ctl.command("show status")
            assert lines[0] == (1000, "BIRD 2.0.12")
            assert lines[2] == (1011, "Current server time is now")
            assert lines[-1] == (13, "Daemon is up and running")
            with pytest.raises(BirdError, match="syntax error"):
                await ctl.command("disable nosuch")
        with pytest.raises(BirdError, match="control socket"):
            await BirdControl(path + ".missing").command("show status")

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(scenario(os.path.join(d, "bird.ctl")))


CLUSTER = {
    "mode": "active-active", "asn": 65010, "bird_pid": 42, "draining": False,
    "announced": ["198.18.2.100"], "vips": ["198.18.2.100", "198.18.2.101"],
    "routers": [{"address": "198.18.0.254", "asn": 65000, "protocol": "router1",
                 "state": "Active", "established": False, "since": "x",
                 "last_error": "Received: Bad peer AS", "bfd": None}],
    "bfd_sessions": [{"address": "198.19.0.11", "interface": "eth1", "state": "Up",
                      "interval": 0.1, "timeout": 0.3}],
    "error": None,
    "members": {"node_id": "d1", "sync": True, "warm": True, "port": 5407, "members": [
        {"address": "198.19.0.3", "node_id": "d2", "alive": True, "last_seen_ago": 0.12,
         "announced": ["198.18.2.100"], "announced_count": 1, "draining": False,
         "config_match": True, "synced_to_us": True, "synced_to_it": True,
         "sync": {"records_sent": 40, "records_applied": 12}},
        {"address": "198.19.0.4", "node_id": "d3", "alive": False, "last_seen_ago": 9.5,
         "announced": [], "announced_count": 0, "draining": True, "config_match": False,
         "synced_to_us": False, "synced_to_it": False, "sync": None}]},
}


def test_status_text_shows_the_cluster() -> None:
    text = render_status({"cluster": CLUSTER})
    assert "cluster active-active  AS 65010  BIRD pid 42  announcing 198.18.2.100" in text
    assert "router 198.18.0.254 AS 65000  BGP Active  BFD -  last error: Received: Bad peer AS" \
        in text
    assert "BFD with real servers: 198.19.0.11 Up" in text
    assert "members 2/3 alive (this node d1, connection sync on)" in text
    assert "member 198.19.0.3 d2  alive  seen 0.1 s ago  announces 198.18.2.100  " \
        "records sent 40 applied 12" in text
    assert "member 198.19.0.4 d3  DEAD  seen 9.5 s ago  draining  SERVICES DIFFER" in text
    assert "cluster" not in render_status({"cluster": {"mode": "off"}})


def test_metrics_of_the_cluster() -> None:
    fams: dict[str, MetricFamily] = {}

    def fam(name: str, kind: str, help_text: str) -> MetricFamily:
        return fams.setdefault(name, MetricFamily(name, kind, help_text))

    _cluster(CLUSTER, fam)
    lines = [line for f in fams.values() for line in f.render()]
    assert 'pylvs_cluster_announced{vip="198.18.2.100"} 1' in lines
    assert 'pylvs_cluster_announced{vip="198.18.2.101"} 0' in lines
    assert 'pylvs_cluster_bgp_established{router="198.18.0.254",asn="65000"} 0' in lines
    assert 'pylvs_cluster_bfd_up{peer="198.19.0.11",interface="eth1"} 1' in lines
    assert "pylvs_cluster_draining 0" in lines
    d2 = 'member="198.19.0.3",node_id="d2"'
    assert f"pylvs_cluster_member_up{{{d2}}} 1" in lines
    assert 'pylvs_cluster_member_up{member="198.19.0.4",node_id="d3"} 0' in lines
    assert f"pylvs_cluster_member_last_seen_seconds{{{d2}}} 0.12" in lines
    assert f'pylvs_cluster_member_announced{{{d2},vip="198.18.2.100"}} 1' in lines
    assert f"pylvs_cluster_sync_records_applied_total{{{d2}}} 12" in lines
    fams.clear()
    _cluster({"mode": "off"}, fam)
    assert fams == {}


class _FakeControl:
    def __init__(self) -> None:
        self.commands: list[str] = []

    async def command(self, line: str) -> list[tuple[int, str]]:
        self.commands.append(line)
        return [(0, "")]


class _Host:
    """The slice of a director the cluster component uses."""

    def __init__(self, cfg: model.Config) -> None:
        from pylvs.engine import Engine

        self.config = cfg
        self.engine = Engine(max_connections=64)
        self.active = True
        self.components: list[object] = []
        self.status_providers: dict[str, object] = {}
        self.config_listeners: list[object] = []
        svc = self.engine.add_service("tcp", "198.18.2.100", 80, scheduler="mh")
        self.server = self.engine.add_server(svc, "198.19.0.11", 80, weight=0)


def test_a_vip_is_announced_only_while_a_server_can_take_flows() -> None:
    from pylvs.cluster.component import ClusterComponent

    host = _Host(config.parse(BASE.format(extra=""), "t.toml"))
    comp = ClusterComponent(host)  # type: ignore[arg-type]
    fake = _FakeControl()
    comp.control = fake  # type: ignore[assignment]
    comp._announced = set()

    async def step() -> None:
        await comp._apply(comp.serving())

    asyncio.run(step())
    assert fake.commands == [], "weight 0 (quiesced or down): nothing announced"
    host.engine.edit_server(host.server, weight=1)
    asyncio.run(step())
    asyncio.run(step())
    assert fake.commands == ["enable vip_198_18_2_100"], "announced once"
    host.active = False
    asyncio.run(step())
    assert fake.commands[-1] == "disable vip_198_18_2_100"
    host.active = True
    asyncio.run(step())
    comp._draining = True
    asyncio.run(step())
    assert fake.commands[-2:] == ["enable vip_198_18_2_100", "disable vip_198_18_2_100"]
    assert comp.status()["announced"] == []
