"""The FTP helper (ip_vs_ftp) in the engine, with scapy-built segments: PASV/EPSV replies make
an expectation and a 227's address becomes the VIP; the length change shifts sequence and
acknowledgement numbers for the rest of the connection, retransmissions included, and travels
in the sync record; PORT/EPRT make the entry the server's port-20 connection leaves through;
commands split across segments are left alone (docs/ipvs.md#ftp)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from pylvs.engine import Engine
from tests.support.packets import VIP, ip_header_ok, l4_checksum_ok

RS = "198.19.0.11"
CLIENT = "198.18.0.1"
CPORT = 40000
C_ISN, S_ISN = 1000, 5000


def seg(src: str, sport: int, dst: str, dport: int, flags: str, seq: int, ack: int = 0,
        data: bytes = b"") -> bytes:
    return bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq,
                                             ack=ack, window=8192) / Raw(data))


class Session:
    """One FTP control connection through an engine, with both ends' sequence numbers."""

    def __init__(self, eng: Engine, t: float = 1.0) -> None:
        self.eng = eng
        self.t = t
        self.cseq, self.sseq = C_ISN + 1, S_ISN + 1  # next byte each end sends
        assert self.cin("S", seq=C_ISN) is not None
        assert self.sout("SA", seq=S_ISN, ack=self.cseq) is not None
        assert self.cin("A") is not None

    def cin(self, flags: str, data: bytes = b"", seq: int | None = None,
            ack: int | None = None) -> bytes | None:
        """Client -> VIP:21; ``ack`` as the client sees the server's stream."""
        self.t += 0.01
        pkt = seg(CLIENT, CPORT, VIP, 21, flags, self.cseq if seq is None else seq,
                  self.client_ack if ack is None else ack, data)
        if seq is None:
            self.cseq += len(data)
        return self.eng.process(pkt, self.t)

    def sout(self, flags: str, data: bytes = b"", seq: int | None = None,
             ack: int | None = None) -> bytes | None:
        self.t += 0.01
        pkt = seg(RS, 21, CLIENT, CPORT, flags, self.sseq if seq is None else seq,
                  self.cseq if ack is None else ack, data)
        if seq is None:
            self.sseq += len(data)
        return self.eng.process(pkt, self.t)

    client_ack = S_ISN + 1  # the last server byte the client saw + 1, in the client's numbers


def ftp_engine() -> Engine:
    eng = Engine(max_connections=1024)
    svc = eng.add_service("tcp", VIP, 21, scheduler="rr", ftp=True)
    eng.add_server(svc, RS, 21)
    return eng


def payload(out: bytes) -> bytes:
    return bytes(IP(out)[TCP].payload)


def test_pasv_reply_rewritten_and_stream_shifted() -> None:
    eng = ftp_engine()
    s = Session(eng)
    assert s.cin("PA", b"PASV\r\n") is not None
    reply = b"227 Entering Passive Mode (198,19,0,11,195,80).\r\n"
    seq0 = s.sseq
    out = s.sout("PA", reply)
    assert out is not None and ip_header_ok(out) and l4_checksum_ok(out)
    assert payload(out) == b"227 Entering Passive Mode (198,18,0,100,195,80).\r\n"
    assert IP(out)[TCP].seq == seq0 and IP(out).src == VIP  # the rewritten segment's own seq
    assert eng.stats().events["ftp_rewrite"] == 1
    # the next server segment is one byte further on for the client
    out = s.sout("PA", b"150 ok\r\n")
    assert out is not None and IP(out)[TCP].seq == seq0 + len(reply) + 1 and l4_checksum_ok(out)
    # the client acknowledges in its numbers; the server gets its own back
    fin = s.sseq + 1
    out = s.cin("A", ack=fin)
    assert out is not None and IP(out)[TCP].ack == fin - 1 and l4_checksum_ok(out)
    # an ack of a byte before the rewrite is not shifted
    out = s.cin("A", ack=seq0)
    assert out is not None and IP(out)[TCP].ack == seq0
    # a retransmission of the rewritten segment is rewritten again, delta counted once
    out = s.sout("PA", reply, seq=seq0)
    assert out is not None
    assert payload(out).startswith(b"227 Entering Passive Mode (198,18,0,100,")
    assert IP(out)[TCP].seq == seq0 and l4_checksum_ok(out)
    out = s.sout("PA", b"226 done\r\n")
    assert out is not None and IP(out)[TCP].seq == s.sseq - 10 + 1


