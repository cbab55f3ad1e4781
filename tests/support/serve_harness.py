"""``pylvs serve`` in a namespace topology, and a client library run in the client namespace.

:class:`Srv` holds a :class:`~pylvs.testbed.topology.Topology` with its real servers up (each
answers with its name, ``rs1``..``rs3``) and starts ``pylvs serve`` in its director;
:func:`client` runs a snippet with :data:`CLIENT_LIB` in a client namespace and returns the
``out`` dict it fills.  The ``make_srv`` and ``srv`` fixtures that build and remove these are in
``tests/netns/conftest.py``.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from typing import Any

from pylvs.testbed.serve import PylvsProcess, start_pylvs
from pylvs.testbed.topology import ServiceSpec, Topology

__all__ = ["CLIENT_LIB", "VIP", "Srv", "client", "names", "wait_log"]

VIP = "198.18.0.100"

# A client library, run inside a client namespace with `python -c`.
CLIENT_LIB = textwrap.dedent("""
    import json, socket, sys, time
    VIP = "198.18.0.100"

    def http(port=80, path="/", sock=None, timeout=5.0):
        own = sock is None
        if own:
            sock = socket.create_connection((VIP, port), timeout=timeout)
        sock.sendall(f"GET {path} HTTP/1.{0 if own else 1}\\r\\nHost: x\\r\\n\\r\\n".encode())
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        length = int(next(l.split(b":")[1] for l in head.split(b"\\r\\n")
                          if l.lower().startswith(b"content-length")))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        if own:
            sock.close()
        return body.decode("latin-1").strip()

    def pattern_sha(n):
        # SHA-256 of the first n bytes of the real servers' /bytes pattern (testbed.realserver)
        import hashlib
        period = bytes(i % 251 for i in range(251)) * 270
        h = hashlib.sha256(); done = 0
        while done < n:
            k = min(65536, n - done); start = done % 251
            h.update(period[start:start + k]); done += k
        return h.hexdigest()

    def fetch_checked(size, host=VIP, port=80, timeout=30.0):
        # GET /bytes/size: (bytes received, whether they are the pattern's first size bytes)
        import hashlib
        s = socket.create_connection((host, port), timeout=timeout)
        s.sendall(f"GET /bytes/{size} HTTP/1.0\\r\\n\\r\\n".encode())
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            chunk = s.recv(65536)
            if not chunk:
                break
            head += chunk
        body = head.partition(b"\\r\\n\\r\\n")[2]
        h = hashlib.sha256(body); got = len(body)
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            h.update(chunk); got += len(chunk)
        s.close()
        return got, h.hexdigest() == pattern_sha(size)

    def udp(port=53, timeout=2.0):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(b"who", (VIP, port))
            return s.recv(100).decode().strip()

    out = {}
""")


def client(topo: Topology, body: str, index: int = 0, timeout: float = 60.0) -> dict[str, Any]:
    """Run ``body`` (with CLIENT_LIB) in client ``index``; return the ``out`` dict it fills."""
    code = CLIENT_LIB + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    res = topo.run(topo.clients[index].ns, [sys.executable, "-c", code], check=False,
                   timeout=timeout)
    assert res.returncode == 0, f"client failed:\n{res.stderr[-3000:]}"
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def names(topo: Topology, n: int, port: int = 80, index: int = 0) -> list[str]:
    """``n`` sequential HTTP/1.0 requests to VIP:port; the names that answered."""
    return list(client(topo, f"out['n'] = [http({port}) for _ in range({n})]", index)["n"])


def wait_log(daemon: PylvsProcess, pattern: str, count: int = 1, timeout: float = 10.0) -> None:
    """Wait until ``pattern`` occurs ``count`` times in the daemon's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall(pattern, daemon.log())) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} x{count} in the log:\n{daemon.log()[-3000:]}")


class Srv:
    """A topology with its real servers up, and a way to start ``pylvs serve`` in it."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.daemon: PylvsProcess | None = None

    def config(self, *services: ServiceSpec, extra: str = "") -> str:
        return self.topo.director_config(list(services) or None, extra=extra)

    def serve(self, toml: str | None = None, wait_tcp_port: int | None = 80) -> PylvsProcess:
        self.daemon = start_pylvs(self.topo, toml, wait_tcp_port=wait_tcp_port, timeout=20.0)
        return self.daemon

    def reload(self, toml: str, count: int = 1) -> None:
        assert self.daemon is not None
        self.daemon.reload(toml)
        wait_log(self.daemon, r"SIGHUP: reloaded", count)
