"""The XDP SYN-cookie responder on the Python side: load it, attach it, keep its maps.

The program (``dataplane/bpf/xdp_synproxy.bpf.c``) answers a bare SYN to a synproxy service on
the public interface with the SYN-ACK the engine would build (core/synproxy.c), before the TUN
and the IP stack, so a spoofed SYN flood costs no TUN read, no worker wake-up and no TUN write.
It does the same for every other exact-port TCP service in its map while the engine's
``syncookies`` defence is engaged (:meth:`XdpSynproxy.set_cookies_engaged`; a flag in a map, so
engaging is one map write and a SYN to such a service costs a lookup and a pass otherwise).
The client's ACK goes on to the engine, which checks the cookie as for its own SYN-ACKs.  For
that the program needs the engine's secrets: :meth:`XdpSynproxy.push_secrets` writes the
current and the next cookie period's keys (the director calls it every second; a period lasts
60 s, so the program never runs without its key except at start, when it lets the SYN through
to the engine).

Loading uses libbpf (``libbpf.so.1``, through cffi's ABI mode: it parses the ELF object, its
BTF and the map relocations); attaching is a BPF link (``BPF_LINK_CREATE``), native mode first
and generic (SKB) mode when the driver has none.  The link detaches the program when its last
fd closes, which the kernel does for a director killed with ``-9``.  Everything that can fail
raises :class:`CoreError`; the director then logs a warning and keeps the TUN path.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pylvs.errors import CoreError

if TYPE_CHECKING:
    from pylvs._core import FFI, Lib
    from pylvs.engine import Engine

__all__ = ["BPF_OBJECT", "SVC_COOKIES", "SVC_SYNPROXY", "XdpMode", "XdpSynproxy",
           "load_libbpf", "load_object", "possible_cpus"]

BPF_OBJECT = Path(__file__).resolve().parent / "bpf" / "xdp_synproxy.bpf.o"
XdpMode = Literal["native", "generic"]

_PROGRAM = b"pylvs_synproxy"
_XDP_FLAGS = {"generic": 1 << 1, "native": 1 << 2}  # XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE
_SERVICE_KEY = struct.Struct("=16s2sBx")  # struct sp_service: addr, port (wire order), family
_SECRET = struct.Struct("=5Q")  # struct sp_secret: period, mac_key[2], base_key[2]
_COUNTERS = ("syn", "no_secret", "cookie_syn")  # the program's enum, in order
SVC_SYNPROXY = 1  # the services map's values: a synproxy service, answered always
SVC_COOKIES = 2  # another TCP service, answered while syncookies is engaged
_PERIOD = 60.0  # core/synproxy.c SP_PERIOD

_LIBBPF_CDEF = """
struct bpf_object; struct bpf_program; struct bpf_map;
struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz, const void *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj,
                                                     const char *name);
int bpf_program__fd(const struct bpf_program *prog);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, unsigned int max_entries);
"""
_libbpf: tuple[Any, Any] | None = None

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def load_libbpf() -> tuple[Any, Any]:
    """cffi's ABI-mode handle on libbpf (no headers needed; libbpf1 is a runtime package);
    shared with the TC fast path (fastpath.py)."""
    global _libbpf
    if _libbpf is None:
        from cffi import FFI

        ffi = FFI()
        ffi.cdef(_LIBBPF_CDEF)
        try:
            lib = ffi.dlopen("libbpf.so.1")
        except OSError as exc:
            raise CoreError(f"libbpf is not installed: {exc}") from exc
        _libbpf = ffi, lib
    return _libbpf


def load_object(path: Path, what: str,
                configure: Callable[[Any, Any, Any], None] | None = None) -> Any:
    """Open and load a BPF object file with libbpf (``configure(ffi, lib, obj)`` runs between
    the two, e.g. to size a map); the loaded ``bpf_object *``.  :class:`CoreError` when the
    file is missing (no clang at build time) or the kernel refuses it; ``what`` names it."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CoreError(f"no {what} at {path} (clang missing at build time?): "
                        f"{exc.strerror}") from exc
    ffi, lib = load_libbpf()
    buf = ffi.new("char[]", blob)
    obj = lib.bpf_object__open_mem(buf, len(blob), ffi.NULL)
    if obj == ffi.NULL:
        raise CoreError(f"libbpf cannot open {path.name}: {os.strerror(ffi.errno)}")
    if configure is not None:
        configure(ffi, lib, obj)
    if (rc := lib.bpf_object__load(obj)) < 0:
        lib.bpf_object__close(obj)
        raise CoreError(f"the kernel refused the {what}: {os.strerror(-rc)}")
    return obj


def _core() -> tuple[FFI, Lib]:
    from pylvs._core import ffi, lib

    return ffi, lib


