"""The TCP listener's bearer token, /metrics (parsed by prometheus_client) and live counters."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP

from pylvs.api.server import read_token
from pylvs.errors import ConfigError
from tests.support.mini_director import ApiStarter, MiniDirector, base_config, service

TOKEN = "s3cret-token-for-tests-0123456789"
VIP = "198.18.0.100:80"


async def _tcp_api(tmp_path: Path, running_api: ApiStarter) -> tuple[MiniDirector, str]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cfg = base_config(str(tmp_path / "t.sock"), (service(VIP, "198.19.0.11:80"),),
                      listen="127.0.0.1:0", token_file=str(token_file))
    director, server = await running_api(cfg)
    assert server.tcp_address is not None
    host, port = server.tcp_address
    return director, f"http://{host}:{port}"


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-wrong-token", f"Basic {TOKEN}",
                                  f"Bearer {TOKEN}x"])
async def test_tcp_refuses_without_the_token(tmp_path: Path, running_api: ApiStarter,
                                             auth: str | None) -> None:
    _, base = await _tcp_api(tmp_path, running_api)
    headers = {} if auth is None else {"Authorization": auth}
    async with aiohttp.ClientSession() as session:
        for method, url in (("GET", "/api/v1/services"), ("GET", "/metrics"),
                            ("DELETE", "/api/v1/services"), ("GET", "/api/v1/status")):
            async with session.request(method, base + url, headers=headers) as resp:
                assert resp.status == 401, (method, url)
                assert "bearer token" in (await resp.json())["error"]


async def test_tcp_accepts_the_token_and_serves_the_page_without_it(
    tmp_path: Path, running_api: ApiStarter
) -> None:
    _, base = await _tcp_api(tmp_path, running_api)
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/api/v1/services",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["services"][0]["address"] == VIP
        async with session.get(base + "/") as resp:  # HTML carries no data
            assert resp.status == 200
            assert "pylvs" in await resp.text()


async def test_unix_socket_needs_no_token(tmp_path: Path, running_api: ApiStarter) -> None:
    await _tcp_api(tmp_path, running_api)
    conn = aiohttp.UnixConnector(path=str(tmp_path / "t.sock"))
    async with aiohttp.ClientSession(connector=conn) as session, \
            session.get("http://pylvs/api/v1/services") as resp:
        assert resp.status == 200


def test_short_or_missing_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("abc")
    (tmp_path / "short").chmod(0o600)
    with pytest.raises(ConfigError, match="shorter than 16"):
        read_token(str(tmp_path / "short"))
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(str(tmp_path / "absent"))


def _syn(sport: int) -> bytes:
    return bytes(IP(src="198.18.0.50", dst="198.18.0.100") / TCP(sport=sport, dport=80,
                                                                  flags="S", seq=1000))


async def test_metrics_parse_and_count_real_traffic(
    tmp_path: Path, running_api: ApiStarter
) -> None:
    sock = str(tmp_path / "m.sock")
    cfg = base_config(sock, (service(VIP, "198.19.0.11:80", "198.19.0.12:80"),))
    director, _ = await running_api(cfg)
    for sport in range(40000, 40006):
        out = director.engine.process(_syn(sport), now=1.0)
        assert out is not None  # scheduled and rewritten
    conn = aiohttp.UnixConnector(path=sock)
    async with aiohttp.ClientSession(connector=conn) as session:
        async with session.get("http://pylvs/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        async with session.get("http://pylvs/api/v1/connections?state=SYN_RECV") as resp:
            conns = (await resp.json())["connections"]
        async with session.get("http://pylvs/api/v1/connections?client=198.18.0.99") as resp:
            assert (await resp.json())["connections"] == []
    families = {f.name: f for f in text_string_to_metric_families(text)}
    svc_conns = families["pylvs_ipvs_service_connections"]  # the parser drops "_total"
    assert svc_conns.type == "counter"
    [sample] = [s for s in svc_conns.samples if s.name.endswith("_total")]
    assert sample.labels == {"local_address": "198.18.0.100", "local_port": "80",
                             "proto": "TCP", "local_mark": ""}
    assert sample.value == 6
    backend = [s for s in families["pylvs_ipvs_backend_connections_inactive"].samples
               + families["pylvs_ipvs_backend_connections_active"].samples]
    assert sum(s.value for s in backend) == 6
    assert {s.labels["remote_address"] for s in backend} == {"198.19.0.11", "198.19.0.12"}
    assert {s.labels["local_mark"] for s in backend} == {""}  # node_exporter's label, no fwmark
    weights = {s.labels["remote_address"]: s.value
               for s in families["pylvs_ipvs_backend_weight"].samples}
    assert weights == {"198.19.0.11": 1, "198.19.0.12": 1}
    roles = {s.labels["role"]: s.value for s in families["pylvs_ha_role"].samples}
    assert roles["active"] == 1 and sum(roles.values()) == 1
    assert "pylvs_engine_drops" in families
    assert len(conns) == 6
    assert {c["virtual"] for c in conns} == {VIP}
    assert all(c["client"].startswith("198.18.0.50:") for c in conns)


async def test_zero_takes_a_baseline(tmp_path: Path, running_api: ApiStarter) -> None:
    sock = str(tmp_path / "z.sock")
    director, _ = await running_api(base_config(sock, (service(VIP, "198.19.0.11:80"),)))
    director.engine.process(_syn(41000), now=1.0)
    conn = aiohttp.UnixConnector(path=sock)
    async with aiohttp.ClientSession(connector=conn, base_url="http://pylvs") as session:
        async with session.get("/api/v1/services") as resp:
            assert (await resp.json())["services"][0]["stats"]["conns"] == 1
        async with session.post("/api/v1/zero", json={"service": f"tcp/{VIP}"}) as resp:
            assert resp.status == 200
        async with session.get("/api/v1/services") as resp:
            svc = (await resp.json())["services"][0]
        assert svc["stats"]["conns"] == 0
        assert svc["real_servers"][0]["inactive_conns"] + \
            svc["real_servers"][0]["active_conns"] == 1  # zeroing counts keeps connections
        async with session.post("/api/v1/zero", json={"service": "tcp/198.18.0.1:1"}) as resp:
            assert resp.status == 404


async def test_api_config_fields_are_all_exposed(tmp_path: Path, running_api: ApiStarter) -> None:
    sock = str(tmp_path / "c.sock")
    director, _ = await running_api(base_config(sock, (service(VIP, "198.19.0.11:80"),)))
    conn = aiohttp.UnixConnector(path=sock)
    async with aiohttp.ClientSession(connector=conn) as session, \
            session.get("http://pylvs/api/v1/services") as resp:
        svc = (await resp.json())["services"][0]
    names = {f.name for f in dataclasses.fields(director.config.virtual_servers[0])}
    assert names - {"real_servers"} <= set(svc)
    assert {"check", "load_monitor", "sorry_server", "quorum", "slow_start"} <= set(svc)


async def test_a_live_socket_is_not_taken_over(tmp_path: Path, running_api: ApiStarter) -> None:
    from pylvs.api.server import ApiServer

    sock = str(tmp_path / "busy.sock")
    director, _ = await running_api(base_config(sock))
    with pytest.raises(ConfigError, match="in use"):
        await ApiServer(director).start()
    conn = aiohttp.UnixConnector(path=sock)  # the first server still answers
    async with aiohttp.ClientSession(connector=conn) as session, \
            session.get("http://pylvs/api/v1/timeouts") as resp:
        assert resp.status == 200


async def test_health_and_ha_endpoints(tmp_path: Path, running_api: ApiStarter) -> None:
    sock = str(tmp_path / "h.sock")
    await running_api(base_config(sock, (service(VIP, "198.19.0.11:80", check="tcp"),)))
    conn = aiohttp.UnixConnector(path=sock)
    async with aiohttp.ClientSession(connector=conn, base_url="http://pylvs") as session:
        async with session.get("/api/v1/health") as resp:
            health = await resp.json()
        async with session.get("/api/v1/ha") as resp:
            ha = await resp.json()
    assert health["running"] is True
    [svc] = health["services"]
    assert svc["service"] == "tcp 198.18.0.100:80"
    assert list(svc["servers"]) == ["198.19.0.11:80"]
    assert ha["role"] == "ACTIVE" and ha["enabled"] is False


def test_dataplane_batch_histogram_is_valid_exposition() -> None:
    from pylvs.api.metrics import MetricFamily, _dataplane
    from pylvs.dataplane.tun import TunStats

    stats = TunStats(reads=70, read_bytes=7000, writes=69, write_bytes=6900, forwarded=60,
                     passed=9, replies=0, dropped=1, write_eagain=0, write_errors=0,
                     read_errors=0, short_reads=0, csum_partial=0, gso_packets=0, batches=12,
                     empty_wakeups=0, max_batch=9, batch_hist=(5, 4, 2, 1) + (0,) * 8,
                     queue_dropped=None)
    fams: dict[str, MetricFamily] = {}

    def fam(name: str, kind: str, text: str) -> MetricFamily:
        return fams.setdefault(name, MetricFamily(name, kind, text))

    _dataplane(stats.as_dict(), fam)
    text = "\n".join(line for f in fams.values() for line in f.render()) + "\n"
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    hist = parsed["pylvs_dataplane_batch_size"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets["1"] == 5 and buckets["3"] == 9 and buckets["7"] == 11
    assert buckets["15"] == 12 and buckets["+Inf"] == 12
    assert parsed["pylvs_dataplane_dropped"].samples[0].value == 1


def test_ha_view_reads_the_ha_component_section(tmp_path: Path) -> None:
    from pylvs.api import views
    from pylvs.api.metrics import render
    from pylvs.cli.status import render_status

    class HaDirector(MiniDirector):
        def status_section(self, name: str) -> Any:
            if name != "ha":
                return super().status_section(name)
            # the shape pylvs.ha's HaNode.status() reports (role names in lower case)
            return {"role": "backup", "node_id": "dir2", "priority": 90,
                    "peer": {"node_id": "dir1", "role": "active", "priority": 100},
                    "paths": {"public": {"alive": False, "last_heard_ago": 3.1},
                              "private": {"alive": True, "last_heard_ago": 0.1}},
                    "transitions": 3}

    director = HaDirector(base_config(str(tmp_path / "x.sock")))
    ha = views.ha(director)
    assert ha["role"] == "BACKUP" and ha["transitions"] == 3
    assert ha["peer"] == {"node_id": "dir1", "role": "active", "priority": 100, "alive": True}
    text = render_status(views.status(director))
    assert "node dir2  role BACKUP  peer dir1 active alive  transitions 3" in text
    families = {f.name: f for f in text_string_to_metric_families(render(director))}
    roles = {s.labels["role"]: s.value for s in families["pylvs_ha_role"].samples}
    assert roles == {"init": 0, "backup": 1, "active": 0, "fault": 0}
    [transitions] = families["pylvs_ha_transitions"].samples
    assert transitions.value == 3


def test_defense_in_metrics_and_status(tmp_path: Path) -> None:
    """A flood through a small table: /metrics and ``pylvs status`` show the modes, the
    evictions and the packets drop_packet removed."""
    import dataclasses

    from pylvs import model
    from pylvs.api import views
    from pylvs.api.metrics import render
    from pylvs.cli.status import render_status

    cfg = base_config(str(tmp_path / "x.sock"), (service(VIP, "198.19.0.11:80"),))
    cfg = dataclasses.replace(
        cfg, director=dataclasses.replace(cfg.director, max_connections=8),
        defense=model.DefenseConfig(drop_packet=1, secure_tcp=3, amemthresh=2,
                                    evict_embryonic=False, syncookies=0))
    director = MiniDirector(cfg)
    for sport in range(40000, 40030):
        director.engine.process(_syn(sport), now=1.0)
    director.engine.expire(2.0)  # the once-a-second defence work sees the full table
    for sport in range(41000, 41010):
        director.engine.process(_syn(sport), now=2.5)
    dfn = views.defense(director)
    assert dfn["mode"] == {"drop_entry": 0, "drop_packet": 2, "secure_tcp": 3}
    assert dfn["entries_dropped"]["evict_embryonic"] == 0
    assert dfn["drop_rate"] == 1 and dfn["packets_dropped"]["defense_drop_packet"] == 10
    assert dfn["packets_dropped"]["table_full"] == 30 - 8
    text = render_status(views.status(director))
    assert ("defense drop_entry off  drop_packet ENGAGED  secure_tcp on  evict off  "
            "syncookies off (syns 0 acks 0 refused 0)  free 0  "
            "entries dropped 0  packets dropped 32") in text
    families = {f.name: f for f in text_string_to_metric_families(render(director))}
    modes = {s.labels["strategy"]: s.value for s in families["pylvs_defense_mode"].samples}
    assert modes == {"drop_entry": 0, "drop_packet": 2, "secure_tcp": 3}
    removed = {s.labels["reason"]: s.value
               for s in families["pylvs_defense_entries_dropped"].samples}
    assert removed["evict_embryonic"] == 0
    packets = {s.labels["reason"]: s.value
               for s in families["pylvs_defense_packets_dropped"].samples}
    assert packets == {"defense_drop_packet": 10, "table_full": 22}
