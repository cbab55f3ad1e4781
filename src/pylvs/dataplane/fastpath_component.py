"""Keeps the established-flow fast path (:mod:`pylvs.dataplane.fastpath`) in step with the
director.

``[director] fastpath``: ``auto`` (the default) loads the TC program, attaches it to the public
and private interfaces and lets the engine offload its established TCP connections; when it
cannot (no clang at build time, no libbpf, no tcx in the kernel, no packet workers) it logs one
warning that names the cause and every packet takes the TUN path as before.  ``on`` makes that
failure fatal at start; ``off`` never loads it.

A netfilter ruleset in the director's namespace (nftables tables, iptables tables) keeps
``auto`` off too: the program forwards before netfilter, so a stateful firewall would see only
each connection's handshake and end, and conntrack would call the end INVALID (its window
never saw the data).  ``on`` attaches anyway and says so.

Every :data:`~pylvs.dataplane.fastpath.FOLD_INTERVAL` the kernel's counts are folded into the
engine (stats, timers, sync thresholds) and dead entries pruned; a stats read
(:meth:`pylvs.engine.Engine.services`, ``stats``) folds first, so counters read right after
traffic are whole, while the map is small (:data:`READ_FOLD_MAX_ENTRIES`; a larger one is
left to the periodic fold, off the loop).  A config change folds at once, in a thread (a
removed server's entries go).  While the director is not active (an HA backup) nothing is
offloaded and the map is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pylvs.dataplane.fastpath import FOLD_INTERVAL, QUEUE, FastPath
from pylvs.dataplane.xdp_component import XdpHost
from pylvs.errors import CoreError
from pylvs.tasks import cancel_and_wait

if TYPE_CHECKING:
    from pylvs._core import lvs_workers
    from pylvs.model import Config

__all__ = ["FastPathComponent", "FastPathHost"]

log = logging.getLogger("pylvs.dataplane.fastpath")

READ_FOLD_AGE = 0.05  # a stats read folds unless the last fold is younger than this (seconds)
# A stats read runs on the event loop and a fold reads the whole map: above this many entries
# (4096 connections) a read takes the last periodic fold (at most FOLD_INTERVAL old) instead,
# so a large site's API reads and scrapes never hold the loop for a full map walk.
READ_FOLD_MAX_ENTRIES = 8192


def netfilter_tables() -> list[str]:
    """The netfilter tables of this network namespace (nftables' and the legacy iptables'),
    e.g. ``["inet filter"]``; a stateful firewall among them would not see fast-pathed
    packets."""
    tables: list[str] = []
    for proc in ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"):
        with contextlib.suppress(OSError):  # no legacy iptables module
            tables += [f"iptables {t}" for t in Path(proc).read_text().split()]
    nft = shutil.which("nft")
    if nft:
        try:
            res = subprocess.run([nft, "list", "tables"], capture_output=True, text=True,
                                 timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return tables
        tables += [line.removeprefix("table ").strip() for line in res.stdout.splitlines()
                   if line.startswith("table ")]
    return tables


class FastPathHost(XdpHost, Protocol):
    """What the component uses of the director: the XDP component's surface, and the role
    and the workers (typed here: dataplane/ never imports the director)."""

    @property
    def active(self) -> bool:
        """Whether this director forwards (not an HA backup)."""

    def workers_handle(self) -> lvs_workers | None:
        """The running packet workers' handle, or None (pumped on the event loop)."""


