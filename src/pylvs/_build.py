"""cffi build script for ``pylvs._core`` (out-of-line API mode).

This is the only Python file that knows about C.  One extension module holds the packet
engine (``core/*.c``), the schedulers beside this file (``_sched*.c``) and the dataplane
(``dataplane/*.c``).  The cdef is assembled from its parts: ``_core.cdef`` (the engine and
the scheduler harness) and ``dataplane/_tunio.cdef`` (the TUN pump).  ``_core.pyi`` is the
typed surface of the result.  Run ``python src/pylvs/_build.py`` to rebuild in place during
development; ``pip install .`` runs it through setuptools.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CDEF_PARTS = ("_core.cdef", "core/lock.cdef", "dataplane/_tunio.cdef", "dataplane/_workers.cdef",
              "dataplane/_steer.cdef", "ha/_pacer.cdef")
# Headers the generated module includes so it sees every declaration of the cdef.
HEADERS = ("core/api.h", "core/lock.h", "_sched.h", "dataplane/_tunio.h", "dataplane/_workers.h",
           "dataplane/_steer.h", "ha/_pacer.h")
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

ffibuilder = FFI()
ffibuilder.cdef("\n".join((HERE / part).read_text() for part in CDEF_PARTS))
ffibuilder.set_source(
    "pylvs._core",
    "".join(f'#include "{h}"\n' for h in HEADERS),
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
