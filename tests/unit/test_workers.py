"""Packet worker threads (dataplane/_workers.c) over SOCK_SEQPACKET pairs: exact scheduler
sequences with two workers, both directions of a flow on different workers, control calls while
the workers run, the engine lock, a worker failing, and no thread or fd left behind."""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

from pylvs._core import ffi, lib
from pylvs.engine import Engine
from tests.support.worker_harness import Queues, rr_engine, stress, syn, tcp_segment, workers


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_two_workers_keep_the_exact_scheduler_sequence() -> None:
    # One flow at a time, alternating queues: the same outputs, byte for byte, as one engine
    # processing the same packets in the same order (the kernel's rr/wrr sequences).
    for scheduler in ("rr", "wrr", "wlc"):
        eng, ref = rr_engine(3, scheduler), rr_engine(3, scheduler)
        with workers(eng, 2) as q:
            for i in range(40):
                pkt = syn(20000 + i)
                got = q.exchange(i % 2, pkt)
                assert got is not None
                assert got == ref.process(pkt, time.monotonic()), (scheduler, i)


def test_reply_on_the_other_worker_is_rewritten() -> None:
    eng = rr_engine(3)
    with workers(eng, 2) as q:
        out = q.exchange(0, syn(31000))
        assert out is not None
        rs = ".".join(str(b) for b in out[16:20])
        reply = tcp_segment(rs, 80, "198.18.0.2", 31000, 0x12)
        back = q.exchange(1, reply)
        assert back is not None
        assert back[12:16] == bytes([198, 18, 0, 100])  # source is the VIP again
        assert [c.state for c in eng.connections()] == ["SYN_RECV"]


def test_control_calls_while_workers_pump() -> None:
    totals = stress(1.5, 2)
    assert totals["running_after_stop"] == 0
    assert totals["reads"] == (totals["forwarded"] + totals["passed"] + totals["replies"]
                               + totals["dropped"])
    assert totals["calls"] > 50 and totals["batches"] > 0


def test_engine_calls_wait_for_the_lock() -> None:
    eng = rr_engine(1)
    holder_ready, release = threading.Event(), threading.Event()

    def hold() -> None:  # a worker in the middle of a batch
        lib.lvs_engine_lock(eng._c_handle())
        holder_ready.set()
        release.wait(5)
        lib.lvs_engine_unlock(eng._c_handle())

    t = threading.Thread(target=hold)
    t.start()
    holder_ready.wait(5)
    done = threading.Event()

    def call() -> None:
        eng.services()
        done.set()

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.2)
    assert not done.is_set()  # blocked on the engine lock (and the GIL is free meanwhile)
    release.set()
    caller.join(5)
    t.join(5)
    assert done.is_set()
    assert lib.lvs_engine_trylock(eng._c_handle()) == 1
    lib.lvs_engine_unlock(eng._c_handle())


def test_a_failed_worker_signals_and_the_others_run_on() -> None:
    before = _open_fds()
    q = Queues(rr_engine(3), 2)
    try:
        q.start()
        assert q.running() == 2
        q.peers[1].close()  # the queue goes away under worker 1
        notify = lib.lvs_workers_notify_fd(q.w)
        assert select.select([notify], [], [], 5)[0] == [notify]
        which = ffi.new("uint32_t *")
        assert lib.lvs_workers_failure(q.w, which) < 0 and which[0] == 1
        assert q.exchange(0, syn(40000)) is not None  # worker 0 still forwards
        q.stop()
        assert q.running() == 0
    finally:
        q.close()
    assert _open_fds() == before  # sockets and both eventfds closed


def test_no_thread_or_fd_left_after_stop_and_free() -> None:
    before_fds, before_threads = _open_fds(), len(os.listdir("/proc/self/task"))
    for _ in range(3):
        with workers(rr_engine(2), 4) as q:
            assert q.running() == 4
            assert len(os.listdir("/proc/self/task")) == before_threads + 4
    assert len(os.listdir("/proc/self/task")) == before_threads
    assert _open_fds() == before_fds


def test_no_engine_drops_everything() -> None:
    with workers(None, 1) as q:
        assert q.exchange(0, syn(50000), timeout=0.2) is None
        assert int(q.stats(0).dropped) == 1


def _forwarded(q: Queues, want: int) -> int:
    # A worker publishes its counters after writing the batch back: allow it that moment.
    deadline = time.monotonic() + 2
    got = sum(int(q.stats(i).forwarded) for i in range(2))
    while got != want and time.monotonic() < deadline:
        time.sleep(0.001)
        got = sum(int(q.stats(i).forwarded) for i in range(2))
    return got


def test_worker_stats_zero() -> None:
    eng: Engine = rr_engine(2)
    with workers(eng, 2) as q:
        for i in range(6):
            assert q.exchange(i % 2, syn(60000 + i)) is not None
        assert _forwarded(q, 6) == 6
        lib.lvs_workers_zero_stats(q.w)
        assert sum(int(q.stats(i).forwarded) for i in range(2)) == 0
        assert q.exchange(0, syn(60100)) is not None
        assert _forwarded(q, 1) == 1 and int(q.stats(0).max_batch) == 1