class FastPathComponent:
    """Loads, attaches, binds, folds and detaches the program for one director."""

    def __init__(self, host: FastPathHost) -> None:
        self.host = host
        self.program: FastPath | None = None
        self.error: str | None = None  # why the fast path is not in use (auto mode)
        self._task: asyncio.Task[None] | None = None
        self._last_fold = 0.0
        self._entries = 0  # map entries the last fold left
        # the fold runs in a thread: closing (or re-binding) must wait for it
        self._lock = threading.RLock()
        host.config_listeners.append(self._on_config)
        host.status_providers["fastpath"] = self.status
        host.engine.read_hooks.append(self.fold_for_read)

    async def start(self) -> None:
        """Attach when the config asks for it; raises only when ``fastpath = "on"``."""
        self._setup(self.host.config, fatal=True)
        self._task = asyncio.create_task(self._fold_loop(), name="fastpath fold")

    async def stop(self, *, handover: bool = True) -> None:
        """Fold the last counts, stop offloading and detach (closing the links)."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        self._close()

    def _setup(self, cfg: Config, *, fatal: bool) -> None:
        with self._lock:
            self._setup_locked(cfg, fatal=fatal)

    def _setup_locked(self, cfg: Config, *, fatal: bool) -> None:
        mode = cfg.director.fastpath
        if mode == "off":
            self._close()
            self.error = None
            return
        d = cfg.director
        try:
            workers = self.host.workers_handle()
            if workers is None:
                raise CoreError("the fast path needs packet workers (workers >= 1)")
            if self.program is None and (tables := netfilter_tables()):
                why = (f"netfilter tables in the director's namespace ({', '.join(tables)}) "
                       "would see only each connection's handshake and end")
                if mode == "auto":
                    raise CoreError(why + ' (fastpath = "on" uses it anyway)')
                log.warning("fast path on although %s", why)
            if self.program is None:
                self.program = FastPath.load(d.max_connections)
            for ifname in dict.fromkeys((d.public_interface, d.private_interface)):
                self.program.attach(ifname)
            if not self.program.bound and self.host.active:
                self.program.bind(self.host.engine, d.max_connections, workers,
                                  after_packets=d.fastpath_after_packets)
        except (CoreError, OSError) as exc:
            self._close()
            self.error = str(exc)
            if mode == "on" and fatal:
                raise CoreError(f'fastpath = "on": {exc}') from exc
            log.warning("fast path unavailable, every packet takes the TUN: %s", exc)
            return
        self.error = None
        log.info("fast path attached to %s (tcx ingress)", ", ".join(self.program.links))

    async def _on_config(self, cfg: Config) -> None:
        if cfg.director.fastpath == "off":
            self._close()
        elif self.program is None:  # switched on by a reload
            await asyncio.to_thread(self._setup, cfg, fatal=False)
        else:
            with self._lock:
                if self.program is not None and self.program.bound:
                    self.host.engine.offload_enable(QUEUE, cfg.director.fastpath_after_packets)
            # a removed server's or service's entries go now; off the loop, as the periodic
            # fold, since the map may be large
            await asyncio.to_thread(self.fold)

    async def _fold_loop(self) -> None:
        while True:
            await asyncio.sleep(FOLD_INTERVAL)
            self._follow_role()
            # off the loop: the fold takes the engine lock once per 256 entries
            await asyncio.to_thread(self.fold)

    def _follow_role(self) -> None:
        """Offload only while active: an HA backup forwards nothing, its map stays empty."""
        with self._lock:
            prog = self.program
            if prog is None:
                return
            active = self.host.active
            if prog.bound and not active:
                prog.collect()
                prog.unbind()
                log.info("fast path: not active, connections back to the TUN")
            elif not prog.bound and active:
                workers = self.host.workers_handle()
                if workers is not None:
                    d = self.host.config.director
                    prog.bind(self.host.engine, d.max_connections, workers,
                              after_packets=d.fastpath_after_packets)

    def fold(self) -> None:
        """Fold the kernel's counts into the engine now (errors are logged, not raised)."""
        with self._lock:
            if self.program is None:
                return
            try:
                self._entries = self.program.collect()
            except CoreError as exc:
                log.warning("fast path fold failed: %s", exc)
            self._last_fold = time.monotonic()

    def fold_for_read(self) -> None:
        """Before a stats read: fold unless the last fold is very recent or the map is large
        (then the read sees the periodic fold's counts, at most FOLD_INTERVAL old)."""
        if (self.program is not None and self._entries <= READ_FOLD_MAX_ENTRIES
                and time.monotonic() - self._last_fold > READ_FOLD_AGE):
            self.fold()

    def _close(self) -> None:
        self.fold()
        with self._lock:
            if self.program is not None:
                self.program.close()
                self.program = None

    def status(self) -> dict[str, Any]:
        """The ``fastpath`` section: knob, state, interfaces and counters."""
        mode = self.host.config.director.fastpath
        out: dict[str, Any] = {"mode": mode, "attached": [], "offloading": False}
        if self.program is not None:
            out["attached"] = sorted(self.program.links)
            out["offloading"] = self.program.bound
            out.update(self.program.stats().as_dict())
        out["state"] = ("attached" if out["attached"] else "unavailable" if self.error
                        else "off")
        if self.error:
            out["error"] = self.error
        return out
