"""``recover()``, ``result()``/``set_result()``, ``adefer``/``ascoped`` and the ``in defer`` sugar
on the runtime path (DESIGN.md §1, §3 "Runtime path").

``recover()`` works fully in ``with scope():`` blocks.  Whatever the runtime path cannot do (stop
an exception leaving a function, module or class body; read or replace a return value; await)
raises ``NotPreparedError``, a ``RuntimeError``, loudly.  Every stub case also runs from an
``exec`` string, which stays on the runtime path once preparation exists.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import traceback

import pytest

import godefer
from godefer import (
    NotPreparedError,
    adefer,
    ascoped,
    defer,
    errdefer,
    okdefer,
    recover,
    result,
    scope,
    set_result,
)
from godefer import defer as d_alias
from runtime_path import here, raiser, run_src


def frames_named(exc: BaseException, name: str) -> list[int]:
    return [fr.lineno for fr in traceback.extract_tb(exc.__traceback__) if fr.name == name]


def test_not_prepared_error_is_a_runtime_error():
    assert issubclass(NotPreparedError, RuntimeError)


# --- recover() in a block scope ----------------------------------------------------------


def test_recover_in_a_block_stops_the_exception():
    got = []
    log = []
    err = ValueError("stopped")

    def f():
        with scope():

            @defer
            def _():
                got.append(recover())

            log.append("block body")
            raise err
        log.append("after block")
        return "continued"

    assert f() == "continued"
    assert len(got) == 1
    assert got[0] is err
    assert log == ["block body", "after block"]


def test_recovered_exception_keeps_its_traceback():
    got = []
    lines = []

    def f():
        with scope():
            defer(lambda: got.append(recover()))
            lines.append(here() + 1)
            raise KeyError("k")

    f()
    frames = traceback.extract_tb(got[0].__traceback__)
    assert (frames[-1].name, frames[-1].lineno) == ("f", lines[0])


def test_after_recovery_earlier_scheduled_calls_see_no_exception():
    log = []
    err = KeyError("k")

    def f():
        defer(lambda: log.append(("function sees", sys.exception())))
        errdefer(log.append, "function errdefer (skipped)")
        with scope():
            defer(lambda: log.append(("block sees", sys.exception())))
            errdefer(log.append, "block errdefer (skipped)")
            okdefer(log.append, "block okdefer (runs)")
            defer(lambda: log.append(("recovered", recover())))
            raise err
        return "r"

    assert f() == "r"
    assert log == [
        ("recovered", err),
        "block okdefer (runs)",
        ("block sees", None),
        ("function sees", None),
    ]


def test_after_a_recovered_block_the_body_sees_no_exception():
    seen = []

    def f():
        with scope():
            defer(lambda: recover())
            raise KeyError("k")
        seen.append(sys.exception())
        return "r"

    assert f() == "r"
    try:
        raise IndexError("handled by the caller")
    except IndexError as handled:
        assert f() == "r"
        assert sys.exception() is handled
    assert seen[0] is None
    assert type(seen[1]) is IndexError


def test_recover_with_types():
    got = []

    def f(exc, *types):
        with scope():
            defer(lambda: got.append(recover(*types)))
            raise exc
        return "recovered"

    ke = KeyError("k")
    assert f(ke, KeyError) == "recovered"
    assert got.pop() is ke
    ve = ValueError("v")
    with pytest.raises(ValueError) as info:
        f(ve, KeyError)
    assert info.value is ve
    assert got.pop() is None
    ie = IndexError("i")
    assert f(ie, KeyError, LookupError) == "recovered"
    assert got.pop() is ie


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_recover_default_lets_base_exceptions_pass(exc_type):
    got = []

    def f(*types):
        with scope():
            defer(lambda: got.append(recover(*types)))
            raise exc_type
        return "recovered"

    with pytest.raises(exc_type):
        f()
    assert got == [None]
    assert f(exc_type) == "recovered"
    assert len(got) == 2
    assert type(got[1]) is exc_type


def test_recover_default_lets_cancelled_error_pass():
    log = []

    async def worker(started, *types):
        with scope():
            defer(lambda: log.append(("recover", type(recover(*types)).__name__)))
            started.set()
            await asyncio.sleep(30)
        log.append("after block")
        return "finished"

    async def main(*types):
        started = asyncio.Event()
        task = asyncio.create_task(worker(started, *types))
        await started.wait()
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    assert asyncio.run(main()) == "cancelled"
    assert log == [("recover", "NoneType")]
    log.clear()
    assert asyncio.run(main(asyncio.CancelledError)) == "finished"
    assert log == [("recover", "CancelledError"), "after block"]


def test_recover_and_generator_exit():
    got = []
    log = []

    def gen(*types):
        with scope():
            defer(lambda: got.append(recover(*types)))
            yield 1
        log.append("after block")

    g = gen()
    next(g)
    g.close()
    assert got == [None]
    assert log == []
    g = gen(GeneratorExit)
    next(g)
    g.close()  # the generator returns after the recovered block: close() is satisfied
    assert type(got[1]) is GeneratorExit
    assert log == ["after block"]


def test_recover_in_a_helper_deeper_down_returns_none():
    got = []
    err = ValueError("passes")

    def helper():
        got.append(recover())

    def f():
        with scope():
            defer(lambda: helper())
            raise err

    with pytest.raises(ValueError) as info:
        f()
    assert info.value is err
    assert got == [None]


def test_defer_recover_itself_does_not_recover():
    err = ValueError("passes")

    def f():
        with scope():
            defer(recover)
            raise err

    with pytest.raises(ValueError) as info:
        f()
    assert info.value is err


def test_second_recover_returns_none():
    got = []
    err = ValueError("v")

    def f():
        with scope():

            @defer
            def _():
                got.append(recover())
                got.append(recover())

            raise err
        return "r"

    assert f() == "r"
    assert got == [err, None]


def test_second_deferred_call_recovering_gets_none():
    got = []
    err = ValueError("v")

    def f():
        with scope():
            defer(lambda: got.append(("first scheduled", recover())))
            defer(lambda: got.append(("second scheduled", recover())))
            raise err
        return "r"

    assert f() == "r"
    assert got == [("second scheduled", err), ("first scheduled", None)]


def test_recover_with_nothing_in_flight_returns_none():
    got = []

    def f():
        with scope():
            defer(lambda: got.append(("block", recover())))
        defer(lambda: got.append(("function", recover())))
        return "r"

    assert f() == "r"
    assert got == [("block", None), ("function", None)]


def test_recover_outside_deferred_calls_returns_none():
    assert recover() is None
    try:
        raise KeyError("handled")
    except KeyError:
        assert recover() is None
        assert recover(KeyError) is None

    def f():
        try:
            raise ValueError
        except ValueError:
            return recover()

    assert f() is None


def test_recover_through_c_wrappers():
    got = []

    def handler(tag):
        got.append((tag, recover()))

    class Handler:
        def on_exit(self):
            got.append(("method", recover()))

    def f(which):
        with scope():
            if which == "partial":
                defer(functools.partial(handler, "partial"))
            else:
                defer(Handler().on_exit)
            raise ValueError(which)
        return which

    assert f("partial") == "partial"
    assert f("method") == "method"
    assert [tag for tag, _ in got] == ["partial", "method"]
    assert [e.args for _, e in got] == [("partial",), ("method",)]


def test_recover_an_exception_raised_by_a_later_deferred_call():
    got = []
    dexc = KeyError("from a deferred call")

    def f():
        with scope():
            defer(lambda: got.append(recover()))
            defer(raiser, dexc)
        return "r"

    assert f() == "r"
    assert got == [dexc]


def test_recover_in_a_loop():
    got = []

    def f():
        for i in range(3):
            with scope():
                defer(lambda: got.append(recover()))
                if i != 1:
                    raise ValueError(i)
        return "loop done"

    assert f() == "loop done"
    assert [e if e is None else e.args for e in got] == [(0,), None, (2,)]


def test_recover_exception_from_a_callee():
    got = []

    def callee():
        raise LookupError("deep")

    def f():
        with scope():
            defer(lambda: got.append(recover()))
            callee()
        return "r"

    assert f() == "r"
    assert type(got[0]) is LookupError


def test_recover_in_a_block_in_exec_source():
    ns = run_src(
        """
        from godefer import defer, recover, scope
        got = []
        log = []

        def f():
            with scope():
                @defer
                def _():
                    got.append(recover())
                raise ValueError("v")
            log.append("after block")
            return "continued"

        r = f()

        with scope():
            defer(lambda: got.append(recover()))
            raise KeyError("top")
        log.append("top-level continued")
        """
    )
    assert ns["r"] == "continued"
    assert [type(e) for e in ns["got"]] == [ValueError, KeyError]
    assert ns["log"] == ["after block", "top-level continued"]


# --- recover() outside block scopes: NotPreparedError ---------------------------------------


def test_recover_in_a_function_scope_raises_not_prepared():
    # Runtime path (code from a string has no source to prepare).
    err = ValueError("in flight")
    log = []
    ns = run_src(
        """
        def f():
            defer(lambda: log.append(("earlier call sees", type(sys.exception()))))

            @defer
            def _():
                recover()
                log.append("not reached")

            raise err
        """,
        defer=defer,
        recover=recover,
        sys=sys,
        log=log,
        err=err,
    )
    with pytest.raises(NotPreparedError) as info:
        ns["f"]()
    assert info.value.__context__ is err
    assert "prepar" in str(info.value).lower()
    assert log == [("earlier call sees", NotPreparedError)]


def test_recover_in_a_prepared_function_scope_stops_the_exception():
    # This module is prepared (godefer's pytest plugin): recover() works in a function scope.
    err = ValueError("in flight")
    log = []

    def f():
        defer(lambda: log.append(("earlier call sees", sys.exception())))

        @defer
        def _():
            log.append(("recovered", recover()))

        raise err

    assert f() is None
    assert log == [("recovered", err), ("earlier call sees", None)]


def test_recover_with_types_not_matching_in_a_function_scope():
    # recover() stops nothing whatever the types; what it does when the types do not match is
    # to return None (no stop needed), or to fail loudly; it must not swallow the exception.
    err = ValueError("in flight")

    def f():
        defer(lambda: recover(KeyError))
        raise err

    with pytest.raises((ValueError, NotPreparedError)) as info:
        f()
    assert info.value is err or info.value.__context__ is err


def test_recover_in_function_module_and_class_scopes_in_exec_source():
    ns = run_src(
        """
        from godefer import NotPreparedError, defer, recover
        errors = {}

        def f():
            defer(lambda: recover())
            raise ValueError("function")

        try:
            f()
        except NotPreparedError as e:
            errors["function"] = e

        try:
            class C:
                defer(lambda: recover())
                raise ValueError("class")
        except NotPreparedError as e:
            errors["class"] = e

        src = "from godefer import defer, recover\\n"
        src += "defer(lambda: recover())\\n"
        src += "raise ValueError('module')\\n"
        try:
            exec(compile(src, "<module-string>", "exec"), {})
        except NotPreparedError as e:
            errors["module"] = e
        """
    )
    errors = ns["errors"]
    assert sorted(errors) == ["class", "function", "module"]
    for where, e in errors.items():
        assert isinstance(e.__context__, ValueError)
        assert e.__context__.args == (where,)


# --- result() / set_result() ---------------------------------------------------------------


def test_result_and_set_result_outside_a_deferred_call_raise_lookup_error():
    with pytest.raises(LookupError):
        result()
    with pytest.raises(LookupError):
        set_result(1)

    def f():
        return result()

    with pytest.raises(LookupError):
        f()


@pytest.mark.parametrize("which", ["result", "set_result"])
def test_result_inside_a_deferred_call_raises_not_prepared(which):
    call = (lambda: result()) if which == "result" else (lambda: set_result(7))
    ns = run_src(
        """
        def f():
            defer(call)
            return 1
        """,
        defer=defer,
        call=call,
    )
    with pytest.raises(NotPreparedError) as info:
        ns["f"]()
    assert "prepar" in str(info.value).lower()


def test_result_and_set_result_in_a_prepared_function():
    # Go's spec example: `defer func() { result *= 7 }()` makes f return 42.
    def f():
        defer(lambda: set_result(result() * 7))
        return 6

    assert f() == 42


@pytest.mark.parametrize("which", ["result", "set_result"])
def test_result_inside_a_block_deferred_call_raises_lookup_error(which):
    # A `with scope():` block has no return value, prepared or not (docs/semantics.md).
    call = (lambda: result()) if which == "result" else (lambda: set_result(7))

    def f():
        with scope():
            defer(call)
        return 1

    with pytest.raises(LookupError, match="block has no return value"):
        f()


def test_result_while_an_exception_is_in_flight_does_not_return():
    err = ValueError("in flight")

    def f():
        defer(lambda: result())
        raise err

    with pytest.raises((LookupError, NotPreparedError)) as info:
        f()
    assert info.value.__context__ is err


def test_result_stubs_in_exec_source():
    ns = run_src(
        """
        from godefer import NotPreparedError, defer, result, set_result
        outcomes = []

        try:
            result()
        except LookupError:
            outcomes.append("LookupError outside")

        def f():
            defer(lambda: set_result(result() * 7))
            return 6

        try:
            f()
        except NotPreparedError:
            outcomes.append("NotPreparedError inside")
        """
    )
    assert ns["outcomes"] == ["LookupError outside", "NotPreparedError inside"]


# --- adefer / ascoped -----------------------------------------------------------------------
# Preparation rewrites adefer() and ascoped() wherever this module names them (test_async_exits
# covers that); under other names they are the runtime path's functions, which refuse to run.
unprepared_adefer = adefer
unprepared_ascoped = ascoped


def test_adefer_raises_not_prepared_at_the_call_line():
    log = []
    lines = []

    async def cleanup():
        log.append("cleanup (must not run)")

    async def co():
        lines.append(here() + 1)
        unprepared_adefer(cleanup)
        log.append("not reached")

    with pytest.raises(NotPreparedError) as info:
        asyncio.run(co())
    assert frames_named(info.value, "co") == lines
    assert "prepar" in str(info.value).lower()
    assert log == []


def test_ascoped_raises_not_prepared_at_the_call_line():
    log = []
    lines = []

    class ACM:
        async def __aenter__(self):
            log.append("aenter (must not run)")
            return self

        async def __aexit__(self, *a):
            log.append("aexit (must not run)")

    async def co():
        lines.append(here() + 1)
        await unprepared_ascoped(ACM())
        log.append("not reached")

    with pytest.raises(NotPreparedError) as info:
        asyncio.run(co())
    assert frames_named(info.value, "co") == lines
    assert log == []


def test_adefer_and_ascoped_in_plain_functions_raise_not_prepared():
    async def cleanup():
        pass

    def f():
        unprepared_adefer(cleanup)

    def g():
        unprepared_ascoped(object())

    with pytest.raises(NotPreparedError):
        f()
    with pytest.raises(NotPreparedError):
        g()


ADEFER_SRC = """
import asyncio
from godefer import NotPreparedError, adefer, ascoped
lines = {}

