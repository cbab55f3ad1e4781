"""``pylvs serve`` and ``pylvs check``.

``serve`` runs the director in the foreground and logs to stderr (text, or one JSON object a
line with ``director.log_format = "json"``).  Signals:

* ``SIGHUP``: re-read the file and apply it live; a bad file is logged and the running state
  kept.  The file is the whole truth: every service and real server it no longer has is
  removed, and each removal is logged (a warning names those added at run time with
  ``pylvs ctl`` or the API, which the file never had; ``pylvs ctl --save-config`` writes the
  running state to the file first to keep them).
* ``SIGTERM`` / ``SIGINT``: stop (the HA component hands over first) and remove every route,
  rule, address and proxy entry pylvs added; exit 0.

The loop is chosen with a loop factory (``--loop`` or ``director.loop``), never a policy.
``check`` validates a file and prints every problem, without touching the network, then the
warnings (valid but probably not meant: no virtual servers, scheduler flags the scheduler does
not read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pylvs import config as config_mod
from pylvs.errors import ConfigError, PylvsError
from pylvs.model import Config

__all__ = ["JsonFormatter", "check_main", "serve_main", "setup_logging"]

log = logging.getLogger("pylvs")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(fmt: str, level: str, verbose: bool = False) -> None:
    """Send pylvs's log records to stderr in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        fmt_text = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(fmt_text))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else getattr(logging, level.upper()))


def _parser(prog: str, serve: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="the TOML file")
    if serve:
        p.add_argument("--loop", choices=("uvloop", "asyncio"),
                       help="event loop (default: director.loop from the file)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _load(path: str) -> Config | None:
    """The config at ``path``, or None after printing every problem to stderr."""
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def check_main(argv: Sequence[str]) -> int:
    """``pylvs check -c FILE``: print every problem (exit 2) or a one-line summary (exit 0)."""
    args = _parser("pylvs check", serve=False).parse_args(argv)
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_CONFIG
    for line in config_mod.warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    n_rs = sum(len(vs.real_servers) for vs in cfg.virtual_servers)
    print(f"{cfg.source}: OK ({len(cfg.virtual_servers)} virtual servers, {n_rs} real servers)")
    return EXIT_OK


def serve_main(argv: Sequence[str]) -> int:
    """``pylvs serve -c FILE [--loop uvloop|asyncio] [-v]``: run until SIGTERM/SIGINT, then
    exit the process at once (``os._exit``) once the director has stopped."""
    args = _parser("pylvs serve", serve=True).parse_args(argv)
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_CONFIG
    setup_logging(cfg.director.log_format, cfg.director.log_level, args.verbose)
    for line in config_mod.warnings(cfg):
        log.warning("%s", line)
    loop_name = args.loop or cfg.director.loop
    factory = _loop_factory(loop_name)
    log.info("pylvs serve: %s, %s loop", cfg.source, loop_name if factory else "asyncio")
    stop_requested: list[float] = []
    runner = asyncio.Runner(loop_factory=factory)
    try:
        status = runner.run(_serve(cfg, args.config, args.verbose, stop_requested))
    except BaseException:
        runner.close()
        raise
    if stop_requested:
        log.info("pylvs serve: exit %d, %.0f ms after the stop signal", status,
                 (time.monotonic() - stop_requested[0]) * 1e3)
    # The director has undone everything it set up (network, checker, API socket): leave now.
    # Closing the runner would wait for a worker thread still building a config for a request
    # the stop cancelled (a restore's, ~0.5 s), and the interpreter's teardown of a
    # 10,000-server heap takes ~0.2 s more; SIGTERM is to be handled within 1 s (issue 13).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed; using the asyncio loop")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(cfg: Config, path: str, verbose: bool, stop_requested: list[float]) -> int:
    # Imported here: `pylvs check` needs neither the C core nor aiohttp.
    from pylvs.components import attach_components
    from pylvs.director import Director

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: asyncio.Queue[None] = asyncio.Queue(maxsize=1)

    def on_stop(signame: str) -> None:
        log.info("%s: stopping", signame)
        stop_requested.append(time.monotonic())
        stop.set()

    def on_hup() -> None:
        if reloads.empty():
            reloads.put_nowait(None)

    try:
        director = Director(cfg)
        attach_components(director)
    except PylvsError as exc:
        log.error("cannot build the director: %s", exc)
        return EXIT_CONFIG
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        try:
            await director.start()
        except (PylvsError, OSError) as exc:
            log.error("start failed: %s", exc)
            return EXIT_RUNTIME
        log.info("ready: %s", ", ".join(f"{vs.protocol} {vs.address}"
                                        for vs in cfg.virtual_servers) or "no services")
        reloader = asyncio.create_task(_reload_loop(director, path, reloads, verbose))
        stopper = asyncio.create_task(stop.wait())
        assert director.failed is not None
        waiters: list[asyncio.Future[Any]] = [stopper, director.failed]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        status = EXIT_OK
        if director.failed.done():
            log.error("%s; exiting", director.failed.result())
            status = EXIT_RUNTIME
        for task in (reloader, stopper):
            task.cancel()
        await asyncio.gather(reloader, stopper, return_exceptions=True)
        await director.stop(handover=True)
        return status
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _reload_loop(director: Any, path: str, reloads: asyncio.Queue[None],
                       verbose: bool) -> None:
    file_cfg: Config = director.config  # the file as last loaded: what the file "knows"
    while True:
        await reloads.get()
        started = time.monotonic()
        try:
            # Parsing and comparing 10,000 servers is CPU work off the loop (issue 13).
            new, gone, warnings = await asyncio.to_thread(_load_for_reload, path,
                                                          director.config, file_cfg)
            loaded = time.monotonic()
            await director.apply_config(new, validated=True)  # config.load validated it
        except ConfigError as exc:
            log.error("SIGHUP: reload refused, keeping the running configuration:\n%s", exc)
            continue
        except PylvsError as exc:
            log.error("SIGHUP: reload failed: %s", exc)
            continue
        file_cfg = new
        setup_logging(new.director.log_format, new.director.log_level, verbose)
        _log_removals(path, gone)
        for line in warnings:
            log.warning("%s", line)
        log.info("SIGHUP: reloaded %s in %.1f ms (reading the file %.0f ms)", path,
                 (time.monotonic() - started) * 1000, (loaded - started) * 1000)


def _load_for_reload(path: str, running: Config,
                     file_cfg: Config) -> tuple[Config, list[str], list[str]]:
    """The file, what applying it removes, and its warnings (run in a thread)."""
    new = config_mod.load(path)
    return new, config_mod.removals(running, new, baseline=file_cfg), config_mod.warnings(new)


def _log_removals(path: str, gone: list[str]) -> None:
    """Say what the reload took away; loudly for what only existed at run time."""
    runtime = [g for g in gone if g.endswith("(added at run time)")]
    if runtime:
        log.warning("SIGHUP: %s does not have %d change(s) made at run time with pylvs ctl "
                    "or the API; removed (run `pylvs ctl --save-config` before editing the "
                    "file to keep them): %s", path, len(runtime), "; ".join(runtime))
    for line in gone:
        if line not in runtime:
            log.info("SIGHUP: removed %s (no longer in %s)", line, path)
