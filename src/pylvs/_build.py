"""cffi build script for ``pylvs._core`` (out-of-line API mode).

This is the only Python file that knows about C.  One extension module holds the packet
engine (``core/*.c``), the schedulers beside this file (``_sched*.c``) and the dataplane
(``dataplane/*.c``).  The cdef is assembled from its parts: ``_core.cdef`` (the engine and
the scheduler harness) and the dataplane's parts (``dataplane/*.cdef``).  It also compiles
the XDP program (``dataplane/bpf/``) with clang, when clang is installed.  ``_core.pyi`` is the
typed surface of the result.  Run ``python src/pylvs/_build.py`` to rebuild in place during
development; ``pip install .`` runs it through setuptools.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CDEF_PARTS = ("_core.cdef", "core/lock.cdef", "dataplane/_tunio.cdef", "dataplane/_workers.cdef",
              "dataplane/_steer.cdef", "dataplane/_xdp.cdef", "dataplane/_fastpath.cdef",
              "ha/_pacer.cdef", "core/offload.cdef")
# Headers the generated module includes so it sees every declaration of the cdef.
HEADERS = ("core/api.h", "core/lock.h", "_sched.h", "dataplane/_tunio.h", "dataplane/_workers.h",
           "dataplane/_steer.h", "dataplane/_xdp.h", "dataplane/_fastpath.h", "ha/_pacer.h",
           "core/offload.h")
# setuptools runs this from the project root and insists on relative paths.
SOURCES = sorted(
    os.path.relpath(p)
    for p in [*HERE.glob("core/*.c"), *HERE.glob("*.c"), *HERE.glob("dataplane/*.c"),
              *HERE.glob("ha/*.c")]
    if p.name != "_core.c"  # cffi's own output, when built in place
)
DEBUG = bool(os.environ.get("PYLVS_DEBUG"))  # ASan + UBSan, unoptimised
# ThreadSanitizer (the packet workers share the engine); load with LD_PRELOAD=libtsan.so.
TSAN = bool(os.environ.get("PYLVS_TSAN"))
SANITIZE = ["-fsanitize=address,undefined"] if DEBUG else ["-fsanitize=thread"] if TSAN else []

# The BPF programs (dataplane/bpf/): the XDP SYN-cookie responder and the TC fast path, built
# with clang when it is installed.  Without it the director logs a warning and does that work
# through the TUN (dataplane/xdp.py, dataplane/fastpath.py).
BPF_SOURCES = sorted((HERE / "dataplane" / "bpf").glob("*.bpf.c"))


def build_bpf() -> bool:
    """Compile each BPF program that is missing or older than its source; False without clang
    (or when clang fails: the message goes to stderr, the C core still builds)."""
    import shutil
    import subprocess
    import sys
    import sysconfig

    ok = True
    headers = list((HERE / "dataplane" / "bpf").glob("*.h"))  # pylvs_bpf.h, shared
    for source in BPF_SOURCES:
        obj = source.with_suffix(".o")
        newest = max(p.stat().st_mtime for p in (source, *headers))
        if obj.exists() and obj.stat().st_mtime >= newest:
            continue
        clang = shutil.which("clang")
        if clang is None:
            print(f"pylvs: clang not found: {source.name} is not built", file=sys.stderr)
            return False
        # <asm/types.h> lives under the multiarch directory, which -target bpf does not search
        multiarch = sysconfig.get_config_var("MULTIARCH") or ""
        cmd = [clang, "-O2", "-g", "-Wall", "-target", "bpf",
               *([f"-I/usr/include/{multiarch}"] if multiarch else []),
               "-c", str(source), "-o", str(obj)]
        if subprocess.call(cmd) != 0:
            print(f"pylvs: clang failed: {source.name} is not built", file=sys.stderr)
            ok = False
    return ok


build_bpf()

# Functions that take an lvs_engine * but must not be wrapped in the engine lock: its lifetime,
# the lock itself, its timing (read without it), and the workers' batch calls (they lock).
UNLOCKED = frozenset({"lvs_engine_new", "lvs_engine_free", "lvs_engine_lock", "lvs_engine_unlock",
                      "lvs_engine_trylock", "lvs_engine_lock_control", "lvs_engine_unlock_control",
                      "lvs_engine_lock_stats", "lvs_engine_process_batch_shared",
                      "lvs_workers_bench", "lvs_offload_drain", "lvs_offload_pending"})
LOCKED_PREFIX = "lvs_locked_"


def locked_twins(ffi: FFI) -> tuple[str, str]:
    """(cdef, C source) of ``lvs_locked_<f>`` for every function ``f`` of the cdef whose first
    argument is an ``lvs_engine *``: ``f`` called between lvs_engine_lock_control and
    lvs_engine_unlock_named, in C.  In Python, cffi releases the GIL around each C call and takes
    it back after: a lock taken by one call and released by the next would be held while the
    thread waits for the GIL, up to the switch interval or longer when another thread computes
    (measured: 38 ms for a read of the counters), and the packet workers would wait as long
    (engine_lock.py uses these twins)."""
    cdef, src = [], []
    for key, (tp, _) in sorted(ffi._parser._declarations.items()):  # cffi's parsed cdef
        name = key.partition(" ")[2]
        if not key.startswith("function ") or name in UNLOCKED or not tp.args or \
                tp.args[0].get_c_name() != "lvs_engine *":
            continue
        params = ", ".join(a.get_c_name(f" a{i}") for i, a in enumerate(tp.args))
        args = ", ".join(f"a{i}" for i in range(len(tp.args)))
        ret = tp.result.get_c_name()
        head = f"{ret} {LOCKED_PREFIX}{name}({params})"
        cdef.append(head + ";")
        call = f"{name}({args});" if ret == "void" else f"{ret} r = {name}({args});"
        src.append(f"{head}\n{{\n    lvs_engine_lock_control(a0);\n    {call}\n"
                   f'    lvs_engine_unlock_named(a0, "{name}");\n'
                   f"{'' if ret == 'void' else '    return r;'}\n}}\n")
    return "\n".join(cdef), "\n".join(src)


ffibuilder = FFI()
ffibuilder.cdef("\n".join((HERE / part).read_text() for part in CDEF_PARTS))
_twins_cdef, _twins_src = locked_twins(ffibuilder)
ffibuilder.cdef(_twins_cdef)
ffibuilder.set_source(
    "pylvs._core",
    "".join(f'#include "{h}"\n' for h in HEADERS) + _twins_src,
    sources=SOURCES,
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=[
        "-O2",
        "-std=gnu11",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-pthread",
        *(["-g", "-O0"] if DEBUG else ["-g", "-O1"] if TSAN else []),
        *SANITIZE,
    ],
    extra_link_args=["-pthread", *SANITIZE],
)

if __name__ == "__main__":
    # Development rebuild: compile in place so the .so lands next to the sources.
    import subprocess
    import sys

    root = HERE.parent.parent
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "--inplace"]
    sys.exit(subprocess.call(cmd, cwd=root))
