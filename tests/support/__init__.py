"""Helpers and reference models shared by the tests (and ``bench/sched.py``); no tests here.

* :mod:`tests.support.packets`: packet descriptions (``Pkt``) and scapy builders for the engine.
* :mod:`tests.support.engine_model`: a pure-Python reference model of the NAT engine.
* :mod:`tests.support.sched_model`: reference models of the IPVS schedulers.
* :mod:`tests.support.sched_harness`: a typed face for the C scheduler harness.
* :mod:`tests.support.mini_director`: a small real director (Engine + health) for API tests.
* :mod:`tests.support.tcp_backend`: a TCP server on 127.0.0.1 that can stop and start again.
* :mod:`tests.support.serve_harness`: ``pylvs serve`` in a namespace topology, and a client
  library run inside the client namespace (the namespace tests' fixtures are in
  ``tests/netns/conftest.py``).

Tests import from here as ``from tests.support.x import ...``, never from another test module.
"""
