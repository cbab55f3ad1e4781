"""Keeps the XDP SYN-cookie responder (:mod:`pylvs.dataplane.xdp`) in step with the director.

``[director] xdp_synproxy``: ``auto`` (the default) attaches the program to the public
interface while a service has ``synproxy = true`` or, with ``[defense] syncookies`` 1 or 2,
while any TCP service exists; when it cannot (no clang at build time, no libbpf, no bpf(2), the
driver refuses) it logs one warning and leaves every SYN to the TUN path, which answers it as
before; ``on`` makes that failure fatal at start; ``off`` never loads it.  On every config
change the services map follows the services (exact-port TCP services: a port-0 or port-list
service is answered by the engine): synproxy ones always answered, the others only while the
engine's syncookies is engaged.  Every ``POLL_INTERVAL`` the component mirrors that engaged
flag into the program and reports the SYNs it answered for syncookies to the engine (its
disengage measure counts them: core/defense.c); every second it pushes the current and next
period's cookie secrets.  Without a synproxy service and in generic mode (a veth, a driver
without native XDP) the program is loaded and tried at start but attached only while
syncookies is engaged ("standby" otherwise): generic XDP copies every non-linear skb (a GRO or
GSO aggregate) into one linear buffer before any program runs, a cost on bulk traffic from
clients that a director without a flood should not risk (a precaution: on the veth testbed the
attached, disengaged program cost nothing measurable; bench/RESULTS.md).  In native mode it
stays attached (a frame that is not a bare SYN costs a few instructions, and attaching
reconfigures the rings of some drivers).  The director's status (``pylvs status``, the status page,
``/metrics``) shows the state, ``synproxy_xdp_syn`` (the SYN-ACKs sent by the program) and
``syncookie_xdp_syn`` (those of them for services without synproxy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from pylvs.dataplane.xdp import SVC_COOKIES, SVC_SYNPROXY, IPAddress, XdpSynproxy
from pylvs.errors import CoreError
from pylvs.tasks import cancel_and_wait

if TYPE_CHECKING:
    from pylvs.engine import Engine
    from pylvs.model import Config

__all__ = ["XdpHost", "XdpSynproxyComponent", "answered_services", "synproxy_services"]

log = logging.getLogger("pylvs.dataplane.xdp")

SECRETS_INTERVAL = 1.0  # a period lasts 60 s; the next one's key is always pushed ahead
# How soon the program follows syncookies engaging: until it does, the flood's SYNs take the
# TUN path (answered there by the engine, but at the TUN's cost).
POLL_INTERVAL = 0.1


class XdpHost(Protocol):
    """What the component uses of the director (typed here: dataplane/ never imports it)."""

    engine: Engine
    status_providers: dict[str, Callable[[], Any]]
    config_listeners: list[Callable[[Config], Awaitable[None]]]

    @property
    def config(self) -> Config:
        """The configuration currently applied."""


def synproxy_services(cfg: Config) -> frozenset[tuple[IPAddress, int]]:
    """The VIP:ports the program always answers for: exact-port TCP services with synproxy."""
    return frozenset(k for k, kind in answered_services(cfg).items() if kind == SVC_SYNPROXY)


def answered_services(cfg: Config) -> dict[tuple[IPAddress, int], int]:
    """The program's services map: each exact-port TCP service's VIP:port and kind,
    SVC_SYNPROXY (synproxy = true) or, unless ``[defense] syncookies = 0``, SVC_COOKIES."""
    out: dict[tuple[IPAddress, int], int] = {}
    for vs in cfg.virtual_servers:
        if vs.protocol != "tcp" or vs.fwmark or not vs.address.port or vs.ports:
            continue
        if vs.synproxy or cfg.defense.syncookies:
            key = (vs.address.address, vs.address.port)
            out[key] = max(out.get(key, 0), SVC_SYNPROXY if vs.synproxy else SVC_COOKIES)
    return out


class XdpSynproxyComponent:
    """Loads, attaches, feeds and detaches the program for one director."""

    def __init__(self, host: XdpHost, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self._clock = clock  # CLOCK_MONOTONIC, as the program's bpf_ktime_get_ns
        self.program: XdpSynproxy | None = None
        self.error: str | None = None  # why the program is not in use (auto mode)
        self._task: asyncio.Task[None] | None = None
        self._first_sync: asyncio.Task[None] | None = None
        self._started = False
        self._cookie_syns_reported = 0  # the program's cookie_syn counter, as last reported
        # attached only while syncookies is engaged (generic mode, no synproxy service)
        self._standby = False
        self._ifname = ""
        # _sync runs in a thread (pyroute2 and the verifier would stall the loop), one at a time
        self._lock = asyncio.Lock()
        host.config_listeners.append(self._on_config)
        host.status_providers["xdp_synproxy"] = self.status

    async def start(self) -> None:
        """Attach when the config asks for it; raises only when ``xdp_synproxy = "on"``.

        ``auto`` loads and attaches in the background: the verifier and pyroute2 take a
        tenth of a second or more, and with syncookies on every director with a TCP service
        loads the program, so the components after this one (the API) must not wait for it;
        until it is attached the engine answers every SYN through the TUN, as before."""
        self._started = True
        if self.host.config.director.xdp_synproxy == "on":
            async with self._lock:
                await asyncio.to_thread(self._sync, self.host.config, fatal=True)
        else:
            self._first_sync = asyncio.create_task(self._on_config(self.host.config),
                                                   name="xdp load")
        self._task = asyncio.create_task(self._refresh(), name="xdp secrets")

    async def synced(self) -> None:
        """Wait for the background load of :meth:`start` (``auto``), if any."""
        if self._first_sync is not None:
            await asyncio.shield(self._first_sync)

    async def stop(self, *, handover: bool = True) -> None:
        """Detach and free the program (closing the BPF links is the detach)."""
        self._started = False
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if self._first_sync is not None:
            # not cancelled: its thread would go on loading while _close runs
            await asyncio.gather(self._first_sync, return_exceptions=True)
            self._first_sync = None
        async with self._lock:
            self._close()

    async def _on_config(self, cfg: Config) -> None:
        if self._started:
            async with self._lock:
                await asyncio.to_thread(self._sync, cfg, fatal=False)

    async def _refresh(self) -> None:
        last_push = self._clock()
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            program = self.program
            if program is None:
                continue
            try:
                self._follow_cookies(program)
                if self._standby and program.cookies_engaged != (self._ifname in program.links):
                    # on the loop: with the mode given, attaching is one bpf(2) call, no netlink
                    async with self._lock:
                        self._standby_attach(program)
                if self._clock() - last_push >= SECRETS_INTERVAL:
                    last_push = self._clock()
                    program.push_secrets(self.host.engine, last_push)
            except (CoreError, OSError) as exc:  # the program then passes SYNs to the engine
                log.warning("XDP SYN proxy: updating the program failed: %s", exc)

    def _standby_attach(self, program: XdpSynproxy) -> None:
        """Attach while syncookies is engaged, detach when it is not (standby mode)."""
        if program is not self.program or not self._standby:
            return  # a reload changed things meanwhile
        if program.cookies_engaged:
            program.attach(self._ifname, "generic")
            log.info("XDP SYN proxy attached to %s for syncookies", self._ifname)
        else:
            program.detach(self._ifname)
            log.info("XDP SYN proxy detached from %s (syncookies disengaged)", self._ifname)

    def _follow_cookies(self, program: XdpSynproxy) -> None:
        """Mirror the engine's syncookies state into the program, and report the SYNs the
        program answered for it since the last call (the engine never sees them)."""
        engine = self.host.engine
        sc = engine.defense().syncookies
        engaged = bool(sc and sc.engaged)
        if engaged != program.cookies_engaged:
            program.set_cookies_engaged(engaged)
            log.info("XDP SYN proxy: syncookies %s", "engaged" if engaged else "disengaged")
        answered = program.counters()["cookie_syn"]
        engine.note_cookie_syns(answered - self._cookie_syns_reported)
        self._cookie_syns_reported = answered

    def _sync(self, cfg: Config, *, fatal: bool) -> None:
        mode = cfg.director.xdp_synproxy
        services = answered_services(cfg)
        if mode == "off" or not services:
            self._close()
            self.error = None
            return
        ifname = cfg.director.public_interface
        known = self.program is not None and self._ifname == ifname  # logged once
        try:
            if self.program is None:
                self.program = XdpSynproxy.load()
                self._cookie_syns_reported = 0
            self.program.push_secrets(self.host.engine, self._clock())
            self.program.set_services(services)
            if self._ifname and self._ifname != ifname:
                self.program.detach(self._ifname)
            used = self.program.attach(ifname)  # at start too: a failure shows at once
            self._ifname = ifname
            self._standby = used == "generic" and SVC_SYNPROXY not in services.values()
            if self._standby and not self.program.cookies_engaged:
                self.program.detach(ifname)
        except (CoreError, OSError) as exc:
            self._close()
            self.error = str(exc)
            if mode == "on" and fatal:
                raise CoreError(f"xdp_synproxy = \"on\": {exc}") from exc
            # a warning when a synproxy service wanted it; for syncookies alone XDP is only
            # the faster of two ways, and a director without clang or bpf(2) says so quietly
            level = logging.WARNING if SVC_SYNPROXY in services.values() else logging.INFO
            log.log(level, "XDP SYN proxy unavailable, SYNs are answered through the TUN: %s",
                    exc)
            return
        if not known:
            log.info("XDP SYN proxy %s %s (%s mode) for %d synproxy and %d syncookies "
                     "service(s)", "ready for" if self._standby else "attached to", ifname, used,
                     sum(k == SVC_SYNPROXY for k in services.values()),
                     sum(k == SVC_COOKIES for k in services.values()))
        self.error = None

    def _close(self) -> None:
        if self.program is not None:
            self.program.close()
            self.program = None
        self._standby = False
        self._ifname = ""

    def status(self) -> dict[str, Any]:
        """The ``xdp_synproxy`` section: knob, state, interfaces and counters."""
        mode = self.host.config.director.xdp_synproxy
        out: dict[str, Any] = {"mode": mode, "attached": {}, "synproxy_xdp_syn": 0,
                               "synproxy_xdp_no_secret": 0, "syncookie_xdp_syn": 0,
                               "syncookies_engaged": False}
        if self.program is not None:
            out["attached"] = {name: m for name, (_, m) in self.program.links.items()}
            counts = self.program.counters()
            out["synproxy_xdp_syn"] = counts["syn"]
            out["synproxy_xdp_no_secret"] = counts["no_secret"]
            out["syncookie_xdp_syn"] = counts["cookie_syn"]
            out["syncookies_engaged"] = self.program.cookies_engaged
        out["state"] = ("attached" if out["attached"] else "unavailable" if self.error
                        else "standby" if self.program is not None
                        else "off" if mode == "off" else "idle")
        if self.error:
            out["error"] = self.error
        return out
