"""``@scope`` / ``@scope()`` on a function prepares it explicitly (DESIGN.md §1, §3).

The functions under test live in a module file that never names ``godefer`` in its code (it gets
the API through ``importlib.import_module``), so the import hook leaves it unprepared and
``@scope`` is the only thing that prepares it. Prepared code is recognisable by behaviour: the
``CALL in defer`` statement, ``recover()`` stopping an exception that leaves a function and
``result()``/``set_result()`` only work there.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

import godefer
import godefer._core
import godefer._rt
from godefer import NotPreparedError, defer, scope

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(godefer.__file__)))

MODULE_SRC = '''\
import asyncio
import importlib

_g = importlib.import_module("god" + "efer")
defer = _g.defer
scope = _g.scope
recover = _g.recover
result = _g.result
set_result = _g.set_result

LOG = []


def plain(x):
    LOG.append(("plain deferred", x)) in defer
    LOG.append("plain body")
    return x


@scope
def decorated_bare(x):
    LOG.append(("bare deferred", x)) in defer
    return x + 1


@scope()
def decorated_called(x):
    LOG.append(("called deferred", x)) in defer
    return x + 2


@scope
def safe_div(a, b):
    @defer
    def _():
        LOG.append(recover())

    return a / b


def unprepared_safe_div(a, b):
    @defer
    def _():
        LOG.append(recover())

    return a / b


@scope
def times_seven():
    defer(lambda: set_result(result() * 7))
    return 6


@scope
def via_module_attribute():
    LOG.append("module attribute deferred") in _g.defer
    LOG.append("module attribute body")


def make_counter():
    count = 0

    @scope
    def bump():
        nonlocal count
        LOG.append(("bump deferred", count)) in defer
        count += 1
        return count

    def read():
        return count

    def later_bump():
        nonlocal count
        LOG.append(("later deferred", count)) in defer
        count += 10
        return count

    return bump, read, later_bump


class Base:
    def hello(self):
        return "base"


class Child(Base):
    @scope
    def hello(self):
        LOG.append("Child.hello deferred") in defer
        return "child/" + super().hello()

    def later_hello(self):
        LOG.append("Child.later_hello deferred") in defer
        return "later/" + super().hello()


def gen(log):
    defer(log.append, "gen deferred")
    log.append("gen start")
    yield 1
    log.append("gen resumed")
    yield 2
    log.append("gen end")


def self_preparing(log):
    global self_preparing
    defer(log.append, "deferred before decoration")
    self_preparing = scope(self_preparing)
    defer(log.append, "deferred after decoration")
    log.append("body")
    return "done"


@scope
async def coro(fail):
    @defer
    def _():
        if (e := recover()) is not None:
            LOG.append(type(e).__name__)
            set_result("recovered")

    await asyncio.sleep(0)
    if fail:
        raise ValueError
    return "normal"


@scope
def generator_prepared(log):
    log.append("generator deferred") in defer
    yield 1
    return "generator value"


def nothing_to_prepare(x):
    return x * 3


def with_metadata(a, b: int = 2, /, *rest, c: str = "c", **kw) -> tuple:
    """Metadata docstring."""
    LOG.append("metadata deferred") in defer
    return (a, b, rest, c, kw)


with_metadata.custom_attribute = "kept"
'''


@pytest.fixture
def mod(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"gd_scope_deco_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(MODULE_SRC)
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def test_the_import_hook_left_the_module_unprepared(mod):
    assert not godefer._rt.is_prepared(mod.plain.__code__)
    assert "__godefer_rt__" not in vars(mod) or mod.__godefer_rt__ is godefer._rt
    with pytest.raises(NotPreparedError, match="already happened"):
        mod.plain(1)
    assert mod.LOG == [("plain deferred", 1)]  # the call on the left ran; nothing scheduled
    with pytest.raises(NotPreparedError):
        mod.unprepared_safe_div(1, 0)  # recover() cannot stop it unprepared


def test_scope_applied_afterwards_prepares(mod):
    prepared = scope(mod.plain)
    assert prepared is not mod.plain
    assert godefer._rt.is_prepared(prepared.__code__)
    assert prepared(5) == 5
    assert mod.LOG == ["plain body", ("plain deferred", 5)]


def test_scope_call_applied_afterwards_prepares(mod):
    prepared = scope()(mod.plain)
    assert godefer._rt.is_prepared(prepared.__code__)
    assert prepared(6) == 6
    assert mod.LOG == ["plain body", ("plain deferred", 6)]


def test_bare_and_called_decorators_prepare(mod):
    assert godefer._rt.is_prepared(mod.decorated_bare.__code__)
    assert godefer._rt.is_prepared(mod.decorated_called.__code__)
    assert mod.decorated_bare(1) == 2
    assert mod.decorated_called(1) == 3
    assert mod.LOG == [("bare deferred", 1), ("called deferred", 1)]


def test_qualified_module_alias_is_recognised(mod):
    assert godefer._rt.is_prepared(mod.via_module_attribute.__code__)
    mod.via_module_attribute()
    assert mod.LOG == ["module attribute body", "module attribute deferred"]


def test_recover_and_result_work_after_scope(mod):
    assert mod.safe_div(1, 0) is None
    assert isinstance(mod.LOG[0], ZeroDivisionError)
    assert mod.safe_div(6, 3) == 2.0
    assert mod.times_seven() == 42
    fixed = scope(mod.unprepared_safe_div)
    assert fixed(1, 0) is None
    assert isinstance(mod.LOG[-1], ZeroDivisionError)


def test_scope_on_a_coroutine_and_a_generator(mod):
    assert godefer._rt.is_prepared(mod.coro.__code__)
    assert inspect.iscoroutinefunction(mod.coro)

    async def main():
        return await mod.coro(True), await mod.coro(False)

    assert asyncio.run(main()) == ("recovered", "normal")
    assert mod.LOG == ["ValueError"]

    log: list[str] = []
    assert inspect.isgeneratorfunction(mod.generator_prepared)
    g = mod.generator_prepared(log)
    assert next(g) == 1
    assert log == []
    with pytest.raises(StopIteration) as info:
        next(g)
    assert info.value.value == "generator value"
    assert log == ["generator deferred"]


def test_metadata_is_kept(mod):
    original = mod.with_metadata
    prepared = scope(original)
    assert godefer._rt.is_prepared(prepared.__code__)
    assert prepared.__wrapped__ is original
    for attr in (
        "__name__",
        "__qualname__",
        "__module__",
        "__doc__",
        "__defaults__",
        "__kwdefaults__",
        "__annotations__",
    ):
        assert getattr(prepared, attr) == getattr(original, attr), attr
    assert prepared.__globals__ is original.__globals__
    assert prepared.custom_attribute == "kept"
    assert inspect.signature(prepared) == inspect.signature(original)
    assert prepared.__code__.co_firstlineno == original.__code__.co_firstlineno
    assert prepared.__code__.co_filename == original.__code__.co_filename
    assert inspect.getsource(prepared) == inspect.getsource(original)
    assert prepared(1, 5, 6, c="x", z=0) == (1, 5, (6,), "x", {"z": 0})
    assert mod.LOG == ["metadata deferred"]


def test_scope_is_idempotent_and_leaves_plain_functions_alone(mod):
    prepared = scope(mod.plain)
    assert scope(prepared) is prepared
    assert scope()(prepared) is prepared
    assert scope(mod.decorated_bare) is mod.decorated_bare
    assert scope(mod.nothing_to_prepare) is mod.nothing_to_prepare
    assert mod.nothing_to_prepare(2) == 6


def test_closures_keep_sharing_cells(mod):
    bump, read, later_bump = mod.make_counter()
    assert godefer._rt.is_prepared(bump.__code__)
    index = bump.__code__.co_freevars.index("count")
    cell = bump.__closure__[index]
    assert read.__closure__[read.__code__.co_freevars.index("count")] is cell
    assert bump() == 1
    assert read() == 1
    with pytest.raises(NotPreparedError):
        later_bump()  # unprepared: the statement form raised before `count += 10`
    assert read() == 1
    prepared_later = scope(later_bump)
    assert prepared_later.__closure__[prepared_later.__code__.co_freevars.index("count")] is cell
    assert prepared_later() == 11
    assert read() == 11
    assert bump() == 12
    assert mod.LOG == [
        ("bump deferred", 0),
        ("later deferred", 1),  # from the unprepared call, evaluated before it raised
        ("later deferred", 1),
        ("bump deferred", 11),
    ]


def test_zero_argument_super_after_scope(mod):
    child = mod.Child()
    assert child.hello() == "child/base"
    assert godefer._rt.is_prepared(mod.Child.hello.__code__)
    later = scope(mod.Child.later_hello)
    assert later(child) == "later/base"
    assert mod.LOG == ["Child.hello deferred", "Child.later_hello deferred"]


def test_function_without_source_is_returned_unchanged_and_works():
    ns: dict = {}
    exec(
        compile(
            textwrap.dedent(
                """
                from godefer import defer

                def no_source(log):
                    defer(log.append, "deferred")
                    log.append("body")
                    return "value"
                """
            ),
            "<string>",
            "exec",
        ),
        ns,
    )
    fn = ns["no_source"]
    assert scope(fn) is fn
    assert scope()(fn) is fn
    assert not godefer._rt.is_prepared(fn.__code__)
    log: list[str] = []
    assert fn(log) == "value"
    assert log == ["body", "deferred"]


def test_lambda_and_non_function_callables_are_returned_unchanged():
    fn = lambda: None
    assert scope(fn) is fn
    assert scope(len) is len


def test_started_generator_finishes_on_the_runtime_path(mod):
    log: list[str] = []
    running = mod.gen(log)
    assert next(running) == 1
    prepared_gen = scope(mod.gen)
    assert godefer._rt.is_prepared(prepared_gen.__code__)
    assert not godefer._rt.is_prepared(running.gi_code)
    assert next(running) == 2
    with pytest.raises(StopIteration):
        next(running)
    assert log == ["gen start", "gen resumed", "gen end", "gen deferred"]

    log.clear()
    fresh = prepared_gen(log)
    assert list(fresh) == [1, 2]
    assert log == ["gen start", "gen resumed", "gen end", "gen deferred"]


def test_started_generator_closed_after_scope(mod):
    log: list[str] = []
    running = mod.gen(log)
    next(running)
    scope(mod.gen)
    running.close()
    assert log == ["gen start", "gen deferred"]


def test_function_preparing_itself_while_running(mod):
    log: list[str] = []
    original = mod.self_preparing
    assert mod.self_preparing(log) == "done"
    # The running frame finished on the runtime path: both its deferred calls ran, LIFO.
    assert log == ["body", "deferred after decoration", "deferred before decoration"]
    assert mod.self_preparing is not original
    assert godefer._rt.is_prepared(mod.self_preparing.__code__)
    log.clear()
    # The prepared function prepares itself again: scope() returns it unchanged.
    assert mod.self_preparing(log) == "done"
    assert log == ["body", "deferred after decoration", "deferred before decoration"]


def already_prepared(log: list[str]) -> str:
    defer(log.append, "deferred")
    return "value"


def test_function_prepared_by_the_plugin_is_returned_unchanged():
    assert godefer._rt.is_prepared(already_prepared.__code__)
    assert scope(already_prepared) is already_prepared
    log: list[str] = []
    assert scope()(already_prepared)(log) == "value"
    assert log == ["deferred"]


@pytest.mark.parametrize(
    "body",
    [
        "def wrap(fn):\n    return scope(fn)\n",
        "@scope\ndef decorated():\n    return 1\n",
        "def block():\n    with scope():\n        pass\n    return 'ok'\n",
    ],
    ids=["scope-call", "decorator", "with-block"],
)
def test_module_that_uses_scope_but_schedules_nothing_imports_and_runs(tmp_path, monkeypatch, body):
    # Preparation rewrites `scope` references; the module must still find what they refer to.
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"gd_scope_only_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text("from godefer import scope\n\n\n" + body)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(name)
        if hasattr(module, "wrap"):
            assert module.wrap(len) is len
        if hasattr(module, "decorated"):
            assert module.decorated() == 1
        if hasattr(module, "block"):
            assert module.block() == "ok"
    finally:
        sys.modules.pop(name, None)


def test_godefer_prepare_0_makes_scope_return_the_function(tmp_path):
    (tmp_path / "gd_scope_off.py").write_text(MODULE_SRC)
    child = textwrap.dedent(
        """
        import godefer, godefer._rt
        import gd_scope_off as m

        print(godefer._rt.is_prepared(m.decorated_bare.__code__))
        print(godefer.scope(m.plain) is m.plain, godefer.scope()(m.plain) is m.plain)
        try:
            m.decorated_bare(1)
        except godefer.NotPreparedError:
            print("NotPreparedError", m.LOG)
        """
    )
    env = dict(os.environ, GODEFER_PREPARE="0")
    core_file = os.path.abspath(getattr(godefer._core, "__file__", "") or "")
    if core_file.startswith(SRC_ROOT + os.sep):  # built in place: make the tree importable
        env["PYTHONPATH"] = SRC_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", child],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "False",
        "True True",
        "NotPreparedError [('bare deferred', 1)]",
    ]
