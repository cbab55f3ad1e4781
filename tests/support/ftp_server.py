"""Real FTP servers for the netns tests: pyftpdlib with anonymous read access to one folder,
passive ports 50000-50099, and active data connections from port 20 (vsftpd's
``connect_from_port_20``, which the FTP helper's active-mode entry expects)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

from pylvs.testbed.topology import child_env

__all__ = ["FTP_SERVER", "start_ftp_servers"]

FTP_SERVER = textwrap.dedent("""
    import socket, sys
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.handlers.ftp.dispatchers import ActiveDTP
    from pyftpdlib.servers import FTPServer

    class Port20(ActiveDTP):
        # vsftpd's connect_from_port_20: active data connections leave from port 20
        def bind(self, addr):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            super().bind((addr[0], 20))

    auth = DummyAuthorizer()
    auth.add_anonymous(sys.argv[1])
    FTPHandler.authorizer = auth
    FTPHandler.active_dtp = Port20
    FTPHandler.passive_ports = range(50000, 50100)
    FTPHandler.banner = sys.argv[2]
    server = FTPServer(("0.0.0.0", 21), FTPHandler)
    print("ready", flush=True)
    server.serve_forever()
""")


def start_ftp_servers(topo: Any, root: str) -> None:
    """An FTP server on :21 in every real server of ``topo``, serving ``root``; waits for all."""
    for rs in topo.real_servers:
        proc = topo.popen(rs.ns, [sys.executable, "-c", FTP_SERVER, root, f"pylvs-ftp {rs.name}"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env())
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
