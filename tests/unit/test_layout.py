"""The package's shape: cheap start-up of the front ends, and one service identity."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

import pylvs
from pylvs import model
from pylvs.engine_types import ServiceKey as EngineServiceKey

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "pylvs.toml"

# Runs ``python -m pylvs ARGS`` in this interpreter with the C core made unimportable, then
# prints the exit status and which pylvs modules were loaded.
_PROBE = """
import json, runpy, sys
sys.modules["pylvs._core"] = None  # any import of the core now raises ImportError
sys.argv = ["pylvs", *json.loads(sys.argv[1])]
try:
    runpy.run_module("pylvs", run_name="__main__", alter_sys=True)
    status = 0
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status,
                  "modules": sorted(m for m, mod in sys.modules.items()
                                    if m.startswith("pylvs") and mod is not None)}))
"""


def _run_without_core(args: list[str]) -> tuple[int, list[str]]:
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.stdout.strip(), res.stderr  # no report: the command raised, e.g. ImportError
    report = json.loads(res.stdout.strip().splitlines()[-1])
    return int(report["status"] or 0), report["modules"]


@pytest.mark.parametrize("args", [
    ["--help"],
    ["ctl", "--help"],
    ["status", "--help"],
    ["check", "--help"],
    ["check", "-c", str(EXAMPLE_CONFIG)],
    ["import", str(EXAMPLE_CONFIG.parents[1] / "tests" / "data" / "import" / "lvs.cf.testbed")],
])
def test_front_ends_run_without_the_c_core(args: list[str]) -> None:
    status, modules = _run_without_core(args)
    assert status == 0
    assert "pylvs._core" not in modules
    assert "pylvs.engine" not in modules
    assert "pylvs.director" not in modules


def test_import_pylvs_does_not_load_the_engine() -> None:
    code = "import sys, pylvs; print('pylvs.engine' in sys.modules, 'pylvs._core' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert res.stdout.split() == ["False", "False"]


def test_the_runtime_never_imports_scapy() -> None:
    # scapy is a test dependency only (pyproject's [test] extra): every module a director,
    # ctl or the guardian can load must do without it.  The testbed builds namespaces for
    # tests and the demo and is left out, as is the build script.
    code = """
import importlib, pkgutil, sys
import pylvs
sys.modules["scapy"] = None  # an import of scapy anywhere now raises ImportError
skip = ("pylvs.testbed", "pylvs._build", "pylvs.__main__")
names = [m.name for m in pkgutil.walk_packages(pylvs.__path__, "pylvs.")
         if not m.name.startswith(skip)]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout) > 40  # every module was really imported


def test_public_names_still_resolve() -> None:
    for name in pylvs.__all__:
        assert getattr(pylvs, name) is not None
    with pytest.raises(AttributeError):
        _ = pylvs.NoSuchName


def test_one_service_key_everywhere() -> None:
    assert pylvs.ServiceKey is model.ServiceKey is EngineServiceKey
    vs = model.VirtualServerConfig(address=model.Endpoint(IPv4Address("198.18.0.100"), 80))
    key = model.ServiceKey("tcp", "198.18.0.100", 80)
    assert vs.key == key and hash(vs.key) == hash(key)
    assert {key: 1}[vs.key] == 1


def test_service_key_text() -> None:
    key = model.ServiceKey("tcp", "198.18.0.100", 80)
    assert str(key) == "TCP 198.18.0.100:80"
    assert key.label == "tcp 198.18.0.100:80"
    v6 = model.ServiceKey("udp", "2001:2::100", 53)
    assert str(v6) == "UDP [2001:2::100]:53"
    assert v6.hostport == "[2001:2::100]:53"
