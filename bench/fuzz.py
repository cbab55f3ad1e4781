"""Fuzzing at scale: millions of generated packets through the C engine under ASan + UBSan.

``python3 -m bench.fuzz --packets 1000000`` compiles the engine's C sources (``core/`` and the
schedulers) with the sanitizer flags of a ``PYLVS_DEBUG=1`` build, together with
``bench/fuzz_driver.c``, into a temporary directory, and runs it.  The driver feeds random
bytes, valid packets, truncated and bit-flipped valid packets, TCP option soup and
cookie-shaped ACKs one at a time, switches the flood defence modes as it goes, and checks after
every packet that nothing reached a real server without a connection (see the driver's header
for the full list).  LeakSanitizer checks the engine's teardown.  A failed invariant or any
sanitizer report fails the run.

The unit suite runs a short version (tests/unit/test_engine_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "pylvs"
DRIVER = Path(__file__).resolve().parent / "fuzz_driver.c"
# PYLVS_DEBUG=1's flags (src/pylvs/_build.py); recover=... makes UBSan findings fatal
SANITIZE = ["-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer"]


def build(out_dir: Path) -> Path:
    """Compile the sanitized driver; returns the executable."""
    sources = sorted(str(p) for p in (PKG / "core").glob("*.c"))
    sources += sorted(str(p) for p in PKG.glob("_sched*.c") if p.name != "_schedtest.c")
    exe = out_dir / "fuzz_driver"
    cmd = ["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", *SANITIZE,
           f"-I{PKG}", f"-I{PKG / 'core'}", str(DRIVER), *sources, "-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe


def run(packets: int, seed: int = 1, exe: Path | None = None) -> dict[str, Any]:
    """Build (unless given) and run the driver; returns its summary, raises on a failure."""
    with tempfile.TemporaryDirectory(prefix="pylvs-fuzz-") as tmp:
        exe = exe or build(Path(tmp))
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        proc = subprocess.run([str(exe), str(packets), str(seed)], capture_output=True,
                              text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"fuzz driver failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-4000:]}")
        if proc.stderr.strip():  # a sanitizer report that did not stop the run
            raise RuntimeError(f"fuzz driver reported:\n{proc.stderr[-4000:]}")
        summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return summary


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python3 -m bench.fuzz [--packets N] [--seed S]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if shutil.which("gcc") is None:
        print("fuzz: gcc is needed", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        summary = run(args.packets, args.seed)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"fuzz: FAILED: {exc}", file=sys.stderr)
        return 1
    summary["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
