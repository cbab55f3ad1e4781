"""Active/backup failover between two directors.

* ``messages``: the authenticated wire format and replay protection (sans-IO).
* ``state``: the role state machine INIT/BACKUP/ACTIVE/FAULT as a transition table (sans-IO).
* ``transport``: the asyncio UDP adapter that drives the state machine over both networks.
* ``takeover``: what changing role does: addresses via netconf, gratuitous ARP, notify hooks.
* ``sync``: streaming the engine's connection table to the backup.
* ``node``: builds all of the above from a ``Config``; ``HaComponent`` plugs it into the director.

The two-director namespace testbed and its drill programs live in :mod:`pylvs.testbed`.
"""

from __future__ import annotations

__all__: list[str] = []
