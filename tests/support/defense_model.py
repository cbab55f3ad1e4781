"""A small reference model of the kernel's flood defence rules (docs/ipvs.md#flood-defence).

``update_defense_level`` (ip_vs_ctl.c) with the table standing in for memory: "available" is
the number of free table slots, "no memory" is ``available < amemthresh``.  ``ip_vs_todrop``
decides which new connections drop_packet drops.  The property tests drive the engine and this
model with the same steps and compare.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DefenseModel"]


@dataclass
class DefenseModel:
    """The defence state: three sysctls (0..3), drop_packet's rate and counter."""

    amemthresh: int
    am_droprate: int = 10
    drop_entry: int = 0
    drop_packet: int = 0
    secure_tcp: int = 0
    drop_rate: int = 0
    drop_counter: int = 0

    @staticmethod
    def _auto(mode: int, nomem: bool) -> int:
        # modes 1 and 2 are the automatic pair: engaged (2) exactly while memory is short
        if mode == 1 and nomem:
            return 2
        if mode == 2 and not nomem:
            return 1
        return mode

    def update(self, available: int) -> None:
        """update_defense_level, run once a second and whenever a mode is written."""
        nomem = available < self.amemthresh
        self.drop_entry = self._auto(self.drop_entry, nomem)
        self.drop_packet = self._auto(self.drop_packet, nomem)
        if self.drop_packet == 3:
            self.drop_rate = self.am_droprate
        elif self.drop_packet == 2:
            self.drop_rate = self.drop_counter = self.amemthresh // (self.amemthresh - available)
        else:
            self.drop_rate = 0
        self.secure_tcp = self._auto(self.secure_tcp, nomem)

    @property
    def drop_entry_on(self) -> bool:
        return self.drop_entry >= 2

    @property
    def secure_on(self) -> bool:
        return self.secure_tcp >= 2

    def todrop(self) -> bool:
        """ip_vs_todrop: one new connection in drop_rate is dropped."""
        if not self.drop_rate:
            return False
        self.drop_counter -= 1
        if self.drop_counter > 0:
            return False
        self.drop_counter = self.drop_rate
        return True
