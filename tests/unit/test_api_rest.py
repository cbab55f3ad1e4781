"""The REST API on a real Unix socket against a real engine: CRUD, validation, atomicity."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pylvs import config as config_mod
from pylvs import model
from tests.support.mini_director import ApiStarter, MiniDirector, base_config, service

VIP = "198.18.0.100:80"
SVC = f"/api/v1/services/tcp/{VIP}"


@pytest.fixture
async def api(
    tmp_path: Path, running_api: ApiStarter
) -> AsyncIterator[tuple[MiniDirector, aiohttp.ClientSession]]:
    sock = str(tmp_path / "run" / "pylvs.sock")
    cfg = base_config(sock, (service(VIP, "198.19.0.11:80", "198.19.0.12:80"),))
    director, _ = await running_api(cfg)
    async with aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=sock), base_url="http://pylvs"
    ) as session:
        yield director, session


async def _call(session: aiohttp.ClientSession, method: str, url: str,
                body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


def _engine_shape(director: MiniDirector) -> list[tuple[Any, ...]]:
    """What the engine holds, in a comparable form."""
    out = []
    for svc in director.engine.services():
        servers = sorted((s.key.address, s.key.port, s.weight) for s in svc.servers)
        out.append((svc.key.protocol, svc.key.address, svc.key.port, svc.scheduler,
                    tuple(servers)))
    return sorted(out)


async def test_socket_is_mode_0600(api: Any, tmp_path: Path) -> None:
    mode = os.stat(tmp_path / "run" / "pylvs.sock").st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_list_services_with_live_fields(api: Any) -> None:
    _, session = api
    status, body = await _call(session, "GET", "/api/v1/services")
    assert status == 200
    [svc] = body["services"]
    assert svc["id"] == f"tcp/{VIP}"
    assert svc["scheduler"] == "wlc"
    assert [rs["address"] for rs in svc["real_servers"]] == ["198.19.0.11:80", "198.19.0.12:80"]
    assert all(rs["in_engine"] and rs["effective_weight"] == 1 for rs in svc["real_servers"])
    assert set(svc["stats"]) == {"conns", "inpkts", "outpkts", "inbytes", "outbytes"}


async def test_add_edit_delete_round_trip(api: Any) -> None:
    director, session = api
    new = {"address": "198.18.0.101:53", "protocol": "udp", "scheduler": "sh",
           "flags": ["sh-port"], "check": {"type": "none"},
           "real_server": [{"address": "198.19.0.21:5353", "weight": 5}]}
    status, body = await _call(session, "POST", "/api/v1/services", new)
    assert status == 201, body
    assert body["real_servers"][0]["effective_weight"] == 5
    assert ("udp", "198.18.0.101", 53, "sh", (("198.19.0.21", 5353, 5),)) in \
        _engine_shape(director)

    status, body = await _call(session, "PATCH", SVC, {"scheduler": "rr", "persistence": 60})
    assert status == 200, body
    assert (body["scheduler"], body["persistence"]) == ("rr", 60)

    status, body = await _call(session, "POST", SVC + "/servers",
                               {"address": "198.19.0.13", "weight": 2})
    assert status == 201, body
    assert "198.19.0.13:80" in [rs["address"] for rs in body["real_servers"]]

    status, body = await _call(session, "PATCH", SVC + "/servers/198.19.0.13:80",
                               {"weight": 7, "upper_threshold": 10, "lower_threshold": 5})
    assert status == 200, body
    rs = next(r for r in body["real_servers"] if r["address"] == "198.19.0.13:80")
    assert (rs["weight"], rs["effective_weight"], rs["upper_threshold"]) == (7, 7, 10)

    status, _ = await _call(session, "DELETE", SVC + "/servers/198.19.0.13:80")
    assert status == 200
    status, _ = await _call(session, "DELETE", "/api/v1/services/udp/198.18.0.101:53")
    assert status == 200
    assert [s.address for s in director.config.virtual_servers] == [
        model.Endpoint(*_split(VIP))]


def _split(text: str) -> tuple[Any, int]:
    from ipaddress import IPv4Address

    host, _, port = text.rpartition(":")
    return IPv4Address(host), int(port)


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "field"),
    [
        ("POST", "/api/v1/services", {"address": "198.18.0.300:80"}, 400,
         "virtual_server.address"),
        ("POST", "/api/v1/services", {"address": "198.18.0.102:80", "scheduler": "fastest"},
         400, "scheduler"),
        ("POST", "/api/v1/services", {"address": VIP}, 409, "already exists"),
        ("POST", "/api/v1/services", {"address": "198.18.0.102:80", "colour": "red"}, 400,
         "virtual_server.colour: unknown key"),
        ("POST", "/api/v1/services", {"address": "198.18.0.102:80", "persistence": "long"}, 400,
         "virtual_server.persistence: expected an integer"),
        ("POST", SVC + "/servers", {"address": "198.19.0.13:80", "weight": -1}, 400,
         "weight"),
        ("POST", SVC + "/servers", {"address": "198.19.0.11:80"}, 409, "already exists"),
        ("PATCH", SVC + "/servers/198.19.0.11:80", {"weight": 70000}, 400, "weight"),
        ("PATCH", SVC + "/servers/198.19.0.11:80",
         {"upper_threshold": 5, "lower_threshold": 9}, 400, "lower_threshold"),
        ("PATCH", SVC, {"scheduler": "nope"}, 400, "scheduler"),
        ("PATCH", SVC, {"address": "198.18.0.1:80"}, 400, "cannot be changed"),
        ("PATCH", "/api/v1/services/tcp/198.18.0.199:80", {"scheduler": "rr"}, 404,
         "no such service"),
        ("DELETE", SVC + "/servers/198.19.0.99:80", None, 404, "no such real server"),
        ("PUT", "/api/v1/timeouts", {"tcp": -5}, 400, "timeouts.tcp"),
        ("POST", "/api/v1/services", [1, 2], 400, "body: expected a JSON object"),
    ],
)
async def test_invalid_requests_are_4xx_and_change_nothing(
    api: Any, method: str, url: str, body: Any, status: int, field: str
) -> None:
    director, session = api
    before_cfg, before_engine, applied = director.config, _engine_shape(director), director.applied
    got, answer = await _call(session, method, url, body)
    assert got == status, answer
    assert field in answer["error"]
    assert director.config == before_cfg
    assert _engine_shape(director) == before_engine
    assert director.applied == applied


async def test_malformed_json_is_400(api: Any) -> None:
    _, session = api
    async with session.post("/api/v1/services", data=b"{not json",
                            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["error"]


async def test_batch_is_all_or_nothing(api: Any) -> None:
    director, session = api
    before = director.config
    ops: list[dict[str, Any]] = [
        {"op": "add_service", "service": {"address": "198.18.0.110:80"}},
        {"op": "add_server", "protocol": "tcp", "address": "198.18.0.110:80",
         "server": {"address": "198.19.0.31:80", "weight": -3}},
    ]
    status, body = await _call(session, "POST", "/api/v1/batch", {"operations": ops})
    assert status == 400
    assert body["error"].startswith("operations[1]: ")
    assert director.config == before
    ops[1]["server"]["weight"] = 3
    status, body = await _call(session, "POST", "/api/v1/batch", {"operations": ops})
    assert status == 200, body
    assert len(director.config.virtual_servers) == 2


async def test_timeouts_zero_keeps_current(api: Any) -> None:
    director, session = api
    status, body = await _call(session, "PUT", "/api/v1/timeouts",
                               {"tcp": 600, "tcpfin": 0, "udp": 30})
    assert status == 200, body
    assert body == {"tcp": 600, "tcpfin": 120, "udp": 30}
    t = director.engine.timeouts()
    assert (t.tcp, t.tcpfin, t.udp) == (600, 120, 30)


async def test_clear_removes_everything(api: Any) -> None:
    director, session = api
    status, _ = await _call(session, "DELETE", "/api/v1/services")
    assert status == 200
    assert director.config.virtual_servers == ()
    assert director.engine.services() == []


async def test_write_back_needs_permission(
    tmp_path: Path, running_api: ApiStarter
) -> None:
    path = tmp_path / "pylvs.toml"
    sock = str(tmp_path / "w.sock")
    cfg = dataclasses.replace(base_config(sock, (service(VIP, "198.19.0.11:80"),)),
                              source=str(path))
    path.write_text(config_mod.dump_toml(cfg))
    await running_api(cfg)
    conn = aiohttp.UnixConnector(path=sock)
    async with aiohttp.ClientSession(connector=conn, base_url="http://pylvs") as session:
        status, body = await _call(session, "POST", "/api/v1/config/save")
        assert status == 403
        assert "api.write_config" in body["error"]
        before = await _call(session, "GET", "/api/v1/services")
        status, body = await _call(session, "POST", SVC + "/servers?save=1",
                                   {"address": "198.19.0.12:80"})
        assert status == 403  # refused before anything is applied
        assert await _call(session, "GET", "/api/v1/services") == before

    sock2 = str(tmp_path / "w2.sock")
    cfg2 = dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, socket=sock2,
                                                            write_config=True))
    path.write_text(config_mod.dump_toml(cfg2))
    await running_api(cfg2)
    conn = aiohttp.UnixConnector(path=sock2)
    async with aiohttp.ClientSession(connector=conn, base_url="http://pylvs") as session:
        status, body = await _call(session, "POST", SVC + "/servers?save=1",
                                   {"address": "198.19.0.12:80", "weight": 4})
        assert status == 201, body
    saved = config_mod.load(path)
    assert [(str(r.address), r.weight) for r in saved.virtual_servers[0].real_servers] == [
        ("198.19.0.11:80", 1), ("198.19.0.12:80", 4)]
    assert json.loads(json.dumps(saved.api.write_config)) is True


async def test_defense_changes_at_run_time(api: Any) -> None:
    """PUT /api/v1/defense: keys named as the sysctls; the engine follows at once."""
    director, session = api
    status, body = await _call(session, "GET", "/api/v1/defense")
    assert status == 200, body
    assert body["mode"] == {"drop_entry": 0, "drop_packet": 0, "secure_tcp": 0}
    assert body["evict_embryonic"] is True
    status, body = await _call(session, "PUT", "/api/v1/defense",
                               {"drop_entry": 3, "secure_tcp": 1, "amemthresh": 10})
    assert status == 200, body
    assert body["mode"] == {"drop_entry": 3, "drop_packet": 0, "secure_tcp": 1}
    assert body["drop_entry_active"] is True and body["secure_tcp_active"] is False
    assert director.config.defense.drop_entry == 3
    assert director.engine.defense().settings.amemthresh == 10
    status, body = await _call(session, "PUT", "/api/v1/defense", {"drop_packet": 4})
    assert status == 400
    assert "defense.drop_packet" in body["error"] and "got 4" in body["error"]
    status, body = await _call(session, "PUT", "/api/v1/defense", {"drop_entri": 1})
    assert status == 400 and "defense.drop_entri: unknown key" in body["error"]
    assert director.engine.defense().settings.drop_packet == 0  # a refused change changes nothing
    status, body = await _call(session, "GET", "/api/v1/status")
    assert status == 200 and body["defense"]["mode"]["drop_entry"] == 3
    # syncookies, as the other modes: 1 by default, 2 engages at once, 3 is refused
    assert body["defense"]["syncookies"]["mode"] == 1
    assert body["defense"]["syncookies"]["engaged"] is False
    status, body = await _call(session, "PUT", "/api/v1/defense", {"syncookies": 2})
    assert status == 200 and body["syncookies"]["mode"] == 2 and body["syncookies"]["engaged"]
    assert director.engine.defense().syncookies.engaged
    status, body = await _call(session, "PUT", "/api/v1/defense", {"syncookies": 3})
    assert status == 400 and "defense.syncookies" in body["error"]
