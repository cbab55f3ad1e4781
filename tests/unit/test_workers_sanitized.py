"""The packet workers' C stress test (tests/c/workers_stress.c) under ThreadSanitizer and under
ASan/UBSan: worker threads pump packets while the main thread makes every control-plane call
under the engine lock.  A data race, a leak or undefined behaviour fails the run.  And the
harness can fail: with the shared lock of the workers' fast path removed, TSan reports races."""

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


def _build_and_run(cc: str, pkg: Path, sanitizer: str, exe: Path) -> tuple[int, str, str]:
    sources = [*pkg.glob("core/*.c"), *pkg.glob("_sched*.c"), *pkg.glob("dataplane/*.c")]
    build = subprocess.run(
        [cc, "-g", "-std=gnu11", "-pthread", *SANITIZERS[sanitizer], f"-I{pkg}",
         str(ROOT / "tests" / "c" / "workers_stress.c"), *map(str, sources), "-lm", "-o",
         str(exe)], capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr[-3000:]
    # setarch -R: TSan needs the classic address layout on kernels with high mmap entropy.
    prefix = ["setarch", "-R"] if shutil.which("setarch") else []
    run = subprocess.run([*prefix, str(exe), "2", "2"], capture_output=True, text=True,
                         timeout=120,
                         env={"TSAN_OPTIONS": "halt_on_error=1 exitcode=66",
                              "ASAN_OPTIONS": "detect_leaks=1 exitcode=66"})
    return run.returncode, run.stdout, run.stdout + run.stderr


def _cc() -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    return cc


@pytest.mark.parametrize("sanitizer", sorted(SANITIZERS))
def test_workers_stress_sanitized(sanitizer: str, tmp_path: Path) -> None:
    rc, stdout, report = _build_and_run(_cc(), PKG, sanitizer, tmp_path / f"stress_{sanitizer}")
    assert rc == 0, report[-6000:]
    assert "WARNING:" not in report and "runtime error" not in report, report[-6000:]
    assert "workers=2 " in stdout


def test_tsan_finds_the_race_without_the_shared_lock(tmp_path: Path) -> None:
    # The same sources with the workers' shared lock taken out: the fast path then runs
    # beside control calls that rebuild services and expire entries.
    pkg = tmp_path / "pylvs"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__", "_core.c"))
    packet = pkg / "core" / "packet.c"
    text = packet.read_text()
    for call in ("lvs_engine_lock_shared(e);", "lvs_engine_unlock_shared(e);"):
        assert text.count(call) == 1, call
        text = text.replace(call, "/* removed */")
    packet.write_text(text)
    rc, _, report = _build_and_run(_cc(), pkg, "tsan", tmp_path / "stress_unlocked")
    assert rc != 0 and "WARNING: ThreadSanitizer: data race" in report, report[-3000:]
