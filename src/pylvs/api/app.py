"""The aiohttp application: JSON REST under ``/api/v1``, ``/metrics`` and the status page.

Every change is a pure edit of the current :class:`~pylvs.model.Config` (see
:mod:`pylvs.api.mutations`) handed to ``director.apply_config``; the director validates the whole
new configuration before touching anything, so a rejected request changes nothing.  Mutations
are serialised by one lock so two concurrent edits cannot lose each other's change.

Errors are JSON ``{"error": "<field path>: <what is wrong>"}`` with 400 (invalid), 404 (no such
service or server), 409 (already exists) or 403 (writing the file is not enabled).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from pylvs import config as config_mod
from pylvs import model
from pylvs.api import codec, metrics, mutations, views
from pylvs.api.history import History
from pylvs.api.protocol import DirectorLike
from pylvs.errors import ConfigError
from pylvs.looplag import Slices

__all__ = ["DIRECTOR_KEY", "STATIC_DIR", "make_app"]

STATIC_DIR = Path(__file__).with_name("static")
DIRECTOR_KEY = web.AppKey("director", DirectorLike)
_LOCK_KEY = web.AppKey("mutation_lock", asyncio.Lock)
_TOKEN_KEY = web.AppKey("token", str)
_HISTORY_KEY = web.AppKey("history", History)

log = logging.getLogger("pylvs.api")

#: Largest request body: a ``pylvs ctl -R`` of 10,000 real servers is about 2 MiB of JSON.
MAX_BODY = 64 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(director: DirectorLike, *, token: str | None = None,
             history: History | None = None) -> web.Application:
    """Build the application; with *token*, every data route needs ``Authorization: Bearer``.

    ``GET /api/v1/history`` serves *history* (an empty one when None: nothing feeds it).

    The status page's HTML and JavaScript carry no data, so they stay reachable without the
    token; the page sends the token (taken from the URL fragment) with its API calls.
    """
    app = web.Application(middlewares=[_errors_middleware, _auth_middleware],
                          client_max_size=MAX_BODY)
    app[DIRECTOR_KEY] = director
    app[_LOCK_KEY] = asyncio.Lock()
    app[_HISTORY_KEY] = history if history is not None else History()
    if token is not None:
        app[_TOKEN_KEY] = token
    r = app.router
    r.add_get("/", _index)
    r.add_static("/static/", STATIC_DIR, append_version=False)
    r.add_get("/metrics", _metrics)
    r.add_get("/api/v1/status", _status)
    r.add_get("/api/v1/history", _history)
    r.add_get("/api/v1/health", _health)
    r.add_get("/api/v1/ha", _ha)
    r.add_get("/api/v1/loop_lag", _loop_lag)
    r.add_get("/api/v1/services", _list_services)
    r.add_post("/api/v1/services", _add_service)
    r.add_delete("/api/v1/services", _clear)
    svc = "/api/v1/services/{proto}/{vip}"
    r.add_get(svc, _get_service)
    r.add_patch(svc, _edit_service)
    r.add_delete(svc, _delete_service)
    r.add_post(svc + "/servers", _add_server)
    r.add_patch(svc + "/servers/{rip}", _edit_server)
    r.add_delete(svc + "/servers/{rip}", _delete_server)
    r.add_post("/api/v1/batch", _batch)
    r.add_get("/api/v1/connections", _connections)
    r.add_get("/api/v1/stats", _stats)
    r.add_post("/api/v1/zero", _zero)
    for path, view, mutate in (("/api/v1/timeouts", views.timeouts, mutations.set_timeouts),
                               ("/api/v1/defense", views.defense, mutations.set_defense)):
        get, put = _settings_resource(view, mutate)
        r.add_get(path, get)
        r.add_put(path, put)
    r.add_get("/api/v1/config", _get_config)
    r.add_post("/api/v1/config/save", _save_config)
    return app


# ---------------------------------------------------------------------------------------------
# middlewares


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except mutations.NotFound as exc:
        return _error(404, str(exc))
    except _Forbidden as exc:
        return _error(403, str(exc))
    except mutations.Conflict as exc:
        return _error(409, str(exc))
    except ConfigError as exc:
        return _error(400, str(exc))


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app.get(_TOKEN_KEY)
    public = request.path == "/" or request.path.startswith("/static/")
    if token is not None and not public:
        got = request.headers.get("Authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not _same(value.strip(), token):
            return web.json_response(
                {"error": "Authorization: a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="pylvs"'},
            )
    return await handler(request)


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# ---------------------------------------------------------------------------------------------
# helpers


def _director(request: web.Request) -> DirectorLike:
    return request.app[DIRECTOR_KEY]


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"body: not valid JSON ({exc})") from None
    except RecursionError:
        # json.loads recurses once per nesting level; no request of ours nests that deep.
        raise ConfigError("body: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError("body: expected a JSON object")
    return data


def _service_key(request: web.Request) -> model.ServiceKey:
    return codec.service_key(request.match_info["proto"], request.match_info["vip"], "address")


async def _apply(
    request: web.Request, edit: Callable[[model.Config], model.Config]
) -> model.Config:
    """Build the new config from the current one and apply it; optionally save it.

    With ``?save=1`` the file is written after the change is live; whether writing is allowed
    is checked first, so a refused save never leaves an applied-but-reported-failed change.
    """
    director = _director(request)
    save = request.query.get("save") in ("1", "true", "yes")
    async with request.app[_LOCK_KEY]:
        if save:
            _check_writable(director.config)
        await director.edit_config(edit)
        views.sync_timeouts(director)
        log.info("api: %s %s applied", request.method, request.path)
        if save:
            _write_config(director.config)
        return director.config


def _check_writable(cfg: model.Config) -> None:
    if not cfg.api.write_config:
        raise _Forbidden("api.write_config: writing the config file is not enabled")
    if cfg.source.startswith("<"):
        raise ConfigError(f"source: the configuration has no file to write ({cfg.source})")


def _write_config(cfg: model.Config) -> str:
    _check_writable(cfg)
    path = Path(cfg.source)
    text = config_mod.dump_toml(cfg)
    # Write beside the target and rename, so a crash never leaves a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path)


class _Forbidden(ConfigError):
    """The request is valid but not allowed by the configuration (HTTP 403)."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1))


