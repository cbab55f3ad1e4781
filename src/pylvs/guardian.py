"""A small process that takes back what the director claimed on the network if it dies.

When ``pylvs serve`` is killed (``kill -9``, the OOM killer, a crash in C), nothing in it runs
any more, but the kernel keeps what netconf added: the ``nat_router`` addresses (IPv4 and IPv6)
on the private interface and the proxy ARP/NDP entries for the VIPs.  The dead node would go on
answering ARP and neighbour solicitations for the real servers' gateway, so a real server
whose cache picks it loses every reply, even though the HA peer has taken over (keepalived has
the same flaw).

So :meth:`pylvs.netconf.NetConf.setup` starts this guardian, joined to the director by a pipe:
the director holds the only write end.  When the director dies, the kernel closes that end and
the guardian's blocking ``read`` returns end-of-file at once (no polling, no pid reuse race,
whichever thread or signal ended the director); it then removes the addresses and the proxy
entries the director's state file lists (:func:`pylvs.netconf.release_claims`) and exits.
On a clean stop the director writes one byte first ("stand down") and the guardian exits
without touching anything, since the director has removed everything itself.

The XDP SYN proxy needs nothing from it: the director attaches it through a BPF link
(dataplane/xdp.py), whose only fd the kernel closes with the dead process, and that detaches
the program (tests/netns/test_synproxy.py kills the director with -9 and checks).

What stays after a crash is what answers for nobody: the blackhole routes that drop VIP
traffic and steered replies until the node restarts (their purpose, see netconf), the steering
rules and the sysctls; the next ``pylvs serve`` removes those while recovering.

The guardian runs in its own session (a Ctrl-C for the director's terminal is not for it) and
ignores SIGTERM/SIGINT/SIGHUP: a service manager signalling the whole group stops the director,
whose clean stop then stands the guardian down.  It holds an exclusive lock on
``<state file>.guard`` while alive, and ``NetConf.setup`` waits for that lock, so a director
restarted at once never races an old guardian still cleaning up.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Guardian", "lock_path", "main", "wait_for_previous"]

log = logging.getLogger(__name__)

_STAND_DOWN = b"q"


def lock_path(state_path: Path) -> Path:
    """The lock a guardian holds while it lives (beside the netconf state file)."""
    return state_path.with_name(state_path.name + ".guard")


def wait_for_previous(state_path: Path, timeout: float = 2.0) -> bool:
    """Wait (bounded) until no guardian for *state_path* is alive; False if one still is."""
    deadline = time.monotonic() + timeout
    try:
        f = open(lock_path(state_path), "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return True  # no guardian (each one removes its lock file when it exits)
    with f:
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
                continue
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return True


class Guardian:
    """The director's side: start the guardian process, and stand it down on a clean stop."""

    def __init__(self, proc: subprocess.Popen[bytes], write_fd: int) -> None:
        self.proc = proc
        self._write_fd: int | None = write_fd

    @classmethod
    def start(cls, state_path: Path, public: str, private: str) -> Guardian:
        """Start ``python -m pylvs.guardian`` for the state file of one NetConf.

        The guard lock is taken here and handed to the child (a flock belongs to the open
        file, which the child keeps open), so it is held from this moment on, not from
        whenever the child gets round to it.
        """
        lock = lock_path(state_path)
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        read_fd = write_fd = -1
        locked = False
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: one is alive
            locked = True
            read_fd, write_fd = os.pipe()  # close-on-exec: no other child inherits them
            proc = subprocess.Popen(
                [sys.executable, "-m", "pylvs.guardian", "--fd", str(read_fd),
                 "--lock-fd", str(lock_fd), "--state", str(state_path), "--public", public,
                 "--private", private, "--pid", str(os.getpid())],
                pass_fds=(read_fd, lock_fd), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONPATH": _import_path()},
            )
        except BaseException:
            if write_fd >= 0:
                os.close(write_fd)
            if locked:
                lock.unlink(missing_ok=True)
            raise
        finally:
            os.close(lock_fd)
            if read_fd >= 0:
                os.close(read_fd)
        return cls(proc, write_fd)

    @property
    def running(self) -> bool:
        """True while the guardian process is alive."""
        return self.proc.poll() is None

    def stand_down(self, timeout: float = 2.0) -> None:
        """Tell the guardian the director cleaned up itself; wait for it to exit."""
        fd, self._write_fd = self._write_fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):  # already gone: nothing to tell
                os.write(fd, _STAND_DOWN)
        finally:
            os.close(fd)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("guardian pid %d did not exit; killing it", self.proc.pid)
            self.proc.kill()
            self.proc.wait(timeout)


def _import_path() -> str:
    # The guardian must import this same pylvs (a source tree on PYTHONPATH included).
    here = str(Path(__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH", "")
    return here if not rest else f"{here}{os.pathsep}{rest}"


def main(argv: Sequence[str] | None = None) -> int:
    """The guardian process: wait for the director's end of the pipe, then clean up."""
    p = argparse.ArgumentParser(prog="python -m pylvs.guardian")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--lock-fd", type=int, required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--public", required=True)
    p.add_argument("--private", required=True)
    p.add_argument("--pid", type=int, default=0)
    args = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _run_first()
    state = Path(args.state)
    try:
        _watch(args.fd, state, args.public, args.private, args.pid)
    finally:
        # Unlinked while still locked (--lock-fd stays open until exit): a new director
        # waiting on it sees the lock drop when this process ends.
        lock_path(state).unlink(missing_ok=True)
    return 0


def _run_first() -> None:
    """Be scheduled before busy processes when the director dies (as keepalived's VRRP does).

    The guardian sleeps in ``read`` all its life and then does a few milliseconds of work, so
    the lowest real-time priority cannot starve anyone; it only means the cleanup is not
    queued behind a loaded machine's runnable tasks.  Without the privilege: a better nice.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-10)


def _watch(fd: int, state: Path, public: str, private: str, pid: int) -> None:
    # Everything the cleanup needs is loaded and opened now (pyroute2's first socket and
    # first request cost milliseconds), so the cleanup itself is a few netlink messages.
    from pyroute2 import IPRoute

    from pylvs.netconf import release_claims

    # groups=0: no multicast subscriptions, so nothing queues up on it while it waits.
    with IPRoute(groups=0) as ipr:
        ipr.link_lookup(ifname=public)
        try:
            got = os.read(fd, 1)
        except OSError:
            got = b""
        if got == _STAND_DOWN:
            return
        started = time.monotonic()  # CLOCK_MONOTONIC: comparable with other processes
        try:
            released = release_claims(state, public, private, ipr)
        except Exception as exc:  # report, never hang: the next run's recovery still cleans up
            print(f"pylvs guardian: director pid {pid} died; cleanup failed: {exc}",
                  file=sys.stderr, flush=True)
            return
    done = time.monotonic()
    print(f"pylvs guardian: director pid {pid} died; removed "
          f"{', '.join(released) or 'nothing (it held no address)'} in "
          f"{(done - started) * 1000:.1f} ms (monotonic {started:.4f} .. {done:.4f})",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