async def cleanup():
    pass

async def co(kind):
    if kind == "adefer":
        adefer(cleanup)  # ADEFER
    else:
        await ascoped(object())  # ASCOPED

for kind in ("adefer", "ascoped"):
    try:
        asyncio.run(co(kind))
    except NotPreparedError as e:
        tb = e.__traceback__
        while tb.tb_next is not None and tb.tb_frame.f_code.co_name != "co":
            tb = tb.tb_next
        lines[kind] = tb.tb_lineno
"""


def line_of(src: str, marker: str) -> int:
    (lineno,) = [i for i, text in enumerate(src.splitlines(), 1) if marker in text]
    return lineno


def test_adefer_ascoped_in_exec_source():
    ns = run_src(ADEFER_SRC)
    assert ns["lines"] == {
        "adefer": line_of(ADEFER_SRC, "# ADEFER"),
        "ascoped": line_of(ADEFER_SRC, "# ASCOPED"),
    }


# --- the `CALL in defer` statement sugar, executed unprepared -----------------------------


@pytest.mark.parametrize(
    "sched",
    [defer, errdefer, okdefer, d_alias, godefer.defer],
    ids=["defer", "errdefer", "okdefer", "alias", "qualified"],
)
def test_in_defer_sugar_unprepared_has_already_called(sched):
    log = []
    lines = []

    def make():
        log.append("call happened")
        return lambda: log.append("returned callable (must not run)")

    def f():
        lines.append(here() + 1)
        make() in sched
        log.append("not reached")

    with pytest.raises(NotPreparedError) as info:
        f()
    assert "already" in str(info.value).lower()
    assert frames_named(info.value, "f") == lines
    assert log == ["call happened"]


def test_in_defer_sugar_in_exec_source():
    ns = run_src(
        """
        import godefer
        from godefer import NotPreparedError, defer, errdefer, okdefer
        from godefer import defer as d
        log = []
        outcomes = []

        def f(which):
            defer(log.append, ("earlier call", which))
            if which == "defer":
                log.append(which) in defer
            elif which == "errdefer":
                log.append(which) in errdefer
            elif which == "okdefer":
                log.append(which) in okdefer
            elif which == "alias":
                log.append(which) in d
            else:
                log.append(which) in godefer.defer

        for which in ("defer", "errdefer", "okdefer", "alias", "qualified"):
            try:
                f(which)
            except NotPreparedError as e:
                outcomes.append(("already" in str(e).lower(), e.__traceback__ is not None))
        """
    )
    kinds = ["defer", "errdefer", "okdefer", "alias", "qualified"]
    assert ns["outcomes"] == [(True, True)] * 5
    assert ns["log"] == [x for k in kinds for x in (k, ("earlier call", k))]