async def _json_sliced(doc: dict[str, Any], *keys: str) -> web.Response:
    """*doc* as compact JSON, its lists *keys* written an item at a time with the loop given
    a turn every few milliseconds: 10,000 servers are ~5 MB of JSON, which the indented (pure
    Python) encoder of :func:`_json` took 0.3 s to write in one go (issue 13)."""
    slices = Slices()
    lists = []
    for key in keys:
        parts = []
        for item in doc.get(key) or ():
            parts.append(json.dumps(item))
            await slices.tick()
        lists.append(f'{json.dumps(key)}: [' + ",\n".join(parts) + "]")
    rest = json.dumps({k: v for k, v in doc.items() if k not in keys})
    head = rest[:-1] + (", " if len(rest) > 2 else "")
    return web.Response(text=head + ", ".join(lists) + "}\n", content_type="application/json")


# ---------------------------------------------------------------------------------------------
# handlers


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _metrics(request: web.Request) -> web.Response:
    director = _director(request)
    text = metrics.render(director, await views.services_sliced(director))
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _status(request: web.Request) -> web.Response:
    director = _director(request)
    return await _json_sliced(views.status(director, await views.services_sliced(director)),
                              "services")


async def _history(request: web.Request) -> web.Response:
    """The last 15 minutes, one sample per estimator step; ``?since=T`` only newer ones."""
    since = request.query.get("since")
    try:
        after = float(since) if since else None
    except ValueError:
        raise ConfigError(f"since: {since!r} is not a time in seconds") from None
    # Compact: the page polls this every second.
    return web.json_response(request.app[_HISTORY_KEY].as_json(after))