def test_pasv_expectation_takes_the_clients_data_connection() -> None:
    eng = ftp_engine()
    s = Session(eng)
    s.cin("PA", b"PASV\r\n")
    s.sout("PA", b"227 Entering Passive Mode (198,19,0,11,195,80)\r\n")
    nocport = [c for c in eng.connections() if c.virtual_port == 50000]
    assert len(nocport) == 1 and nocport[0].client_port == 0 and nocport[0].state == "LISTEN"
    out = eng.process(seg(CLIENT, 45555, VIP, 50000, "S", 7000), 2.0)
    assert out is not None
    assert (IP(out).dst, IP(out)[TCP].dport) == (RS, 50000)
    data = [c for c in eng.connections() if c.virtual_port == 50000]
    assert len(data) == 1 and data[0].client_port == 45555
    back = eng.process(seg(RS, 50000, CLIENT, 45555, "SA", 9000, 7001), 2.1)
    assert back is not None and (IP(back).src, IP(back)[TCP].sport) == (VIP, 50000)
    # the expectation is used up: a second client port to it is a new (unscheduled) conn
    assert eng.process(seg(CLIENT, 45556, VIP, 50000, "S", 7000), 2.2) is None


def test_epsv_reply_makes_an_expectation_without_rewrite() -> None:
    eng = ftp_engine()
    s = Session(eng)
    s.cin("PA", b"EPSV\r\n")
    reply = b"229 Entering Extended Passive Mode (|||50001|)\r\n"
    out = s.sout("PA", reply)
    assert out is not None and payload(out) == reply
    out = eng.process(seg(CLIENT, 45557, VIP, 50001, "S", 7000), 2.0)
    assert out is not None and (IP(out).dst, IP(out)[TCP].dport) == (RS, 50001)


def test_port_and_eprt_let_the_servers_data_connection_out() -> None:
    eng = ftp_engine()
    s = Session(eng)
    for command, port in ((b"PORT 198,18,0,1,156,65\r\n", 40001),
                          (b"EPRT |1|198.18.0.1|40002|\r\n", 40002)):
        out = s.cin("PA", command)
        assert out is not None and payload(out) == command  # commands are not changed
        syn = eng.process(seg(RS, 20, CLIENT, port, "S", 9000), 2.0)
        assert syn is not None
        assert (IP(syn).src, IP(syn)[TCP].sport, IP(syn).dst) == (VIP, 20, CLIENT)
        synack = eng.process(seg(CLIENT, port, VIP, 20, "SA", 7000, 9001), 2.1)
        assert synack is not None and (IP(synack).dst, IP(synack)[TCP].dport) == (RS, 20)


def test_split_command_is_left_alone() -> None:
    eng = ftp_engine()
    s = Session(eng)
    s.cin("PA", b"PORT 198,18,0,")
    s.cin("PA", b"1,156,66\r\n")
    assert eng.process(seg(RS, 20, CLIENT, 40002, "S", 9000), 2.0) is not None  # passes...
    assert eng.stats().passes["not_ours"] >= 1  # ...unchanged: no entry was made
    assert eng.stats().events["ftp_data_entry"] == 0


def test_other_services_are_not_watched() -> None:
    eng = Engine(max_connections=64)
    svc = eng.add_service("tcp", VIP, 21, scheduler="rr")
    eng.add_server(svc, RS, 21)
    s = Session(eng)
    s.cin("PA", b"PASV\r\n")
    reply = b"227 Entering Passive Mode (198,19,0,11,195,80)\r\n"
    out = s.sout("PA", reply)
    assert out is not None and payload(out) == reply


def test_sync_carries_the_delta_to_the_backup() -> None:
    eng = ftp_engine()
    s = Session(eng)
    s.cin("PA", b"PASV\r\n")
    seq0 = s.sseq
    reply = b"227 Entering Passive Mode (198,19,0,11,195,80)\r\n"
    s.sout("PA", reply)
    backup = ftp_engine()
    assert backup.sync_apply(eng.sync_full(3.0), 3.0) >= 1
    # after a takeover the backup shifts the server's stream and the client's acks the same
    s.eng = backup
    out = s.sout("PA", b"150 ok\r\n")
    assert out is not None and IP(out)[TCP].seq == seq0 + len(reply) + 1
    out = s.cin("A", ack=s.sseq + 1)
    assert out is not None and IP(out)[TCP].ack == s.sseq


def test_a_new_delta_is_synced_at_once() -> None:
    eng = ftp_engine()
    eng.set_sync_master(True)
    s = Session(eng)
    s.cin("PA", b"PASV\r\n")
    eng.sync_collect()  # whatever the thresholds produced so far
    seq0 = s.sseq
    reply = b"227 Entering Passive Mode (198,19,0,11,195,80)\r\n"
    s.sout("PA", reply)
    blob = eng.sync_collect()
    assert blob, "the control connection's new delta was not queued"
    backup = ftp_engine()
    backup.sync_apply(blob, s.t)
    s.eng = backup
    out = s.sout("PA", b"150 ok\r\n")
    assert out is not None and IP(out)[TCP].seq == seq0 + len(reply) + 1
