"""Runs BIRD for one director of an active-active cluster and keeps its announcements true.

Lifecycle (docs/cluster.md):

* ``start``: write ``bird.conf`` (every VIP disabled), check it with ``bird -p``, start BIRD in
  the foreground with this director's own control socket and pid file, and begin the loop.
  BIRD is started with ``PR_SET_PDEATHSIG = SIGKILL``: if pylvs dies, its BIRD dies with it,
  the BGP sessions close and BFD stops, so routers and real servers route around the director
  at once instead of sending traffic to a node whose packet path is gone.
* the loop (every :data:`RECONCILE_INTERVAL`): a VIP is announced while the director is active
  and at least one real server of a service on that VIP is available with a weight above 0;
  otherwise it is withdrawn.  Announcing is ``enable vip_…``, withdrawing ``disable vip_…``.
  Every :data:`STATUS_INTERVAL` it reads BGP and BFD state for ``status()`` and logs changes,
  naming BIRD's own reason (``Received: Bad peer AS``, ``Socket: Connection refused``).
* members (``[cluster] members``): :class:`pylvs.cluster.sync.ClusterSync` starts first; it
  exchanges hellos (the member list in status) and connection records with the other
  directors, and VIPs are announced only once it is warm (it holds the members' connections).
* ``stop`` (SIGTERM, or any stop): drain.  Withdraw every VIP (routers move new packets of
  every flow to the other directors, which pick them up), keep forwarding for ``drain_time``,
  then stop the BFD sessions so the real servers take this director out of their return
  route, wait one BFD detection time while still un-NATting late replies, then stop BIRD, and
  last the member sync (which kept sending this director's records through the drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pylvs.cluster.birdconf import BFD_PROTOCOL, director_config, router_protocol, vip_protocol
from pylvs.cluster.birdctl import (
    BfdSession,
    BirdControl,
    BirdError,
    ProtocolState,
    parse_bfd_sessions,
    parse_protocols,
)
from pylvs.cluster.sync import ClusterSync
from pylvs.errors import ConfigError
from pylvs.ha.node import services_digest
from pylvs.model import ClusterConfig, Config, IPAddress

if TYPE_CHECKING:
    from pylvs.director import ComponentHost

__all__ = ["ClusterComponent", "attach_cluster", "node_id"]

log = logging.getLogger("pylvs.cluster")

RECONCILE_INTERVAL = 0.1
STATUS_INTERVAL = 1.0
SOCKET_WAIT = 10.0
ESTABLISH_GRACE = 5.0  # a session still down this long after start is reported as an error
# Schedulers that map a flow to the same server on every director with the same servers.
CONSISTENT_SCHEDULERS = ("mh", "sh", "dh")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ClusterComponent:
    """BIRD + announcements + drain for one director (``[cluster] mode = "active-active"``)."""

    def __init__(self, director: ComponentHost) -> None:
        self._director = director
        cl = director.config.cluster
        state = Path(cl.state_dir)
        self.conf_path = state / "bird.conf"
        self.socket_path = state / "bird.ctl"
        self.pid_path = state / "bird.pid"
        self.log_path = state / "bird.log"
        self._fixed = (cl.mode, cl.state_dir, cl.bird)  # what a reload cannot change
        self.control = BirdControl(str(self.socket_path))
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: Any = None
        self._task: asyncio.Task[None] | None = None
        self._announced: set[IPv4Address] | None = None  # None: unknown, re-apply all
        self._protocols: list[ProtocolState] = []
        self._bfd: list[BfdSession] = []
        self._error: str | None = None
        self._reported: dict[str, tuple[str, str | None]] = {}
        self._started_at = 0.0
        self._draining = False
        self.sync: ClusterSync | None = None
        director.config_listeners.append(self._on_config)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start BIRD with every VIP withdrawn and begin announcing what is served."""
        cfg = self._director.config
        cl = cfg.cluster
        for vs in cfg.virtual_servers:
            if vs.scheduler not in CONSISTENT_SCHEDULERS and not (cl.members and cl.sync):
                # Another director would pick another server for a flow ECMP moves to it.
                log.warning("cluster: %s uses %s: a flow that moves to another director may "
                            "land on another real server; use mh or sh, or list the "
                            "cluster.members to sync connections", vs.key.label, vs.scheduler)
        if cl.members:
            self.sync = ClusterSync(
                cl, interface=cfg.director.private_interface, node_id=node_id(cl),
                digest=services_digest(cfg), engine=self._director.engine,
                hello_state=self._hello_state)
            await self.sync.start()
        try:
            await self._start_bird()
        except BaseException:
            if self.sync is not None:
                await self.sync.stop()
                self.sync = None
            raise

    def _hello_state(self) -> tuple[list[str], bool]:
        """What this director tells the members: the VIPs it announces, and if it drains."""
        return [str(v) for v in self._announced or ()], self._draining

    async def _start_bird(self) -> None:
        cl = self._director.config.cluster
        os.makedirs(cl.state_dir, mode=0o700, exist_ok=True)
        self._write_config(self._director.config, set())
        await self._check_config()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (held while BIRD runs)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                cl.bird, "-f", "-c", str(self.conf_path), "-s", str(self.socket_path),
                "-P", str(self.pid_path), stdin=subprocess.DEVNULL, stdout=self._log_file,
                stderr=self._log_file, preexec_fn=_die_with_parent, start_new_session=True)
        except OSError as exc:
            raise ConfigError(f"cluster.bird: cannot start {cl.bird!r}: {exc}") from None
        await self._wait_socket()
        self._announced = set()
        self._started_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="cluster")
        log.info("cluster: BIRD %d started (AS %d, routers %s); control socket %s",
                 self._proc.pid, cl.asn,
                 ", ".join(f"{r.address} AS {r.asn}" for r in cl.routers), self.socket_path)

    async def stop(self, *, handover: bool = True) -> None:
        """Drain (withdraw, wait, leave the real servers' routes), then stop BIRD.

        Without ``handover`` (a stop that must be quick) the VIPs are withdrawn and BIRD stops
        at once: the routers and real servers then move the flows as after a failure.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        cl = self._director.config.cluster
        if self._proc is not None and self._proc.returncode is None:
            self._draining = True
            try:
                announced = sorted(self._announced or ())
                await self._apply(set())
                if announced and handover:
                    log.info("cluster: drain: withdrew %s; forwarding for %.1f s",
                             ", ".join(map(str, announced)), cl.drain_time)
                    await asyncio.sleep(cl.drain_time)
                if handover and cl.bfd and cl.real_server_bfd:
                    await self.control.command(f"disable {BFD_PROTOCOL}")
                    await asyncio.sleep(cl.bfd_interval * cl.bfd_multiplier + 0.2)
            except BirdError as exc:
                log.warning("cluster: drain: %s", exc)
            await self._stop_bird()
        if self.sync is not None:
            await self.sync.stop()
            self.sync = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for path in (self.socket_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def _stop_bird(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("cluster: BIRD stopped")

    async def _check_config(self) -> None:
        cl = self._director.config.cluster
        try:
            proc = await asyncio.create_subprocess_exec(
                cl.bird, "-p", "-c", str(self.conf_path), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise ConfigError(f"cluster.bird: cannot run {cl.bird!r}: {exc} (install BIRD 2, "
                              f"Debian package bird2)") from None
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise ConfigError(f"cluster: BIRD refused {self.conf_path}: "
                              f"{out.decode(errors='replace').strip()}")

    async def _wait_socket(self) -> None:
        deadline = time.monotonic() + SOCKET_WAIT
        while True:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise ConfigError(f"cluster: BIRD exited with {self._proc.returncode} at start; "
                                  f"see {self.log_path}: {self._log_tail()}")
            try:
                await self.control.command("show status")
                return
            except BirdError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"cluster: BIRD's control socket {self.socket_path} did "
                                      f"not answer within {SOCKET_WAIT:.0f} s") from None
                await asyncio.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip().splitlines()[-1]
        except (OSError, IndexError):
            return "(no log)"

    # -- the loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        next_status = 0.0
        while True:
            try:
                if self._proc is not None and self._proc.returncode is not None:
                    self._error = f"BIRD exited with {self._proc.returncode}: {self._log_tail()}"
                    log.error("cluster: %s; nothing is announced", self._error)
                    return
                await self._apply(self.serving())
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + STATUS_INTERVAL
                    await self._refresh()
            except BirdError as exc:
                self._error = str(exc)
                log.warning("cluster: %s", exc)
                self._announced = None
            await asyncio.sleep(RECONCILE_INTERVAL)

    def serving(self) -> set[IPv4Address]:
        """VIPs this director should announce now: active, with a server able to take flows."""
        d = self._director
        if not d.active or self._draining or (self.sync is not None and not self.sync.warm()):
            return set()
        return {IPv4Address(svc.key.address) for svc in d.engine.services()
                if ":" not in svc.key.address  # the cluster announces IPv4 VIPs (/32)
                and any(s.available and s.weight > 0 for s in svc.servers)}

    async def _apply(self, wanted: set[IPv4Address]) -> None:
        vips = _ipv4(vs.address.address for vs in self._director.config.virtual_servers)
        wanted &= vips
        current = self._announced
        for vip in sorted(vips):
            on = vip in wanted
            if current is not None and (vip in current) == on:
                continue
            await self.control.command(f"{'enable' if on else 'disable'} {vip_protocol(vip)}")
            if current is not None:
                log.info("cluster: %s %s", "announced" if on else "withdrew", vip)
        self._announced = set(wanted)

    async def _refresh(self) -> None:
        self._protocols = parse_protocols(await self.control.text("show protocols all"))
        self._bfd = parse_bfd_sessions(await self.control.text("show bfd sessions")) \
            if self._director.config.cluster.bfd else []
        self._error = None
        late = time.monotonic() - self._started_at > ESTABLISH_GRACE
        for router in self._routers():
            p = router["protocol_state"]
            state = p.bgp_state if p is not None and p.bgp_state else "unknown"
            err = p.last_error if p is not None else None
            key = router["protocol"]
            before = self._reported.get(key)
            if state == "Established":
                if before is not None and before[0] != "Established":
                    log.info("cluster: BGP session with %s (AS %d) established",
                             router["address"], router["asn"])
                self._reported[key] = (state, err)
            elif late and before != (state, err):
                log.error("cluster: BGP session with %s (AS %d) is %s%s; the director keeps "
                          "serving, but that router does not send it traffic",
                          router["address"], router["asn"], state,
                          f": {err}" if err else "")
                self._reported[key] = (state, err)

    def _routers(self) -> list[dict[str, Any]]:
        by_name = {p.name: p for p in self._protocols}
        return [{"address": str(r.address), "asn": r.asn, "protocol": router_protocol(i),
                 "protocol_state": by_name.get(router_protocol(i))}
                for i, r in enumerate(self._director.config.cluster.routers)]

    # -- reload --------------------------------------------------------------------------
    def _write_config(self, cfg: Config, announced: set[IPv4Address]) -> None:
        vips = _ipv4(vs.address.address for vs in cfg.virtual_servers)
        servers = _ipv4(rs.address.address for vs in cfg.virtual_servers
                        for rs in vs.real_servers)
        text = director_config(cfg.cluster, vips, announced, servers)
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.conf_path)

    async def _on_config(self, cfg: Config) -> None:
        if self._proc is None:
            return
        fixed = (cfg.cluster.mode, cfg.cluster.state_dir, cfg.cluster.bird)
        if fixed != self._fixed:
            log.warning("cluster: mode, state_dir and bird change only with a restart")
        if self.sync is not None:
            self.sync.update_config(cfg.cluster, services_digest(cfg))
        self._write_config(cfg, self._announced or set())
        try:
            await self.control.command("configure")
        except BirdError as exc:
            self._error = str(exc)
            log.error("cluster: reload: %s (BIRD keeps its previous configuration)", exc)
        self._announced = None  # re-apply each VIP's state on the next pass

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``cluster`` section of ``status()``: members, announcements, BGP and BFD."""
        cl = self._director.config.cluster
        routers = []
        for r in self._routers():
            p: ProtocolState | None = r.pop("protocol_state")
            r.update(state=p.bgp_state or p.state if p else "unknown",
                     established=bool(p and p.bgp_state == "Established"),
                     since=p.since if p else None, last_error=p.last_error if p else None,
                     bfd=next((b.state for b in self._bfd if b.address == r["address"]), None))
            routers.append(r)
        return {
            "mode": cl.mode,
            "asn": cl.asn,
            "bird_pid": self._proc.pid if self._proc is not None else None,
            "draining": self._draining,
            "announced": sorted(map(str, self._announced or ())),
            "vips": sorted({str(vs.address.address)
                            for vs in self._director.config.virtual_servers}),
            "routers": routers,
            "bfd_sessions": [{"address": b.address, "interface": b.interface, "state": b.state,
                              "interval": b.interval, "timeout": b.timeout}
                             for b in self._bfd],
            "error": self._error,
            "members": None if self.sync is None else self.sync.status(),
        }


def node_id(cluster: ClusterConfig) -> str:
    """This director's name among the members: ``node_id``, else ``router_id``, else the
    host name (cut to the 32 bytes a message holds)."""
    if cluster.node_id:
        return cluster.node_id
    if cluster.router_id is not None:
        return str(cluster.router_id)
    return socket.gethostname().encode()[:32].decode(errors="ignore") or "pylvs"


def attach_cluster(director: ComponentHost) -> ClusterComponent:
    """Add the cluster component (last, so it drains first) and its status section."""
    component = ClusterComponent(director)
    director.components.append(component)
    director.status_providers["cluster"] = component.status
    return component


def _ipv4(addresses: Iterable[IPAddress]) -> set[IPv4Address]:
    # The cluster announces IPv4 VIPs (/32 routes); a dual-stack director's IPv6 services are
    # served but not announced (and IPv4 and IPv6 addresses do not sort together).
    return {a for a in addresses if isinstance(a, IPv4Address)}