async def _health(request: web.Request) -> web.Response:
    """The health component's own snapshot (probes, streaks, last results, quorum)."""
    snap = _director(request).status_section("health")
    if snap is None:
        return _json({"running": False, "services": [], "probes": []})
    return await _json_sliced(snap, "services", "probes")  # 10,000 probes: ~3 MB


async def _loop_lag(request: web.Request) -> web.Response:
    """The loop lag alone: cheap to poll, so reading it does not add the stall it measures."""
    lag = _director(request).status_section("loop_lag")
    return _json(lag if lag is not None else {})


async def _ha(request: web.Request) -> web.Response:
    return _json(views.ha(_director(request)))


async def _list_services(request: web.Request) -> web.Response:
    return await _json_sliced({"services": await views.services_sliced(_director(request))},
                              "services")


async def _get_service(request: web.Request) -> web.Response:
    key = _service_key(request)
    svc = _one_service(request, key)
    if not svc:
        raise mutations.NotFound(f"service {codec.service_id(key)}: no such service")
    return _json(svc)


async def _add_service(request: web.Request) -> web.Response:
    vs = codec.decode_service(await _body(request))
    await _apply(request, lambda cfg: mutations.add_service(cfg, vs))
    return _json(_one_service(request, vs.key), status=201)


async def _edit_service(request: web.Request) -> web.Response:
    key = _service_key(request)
    changes = await _body(request)
    await _apply(request, lambda cfg: mutations.edit_service(cfg, key, changes))
    return _json(_one_service(request, key))


async def _delete_service(request: web.Request) -> web.Response:
    key = _service_key(request)
    await _apply(request, lambda cfg: mutations.delete_service(cfg, key))
    return _json({"deleted": codec.service_id(key)})


async def _clear(request: web.Request) -> web.Response:
    await _apply(request, mutations.clear)
    return _json({"deleted": "all"})


async def _add_server(request: web.Request) -> web.Response:
    key = _service_key(request)
    body = await _body(request)
    if "address" in body and isinstance(body["address"], str) and ":" not in body["address"]:
        body["address"] = f"{body['address']}:{key.port}"  # ipvsadm: port defaults to VIP's
    rs = codec.decode_server(body)
    await _apply(request, lambda cfg: mutations.add_server(cfg, key, rs))
    return _json(_one_service(request, key), status=201)


async def _edit_server(request: web.Request) -> web.Response:
    key = _service_key(request)
    rip = codec.parse_endpoint(request.match_info["rip"], "real_server.address",
                               default_port=key.port)
    changes = await _body(request)
    await _apply(request, lambda cfg: mutations.edit_server(cfg, key, rip, changes))
    return _json(_one_service(request, key))


async def _delete_server(request: web.Request) -> web.Response:
    key = _service_key(request)
    rip = codec.parse_endpoint(request.match_info["rip"], "real_server.address",
                               default_port=key.port)
    await _apply(request, lambda cfg: mutations.delete_server(cfg, key, rip))
    return _json(_one_service(request, key))


def _one_service(request: web.Request, key: model.ServiceKey) -> dict[str, Any]:
    # that service alone: a change of one server must not list 10,000 (issue 13)
    director = _director(request)
    for vs in director.config.virtual_servers:
        if vs.key == key:
            return views.one_service(director, vs)
    return {}


