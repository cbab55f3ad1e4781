"""SYN-flood benchmark (issue 11): how each director copes with a spoofed SYN flood.

See :func:`main` for the command line; the method and the numbers are in bench/RESULTS.md.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOODER_SRC = HERE / "flooder.c"
FLOOD_NET = "198.18.128.0"  # spoofed sources: 198.18.128.0/17, no route back, SYN-ACKs vanish
FLOOD_PREFIX = 17


def build_flooder(out_dir: Path) -> Path:
    """Compile bench/flooder.c into ``out_dir``; returns the executable."""
    exe = out_dir / "flooder"
    subprocess.run(["gcc", "-O2", "-std=gnu11", "-Wall", "-Wextra", str(FLOODER_SRC), "-o",
                    str(exe)], check=True)
    return exe


def flooder_argv(exe: Path, vip: str, port: int, rate: int, count: int,
                 seconds: float) -> list[str]:
    """The flooder's command line: SYNs from 198.18.128.0/17 to vip:port."""
    return [str(exe), vip, str(port), FLOOD_NET, str(FLOOD_PREFIX), str(rate), str(count),
            str(seconds)]
