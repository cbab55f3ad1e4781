"""cffi build script for ``pylvs._core`` (out-of-line API mode).

This is the only Python file that knows about C.  Every ``*.c`` file beside it (and under
``dataplane/``) is compiled into the one extension module; ``_core.cdef`` declares the few
functions Python calls.  Run ``python src/pylvs/_build.py`` to rebuild in place during
development; ``pip install .`` runs it through setuptools.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# setuptools runs this from the project root and insists on relative paths.
SOURCES = sorted(
    os.path.relpath(p)
    for p in [*HERE.glob("*.c"), *HERE.glob("core/*.c"), *HERE.glob("dataplane/*.c")]
    if p.name != "_core.c"
)

ffibuilder = FFI()
ffibuilder.cdef((HERE / "_core.cdef").read_text())
ffibuilder.set_source(
    "pylvs._core",
    '#include "core/lvs.h"\n#include "core/api.h"\n',
    sources=SOURCES,
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=[
        "-O2",
        "-std=gnu11",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        *(["-g", "-O0", "-fsanitize=address,undefined"] if os.environ.get("PYLVS_DEBUG") else []),
    ],
    extra_link_args=["-fsanitize=address,undefined"] if os.environ.get("PYLVS_DEBUG") else [],
)

if __name__ == "__main__":
    # Development rebuild: compile in place so the .so lands next to the sources.
    import subprocess
    import sys

    root = HERE.parent.parent
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "--inplace"]
    sys.exit(subprocess.call(cmd, cwd=root))
