"""What a role change does on this host: claim or release the addresses, GARP, notify.

Becoming ACTIVE, in this order (each step as fast as the kernel allows, since the clients are
waiting):

1. ``AddressOwner.claim()``: the VIP routes into the TUN device and the proxy-ARP entries on the
   public interface, and the ``nat_router`` address on the private interface (netconf does it,
   idempotently).
2. A burst of ``garp_count`` gratuitous ARPs for every IPv4 VIP (public interface) and the
   IPv4 nat_router address (private interface), and as many unsolicited neighbour
   advertisements for the IPv6 ones (:mod:`pylvs.neighbours`), so clients, routers and real
   servers move their ARP and neighbour entries to our MAC at once.
3. A second burst ``garp_repeat_delay`` seconds later for neighbours that missed the first one
   (keepalived's garp_master_delay), then, if ``garp_refresh`` > 0, one GARP per address every
   ``garp_refresh`` seconds for switches and routers that age entries out
   (docs/failover-health.md#lessons
   row 2).  The frames go out of raw ``AF_PACKET`` sockets kept open (:class:`GarpSender`):
   no scapy import and no socket set-up on the takeover path.
4. The notify command, as ``notify <new-role> <old-role>``.

Leaving ACTIVE cancels the pending bursts and releases the addresses before the notify command
runs, so the two nodes never both answer ARP for long.  Notify commands run one at a time in the
order of the changes (a FIFO, as keepalived guarantees), each bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pylvs.ha.messages import Role
from pylvs.model import IPAddress, IPInterface
from pylvs.neighbours import announce_frames
from pylvs.netconf import NetConf, NetPlan
from pylvs.tasks import cancel_and_wait

__all__ = [
    "AddressOwner",
    "GarpSender",
    "GarpTarget",
    "NetconfOwner",
    "Takeover",
]

log = logging.getLogger("pylvs.ha")

NOTIFY_TIMEOUT = 30.0


class AddressOwner(Protocol):
    """Adds and removes the floating addresses (implemented over pylvs.netconf)."""

    def claim(self) -> None:
        """Route the VIPs here, answer ARP for them, own the nat_router address."""

    def release(self) -> None:
        """Undo :meth:`claim`; a no-op when nothing is claimed."""


@dataclass(frozen=True, slots=True)
class GarpTarget:
    """The addresses to announce on one interface."""

    interface: str
    addresses: tuple[IPAddress, ...]  # IPv4: gratuitous ARP; IPv6: unsolicited NA


class GarpSender:
    """Gratuitous ARP and unsolicited NA from raw ``AF_PACKET`` sockets kept open between bursts.

    Why not open one per burst (as ``netconf.send_announcements`` does, once at start): binding
    a packet socket to a protocol and closing it each wait for an RCU grace period, 10-15 ms apiece,
    which a takeover would pay on its critical path.  A socket made with protocol 0 never
    receives, so it registers no hook and opens in microseconds; it stays open until
    :meth:`close`, and is reopened after an error (the interface may have been re-created).
    """

    def __init__(self) -> None:
        self._socks: dict[str, tuple[socket.socket, bytes]] = {}
        self.errors = 0

    def _sock(self, iface: str) -> tuple[socket.socket, bytes]:
        entry = self._socks.get(iface)
        if entry is None:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                s.bind((iface, 0))
                mac: bytes = s.getsockname()[4]
            except OSError:
                s.close()
                raise
            entry = self._socks[iface] = (s, mac)
        return entry

    def send(self, targets: Sequence[GarpTarget], count: int) -> int:
        """Send ``count`` gratuitous ARPs per address now; return how many went out.

        A failure on one interface is logged and does not stop the others: the addresses are
        already claimed, and neighbours that miss this burst get the next one.
        """
        sent = 0
        for t in targets:
            try:
                s, mac = self._sock(t.interface)
                frames = announce_frames(mac, t.addresses)
                for _ in range(count):
                    for frame in frames:
                        s.send(frame)
                        sent += 1
            except OSError as exc:
                self.errors += 1
                log.warning("ha: gratuitous ARP on %s failed: %s", t.interface, exc)
                entry = self._socks.pop(t.interface, None)
                if entry is not None:
                    entry[0].close()
        return sent

    def close(self) -> None:
        """Close the sockets."""
        for s, _ in self._socks.values():
            s.close()
        self._socks.clear()


class NetconfOwner:
    """:class:`AddressOwner` over :class:`pylvs.netconf.NetConf`'s takeover/release steps."""

    def __init__(self, netconf: NetConf, vips: Sequence[IPAddress],
                 nat_routers: Sequence[IPInterface]) -> None:
        self.netconf = netconf
        self.vips = tuple(vips)  # the director updates these on a reload
        self.nat_routers = frozenset(nat_routers)

    def claim(self) -> None:
        """Add the VIP routes and proxy-ARP entries and the nat_router address.

        One ``apply`` (one netlink session, one state-file write) rather than one call per
        kind of address: the clients are waiting.
        """
        plan = self.netconf.plan
        self.netconf.apply(NetPlan(vips=plan.vips | frozenset(self.vips), steering=plan.steering,
                                   nat_routers=plan.nat_routers | self.nat_routers))

    def release(self) -> None:
        """Remove the VIPs and the nat_router address (netconf tolerates absent ones)."""
        plan = self.netconf.plan
        self.netconf.apply(NetPlan(vips=frozenset(), steering=plan.steering,
                                   nat_routers=plan.nat_routers - self.nat_routers))


