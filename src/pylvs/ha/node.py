"""One director's HA node: builds the state machine, transport, takeover and sync from a Config.

The director creates it only when ``[ha] enabled = true``; then the director must not put the
VIPs or the nat_router address up itself (``netconf.plan_from_config(cfg, active=False)``): the
node claims them when, and only when, the state machine says ACTIVE.

::

    node = HaNode(config, netconf=nc, engine=eng)   # engine: None when sync is off
    await node.start()                              # BACKUP; ACTIVE after a dead time alone
    node.update_config(new_config)                  # on SIGHUP / API edits
    await node.stop(handover=True)                  # SIGTERM: priority 0, then release
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pylvs.ha.messages import Message, PathId, Receiver, Role, Sender, config_digest, load_secret
from pylvs.ha.state import HaStateMachine, PeerSeen
from pylvs.ha.sync import SyncChannel, SyncEngine
from pylvs.ha.takeover import GarpTarget, NetconfOwner, Takeover
from pylvs.ha.transport import HaTransport, Link
from pylvs.model import Config
from pylvs.netconf import NetConf

if TYPE_CHECKING:
    from pylvs.director import ComponentHost

__all__ = ["HaComponent", "HaNode", "services_digest"]

log = logging.getLogger("pylvs.ha")

#: Niceness added to the event loop's thread once HA runs.  The heartbeat is sent from that
#: loop, and on a loaded host a backup took over because the active node's loop was not
#: scheduled for 0.3 s (issue 13); keepalived gives its VRRP process a better priority
#: (``vrrp_priority``, or real-time with ``vrrp_rt_priority``) for the same reason.  Now that
#: the probes run in their own process the loop needs little CPU, so it gets its turn sooner
#: without taking more.  The heartbeats themselves now leave from the pacer's real-time thread
#: (ha/_pacer.c); the loop still receives them and runs the dead timer.  The packet workers
#: renice themselves to -15, above this (dataplane/_workers.c: packets before the control plane).
HEARTBEAT_NICE = -10


def services_digest(config: Config) -> bytes:
    """Digest of what both directors must agree on: the services and the timeouts.

    Interfaces, priorities and node ids legitimately differ between the two, so they are left
    out.  ``repr`` of the frozen dataclasses is deterministic and covers every field.
    """
    return config_digest(repr((config.virtual_servers, config.timeouts)))


def _targets(config: Config) -> list[GarpTarget]:
    d = config.director
    vips = tuple(sorted({vs.address.address for vs in config.virtual_servers},
                        key=lambda a: (a.version, int(a))))
    targets = [GarpTarget(d.public_interface, vips)]
    if d.nat_routers:
        targets.append(GarpTarget(d.private_interface, tuple(n.ip for n in d.nat_routers)))
    return targets


class HaNode:
    """The HA side of one director."""

    def __init__(
        self,
        config: Config,
        *,
        netconf: NetConf,
        engine: SyncEngine | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        ha, d = config.ha, config.director
        if ha.secret_file is None:
            raise ValueError("ha.secret_file is required")
        secret = load_secret(ha.secret_file)
        digest = services_digest(config)
        links: list[Link] = []
        if ha.peer_public is not None:
            links.append(Link(PathId.PUBLIC, d.public_interface, ha.peer_public, ha.port))
        if ha.peer_private is not None:
            links.append(Link(PathId.PRIVATE, d.private_interface, ha.peer_private, ha.port))
        if not links:
            raise ValueError("ha needs peer_public and/or peer_private")
        sync_on = ha.sync and engine is not None
        # A preempting node waits at least two heartbeats, time for the active peer to see it
        # and send it the whole connection table, so a failback does not cut connections.
        preempt_delay = max(ha.preempt_delay, 2 * ha.interval) if sync_on else ha.preempt_delay
        self.machine = HaStateMachine(
            node_id=ha.node_id, priority=ha.priority, interval=ha.interval, digest=digest,
            paths=tuple(link.path for link in links), preempt=ha.preempt,
            preempt_delay=preempt_delay, dead_time=ha.dead_time,
        )
        self.owner = NetconfOwner(netconf, _targets(config)[0].addresses, d.nat_routers)
        self.takeover = Takeover(
            self.owner, _targets(config), garp_count=ha.garp_count,
            garp_repeat_delay=ha.garp_repeat_delay, garp_refresh=ha.garp_refresh,
            notify=ha.notify,
        )
        self.sync: SyncChannel | None = None
        sync_link = None
        if sync_on:
            via = links[-1]  # the private network when there is one
            sync_link = Link(PathId.SYNC, via.interface, via.peer, ha.sync_port)
        self.transport = HaTransport(
            self.machine, Sender(node_id=ha.node_id, secret=secret, digest=digest,
                                 interval=ha.interval),
            Receiver(secret=secret, own_node_id=ha.node_id), links, self,
            sync_link=sync_link, on_sync=self._on_sync, on_peer_seen=self._on_peer_seen,
            clock=clock,
        )
        if sync_on:
            assert engine is not None
            self.sync = SyncChannel(engine, self.transport.send_sync, clock=clock)
        self.role_listeners: list[Callable[[Role], None]] = []

    @property
    def role(self) -> Role:
        """The current role."""
        return self.machine.role

    @property
    def active(self) -> bool:
        """True while this node owns (or is claiming) the VIPs and the nat_router address."""
        return self.machine.role is Role.ACTIVE

    async def start(self) -> None:
        """Open the sockets and start as BACKUP."""
        if self.sync is not None:
            self.sync.start()
        await self.transport.start()

    async def stop(self, handover: bool = True) -> None:
        """With ``handover`` the peer takes over at once (priority 0); release the addresses."""
        await self.transport.stop(handover=handover)
        if self.sync is not None:
            await self.sync.close()
        await self.takeover.close()

    def update_config(self, config: Config) -> None:
        """Take a reloaded config: new VIP set and digest (interfaces/peers need a restart).

        The director re-applies its network plan itself; on the active node that plan holds
        the new VIPs, so this only changes what a later takeover claims and announces.
        """
        targets = _targets(config)
        self.owner.vips = targets[0].addresses
        self.takeover.targets = tuple(targets)
        digest = services_digest(config)
        self.machine.digest = digest
        self.transport.sender.digest = digest

    # ---- RoleHandler (called by the transport) -----------------------------------------------

    async def role_changed(self, new: Role, old: Role) -> None:
        """Carry out a role change: sync direction first, then the addresses."""
        if self.sync is not None:
            self.sync.set_active(new is Role.ACTIVE)
        await self.takeover.role_changed(new, old)
        for listener in self.role_listeners:
            listener(new)

    async def reannounce(self) -> None:
        """Split brain won: announce again."""
        await self.takeover.reannounce()

    def _on_sync(self, msg: Message, now: float) -> None:
        if self.sync is not None:
            self.sync.apply(msg, now)

    def _on_peer_seen(self, seen: PeerSeen) -> None:
        if self.sync is not None and self.active:
            log.info("ha sync: sending the whole table to %s", seen.peer)
            self.sync.queue_full()

    def status(self) -> dict[str, Any]:
        """JSON-able snapshot: role, peer, paths, counters, sync."""
        out = self.transport.status()
        out["garps_sent"] = self.takeover.garps_sent
        last = self.takeover.last_takeover
        out["last_takeover_ms"] = None if last is None else round(last * 1000, 1)
        out["notify"] = {"runs": self.takeover.notify_runs,
                         "failures": self.takeover.notify_failures}
        out["sync"] = None if self.sync is None else self.sync.status()
        return out


class HaComponent:
    """The director component: an :class:`HaNode` wired to the director.

    ``director.active`` follows the role, so a reload puts the VIPs up only on the active
    node; the status gets an ``ha`` section; reloads reach the node.  ``stop`` always hands
    over: the director stops its components only when the whole process stops.
    """

    def __init__(self, director: ComponentHost, *, engine: SyncEngine | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.director = director
        cfg = director.config
        self.node = HaNode(cfg, netconf=director.netconf,
                           engine=engine if cfg.ha.sync else None, clock=clock)
        self.node.role_listeners.append(self._on_role)
        director.status_providers["ha"] = self.node.status
        director.config_listeners.append(self._on_config)

    def _on_role(self, role: Role) -> None:
        self.director.active = role is Role.ACTIVE

    async def _on_config(self, config: Config) -> None:
        self.node.update_config(config)

    async def start(self) -> None:
        """Start as BACKUP."""
        favour_this_thread(HEARTBEAT_NICE)
        await self.node.start()

    async def stop(self, *, handover: bool = True) -> None:
        """Release the addresses; with ``handover`` first tell the peer (priority 0)."""
        try:
            await self.node.stop(handover=handover)
        except Exception:
            log.exception("ha: stopping failed")


def favour_this_thread(delta: int) -> None:
    """Add *delta* (negative: favoured) to the calling thread's niceness, if allowed (root)."""
    tid = threading.get_native_id()  # Linux: PRIO_PROCESS of a thread id is that thread
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(-20, current + delta))
    except OSError as exc:
        log.debug("ha: cannot change the loop thread's priority: %s", exc)
