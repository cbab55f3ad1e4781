"""The packet workers' C stress test (tests/c/workers_stress.c) under ThreadSanitizer and under
ASan/UBSan: worker threads pump packets while the main thread makes every control-plane call
under the engine lock.  A data race, a leak or undefined behaviour fails the run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "src" / "pylvs"
SANITIZERS = {
    "tsan": ["-fsanitize=thread", "-O1"],
    "asan_ubsan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-O1"],
}


@pytest.mark.parametrize("sanitizer", sorted(SANITIZERS))
def test_workers_stress_sanitized(sanitizer: str, tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    sources = [*PKG.glob("core/*.c"), *PKG.glob("_sched*.c"), *PKG.glob("dataplane/*.c")]
    exe = tmp_path / f"stress_{sanitizer}"
    build = subprocess.run(
        [cc, "-g", "-std=gnu11", "-pthread", *SANITIZERS[sanitizer], f"-I{PKG}",
         str(ROOT / "tests" / "c" / "workers_stress.c"), *map(str, sources), "-lm", "-o",
         str(exe)], capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr[-3000:]
    # setarch -R: TSan needs the classic address layout on kernels with high mmap entropy.
    prefix = ["setarch", "-R"] if shutil.which("setarch") else []
    run = subprocess.run([*prefix, str(exe), "2", "2"], capture_output=True, text=True,
                         timeout=120,
                         env={"TSAN_OPTIONS": "halt_on_error=1 exitcode=66",
                              "ASAN_OPTIONS": "detect_leaks=1 exitcode=66"})
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert "WARNING:" not in report and "runtime error" not in report, report[-6000:]
    assert "workers=2 " in run.stdout
