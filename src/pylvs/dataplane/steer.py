"""The TUN steering program on the Python side: load it, attach it, keep its VIP set.

The program (``dataplane/_steer.c``) sends both directions of a connection to one queue of the
multi-queue TUN device by hashing the client's address and port, which NAT changes in neither
direction; it tells the client side from the VIP set this module keeps equal to the
configured VIPs.  Loading needs ``bpf(2)`` (CAP_BPF or root): when the kernel refuses,
:meth:`TunSteering.load` raises and the dataplane keeps the kernel's own flow hash, which is
correct (the workers share one connection table) but lets a connection's two directions meet
on two cores.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pylvs.errors import CoreError

if TYPE_CHECKING:
    from pylvs._core import FFI, IntArray, Lib, lvs_steer

__all__ = ["TunSteering", "steer_queue"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _core() -> tuple[FFI, Lib]:
    from pylvs._core import ffi, lib

    return ffi, lib


def _words(ffi: FFI, addr: IPAddress) -> IntArray:
    """``addr`` as the core's lvs_addr: four host-order words, IPv4 in the first."""
    if addr.version == 4:
        return ffi.new("uint32_t[4]", [int(addr), 0, 0, 0])
    v = int(addr)
    return ffi.new("uint32_t[4]", [(v >> s) & 0xFFFFFFFF for s in (96, 64, 32, 0)])


def steer_queue(client: IPAddress, port: int, queues: int) -> int:
    """The queue the program picks for a connection of client ``client``:``port``."""
    ffi, lib = _core()
    af = 10 if client.version == 6 else 2
    return int(lib.lvs_steer_hash(af, _words(ffi, client), port)) % queues


class TunSteering:
    """The loaded steering program and its VIP map (one per TUN device)."""

    def __init__(self, handle: lvs_steer) -> None:
        self._s: lvs_steer | None = handle
        self.vips: frozenset[IPAddress] = frozenset()

    @classmethod
    def load(cls) -> TunSteering:
        """Assemble and load the program; :class:`CoreError` when the kernel refuses."""
        ffi, lib = _core()
        err = ffi.new("int *")
        s = lib.lvs_steer_new(err)
        if s == ffi.NULL:
            raise CoreError(f"cannot load the TUN steering program: {os.strerror(-err[0])}")
        return cls(s)

    def _handle(self) -> lvs_steer:
        if self._s is None:
            raise CoreError("the TUN steering program is closed")
        return self._s

    def attach(self, tun_fd: int) -> None:
        """Make it the queue selector of the device ``tun_fd`` is a queue of."""
        rc = _core()[1].lvs_steer_attach(self._handle(), tun_fd)
        if rc < 0:
            raise CoreError(f"TUNSETSTEERINGEBPF: {os.strerror(-rc)}")

    def set_vips(self, vips: Iterable[IPAddress]) -> None:
        """Make the VIP map hold exactly ``vips`` (only the difference is written)."""
        ffi, lib = _core()
        want = frozenset(vips)
        changes = [(a, 0) for a in self.vips - want] + [(a, 1) for a in want - self.vips]
        for addr, present in changes:
            rc = lib.lvs_steer_set_vip(self._handle(), _words(ffi, addr), present)
            if rc < 0:
                raise CoreError(f"steering VIP map: {addr}: {os.strerror(-rc)}")
        self.vips = want

    def run(self, packet: bytes) -> int:
        """The program's return value for one IP packet (BPF_PROG_TEST_RUN; for tests)."""
        r = int(_core()[1].lvs_steer_test_run(self._handle(), packet, len(packet)))
        if r < 0:
            raise CoreError(f"BPF_PROG_TEST_RUN: {os.strerror(-r)}")
        return r

    def close(self) -> None:
        """Free the program and its map (a device it is attached to keeps its own reference)."""
        if self._s is not None:
            _core()[1].lvs_steer_free(self._s)
            self._s = None
