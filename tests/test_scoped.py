"""``scoped(obj)``: enter a context manager now, exit it when the scope exits (DESIGN.md §1).

Runtime path.  In a ``with scope():`` block a true ``__exit__`` result suppresses the exception
exactly as ``with`` would; in a function scope the runtime path cannot stop an exception and
raises ``NotPreparedError`` instead (chained to the exception in flight).
"""

from __future__ import annotations

import contextlib
import sys
import traceback

import pytest

from godefer import NotPreparedError, defer, errdefer, okdefer, scope, scoped
from runtime_path import here, raiser, run_src


class CM:
    """A context manager recording what it is called with."""

    def __init__(self, log, name="cm", suppress=False, value=None):
        self.log = log
        self.name = name
        self.suppress = suppress
        self.value = value
        self.exit_args = None
        self.tb_was_current = None

    def __enter__(self):
        self.log.append(("enter", self.name))
        return self if self.value is None else self.value

    def __exit__(self, typ, val, tb):
        self.exit_args = (typ, val, tb)
        self.tb_was_current = val is None or tb is val.__traceback__
        self.log.append(("exit", self.name, typ))
        return self.suppress


# --- context managers ------------------------------------------------------------------


def test_enters_now_returns_enter_value_exits_at_scope_end():
    log = []
    cm = CM(log, value="entered value")

    def f():
        got = scoped(cm)
        log.append(("body", got))
        return got

    assert f() == "entered value"
    assert log == [("enter", "cm"), ("body", "entered value"), ("exit", "cm", None)]
    assert cm.exit_args == (None, None, None)


def test_exit_receives_the_exception_in_flight():
    log = []
    cm = CM(log)
    body = ValueError("body")

    def f():
        scoped(cm)
        raise body

    with pytest.raises(ValueError) as info:
        f()
    assert info.value is body
    typ, val, tb = cm.exit_args
    assert typ is ValueError
    assert val is body
    assert tb is not None
    assert cm.tb_was_current is True
    assert log == [("enter", "cm"), ("exit", "cm", ValueError)]


def test_exit_receives_an_exception_raised_by_a_later_deferred_call():
    log = []
    cm = CM(log)
    dexc = KeyError("from defer")

    def f():
        scoped(cm)
        defer(raiser, dexc)
        return 1

    with pytest.raises(KeyError):
        f()
    assert cm.exit_args[:2] == (KeyError, dexc)
    assert cm.tb_was_current is True


def test_exit_raising_replaces_the_exception():
    body = ValueError("body")
    exc_from_exit = RuntimeError("exit raised")

    class Bad:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            raise exc_from_exit

    def f(fail):
        scoped(Bad())
        if fail:
            raise body
        return "unused"

    with pytest.raises(RuntimeError) as info:
        f(True)
    assert info.value is exc_from_exit
    assert exc_from_exit.__context__ is body
    with pytest.raises(RuntimeError):
        f(False)


def test_true_exit_with_no_exception_in_flight_changes_nothing():
    log = []

    def f():
        scoped(CM(log, suppress=True))
        return "r"

    assert f() == "r"
    assert log == [("enter", "cm"), ("exit", "cm", None)]


def test_true_exit_in_a_function_scope_raises_not_prepared():
    log = []
    body = ValueError("body")
    ns = run_src(
        """
        def f():
            defer(lambda: log.append(("outer sees", type(sys.exception()))))
            scoped(CM(log, suppress=True))
            raise body
        """,
        defer=defer,
        scoped=scoped,
        CM=CM,
        sys=sys,
        log=log,
        body=body,
    )
    with pytest.raises(NotPreparedError) as info:
        ns["f"]()
    assert info.value.__context__ is body
    assert isinstance(info.value, RuntimeError)
    assert log == [("enter", "cm"), ("exit", "cm", ValueError), ("outer sees", NotPreparedError)]


def test_true_exit_in_a_prepared_function_suppresses_like_with():
    log = []
    body = ValueError("body")

    def f():
        defer(lambda: log.append(("outer sees", sys.exception())))
        scoped(CM(log, suppress=True))
        raise body

    assert f() is None
    assert log == [("enter", "cm"), ("exit", "cm", ValueError), ("outer sees", None)]


def test_true_exit_in_a_block_scope_suppresses_like_with():
    log = []
    body = ValueError("body")

    def f():
        with scope():
            defer(lambda: log.append(("earlier call sees", sys.exception())))
            errdefer(log.append, "err (skipped)")
            okdefer(log.append, "ok (runs)")
            cm = scoped(CM(log, suppress=True))
            raise body
        log.append("after block")
        return cm.exit_args[1]

    assert f() is body
    assert log == [
        ("enter", "cm"),
        ("exit", "cm", ValueError),
        "ok (runs)",
        ("earlier call sees", None),
        "after block",
    ]


def test_contextlib_suppress_in_a_block_scope():
    log = []

    def f():
        for i in range(3):
            with scope():
                scoped(contextlib.suppress(KeyError))
                defer(log.append, ("deferred", i))
                if i == 1:
                    raise KeyError(i)
                log.append(("body", i))
        return "done"

    assert f() == "done"
    assert log == [("body", 0), ("deferred", 0), ("deferred", 1), ("body", 2), ("deferred", 2)]


def test_false_exit_in_a_block_scope_lets_the_exception_pass():
    log = []

    def f():
        with scope():
            scoped(CM(log, suppress=False))
            raise KeyError("k")
        log.append("not reached")

    with pytest.raises(KeyError):
        f()
    assert log == [("enter", "cm"), ("exit", "cm", KeyError)]


