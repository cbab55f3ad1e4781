"""The namespace testbed: not part of the director, used by ``pylvs demo``, the tests and bench.

* ``topology``: builds the two-tier LVS-NAT topology in network namespaces (root only).
* ``config``: renders a ``pylvs serve`` TOML for that topology (pure text, no root).
* ``serve``: runs ``pylvs serve`` inside a director namespace and waits until it is ready.
* ``realserver``: ``python -m pylvs.testbed.realserver``, the real servers' HTTP/UDP answerer.
* ``demo``: ``pylvs demo``, the topology shown working.
* ``hapair``: two HA directors on the shared topology, for the failover tests and benchmark.
* ``drill``: ``python -m pylvs.testbed.drill``, the echo servers and probers the failover drills
  run inside the namespaces.
"""

from __future__ import annotations

__all__: list[str] = []
