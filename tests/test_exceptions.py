"""Exceptions follow nested try/finally (DESIGN.md §2 "Exceptions — the oracle").

Each scheduled call behaves as if it had opened a ``try:`` at the point of scheduling whose
``finally:`` makes the call.  Runtime path; key cases run again from an ``exec`` string.
"""

from __future__ import annotations

import sys
import traceback

import pytest

from godefer import defer, errdefer, okdefer
from runtime_path import raiser, run_src


def here() -> int:
    """Line number of the caller's current line."""
    return sys._getframe(1).f_lineno


# --- every call runs; the last exception raised wins -----------------------------------


def test_every_call_runs_even_if_earlier_ones_raise():
    log = []
    ea = ValueError("a")
    eb = KeyError("b")

    def f():
        defer(log.append, "first scheduled")
        defer(raiser, ea)
        defer(log.append, "middle")
        defer(raiser, eb)
        defer(log.append, "last scheduled")
        return "unused"

    with pytest.raises(ValueError) as info:
        f()
    assert info.value is ea
    assert log == ["last scheduled", "middle", "first scheduled"]
    # nested try/finally: the second exception keeps the first as its context (not ExitStack's
    # behaviour, CPython issue #102201)
    assert ea.__context__ is eb
    assert eb.__context__ is None
    assert ea.__cause__ is None
    assert ea.__suppress_context__ is False


def test_deferred_exception_replaces_the_one_in_flight():
    log = []
    body = ValueError("body")
    dexc = RuntimeError("deferred")

    def f():
        defer(log.append, "runs after the raise")
        defer(raiser, dexc)
        defer(log.append, "runs before the raise")
        raise body

    with pytest.raises(RuntimeError) as info:
        f()
    assert info.value is dexc
    assert dexc.__context__ is body
    assert dexc.__cause__ is None
    assert body.__context__ is None
    assert log == ["runs before the raise", "runs after the raise"]


def test_the_exception_that_leaves_is_the_last_raised():
    body = ValueError("body")
    d1 = KeyError("d1")
    d2 = IndexError("d2")

    def f():
        defer(raiser, d2)
        defer(raiser, d1)
        raise body

    with pytest.raises(IndexError) as info:
        f()
    assert info.value is d2
    assert d2.__context__ is d1
    assert d1.__context__ is body
    assert body.__context__ is None


def test_explicit_cause_in_body_is_kept():
    cause = OSError("cause")
    body = ValueError("body")
    dexc = KeyError("d")

    def f():
        defer(raiser, dexc)
        raise body from cause

    with pytest.raises(KeyError):
        f()
    assert dexc.__context__ is body
    assert body.__cause__ is cause
    assert body.__suppress_context__ is True


def test_deferred_exception_raised_while_caller_handles_one():
    handled = KeyError("handled")
    dexc = ValueError("d")

    def f():
        defer(raiser, dexc)
        return 1

    try:
        raise handled
    except KeyError:
        with pytest.raises(ValueError):
            f()
    # as in a finally: block, the context is the exception being handled
    assert dexc.__context__ is handled


def test_exception_raised_and_caught_inside_a_deferred_call_is_contained():
    log = []

    def cleanup():
        try:
            raise KeyError("inside")
        except KeyError:
            log.append("caught inside")

    def f():
        defer(cleanup)
        return 5

    assert f() == 5
    assert log == ["caught inside"]


# --- return value --------------------------------------------------------------------------


def test_return_value_is_kept():
    def f():
        defer(lambda: 99)
        okdefer(lambda: 98)
        errdefer(lambda: 97)
        return "kept"

    assert f() == "kept"


def test_return_value_is_lost_when_a_deferred_call_raises():
    returned = []

    def f():
        defer(raiser, LookupError("replaces"))
        return "lost"

    try:
        returned.append(f())
    except LookupError as e:
        returned.append(("raised", str(e)))
    assert returned == [("raised", "replaces")]


def test_return_value_of_returned_mutable_is_the_same_object():
    box = []

    def f():
        defer(box.append, "mutated by defer")
        return box

    got = f()
    assert got is box
    assert got == ["mutated by defer"]


# --- errdefer / okdefer decide when reached -------------------------------------------------


def test_errdefer_runs_only_on_exception_okdefer_only_without():
    log = []

    def f(fail):
        errdefer(log.append, "err")
        okdefer(log.append, "ok")
        if fail:
            raise ValueError

    f(False)
    assert log == ["ok"]
    log.clear()
    with pytest.raises(ValueError):
        f(True)
    assert log == ["err"]


def test_errdefer_reached_after_a_deferred_call_raised_runs():
    log = []
    dexc = KeyError("from defer")

    def f():
        errdefer(lambda: log.append(("err sees", sys.exception())))
        defer(raiser, dexc)
        okdefer(log.append, "ok before the raise")
        return 1

    with pytest.raises(KeyError):
        f()
    assert log == ["ok before the raise", ("err sees", dexc)]


def test_okdefer_reached_after_a_deferred_call_raised_is_skipped():
    log = []

    def f():
        okdefer(log.append, "ok")
        defer(log.append, "plain")
        defer(raiser, KeyError("k"))
        return 1

    with pytest.raises(KeyError):
        f()
    assert log == ["plain"]


