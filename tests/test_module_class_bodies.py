"""Module bodies and class bodies as scopes (DESIGN.md §2 "Scope").

Module files are written to a temporary directory and imported with importlib; ``__main__`` runs
in a subprocess (its deferred calls run when the module's code finishes, before ``atexit``
handlers); class bodies are defined inside test functions and from ``exec`` strings.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import types
import uuid

import pytest

import godefer
import godefer._core
from godefer import defer, errdefer, okdefer
from runtime_path import run_src

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(godefer.__file__)))


def subprocess_env() -> dict:
    """The environment for a child interpreter that must import the same godefer."""
    env = dict(os.environ)
    core_file = os.path.abspath(getattr(godefer._core, "__file__", "") or "")
    if core_file.startswith(SRC_ROOT + os.sep):  # built in place: make the tree importable
        env["PYTHONPATH"] = SRC_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- module files imported with importlib ----------------------------------------------------


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """Write a module that can reach an ``events`` list as ``ev.log``; return (import, log)."""
    ev_name = f"gd_events_{uuid.uuid4().hex}"
    ev = types.ModuleType(ev_name)
    ev.log = []
    monkeypatch.setitem(sys.modules, ev_name, ev)
    monkeypatch.syspath_prepend(str(tmp_path))
    created = []

    def make(body: str):
        name = f"gd_mod_{uuid.uuid4().hex}"
        src = f"import {ev_name} as ev\n" + textwrap.dedent(body)
        (tmp_path / f"{name}.py").write_text(src)
        importlib.invalidate_caches()
        created.append(name)

        def do_import():
            return importlib.import_module(name)

        do_import.module_name = name
        return do_import

    yield make, ev.log
    for name in created:
        sys.modules.pop(name, None)


def test_module_body_runs_when_the_module_code_finishes(make_module):
    make, log = make_module
    do_import = make(
        """
        from godefer import defer, errdefer, okdefer
        defer(ev.log.append, "deferred")
        okdefer(ev.log.append, "ok")
        errdefer(ev.log.append, "err")
        ev.log.append("body end")
        """
    )
    mod = do_import()
    assert log == ["body end", "ok", "deferred"]
    log.append("after import")
    importlib.reload(mod)
    assert log == ["body end", "ok", "deferred", "after import", "body end", "ok", "deferred"]


def test_module_body_runs_before_import_returns_and_sees_globals(make_module):
    make, log = make_module
    do_import = make(
        """
        from godefer import defer

        def report():
            ev.log.append(("deferred sees", VALUE, sorted(k for k in globals() if k.isupper())))

        defer(report)
        VALUE = 1
        LATER = 2
        """
    )
    mod = do_import()
    assert log == [("deferred sees", 1, ["LATER", "VALUE"])]
    assert mod.VALUE == 1


def test_module_body_runs_when_the_module_raises(make_module):
    make, log = make_module
    do_import = make(
        """
        import sys
        from godefer import defer, errdefer, okdefer
        defer(ev.log.append, "deferred")
        okdefer(ev.log.append, "ok")
        errdefer(lambda: ev.log.append(("err", repr(sys.exception()))))
        raise ValueError("module failed")
        """
    )
    with pytest.raises(ValueError, match="module failed"):
        do_import()
    assert log == [("err", "ValueError('module failed')"), "deferred"]


def test_module_functions_and_comprehensions(make_module):
    make, log = make_module
    do_import = make(
        """
        from godefer import defer, scope

        def f():
            defer(ev.log.append, "f deferred")
            ev.log.append("f body")

        defer(ev.log.append, "module deferred")
        [defer(ev.log.append, ("comp", i)) for i in range(2)]
        f()
        with scope():
            defer(ev.log.append, "module block")
        ev.log.append("module end")
        """
    )
    mod = do_import()
    assert log == [
        "f body",
        "f deferred",
        "module block",
        "module end",
        ("comp", 1),
        ("comp", 0),
        "module deferred",
    ]
    log.clear()
    mod.f()
    assert log == ["f body", "f deferred"]


def test_module_deferred_raise_fails_the_import(make_module):
    make, log = make_module
    do_import = make(
        """
        from godefer import defer

        def fail():
            raise RuntimeError("deferred failed")

        defer(fail)
        ev.log.append("body end")
        """
    )
    with pytest.raises(RuntimeError, match="deferred failed"):
        do_import()
    assert log == ["body end"]


def test_nested_imports_each_run_their_own(make_module):
    make, log = make_module
    inner_import = make(
        """
        from godefer import defer
        defer(ev.log.append, "inner deferred")
        ev.log.append("inner body")
        """
    )
    outer_import = make(
        f"""
        from godefer import defer
        defer(ev.log.append, "outer deferred")
        import {inner_import.module_name}
        ev.log.append("outer body end")
        """
    )
    outer_import()
    assert log == ["inner body", "inner deferred", "outer body end", "outer deferred"]


# --- __main__ in a subprocess ----------------------------------------------------------------

MAIN_SRC = """\
import atexit
import sys
from godefer import defer, errdefer, okdefer

