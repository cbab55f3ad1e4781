"""The Python side of the C core agrees with the compiled module: the typed surface
(``_core.pyi``) declares exactly what ``pylvs._core`` exports, and the constants Python needs
come from C, one scheduler list included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pylvs import engine, model
from pylvs._core import ffi, lib
from pylvs.engine_lock import LOCKED_PREFIX

STUB = Path(engine.__file__).with_name("_core.pyi")


def _stub_classes() -> dict[str, ast.ClassDef]:
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _members(cls: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("__"):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_stub_declares_every_lib_name_and_no_other() -> None:
    declared = _members(_stub_classes()["Lib"])
    # the generated lvs_locked_<f> twins (_build.py) are typed as <f>: engine_lock.py puts
    # each under its function's name, and nothing else calls them
    twins = {n for n in dir(lib) if n.startswith(LOCKED_PREFIX)}
    assert twins and all(n.removeprefix(LOCKED_PREFIX) in declared for n in twins)
    assert declared == set(dir(lib)) - twins


def test_stub_structs_have_the_c_fields() -> None:
    classes = _stub_classes()
    structs = [name for name in classes if name.startswith("lvs_")]
    checked = 0
    for name in structs:
        fields = _members(classes[name])
        if not fields:  # an opaque handle (lvs_engine, lvs_tunio, lvs_schedtest)
            with pytest.raises(ffi.error):
                ffi.sizeof(name)
            continue
        assert fields == {f for f, _ in ffi.typeof(name).fields}, name
        checked += 1
    assert checked >= 9


def test_stub_ffi_new_cdecls_are_c_types() -> None:
    literals = [
        node.slice
        for node in ast.walk(ast.parse(STUB.read_text()))
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
        and node.value.id == "Literal"
    ]
    cdecls = [
        c.value for lit in literals for c in ast.walk(lit)
        if isinstance(c, ast.Constant) and isinstance(c.value, str)
    ]
    assert len(cdecls) > 10
    for cdecl in cdecls:
        ffi.typeof(cdecl)


def test_scheduler_list_matches_the_c_registry() -> None:
    # model.SCHEDULERS stays pure Python so `pylvs check` works without the C core.
    assert engine.scheduler_names() == model.SCHEDULERS


def test_every_c_option_has_a_python_name() -> None:
    c_options = {getattr(lib, n) for n in dir(lib) if n.startswith("LVS_OPT_")}
    assert set(engine.Engine._OPTIONS.values()) == c_options


def test_every_c_error_has_a_text() -> None:
    for name in dir(lib):
        if name.startswith("LVS_E_"):
            assert lib.lvs_strerror(getattr(lib, name)) != ffi.NULL, name
    assert lib.lvs_strerror(9999) == ffi.NULL


def test_verdicts_and_states_come_from_c() -> None:
    assert [int(v) for v in engine.Verdict] == [
        lib.LVS_VERDICT_FORWARD, lib.LVS_VERDICT_PASS, lib.LVS_VERDICT_DROP,
        lib.LVS_VERDICT_REPLY,
    ]
    states = engine._c_strings(lib.lvs_tcp_state_names())
    assert states[0] == "NONE" and states[1] == "ESTABLISHED" and len(states) == 11


def test_mh_table_size_prime_rule_is_the_c_one() -> None:
    assert [n for n in range(20) if lib.lvs_is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]
