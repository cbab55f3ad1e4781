"""Packet I/O backends: move batches of packets between the kernel and the engine.

Only the TUN backend exists so far (:mod:`pylvs.dataplane.tun`); its per-packet loop is the C
pump in ``_tunio.c``.
"""

from __future__ import annotations

from pylvs.dataplane.tun import TunDataplane, TunStats, open_tun

__all__ = ["TunDataplane", "TunStats", "open_tun"]