atexit.register(print, "atexit", flush=True)
defer(print, "deferred", flush=True)
okdefer(print, "ok", flush=True)
errdefer(print, "err", flush=True)
print("body", flush=True)
"""


def run_python(args, cwd):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_main_script_runs_before_atexit(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(MAIN_SRC)
    proc = run_python([str(script)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["body", "ok", "deferred", "atexit"]


def test_main_dash_c_runs_before_atexit(tmp_path):
    proc = run_python(["-c", MAIN_SRC], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["body", "ok", "deferred", "atexit"]


def test_main_script_exception_runs_before_the_traceback(tmp_path):
    script = tmp_path / "main_raises.py"
    script.write_text(
        "import sys\n"
        "from godefer import defer, errdefer\n"
        "defer(sys.stderr.write, 'deferred\\n')\n"
        "errdefer(sys.stderr.write, 'err\\n')\n"
        "raise ValueError('boom')\n"
    )
    proc = run_python([str(script)], tmp_path)
    assert proc.returncode == 1
    err = proc.stderr
    assert "ValueError: boom" in err
    assert err.index("err\n") < err.index("deferred\n") < err.index("Traceback")


def test_main_script_sys_exit_runs_the_calls(tmp_path):
    script = tmp_path / "main_exit.py"
    script.write_text(
        "import sys\n"
        "from godefer import defer, errdefer, okdefer\n"
        "defer(print, 'deferred', flush=True)\n"
        "okdefer(print, 'ok', flush=True)\n"
        "errdefer(lambda: print('err', type(sys.exception()).__name__, flush=True))\n"
        "sys.exit(3)\n"
    )
    proc = run_python([str(script)], tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines() == ["err SystemExit", "deferred"]


# --- class bodies ------------------------------------------------------------------------


def test_class_body_runs_at_its_end():
    log = []

    class C:
        defer(log.append, "class deferred")
        log.append("class body")
        x = 1

    log.append("after class")
    assert C.x == 1
    assert log == ["class body", "class deferred", "after class"]


def test_class_body_runs_before_the_class_is_created():
    log = []

    class Base:
        def __init_subclass__(cls, **kwargs):
            super().__init_subclass__(**kwargs)
            log.append(("init_subclass", cls.__name__))

    class Meta(type):
        def __new__(mcls, name, bases, ns):
            log.append(("metaclass", name))
            return super().__new__(mcls, name, bases, ns)

    class C(Base, metaclass=Meta):
        defer(log.append, "class deferred")
        log.append("class body")

    assert log == ["class body", "class deferred", ("metaclass", "C"), ("init_subclass", "C")]


def test_class_body_exception():
    log = []

    def make():
        class C:
            errdefer(log.append, "err")
            okdefer(log.append, "ok")
            defer(log.append, "deferred")
            raise KeyError("class")

        return C

    with pytest.raises(KeyError):
        make()
    assert log == ["deferred", "err"]


def test_class_body_deferred_call_can_see_the_namespace_being_built():
    log = []

    class C:
        ns = {}
        defer(lambda: log.append("not modified by defer"))
        defer(ns.update, a=1)

    assert C.ns == {"a": 1}
    assert log == ["not modified by defer"]


def test_nested_class_bodies_and_methods_are_separate_scopes():
    log = []

    class Outer:
        defer(log.append, "outer body deferred")

        class Inner:
            defer(log.append, "inner body deferred")
            log.append("inner body")

        def method(self):
            defer(log.append, "method deferred")
            log.append("method body")

        log.append("outer body end")

    assert log == ["inner body", "inner body deferred", "outer body end", "outer body deferred"]
    log.clear()
    Outer().method()
    assert log == ["method body", "method deferred"]


def test_comprehension_in_a_class_body_belongs_to_the_class_body():
    log = []

    class C:
        made = [defer(log.append, i) for i in range(3)]
        log.append("class body end")

    assert len(C.made) == 3
    assert log == ["class body end", 2, 1, 0]


def test_class_body_in_a_function_does_not_touch_the_function_scope():
    log = []

    def f():
        defer(log.append, "function deferred")

        class C:
            defer(log.append, "class deferred")

        log.append("after class")
        return C

    f()
    assert log == ["class deferred", "after class", "function deferred"]


def test_module_and_class_bodies_in_exec_source():
    ns = run_src(
        """
        from godefer import defer, errdefer
        log = []
        defer(log.append, "exec body deferred")

        class C:
            defer(log.append, "class deferred")
            [defer(log.append, ("class comp", i)) for i in range(2)]
            log.append("class body")

        try:
            class D:
                errdefer(log.append, "D err")
                raise ValueError
        except ValueError:
            log.append("D failed")

        log.append("exec body end")
        """
    )
    assert ns["log"] == [
        "class body",
        ("class comp", 1),
        ("class comp", 0),
        "class deferred",
        "D err",
        "D failed",
        "exec body end",
        "exec body deferred",
    ]
