"""FTP through ``pylvs serve`` with the FTP helper (docs/ipvs.md#ftp).

Real FTP servers (pyftpdlib, active data connections from port 20 as vsftpd's
connect_from_port_20) serve one file in every real server namespace; real clients in the
client namespace (Python's ftplib and curl) fetch it through the VIP in passive mode (PASV
and EPSV) and active mode (PORT and EPRT), and every copy is checked byte for byte.  An HA
pair keeps an FTP session whose 227 reply was rewritten across a kill -9 of the active node.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

from pylvs.api.client import ApiClient
from pylvs.testbed.hapair import HaPair
from tests.support.ftp_server import start_ftp_servers
from tests.support.serve_harness import VIP, Srv

SIZE = 16 << 20  # the large file: many segments, many windows, through the shifted stream

CLIENT = textwrap.dedent("""
    import ftplib, hashlib, json, sys
    out = {}
    for mode in ("passive", "active"):
        ftp = ftplib.FTP(sys.argv[1], timeout=20)
        out[mode + "_banner"] = ftp.getwelcome()
        ftp.login()
        ftp.set_pasv(mode == "passive")
        h = hashlib.sha256()
        ftp.retrbinary("RETR big.bin", h.update, blocksize=65536)
        out[mode] = h.hexdigest()
        ftp.quit()
    print(json.dumps(out))
""")


def _serve_ftp(make_srv: Callable[..., Srv]) -> tuple[Srv, str]:
    srv = make_srv()
    topo = srv.topo
    root = os.path.join(topo.workdir, "ftproot")
    os.makedirs(root)
    os.chmod(topo.workdir, 0o755)
    data = os.urandom(SIZE)
    with open(os.path.join(root, "big.bin"), "wb") as fh:
        fh.write(data)
    start_ftp_servers(topo, root)
    servers = "".join(f'\n  [[virtual_server.real_server]]\n  address = "{rs.address}:21"\n'
                      for rs in topo.real_servers)
    service = (f'\n[[virtual_server]]\naddress = "{VIP}:21"\nftp = true\nscheduler = "rr"\n'
               f'\n  [virtual_server.check]\n  type = "none"\n{servers}')
    srv.serve(topo.director_config([], extra=service), wait_tcp_port=21)
    return srv, hashlib.sha256(data).hexdigest()


def test_ftplib_and_curl_passive_and_active(make_srv: Callable[..., Srv]) -> None:
    srv, digest = _serve_ftp(make_srv)
    topo = srv.topo
    res = topo.run(topo.clients[0].ns, [sys.executable, "-c", CLIENT, VIP], timeout=120)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["passive"] == digest and out["active"] == digest, out
    assert "pylvs-ftp rs" in out["passive_banner"]
    curl = ["curl", "-sS", "--max-time", "60", "-o", "-", f"ftp://{VIP}/big.bin"]
    for extra in ([], ["--disable-epsv"], ["--ftp-port", "-"], ["--ftp-port", "-",
                                                                 "--disable-eprt"]):
        got = subprocess.run(["ip", "netns", "exec", topo.clients[0].ns, *curl, *extra],
                             capture_output=True, timeout=90)
        assert got.returncode == 0, (extra, got.stderr)
        assert hashlib.sha256(got.stdout).hexdigest() == digest, extra
    sock = f"{topo.workdir}/{topo.director.name}.sock"
    conns = ApiClient(sock).get("/api/v1/connections")["connections"]
    # the data connections went through the helper's entries: active ones as VIP:20 with
    # the server's port 20, passive ones to VIP:<passive port> with the client's port filled in
    active = [c for c in conns if c["virtual"] == f"{VIP}:20" and c["server"].endswith(":20")]
    passive = [c for c in conns if 50000 <= int(c["virtual"].rsplit(":", 1)[1]) < 50100
               and not c["client"].endswith(":0")]
    assert len(active) >= 3 and len(passive) >= 3, conns
    assert all(c["state"] != "LISTEN" for c in active + passive), conns
    events = ApiClient(sock).get("/api/v1/stats")["events"]
    # ftplib PASV + curl --disable-epsv: two 227 replies rewritten; every mode made entries
    assert events["ftp_rewrite"] >= 2, events
    assert events["ftp_data_entry"] >= 6, events


HA_CLIENT = textwrap.dedent("""
    import ftplib, hashlib, json, sys
    ftp = ftplib.FTP(sys.argv[1], timeout=20)
    ftp.login()
    ftp.set_pasv(True)

    def fetch():
        h = hashlib.sha256()
        ftp.retrbinary("RETR big.bin", h.update, blocksize=65536)
        return h.hexdigest()

    before = fetch()  # the 227 rewrite gave the control connection a sequence delta
    print("ready", flush=True)
    sys.stdin.readline()  # the primary is killed and the backup owns the VIP
    after = fetch()  # the same control connection, through the backup
    ftp.quit()
    print(json.dumps({"before": before, "after": after}), flush=True)
""")


class FtpPair(HaPair):
    """An HA pair whose directors also balance FTP on VIP:21 with the helper on."""

    def config(self, i: int) -> str:
        servers = "".join(f'\n  [[virtual_server.real_server]]\n  address = "{rs.address}:21"\n'
                          for rs in self.topo.real_servers)
        return super().config(i) + (
            f'\n[[virtual_server]]\naddress = "{self.topo.vip}:21"\nftp = true\n'
            f'scheduler = "rr"\n\n  [virtual_server.check]\n  type = "none"\n{servers}')


def test_takeover_keeps_an_ftp_session() -> None:
    with FtpPair(ha={"preempt": False}, prefix="hf") as pair:
        topo = pair.topo
        root = os.path.join(topo.workdir, "ftproot")
        os.makedirs(root)
        os.chmod(topo.workdir, 0o755)
        data = os.urandom(1 << 20)
        with open(os.path.join(root, "big.bin"), "wb") as fh:
            fh.write(data)
        start_ftp_servers(topo, root)
        pair.start(0)
        pair.wait(lambda: pair.owns_vip(0), 15, "the primary to own the VIP")
        pair.start(1)
        pair.wait(lambda: pair.is_backup(1), 15, "the backup to run as BACKUP")
        # the full table dump a new backup gets is over before the session starts: the delta
        # reaches the backup in the control connection's own records (the helper's, and the
        # controller's record sent with its data connection's, as ip_vs_sync_conn does)
        time.sleep(2.0)
        proc = topo.popen(topo.client.ns, [sys.executable, "-c", HA_CLIENT, topo.vip],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the sync channel carries the control connection's delta
        pair.kill(0)
        pair.wait(lambda: pair.owns_vip(1), 5, "the backup to take over")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        res = json.loads(out.strip().splitlines()[-1])
        digest = hashlib.sha256(data).hexdigest()
        assert res == {"before": digest, "after": digest}