async def _batch(request: web.Request) -> web.Response:
    """Apply a list of ipvsadm-like operations as one change (``pylvs ctl -R``).

    Decoding the operations is most of the work of a large restore and needs no config, so it
    is done first, in slices that give the loop a turn; the edit itself then only applies them.
    """
    ops = (await _body(request)).get("operations")
    if not isinstance(ops, list):
        raise ConfigError("operations: expected a list")
    steps: list[Callable[[mutations.Draft], None]] = []
    slices = Slices()
    for i, op in enumerate(ops):
        try:
            steps.append(_decode_op(op))
        except ConfigError as exc:
            raise type(exc)(f"operations[{i}]: {exc}") from None
        await slices.tick()

    def edit(cfg: model.Config) -> model.Config:
        draft = mutations.Draft(cfg)
        for i, step in enumerate(steps):
            try:
                step(draft)
            except ConfigError as exc:
                raise type(exc)(f"operations[{i}]: {exc}") from None
        return draft.build()

    await _apply(request, edit)
    return _json({"applied": len(ops)})


def _decode_op(op: object) -> Callable[[mutations.Draft], None]:
    """One batch operation, decoded and checked alone, as a step to apply to a draft."""
    if not isinstance(op, Mapping):
        raise ConfigError("expected an object with an 'op' key")
    kind = op.get("op")
    if kind == "clear":
        return mutations.Draft.clear
    if kind == "set_timeouts":
        timeouts = _object(op, "timeouts")
        return lambda d: d.set_timeouts(timeouts)
    if kind == "add_service":
        vs = codec.decode_service(op.get("service"))
        return lambda d: d.add_service(vs)
    key = codec.service_key(op.get("protocol"), op.get("address"), "address")
    if kind == "edit_service":
        changes = _object(op, "changes")
        return lambda d: d.edit_service(key, changes)
    if kind == "delete_service":
        return lambda d: d.delete_service(key)
    if kind == "add_server":
        rs = codec.decode_server(op.get("server"))
        return lambda d: d.add_server(key, rs)
    rip = codec.parse_endpoint(op.get("server_address"), "real_server.address")
    if kind == "edit_server":
        server_changes = _object(op, "changes")
        return lambda d: d.edit_server(key, rip, server_changes)
    if kind == "delete_server":
        return lambda d: d.delete_server(key, rip)
    raise ConfigError(f"op: unknown operation {kind!r}")


def _object(op: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The JSON object ``op[name]`` (absent: empty); ConfigError naming *name* otherwise."""
    value = op.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected an object, got {codec.kind(value)}")
    return value


async def _connections(request: web.Request) -> web.Response:
    return _json({"connections": views.connections(_director(request), request.query)})


async def _stats(request: web.Request) -> web.Response:
    return _json(views.engine_stats(_director(request)))


async def _zero(request: web.Request) -> web.Response:
    body = await _body(request)
    service = body.get("service")
    key: model.ServiceKey | None = None
    if service is not None:
        proto, _, addr = str(service).partition("/")
        if proto not in ("tcp", "udp", "fwm", "fwm6"):
            raise ConfigError(f"service: {service!r} is not 'tcp/a.b.c.d:port', 'udp/…' "
                              "or 'fwm/<mark>' ('fwm6/<mark>' for IPv6)")
        key = codec.service_key(proto, addr, "service")
        mutations.find_service(_director(request).config, key)
    views.zero(_director(request), key)
    return _json({"zeroed": "all" if key is None else codec.service_id(key)})


def _settings_resource(
    view: Callable[[DirectorLike], Any],
    mutate: Callable[[model.Config, Mapping[str, Any]], model.Config],
) -> tuple[Handler, Handler]:
    """GET and PUT handlers for a settings object (timeouts, defense): PUT changes named keys."""

    async def get(request: web.Request) -> web.Response:
        return _json(view(_director(request)))

    async def put(request: web.Request) -> web.Response:
        changes = await _body(request)
        await _apply(request, lambda cfg: mutate(cfg, changes))
        return _json(view(_director(request)))

    return get, put


async def _get_config(request: web.Request) -> web.Response:
    return _json(codec.encode(_director(request).config))


async def _save_config(request: web.Request) -> web.Response:
    path = _write_config(_director(request).config)
    return _json({"written": path})