def possible_cpus() -> int:
    """The kernel's possible CPUs: a per-CPU map holds one value for each."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise CoreError(f"{what}: {os.strerror(-rc)}")
    return rc


class XdpSynproxy:
    """The loaded program, its maps and the interfaces it is attached to."""

    def __init__(self, obj: Any, prog_fd: int, maps: dict[str, int]) -> None:
        self._obj: Any = obj
        self.prog_fd = prog_fd
        self._maps = maps
        self.links: dict[str, tuple[int, XdpMode]] = {}  # interface -> (link fd, mode)
        self.services: dict[tuple[IPAddress, int], int] = {}  # VIP:port -> SVC_*
        self.cookies_engaged = False
        self._periods: tuple[int, ...] = ()

    @classmethod
    def load(cls, path: Path = BPF_OBJECT) -> XdpSynproxy:
        """Load the object file; :class:`CoreError` when it is missing or the kernel refuses."""
        obj = load_object(path, "XDP program")
        lib = load_libbpf()[1]
        prog = lib.bpf_object__find_program_by_name(obj, _PROGRAM)
        maps = {name: lib.bpf_map__fd(lib.bpf_object__find_map_by_name(obj, name.encode()))
                for name in ("services", "secrets", "counters", "syncookies")}
        return cls(obj, lib.bpf_program__fd(prog), maps)

    def _fd(self, name: str) -> int:
        if self._obj is None:
            raise CoreError("the XDP program is closed")
        return self._maps[name]

    def attach(self, ifname: str, mode: XdpMode | None = None) -> XdpMode:
        """Attach to ``ifname`` in ``mode``, or native falling back to generic (generic
        only on a veth, see :func:`_modes`); returns the mode in use."""
        if ifname in self.links:
            return self.links[ifname][1]
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError as exc:
            raise CoreError(f"cannot attach the XDP SYN proxy to {ifname}: {exc}") from exc
        lib = _core()[1]
        errors = []
        for m in ((mode,) if mode else _modes(ifname)):
            fd = int(lib.lvs_xdp_link(self.prog_fd, ifindex, _XDP_FLAGS[m]))
            if fd >= 0:
                self.links[ifname] = (fd, m)
                return m
            errors.append(f"{m}: {os.strerror(-fd)}")
        raise CoreError(f"cannot attach the XDP SYN proxy to {ifname} ({'; '.join(errors)})")

    def detach(self, ifname: str) -> None:
        """Detach from ``ifname`` (closing the link is the detach)."""
        link = self.links.pop(ifname, None)
        if link is not None:
            os.close(link[0])

    def set_services(self, services: Mapping[tuple[IPAddress, int], int]) -> None:
        """Make the map hold exactly these VIP:ports, each with its kind (:data:`SVC_SYNPROXY`
        or :data:`SVC_COOKIES`); only the difference is written."""
        lib = _core()[1]
        want = dict(services)
        fd = self._fd("services")
        for addr, port in self.services.keys() - want.keys():
            _check(lib.lvs_xdp_map_delete(fd, _service_key(addr, port)), "XDP services map")
        for (addr, port), kind in want.items():
            if self.services.get((addr, port)) != kind:
                _check(lib.lvs_xdp_map_update(fd, _service_key(addr, port),
                                              struct.pack("=I", kind)), "XDP services map")
        self.services = want

    def set_cookies_engaged(self, engaged: bool) -> None:
        """Answer the :data:`SVC_COOKIES` services' SYNs (the engine's syncookies engaged) or
        pass them to the engine."""
        lib = _core()[1]
        _check(lib.lvs_xdp_map_update(self._fd("syncookies"), struct.pack("=I", 0),
                                      struct.pack("=I", int(engaged))), "XDP syncookies map")
        self.cookies_engaged = engaged

    def push_secrets(self, engine: Engine, now: float) -> None:
        """Give the program the engine's keys for the period of ``now`` and the next one
        (CLOCK_MONOTONIC seconds, the clock of the packet workers and of the program)."""
        lib = _core()[1]
        fd = self._fd("secrets")
        periods: list[int] = []
        for t in (now, now + _PERIOD):
            period, mac, base = engine.synproxy_secrets(t)
            periods.append(period)
            if period in self._periods:
                continue
            value = _SECRET.pack(period, *mac, *base)
            _check(lib.lvs_xdp_map_update(fd, struct.pack("=I", period & 1), value),
                   "XDP secrets map")
        self._periods = tuple(periods)

    def counters(self) -> dict[str, int]:
        """The program's counters summed over the CPUs: ``syn`` (SYN-ACKs sent),
        ``no_secret`` (SYNs left to the engine because no key was pushed for the period) and
        ``cookie_syn`` (of ``syn``, those for services without synproxy: syncookies)."""
        ffi, lib = _core()
        fd = self._fd("counters")
        ncpu = possible_cpus()
        out = {}
        for i, name in enumerate(_COUNTERS):
            values = ffi.new("uint64_t[]", ncpu)
            _check(lib.lvs_xdp_map_lookup(fd, struct.pack("=I", i), values), "XDP counters")
            out[name] = sum(int(values[c]) for c in range(ncpu))
        return out

    def run(self, frame: bytes) -> tuple[int, bytes]:
        """Run the program once on an Ethernet frame (BPF_PROG_TEST_RUN; for tests): its
        verdict and the frame as it left it."""
        ffi, lib = _core()
        out = ffi.new("uint8_t[]", len(frame) + 256)
        out_len = ffi.new("uint32_t *")
        verdict = _check(int(lib.lvs_xdp_test_run(self.prog_fd, frame, len(frame), out,
                                                  len(frame) + 256, out_len)),
                         "BPF_PROG_TEST_RUN")
        return verdict, bytes(ffi.buffer(out, out_len[0]))

    def close(self) -> None:
        """Detach from every interface and free the program and its maps."""
        for ifname in list(self.links):
            self.detach(ifname)
        if self._obj is not None:
            load_libbpf()[1].bpf_object__close(self._obj)
            self._obj = None


def _modes(ifname: str) -> tuple[XdpMode, ...]:
    """The modes to try on ``ifname``.  A veth takes a native program, but the frames it sends
    back (XDP_TX) reach the peer only when the peer runs an XDP program too, and the peer is
    in another namespace (a bridge port, a container's end): the attach succeeds and every
    SYN-ACK is lost.  Generic mode sends them through the peer's ordinary receive path."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link("get", ifname=ifname)
    info = links[0].get_attr("IFLA_LINKINFO") if links else None
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return ("generic",) if kind == "veth" else ("native", "generic")


def _service_key(addr: IPAddress, port: int) -> bytes:
    return _SERVICE_KEY.pack(addr.packed, port.to_bytes(2, "big"), addr.version)
