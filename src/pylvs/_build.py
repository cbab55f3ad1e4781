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
              "dataplane/_steer.cdef", "dataplane/_xdp.cdef")
# Headers the generated module includes so it sees every declaration of the cdef.
HEADERS = ("core/api.h", "core/lock.h", "_sched.h", "dataplane/_tunio.h", "dataplane/_workers.h",
           "dataplane/_steer.h", "dataplane/_xdp.h")
# setuptools runs this from the project root and insists on relative paths.
SOURCES = sorted(
    os.path.relpath(p)
    for p in [*HERE.glob("core/*.c"), *HERE.glob("*.c"), *HERE.glob("dataplane/*.c")]
    if p.name != "_core.c"  # cffi's own output, when built in place
)
DEBUG = bool(os.environ.get("PYLVS_DEBUG"))  # ASan + UBSan, unoptimised
# ThreadSanitizer (the packet workers share the engine); load with LD_PRELOAD=libtsan.so.
TSAN = bool(os.environ.get("PYLVS_TSAN"))
SANITIZE = ["-fsanitize=address,undefined"] if DEBUG else ["-fsanitize=thread"] if TSAN else []

# The XDP SYN-cookie responder: BPF bytecode, built with clang when it is installed.  Without
# it the director logs a warning and answers SYNs through the TUN (dataplane/xdp.py).
BPF_SOURCE = HERE / "dataplane" / "bpf" / "xdp_synproxy.bpf.c"
BPF_OBJECT = BPF_SOURCE.with_name("xdp_synproxy.bpf.o")


def build_bpf() -> bool:
    """Compile the XDP program if it is missing or older than its source; False without clang
    (or when clang fails: the message goes to stderr, the C core still builds)."""
    import shutil
    import subprocess
    import sys
    import sysconfig

    if BPF_OBJECT.exists() and BPF_OBJECT.stat().st_mtime >= BPF_SOURCE.stat().st_mtime:
        return True
    clang = shutil.which("clang")
    if clang is None:
        print("pylvs: clang not found: the XDP SYN proxy is not built", file=sys.stderr)
        return False
    # <asm/types.h> lives under the multiarch directory, which -target bpf does not search
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    cmd = [clang, "-O2", "-g", "-Wall", "-target", "bpf",
           *([f"-I/usr/include/{multiarch}"] if multiarch else []),
           "-c", str(BPF_SOURCE), "-o", str(BPF_OBJECT)]
    if subprocess.call(cmd) != 0:
        print("pylvs: clang failed: the XDP SYN proxy is not built", file=sys.stderr)
        return False
    return True


build_bpf()

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