def test_spin_reads_the_next_packet_without_sleeping() -> None:
    # A wide window: the second packet arrives while worker 0 still spins, so it is read by a
    # busy poll (spin_hits), and the counters are published while the spin goes on.
    eng = rr_engine(2)
    q = Queues(eng, 1)
    try:
        lib.lvs_workers_set_spin(q.w, 2_000_000_000)
        q.start()
        assert q.exchange(0, syn(61000)) is not None
        assert q.exchange(0, syn(61001)) is not None
        assert _published(q, 2) and int(q.stats(0).spin_hits) >= 1
        t0 = time.monotonic()
        q.stop()  # ends the spin at once, not after its 2 s window
        assert time.monotonic() - t0 < 1.0 and q.running() == 0
        assert int(q.stats(0).spin_polls) > 0  # the empty polls, published at the stop
    finally:
        q.close()


def test_no_spin_sleeps_after_every_batch() -> None:
    eng = rr_engine(2)
    q = Queues(eng, 1)
    try:
        lib.lvs_workers_set_spin(q.w, 0)
        q.start()
        for i in range(3):
            assert q.exchange(0, syn(62000 + i)) is not None
        q.stop()
        st = q.stats(0)
        assert int(st.forwarded) == 3 and int(st.spin_hits) == 0 and int(st.spin_polls) == 0
    finally:
        q.close()


def test_director_hands_worker_nice_to_the_dataplane() -> None:
    from pylvs.director import Director
    from pylvs.model import Config, DirectorConfig

    assert Director(Config(director=DirectorConfig(
        public_interface="eth0", private_interface="eth1", workers=2))).dataplane.nice == -15
    d = Director(Config(director=DirectorConfig(public_interface="eth0", private_interface="eth1",
                                                workers=2, worker_nice=0)))
    assert d.dataplane.nice == 0


def test_director_hands_worker_spin_us_to_the_dataplane() -> None:
    from pylvs.director import Director
    from pylvs.model import Config, DirectorConfig

    for spin in (0, 30, 250):  # 0 is the default
        d = Director(Config(director=DirectorConfig(public_interface="eth0",
                                                    private_interface="eth1", workers=2,
                                                    worker_spin_us=spin)))
        assert d.dataplane.spin_us == spin


def test_zero_during_a_spin_restarts_max_batch() -> None:
    eng = rr_engine(2)
    q = Queues(eng, 1)
    try:
        lib.lvs_workers_set_spin(q.w, 2_000_000_000)
        q.start()
        # Hold the engine so the five SYNs queue up and are read as one batch (or two).
        lib.lvs_engine_lock(eng._c_handle())
        for i in range(5):
            q.peers[0].send(syn(63000 + i))
        time.sleep(0.1)
        lib.lvs_engine_unlock(eng._c_handle())
        q.peers[0].settimeout(2)
        for _ in range(5):
            q.peers[0].recv(65536)
        assert _published(q, 5) and int(q.stats(0).max_batch) > 1
        lib.lvs_workers_zero_stats(q.w)  # the worker is still spinning (2 s window)
        assert q.exchange(0, syn(63100)) is not None
        assert _published(q, 1) and int(q.stats(0).max_batch) == 1
    finally:
        q.close()


def _published(q: Queues, forwarded: int) -> bool:
    deadline = time.monotonic() + 2
    while int(q.stats(0).forwarded) != forwarded and time.monotonic() < deadline:
        time.sleep(0.001)
    return int(q.stats(0).forwarded) == forwarded


def test_workers_run_above_the_control_plane_and_leave_a_shared_session_alone() -> None:
    # Root (CAP_SYS_NICE): each worker renices itself to LVS_WORKERS_NICE; this process does
    # not lead its session (pytest's shell does), so its autogroup keeps its nice.
    autogroup = Path("/proc/self/autogroup")
    group = autogroup.read_text(encoding="ascii") if autogroup.exists() else ""
    with workers(rr_engine(1), 2) as q:
        assert q.exchange(0, syn(23000)) is not None
        nices = _worker_nices()
    assert set(nices) == {"pylvs-w0", "pylvs-w1"}
    if os.geteuid() == 0:
        assert set(nices.values()) == {-15}
    if group and os.getsid(0) != os.getpid():
        assert autogroup.read_text(encoding="ascii") == group


def _worker_nices() -> dict[str, int]:
    nices = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm", encoding="ascii") as fh:
            comm = fh.read().strip()
        if comm.startswith("pylvs-w"):
            nices[comm] = os.getpriority(os.PRIO_PROCESS, int(tid))
    return nices


def test_worker_nice_zero_leaves_the_workers_as_created() -> None:
    # [director] worker_nice = 0: a director sharing its CPUs with the load it forwards
    created = os.getpriority(os.PRIO_PROCESS, 0)
    q = Queues(rr_engine(1), 2)
    try:
        lib.lvs_workers_set_nice(q.w, 0)
        q.start()
        assert q.exchange(0, syn(23100)) is not None
        assert _worker_nices() == {"pylvs-w0": created, "pylvs-w1": created}
    finally:
        q.close()
