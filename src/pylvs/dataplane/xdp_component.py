"""Keeps the XDP SYN-cookie responder (:mod:`pylvs.dataplane.xdp`) in step with the director.

``[director] xdp_synproxy``: ``auto`` (the default) attaches the program to the public
interface while a service has ``synproxy = true``, and when it cannot (no clang at build time,
no libbpf, no bpf(2), the driver refuses) logs one warning and leaves every SYN to the TUN
path, which answers it as before; ``on`` makes that failure fatal at start; ``off`` never loads
it.  On every config change the services map follows the synproxy services (exact-port TCP
services: a port-0 or port-list service is answered by the engine), and every second the
current and next period's cookie secrets are pushed.  The director's status (``pylvs status``,
the status page, ``/metrics``) shows the state and ``synproxy_xdp_syn``, the SYN-ACKs sent by
the program.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from pylvs.dataplane.xdp import IPAddress, XdpSynproxy
from pylvs.errors import CoreError
from pylvs.tasks import cancel_and_wait

if TYPE_CHECKING:
    from pylvs.engine import Engine
    from pylvs.model import Config

__all__ = ["XdpHost", "XdpSynproxyComponent", "synproxy_services"]

log = logging.getLogger("pylvs.dataplane.xdp")

SECRETS_INTERVAL = 1.0  # a period lasts 60 s; the next one's key is always pushed ahead


class XdpHost(Protocol):
    """What the component uses of the director (typed here: dataplane/ never imports it)."""

    engine: Engine
    status_providers: dict[str, Callable[[], Any]]
    config_listeners: list[Callable[[Config], Awaitable[None]]]

    @property
    def config(self) -> Config:
        """The configuration currently applied."""


def synproxy_services(cfg: Config) -> frozenset[tuple[IPAddress, int]]:
    """The VIP:ports the program answers for: exact-port TCP services with synproxy."""
    return frozenset((vs.address.address, vs.address.port) for vs in cfg.virtual_servers
                     if vs.synproxy and vs.protocol == "tcp" and not vs.fwmark
                     and vs.address.port and not vs.ports)


class XdpSynproxyComponent:
    """Loads, attaches, feeds and detaches the program for one director."""

    def __init__(self, host: XdpHost, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self._clock = clock  # CLOCK_MONOTONIC, as the program's bpf_ktime_get_ns
        self.program: XdpSynproxy | None = None
        self.error: str | None = None  # why the program is not in use (auto mode)
        self._task: asyncio.Task[None] | None = None
        self._started = False
        # _sync runs in a thread (pyroute2 and the verifier would stall the loop), one at a time
        self._lock = asyncio.Lock()
        host.config_listeners.append(self._on_config)
        host.status_providers["xdp_synproxy"] = self.status

    async def start(self) -> None:
        """Attach when the config asks for it; raises only when ``xdp_synproxy = "on"``."""
        self._started = True
        async with self._lock:
            await asyncio.to_thread(self._sync, self.host.config, fatal=True)
        self._task = asyncio.create_task(self._refresh(), name="xdp secrets")

    async def stop(self, *, handover: bool = True) -> None:
        """Detach and free the program (closing the BPF links is the detach)."""
        self._started = False
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        async with self._lock:
            self._close()

    async def _on_config(self, cfg: Config) -> None:
        if self._started:
            async with self._lock:
                await asyncio.to_thread(self._sync, cfg, fatal=False)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(SECRETS_INTERVAL)
            if self.program is not None:
                try:
                    self.program.push_secrets(self.host.engine, self._clock())
                except CoreError as exc:  # the program then passes SYNs to the engine
                    log.warning("XDP SYN proxy: pushing the cookie secrets failed: %s", exc)

    def _sync(self, cfg: Config, *, fatal: bool) -> None:
        mode = cfg.director.xdp_synproxy
        services = synproxy_services(cfg)
        if mode == "off" or not services:
            self._close()
            self.error = None
            return
        ifname = cfg.director.public_interface
        attached = self.program is not None and ifname in self.program.links
        try:
            if self.program is None:
                self.program = XdpSynproxy.load()
            self.program.push_secrets(self.host.engine, self._clock())
            self.program.set_services(services)
            used = self.program.attach(ifname)
        except (CoreError, OSError) as exc:
            self._close()
            self.error = str(exc)
            if mode == "on" and fatal:
                raise CoreError(f"xdp_synproxy = \"on\": {exc}") from exc
            log.warning("XDP SYN proxy unavailable, SYNs are answered through the TUN: %s", exc)
            return
        if not attached:
            log.info("XDP SYN proxy attached to %s (%s mode) for %d service(s)", ifname, used,
                     len(services))
        self.error = None

    def _close(self) -> None:
        if self.program is not None:
            self.program.close()
            self.program = None

    def status(self) -> dict[str, Any]:
        """The ``xdp_synproxy`` section: knob, state, interfaces and counters."""
        mode = self.host.config.director.xdp_synproxy
        out: dict[str, Any] = {"mode": mode, "attached": {}, "synproxy_xdp_syn": 0,
                               "synproxy_xdp_no_secret": 0}
        if self.program is not None:
            out["attached"] = {name: m for name, (_, m) in self.program.links.items()}
            counts = self.program.counters()
            out["synproxy_xdp_syn"] = counts["syn"]
            out["synproxy_xdp_no_secret"] = counts["no_secret"]
        out["state"] = ("attached" if out["attached"] else "unavailable" if self.error
                        else "off" if mode == "off" else "idle")
        if self.error:
            out["error"] = self.error
        return out