class Takeover:
    """Carries out role changes for the transport; one instance per director."""

    def __init__(
        self,
        owner: AddressOwner,
        targets: Sequence[GarpTarget],
        *,
        garp_count: int = 5,
        garp_repeat_delay: float = 5.0,
        garp_refresh: float = 0.0,
        notify: str | None = None,
    ) -> None:
        self.owner = owner
        self.targets = tuple(targets)
        self.garp_count = garp_count
        self.garp_repeat_delay = garp_repeat_delay
        self.garp_refresh = garp_refresh
        self.notify_cmd = shlex.split(notify) if notify else None
        self.role = Role.INIT
        self.garp = GarpSender()
        self.garps_sent = 0
        self.last_takeover: float | None = None  # seconds from "become active" to GARP sent
        self.notify_runs = 0
        self.notify_failures = 0
        self._announcer: asyncio.Task[None] | None = None
        self._notify_queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._notifier: asyncio.Task[None] | None = None

    async def role_changed(self, new: Role, old: Role) -> None:
        """Claim or release the addresses; raises what the owner raises (the caller faults)."""
        await self._stop_announcer()
        if new is Role.ACTIVE:
            t0 = time.monotonic()
            # netconf blocks on netlink; its own lock orders calls from worker threads
            await asyncio.to_thread(self.owner.claim)
            self.role = new
            self.garps_sent += self.garp.send(self.targets, self.garp_count)
            self.last_takeover = time.monotonic() - t0
            log.warning("ha: addresses claimed and announced in %.1f ms",
                        self.last_takeover * 1000)
            self._announcer = asyncio.get_running_loop().create_task(self._announce_later())
        else:
            self.role = new
            await asyncio.to_thread(self.owner.release)
        self._queue_notify(new, old)

    async def reannounce(self) -> None:
        """Split brain won: announce the addresses and run notify again."""
        if self.role is not Role.ACTIVE:
            return
        self.garps_sent += self.garp.send(self.targets, self.garp_count)
        self._queue_notify(Role.ACTIVE, Role.ACTIVE)

    async def close(self) -> None:
        """Stop the timers and wait for queued notify commands (bounded)."""
        await self._stop_announcer()
        self.garp.close()
        if self._notifier is not None:
            try:
                await asyncio.wait_for(self._notify_queue.join(), NOTIFY_TIMEOUT)
            except TimeoutError:
                log.warning("ha: notify commands still pending at shutdown")
            notifier, self._notifier = self._notifier, None
            await cancel_and_wait([notifier])

    async def _stop_announcer(self) -> None:
        announcer, self._announcer = self._announcer, None
        await cancel_and_wait([announcer])

    async def _announce_later(self) -> None:
        if self.garp_repeat_delay > 0:
            await asyncio.sleep(self.garp_repeat_delay)
            self.garps_sent += self.garp.send(self.targets, self.garp_count)
        # Bounded: each refresh is one sleep of >= garp_refresh seconds; cancelled on any
        # role change.
        while self.garp_refresh > 0:
            await asyncio.sleep(self.garp_refresh)
            self.garps_sent += self.garp.send(self.targets, 1)

    def _queue_notify(self, new: Role, old: Role) -> None:
        if self.notify_cmd is None:
            return
        self._notify_queue.put_nowait((new.name.lower(), old.name.lower()))
        if self._notifier is None:
            self._notifier = asyncio.get_running_loop().create_task(self._run_notifies())

    async def _run_notifies(self) -> None:
        assert self.notify_cmd is not None
        while True:
            new, old = await self._notify_queue.get()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.notify_cmd, new, old, stdin=asyncio.subprocess.DEVNULL)
                try:
                    rc = await asyncio.wait_for(proc.wait(), NOTIFY_TIMEOUT)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                    rc = -1
                self.notify_runs += 1
                if rc != 0:
                    self.notify_failures += 1
                    log.warning("ha: notify %s %s exited %s", new, old, rc)
            except OSError as exc:
                self.notify_failures += 1
                log.warning("ha: notify could not run: %s", exc)
            finally:
                self._notify_queue.task_done()