def test_contextmanager_generator_sees_the_exception():
    log = []

    @contextlib.contextmanager
    def managed(name):
        log.append(("setup", name))
        try:
            yield name.upper()
        except ValueError as e:
            log.append(("cm caught", str(e)))
            raise
        finally:
            log.append(("teardown", name))

    def f(fail):
        got = scoped(managed("res"))
        log.append(("got", got))
        if fail:
            raise ValueError("boom")

    f(False)
    with pytest.raises(ValueError, match="boom"):
        f(True)
    assert log == [
        ("setup", "res"),
        ("got", "RES"),
        ("teardown", "res"),
        ("setup", "res"),
        ("got", "RES"),
        ("cm caught", "boom"),
        ("teardown", "res"),
    ]


def test_real_files(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello")
    seen = []

    def f():
        fh = scoped(open(path))  # noqa: SIM115
        seen.append(fh)
        return fh.read()

    assert f() == "hello"
    assert seen[0].closed


def test_nullcontext_returns_its_value():
    def f():
        return scoped(contextlib.nullcontext(41)) + 1

    assert f() == 42


def test_enter_raising_schedules_nothing():
    log = []
    enter_exc = OSError("enter failed")

    class FailingEnter:
        def __enter__(self):
            raise enter_exc

        def __exit__(self, *a):
            log.append("exit (must not run)")

    lines = []

    def f():
        defer(log.append, "earlier call")
        lines.append(here() + 1)
        scoped(FailingEnter())

    with pytest.raises(OSError) as info:
        f()
    assert info.value is enter_exc
    assert log == ["earlier call"]
    frames = [fr for fr in traceback.extract_tb(info.value.__traceback__) if fr.name == "f"]
    assert [fr.lineno for fr in frames] == lines


def test_context_manager_with_close_uses_the_context_protocol():
    log = []

    class Both:
        def __enter__(self):
            log.append("enter")
            return "entered"

        def __exit__(self, *a):
            log.append("exit")

        def close(self):
            log.append("close")

    def f():
        return scoped(Both())

    assert f() == "entered"
    assert log == ["enter", "exit"]


# --- objects with close() only --------------------------------------------------------


def test_close_only_object_is_closed_and_returned():
    log = []

    class Closeable:
        def close(self):
            log.append("close")

    obj = Closeable()

    def f(fail):
        got = scoped(obj)
        log.append(("same object", got is obj))
        if fail:
            raise KeyError

    f(False)
    with pytest.raises(KeyError):
        f(True)
    assert log == [("same object", True), "close", ("same object", True), "close"]


def test_close_is_looked_up_when_scheduled():
    log = []

    class Closeable:
        def close(self):
            log.append("original close")

    def f():
        obj = Closeable()
        scoped(obj)
        obj.close = lambda: log.append("replaced close")

    f()
    assert log == ["original close"]


# --- neither -------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [42, "text", object(), None], ids=["int", "str", "object", "None"])
def test_neither_context_manager_nor_closeable_is_a_type_error(obj):
    log = []

    def f():
        defer(log.append, "earlier call")
        scoped(obj)

    with pytest.raises(TypeError) as info:
        f()
    msg = str(info.value)
    assert type(obj).__name__ in msg
    assert "close" in msg or "__enter__" in msg or "context manager" in msg
    assert log == ["earlier call"]


# --- ordering, blocks, generators -----------------------------------------------------------


def test_scoped_in_a_block_exits_at_block_end():
    log = []

    def f():
        for i in range(2):
            with scope():
                scoped(CM(log, name=i))
                log.append(("body", i))
        log.append("after")

    f()
    assert log == [
        ("enter", 0),
        ("body", 0),
        ("exit", 0, None),
        ("enter", 1),
        ("body", 1),
        ("exit", 1, None),
        "after",
    ]


def test_several_scoped_exit_in_reverse_order():
    log = []

    def f():
        a = scoped(CM(log, "a"))
        b = scoped(CM(log, "b"))
        return a.name + b.name

    assert f() == "ab"
    assert log == [("enter", "a"), ("enter", "b"), ("exit", "b", None), ("exit", "a", None)]


def test_scoped_in_a_generator_exits_at_close():
    log = []

    def gen():
        scoped(CM(log))
        yield 1
        yield 2

    g = gen()
    next(g)
    assert log == [("enter", "cm")]
    g.close()
    assert log == [("enter", "cm"), ("exit", "cm", GeneratorExit)]


def test_scoped_in_exec_source():
    ns = run_src(
        """
        import contextlib
        from godefer import NotPreparedError, scope, scoped
        log = []

        class CM:
            def __init__(self, name, suppress=False):
                self.name, self.suppress = name, suppress

            def __enter__(self):
                log.append(("enter", self.name))
                return self.name

            def __exit__(self, typ, val, tb):
                log.append(("exit", self.name, typ))
                return self.suppress

        def f():
            got = scoped(CM("a"))
            with scope():
                scoped(CM("b", suppress=True))
                raise KeyError
            log.append(("after block", got))

        def g():
            scoped(CM("c", suppress=True))
            raise KeyError("g")

        f()
        try:
            g()
        except NotPreparedError as e:
            g_error = e
        """
    )
    assert ns["log"] == [
        ("enter", "a"),
        ("enter", "b"),
        ("exit", "b", KeyError),
        ("after block", "a"),
        ("exit", "a", None),
        ("enter", "c"),
        ("exit", "c", KeyError),
    ]
    assert isinstance(ns["g_error"].__context__, KeyError)
