"""Hypothesis-generated request bodies for every route: never a 500, never a half-applied change.

The API runs in front of a real engine (:class:`MiniDirector`) on a Unix socket.  For each
generated request the test snapshots the configuration and the engine first; a refused request
(any 4xx) must leave both exactly as they were, and no request may end in a 5xx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.api.server import ApiServer
from tests.support.mini_director import MiniDirector, base_config, service

VIP = "198.18.0.100:80"
SVC = f"/api/v1/services/tcp/{VIP}"
RS = f"{SVC}/servers/198.19.0.11:80"

# Values that look like what the API expects, and values that do not.
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2, max_value=70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", "x", "tcp", "udp", "rr", "wlc", "sh", "mh", "sh-port", "mh-port",
                     "flag-1", "198.18.0.100:80", "198.19.0.11:80", "198.19.0.13:8080",
                     "198.18.0.101", "255.255.255.0", "300.1.1.1:80", "198.18.0.1:99999",
                     "none", "tcp_connect"]),
)
_keys = st.sampled_from([
    "address", "protocol", "scheduler", "persistence", "netmask", "flags", "check",
    "real_server", "real_servers", "weight", "upper_threshold", "lower_threshold",
    "sorry_server", "type", "interval", "tcp", "tcpfin", "udp", "timeouts", "changes",
    "operations", "op", "service", "server", "server_address", "bogus",
])
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=12,
)
_ops = st.sampled_from(["clear", "set_timeouts", "add_service", "edit_service",
                        "delete_service", "add_server", "edit_server", "delete_server", "x"])
# Mostly well-addressed operations, so the payloads reach the code that decodes them.
_op = st.fixed_dictionaries(
    {"op": _ops, "protocol": st.sampled_from(["tcp", "tcp", "tcp", "udp", 1]),
     "address": st.sampled_from([VIP, VIP, VIP, "198.18.0.101:53", 5]),
     "server_address": st.sampled_from(["198.19.0.11:80", "198.19.0.11:80", "198.19.0.99:80",
                                        []]),
     "changes": _json},
    optional={"timeouts": _json, "service": _json, "server": _json},
)
_batch = st.one_of(_json, st.fixed_dictionaries({"operations": st.lists(
    st.one_of(_op, _json), max_size=4)}))

ROUTES: list[tuple[str, str]] = [
    ("POST", "/api/v1/services"), ("PATCH", SVC), ("POST", f"{SVC}/servers"),
    ("PATCH", RS), ("PUT", "/api/v1/timeouts"), ("POST", "/api/v1/zero"),
    ("POST", "/api/v1/batch"), ("DELETE", RS), ("DELETE", SVC), ("DELETE", "/api/v1/services"),
    ("GET", "/api/v1/connections"), ("POST", "/api/v1/config/save"),
]


class _Api:
    """One director and its API on a private event loop, driven synchronously by hypothesis."""

    def __init__(self, sock: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.sock = sock
        cfg = base_config(sock, (service(VIP, "198.19.0.11:80", "198.19.0.12:80"),))
        self.director = MiniDirector(cfg)
        self.server = ApiServer(self.director)
        self.loop.run_until_complete(self.server.start())
        self.session = self.loop.run_until_complete(self._session())
        self.initial = cfg

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.sock),
                                     base_url="http://pylvs")

    def call(self, method: str, url: str, data: bytes) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            async with self.session.request(
                method, url, data=data, headers={"Content-Type": "application/json"}
            ) as resp:
                return resp.status, await resp.text()
        return self.loop.run_until_complete(go())

    def reset(self) -> None:
        """Back to the initial configuration (a fuzzed request may have succeeded)."""
        if self.director.config != self.initial:
            self.loop.run_until_complete(self.director.apply_config(self.initial))

    def close(self) -> None:
        self.loop.run_until_complete(self.session.close())
        self.loop.run_until_complete(self.server.stop())
        self.loop.run_until_complete(self.director.stop())
        self.loop.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[_Api]:
    a = _Api(str(tmp_path / "pylvs.sock"))
    try:
        yield a
    finally:
        a.close()


def _engine_shape(director: MiniDirector) -> list[tuple[Any, ...]]:
    out = []
    for svc in director.engine.services():
        servers = sorted((s.key.address, s.key.port, s.weight, s.upper_threshold,
                          s.lower_threshold) for s in svc.servers)
        out.append((svc.key, svc.scheduler, svc.flags, svc.persistence, tuple(servers)))
    return sorted(out, key=repr)


def _check(api: _Api, method: str, url: str, data: bytes) -> None:
    api.reset()
    before = (api.director.config, _engine_shape(api.director), api.director.engine.timeouts())
    status, text = api.call(method, url, data)
    assert status < 500, (method, url, data[:300], status, text[:300])
    if status >= 400:
        assert json.loads(text)["error"], text
        after = (api.director.config, _engine_shape(api.director),
                 api.director.engine.timeouts())
        assert after == before, (method, url, data[:300], status, text)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), body=_json)
def _fuzz_routes(api: _Api, route: tuple[str, str], body: Any) -> None:
    _check(api, route[0], route[1], json.dumps(body).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_batch)
def _fuzz_batch(api: _Api, body: Any) -> None:
    _check(api, "POST", "/api/v1/batch", json.dumps(body).encode())


def test_fuzzed_bodies_on_every_route(api: _Api) -> None:
    _fuzz_routes(api)


def test_fuzzed_batches(api: _Api) -> None:
    _fuzz_batch(api)


@pytest.mark.parametrize("data", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"\xff\xfe", b"{", b"", b"null", b"1e999999",
], ids=["deep-list", "deep-object", "not-utf8", "truncated", "empty", "null", "huge-number"])
def test_hostile_raw_bodies(api: _Api, data: bytes) -> None:
    for method, url in ROUTES:
        _check(api, method, url, data)


@pytest.mark.parametrize(("body", "field"), [
    ({"operations": [{"op": "set_timeouts", "timeouts": "x"}]}, "operations[0]: timeouts"),
    ({"operations": [{"op": "edit_service", "protocol": "tcp", "address": VIP,
                      "changes": [1]}]}, "operations[0]: changes"),
    ({"operations": [{"op": "edit_server", "protocol": "tcp", "address": VIP,
                      "server_address": "198.19.0.11:80", "changes": "w"}]},
     "operations[0]: changes"),
])
def test_batch_type_errors_name_the_field(api: _Api, body: Any, field: str) -> None:
    status, text = api.call("POST", "/api/v1/batch", json.dumps(body).encode())
    assert status == 400, text
    assert json.loads(text)["error"].startswith(field), text


def test_deep_nesting_is_a_400_naming_the_body(api: _Api) -> None:
    status, text = api.call("POST", "/api/v1/services", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400
    assert json.loads(text)["error"].startswith("body:")
