"""Health checking: async probes of real servers and the rise/fall/quorum decisions.

* :mod:`.spec`: what to probe (:class:`ProbeSpec`, hashable for deduplication);
* :mod:`.probes`, :mod:`.http_probe`, :mod:`.program`: tcp, send/expect, udp, http(s), exec;
* :mod:`.check`: :func:`run_probe`, one probe under one total deadline;
* :mod:`.state`: sans-IO rise/fall, quorum and sorry-server bookkeeping;
* :mod:`.manager`: the asyncio runner;
* :mod:`.checker`: the child process the probes run in (``python -m pylvs.health.checker``),
  :mod:`.remote` the director's side of it and :mod:`.wire` the frames between them;
* :mod:`.component`: ``attach_health``, the glue the director calls (imported on its own:
  it needs the engine and so the C core).
"""

from __future__ import annotations

from pylvs.health.check import run_probe
from pylvs.health.manager import EventCallback, HealthManager
from pylvs.health.result import ProbeResult, Reason
from pylvs.health.spec import ProbeSpec
from pylvs.health.state import (
    HealthEvent,
    ServerEvent,
    ServerHealth,
    ServiceHealth,
    SorryEvent,
)

__all__ = [
    "EventCallback",
    "HealthEvent",
    "HealthManager",
    "ProbeResult",
    "ProbeSpec",
    "Reason",
    "ServerEvent",
    "ServerHealth",
    "ServiceHealth",
    "SorryEvent",
    "run_probe",
]