def test_exception_caught_inside_the_function_triggers_nothing():
    log = []

    def f():
        errdefer(log.append, "err")
        okdefer(log.append, "ok")
        try:
            raise ValueError("caught")
        except ValueError:
            log.append("handler")
        try:
            {}["missing"]
        except KeyError:
            pass
        return "fine"

    assert f() == "fine"
    assert log == ["handler", "ok"]


def test_exception_caught_in_a_callee_triggers_nothing():
    log = []

    def callee():
        try:
            raise ValueError
        except ValueError:
            return "handled"

    def f():
        errdefer(log.append, "err")
        okdefer(log.append, "ok")
        return callee()

    assert f() == "handled"
    assert log == ["ok"]


# --- sys.exception() inside a deferred call ---------------------------------------------


def test_sys_exception_is_none_on_normal_exit():
    seen = []

    def f():
        defer(lambda: seen.append(sys.exception()))
        defer(lambda: seen.append(sys.exc_info()))

    f()
    assert seen == [(None, None, None), None]


def test_sys_exception_is_the_exception_in_flight():
    seen = []
    body = ValueError("body")

    def f():
        defer(lambda: seen.append(sys.exception()))
        errdefer(lambda: seen.append(sys.exc_info()[1]))
        raise body

    with pytest.raises(ValueError):
        f()
    assert len(seen) == 2
    assert seen[0] is body
    assert seen[1] is body


def test_sys_exception_is_the_replacing_exception():
    seen = []
    body = ValueError("body")
    dexc = KeyError("d")

    def f(fail):
        defer(lambda: seen.append(sys.exception()))
        defer(raiser, dexc)
        if fail:
            raise body

    with pytest.raises(KeyError):
        f(False)
    with pytest.raises(KeyError):
        f(True)
    assert seen[0] is dexc
    assert seen[1] is dexc


def test_sys_exception_on_normal_exit_is_the_callers_handled_exception():
    seen = []
    handled = KeyError("handled")

    def f():
        defer(lambda: seen.append(sys.exception()))
        return 1

    try:
        raise handled
    except KeyError:
        f()
    f()
    assert seen[0] is handled
    assert seen[1] is None


def test_sys_exception_after_the_scope_is_restored():
    after = []

    def f():
        defer(lambda: None)
        raise ValueError

    try:
        f()
    except ValueError:
        after.append(type(sys.exception()))
    after.append(sys.exception())
    assert after == [ValueError, None]


# --- tracebacks and BaseException -------------------------------------------------------


def test_traceback_of_the_exception_still_points_at_the_raise():
    def f():
        defer(lambda: None)
        errdefer(lambda: None)
        line = here() + 1
        raise ValueError(line)

    with pytest.raises(ValueError) as info:
        f()
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.name == "f"
    assert last.lineno == info.value.args[0]


def test_deferred_call_sees_the_traceback_of_the_exception_in_flight():
    seen = []
    lines = []

    def deeper():
        lines.append(here() + 1)
        raise ValueError("deep")

    def f():
        defer(lambda: seen.append(traceback.extract_tb(sys.exception().__traceback__)))
        errdefer(lambda: seen.append(sys.exc_info()[2] is sys.exception().__traceback__))
        deeper()

    with pytest.raises(ValueError):
        f()
    assert seen[0] is True
    # as in a finally: block of f, the traceback starts at f and ends at the raise
    frames = seen[1]
    assert [fr.name for fr in frames] == ["f", "deeper"]
    assert frames[-1].lineno == lines[0]


def test_exception_swallowed_by_return_in_finally_is_not_an_exit_by_exception():
    log = []

    def f():
        errdefer(log.append, "err")
        okdefer(lambda: log.append(("ok", sys.exception())))
        try:
            raise ValueError
        finally:
            return "swallowed"  # noqa: B012

    assert f() == "swallowed"
    assert log == [("ok", None)]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_run_deferred_calls_and_pass(exc_type):
    log = []

    def f():
        defer(log.append, "defer")
        errdefer(lambda: log.append(("err", type(sys.exception()))))
        okdefer(log.append, "ok")
        raise exc_type

    with pytest.raises(exc_type):
        f()
    assert log == [("err", exc_type), "defer"]


def test_deferred_call_raising_base_exception_replaces():
    body = ValueError("body")

    def f():
        defer(raiser, SystemExit(3))
        raise body

    with pytest.raises(SystemExit) as info:
        f()
    assert info.value.code == 3
    assert info.value.__context__ is body


# --- the same from exec source -------------------------------------------------------------


def test_exceptions_in_exec_source():
    ns = run_src(
        """
        import sys
        from godefer import defer, errdefer, okdefer
        log = []
        ea = ValueError("a")
        eb = KeyError("b")
        body = IndexError("body")

        def raiser(e):
            raise e

        def two_raise():
            defer(log.append, "first")
            defer(raiser, ea)
            defer(raiser, eb)
            return 1

        def replace():
            errdefer(lambda: log.append(("err", sys.exception())))
            okdefer(log.append, "never")
            defer(raiser, eb)
            raise body

        try:
            two_raise()
        except ValueError as e:
            out1 = e
        try:
            replace()
        except KeyError as e:
            out2 = e
        """
    )
    ea, eb, body = ns["ea"], ns["eb"], ns["body"]
    assert ns["out1"] is ea
    assert ns["out2"] is eb
    assert ea.__context__ is eb
    # eb was raised twice; its context is the latest
    assert eb.__context__ is body
    assert ns["log"] == ["first", ("err", eb)]
