"""``recover()``, ``result()`` and ``set_result()`` in prepared code (DESIGN.md §1).

This module is prepared by godefer's pytest plugin, so every function below is prepared code.
Most rules are checked twice: with the deferred callable scheduled by a top-level ``defer(fn)``
statement and with a ``@defer``-decorated block (preparation may compile the two differently).

The rules, as in Go: ``recover(*types)`` is effective only when called directly by the deferred
callable (C wrappers such as ``functools.partial`` or bound methods in between are fine) while an
exception of ``types`` (default ``Exception``) is in flight; anywhere else it returns ``None``.
After a recovery the function returns ``None`` unless a deferred call set its result, a
``with scope():`` block continues after the block, and the remaining deferred calls see no
exception in flight. ``result()``/``set_result()`` read and replace the value the function is
returning; ``result()`` raises ``LookupError`` when the function exits by an exception or outside
a deferred call, and both raise ``LookupError`` in a block's deferred calls.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import sys
import textwrap
import uuid

import pytest

import godefer._rt
from godefer import defer, errdefer, okdefer, recover, result, scope, set_result


def test_this_module_is_prepared():
    assert godefer._rt.is_prepared(safe_div.__code__)
    assert godefer._rt.is_prepared(safe_div_decorated.__code__)


# --- recover() stops the exception -------------------------------------------------------------

LOG: list[object] = []


def log_recovered() -> None:
    LOG.append(recover())


def safe_div(a, b):
    defer(log_recovered)
    return a / b


def safe_div_decorated(a, b):
    @defer
    def _():
        LOG.append(recover())

    return a / b


@pytest.fixture(autouse=True)
def clear_log():
    LOG.clear()
    yield
    LOG.clear()


@pytest.mark.parametrize("fn", [safe_div, safe_div_decorated])
def test_recover_stops_the_exception_and_returns_it(fn):
    assert fn(1, 0) is None
    assert len(LOG) == 1
    assert isinstance(LOG[0], ZeroDivisionError)
    assert LOG[0].__traceback__ is not None


@pytest.mark.parametrize("fn", [safe_div, safe_div_decorated])
def test_recover_without_exception_returns_none_and_keeps_the_result(fn):
    assert fn(6, 3) == 2.0
    assert LOG == [None]


def test_recover_returns_the_very_exception_in_flight():
    boom = ValueError("boom")

    def f():
        defer(log_recovered)
        raise boom

    assert f() is None
    assert len(LOG) == 1
    assert LOG[0] is boom


def test_recover_through_functools_partial():
    def handler(tag):
        LOG.append((tag, recover()))

    def f():
        defer(functools.partial(handler, "partial"))
        raise KeyError("k")

    assert f() is None
    assert LOG[0][0] == "partial" and isinstance(LOG[0][1], KeyError)


def test_recover_through_a_bound_method():
    class Guard:
        def __init__(self):
            self.caught = None

        def handle(self):
            self.caught = recover()

    guard = Guard()

    def f():
        defer(guard.handle)
        raise KeyError("k")

    assert f() is None
    assert isinstance(guard.caught, KeyError)


def test_recover_in_a_loop_scheduled_deferred_call():
    def f():
        for i in range(3):
            defer(lambda i=i: LOG.append((i, recover())))
        raise ValueError("loop")

    assert f() is None
    # The last scheduled runs first and recovers; the others see nothing in flight.
    assert [i for i, _ in LOG] == [2, 1, 0]
    assert isinstance(LOG[0][1], ValueError)
    assert LOG[1][1] is None and LOG[2][1] is None


# --- which exceptions ---------------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_default_recover_lets_base_exceptions_pass(exc_type):
    def f():
        defer(log_recovered)
        raise exc_type()

    with pytest.raises(exc_type):
        f()
    assert LOG == [None]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_recover_stops_base_exceptions_when_asked(exc_type):
    def f():
        @defer
        def _():
            LOG.append(recover(exc_type))

        raise exc_type()

    assert f() is None
    assert isinstance(LOG[0], exc_type)


def test_recover_with_several_types():
    def f(exc):
        defer(lambda: LOG.append(recover(KeyError, ValueError)))
        raise exc

    assert f(ValueError("v")) is None
    assert f(KeyError("k")) is None
    with pytest.raises(TypeError):
        f(TypeError("t"))
    assert isinstance(LOG[0], ValueError)
    assert isinstance(LOG[1], KeyError)
    assert LOG[2] is None


def test_recover_of_a_subclass_and_of_base_exception():
    class MyError(LookupError):
        pass

    def f(exc, *types):
        @defer
        def _():
            LOG.append(recover(*types))

        raise exc

    assert f(MyError(), LookupError) is None
    assert f(KeyboardInterrupt(), BaseException) is None
    with pytest.raises(LookupError):
        f(LookupError(), MyError)
    assert [type(e) for e in LOG] == [MyError, KeyboardInterrupt, type(None)]


def test_generator_exit_passes_default_recover():
    def gen():
        defer(log_recovered)
        yield 1
        yield 2

    g = gen()
    assert next(g) == 1
    g.close()
    assert LOG == [None]


def test_generator_exit_recovered_when_asked():
    def gen():
        @defer
        def _():
            LOG.append(recover(GeneratorExit))

        yield 1
        yield 2

    g = gen()
    assert next(g) == 1
    g.close()  # the generator returns after the recovery: close() is satisfied
    assert isinstance(LOG[0], GeneratorExit)
    with pytest.raises(StopIteration):
        next(g)


def test_cancelled_error_passes_default_recover():
    async def worker(started):
        defer(log_recovered)
        started.set()
        await asyncio.sleep(10)

    async def main():
        started = asyncio.Event()
        task = asyncio.ensure_future(worker(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"

    assert asyncio.run(main()) == "cancelled"
    assert LOG == [None]


# --- where recover() does nothing ---------------------------------------------------------------


def test_recover_outside_a_deferred_call_returns_none():
    assert recover() is None
    try:
        raise ValueError("handled")
    except ValueError:
        assert recover() is None  # an except block is not a deferred call
    with pytest.raises(ValueError), scope():
        LOG.append(recover())  # the block's own body is not a deferred call either
        raise ValueError
    assert LOG == [None]


def helper_that_recovers() -> None:
    LOG.append(("helper", recover()))


@pytest.mark.parametrize("decorated", [False, True])
def test_recover_in_a_helper_deeper_down_does_nothing(decorated):
    def via_call():
        defer(lambda: helper_that_recovers())
        raise ValueError("deep")

    def via_decorator():
        @defer
        def _():
            helper_that_recovers()

        raise ValueError("deep")

    with pytest.raises(ValueError, match="deep"):
        (via_decorator if decorated else via_call)()
    assert LOG == [("helper", None)]


def test_deferring_recover_itself_does_nothing():
    def f():
        defer(recover)
        raise ValueError("not stopped")

    with pytest.raises(ValueError, match="not stopped"):
        f()

    def g():
        for _ in range(1):
            defer(recover)  # not a top-level statement
        raise ValueError("still not stopped")

    with pytest.raises(ValueError, match="still not stopped"):
        g()


def test_second_recover_returns_none():
    def f():
        @defer
        def _():
            LOG.append(recover())
            LOG.append(recover())

        raise ValueError("once")

    assert f() is None
    assert isinstance(LOG[0], ValueError)
    assert LOG[1] is None


def test_second_deferred_call_sees_nothing_to_recover():
    def f():
        defer(log_recovered)
        defer(log_recovered)
        raise ValueError("once")

    assert f() is None
    assert isinstance(LOG[0], ValueError)
    assert LOG[1] is None


# --- after a recovery ---------------------------------------------------------------------------


def test_later_deferred_calls_see_no_exception_in_flight():
    def f():
        defer(lambda: LOG.append(("exception", sys.exception())))
        errdefer(LOG.append, "errdefer")
        okdefer(LOG.append, "okdefer")
        defer(log_recovered)
        errdefer(LOG.append, "errdefer before recovery")
        raise ValueError("x")

    assert f() is None
    assert LOG[0] == "errdefer before recovery"
    assert isinstance(LOG[1], ValueError)
    assert LOG[2:] == ["okdefer", ("exception", None)]


def test_later_deferred_calls_see_the_enclosing_exception_after_recovery():
    # Inside a deferred call sys.exception() is what it would be in a `finally:`; after the
    # recovery nothing is in flight, so it is the exception being handled around the call.
    def f():
        defer(lambda: LOG.append(("exception", sys.exception())))
        defer(log_recovered)
        raise ValueError("inner")

    try:
        raise KeyError("outer")
    except KeyError as outer:
        assert f() is None
        assert LOG[1] == ("exception", outer)


def test_recovered_function_returns_none():
    def f():
        defer(log_recovered)
        x = 5
        if x:
            raise ValueError
        return x

    assert f() is None


@pytest.mark.parametrize("decorated", [False, True])
def test_set_result_after_recover_sets_what_the_function_returns(decorated):
    def via_call():
        defer(lambda: recover() and set_result("fallback"))
        raise ValueError

    def via_decorator():
        @defer
        def _():
            if recover() is not None:
                set_result("fallback")

        raise ValueError

    assert (via_decorator if decorated else via_call)() == "fallback"


def test_set_result_by_a_later_deferred_call_after_recovery():
    def f():
        defer(lambda: set_result(("later", LOG[:])))
        defer(log_recovered)
        return 1 / 0

    res = f()
    assert res[0] == "later"
    assert isinstance(res[1][0], ZeroDivisionError)


@pytest.mark.parametrize("decorated", [False, True])
def test_result_after_recovery_is_none(decorated):
    # The exception is stopped: the function is no longer exiting by an exception.
    def via_call():
        defer(lambda: LOG.append(("result", _try(result))))
        defer(log_recovered)
        raise ValueError

    def via_decorator():
        @defer
        def _():
            LOG.append(("result", _try(result)))

        @defer
        def _():
            LOG.append(recover())

        raise ValueError

    assert (via_decorator if decorated else via_call)() is None
    assert isinstance(LOG[0], ValueError)
    assert LOG[1] == ("result", None)


def test_result_after_recovery_sees_set_result():
    def f():
        defer(lambda: LOG.append(("result", _try(result))))
        defer(lambda: (recover(), set_result("set after recovery")))
        raise ValueError

    assert f() == "set after recovery"
    assert LOG == [("result", "set after recovery")]


def test_recover_an_exception_raised_by_a_deferred_call():
    def f():
        defer(log_recovered)
        defer(lambda: {}["missing"])
        return "value"

    f()
    assert isinstance(LOG[0], KeyError)


def test_inner_function_recovers_only_its_own_exception():
    def inner():
        defer(log_recovered)
        raise KeyError("inner")

    def outer():
        @defer
        def _():
            inner()  # a prepared function called from a deferred call recovers its own
            LOG.append(("outer sees", type(sys.exception()).__name__))

        raise ValueError("outer")

    with pytest.raises(ValueError, match="outer"):
        outer()
    assert isinstance(LOG[0], KeyError)
    assert LOG[1] == ("outer sees", "ValueError")


# --- with scope(): blocks -----------------------------------------------------------------------


def test_recovered_block_continues_after_the_block():
    def f():
        steps = []
        with scope():
            defer(lambda: steps.append(recover()))
            steps.append("in block")
            raise ValueError("block")
        steps.append("after block")
        return steps

    steps = f()
    assert steps[0] == "in block"
    assert isinstance(steps[1], ValueError)
    assert steps[2] == "after block"


def test_recovered_block_in_a_loop():
    def f():
        out = []
        for i in range(3):
            with scope():

                @defer
                def _():
                    if (e := recover()) is not None:
                        out.append(f"recovered {e}")

                if i == 1:
                    raise ValueError(i)
                out.append(i)
        out.append("done")
        return out

    assert f() == [0, "recovered 1", 2, "done"]


def test_block_recover_default_lets_keyboard_interrupt_pass():
    def f():
        with scope():
            defer(log_recovered)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f()
    assert LOG == [None]


def test_block_recovery_leaves_the_function_scope_alone():
    def f():
        defer(LOG.append, "function deferred")
        with scope():
            defer(LOG.append, "block deferred")
            defer(log_recovered)
            errdefer(LOG.append, "block errdefer")
            raise ValueError
        LOG.append("after block")
        return "returned"

    assert f() == "returned"
    assert LOG[0] == "block errdefer"
    assert isinstance(LOG[1], ValueError)
    assert LOG[2:] == ["block deferred", "after block", "function deferred"]


def test_unrecovered_block_exception_reaches_the_function_deferred_calls():
    def f():
        defer(log_recovered)
        with scope():
            defer(LOG.append, "block deferred")
            raise ValueError("through")
        LOG.append("not reached")

    assert f() is None
    assert LOG[0] == "block deferred"
    assert isinstance(LOG[1], ValueError)
    assert len(LOG) == 2


def test_result_and_set_result_raise_lookup_error_in_a_block():
    def attempt(fn, *args):
        try:
            LOG.append(("ok", fn(*args)))
        except LookupError as exc:
            LOG.append(("LookupError", type(exc).__name__))

    def f():
        with scope():
            defer(attempt, result)
            defer(attempt, set_result, 5)
        return "function value"

    assert f() == "function value"
    assert LOG == [("LookupError", "LookupError"), ("LookupError", "LookupError")]


def test_block_deferred_calls_cannot_read_the_function_result():
    def f():
        defer(lambda: LOG.append(("function", result())))
        with scope():
            defer(lambda: LOG.append(("block", _try(result))))
        return 7

    assert f() == 7
    assert LOG == [("block", "LookupError"), ("function", 7)]


def _try(fn, *args):
    try:
        return fn(*args)
    except LookupError:
        return "LookupError"


# --- result() and set_result() ------------------------------------------------------------------


def go_spec_example():
    defer(lambda: set_result(result() * 7))
    return 6


def go_spec_example_decorated():
    @defer
    def _():
        set_result(result() * 7)

    return 6


@pytest.mark.parametrize("fn", [go_spec_example, go_spec_example_decorated])
def test_go_spec_example_returns_42(fn):
    assert fn() == 42


def test_result_reads_the_return_value():
    def f(x):
        defer(lambda: LOG.append(result()))
        if x:
            return x
        LOG.append("fell off")

    assert f(3) == 3
    assert f(0) is None
    assert LOG == [3, "fell off", None]


def test_set_result_calls_run_last_scheduled_first():
    def f():
        defer(lambda: set_result(("first scheduled", result())))
        defer(lambda: set_result(("second scheduled", result())))
        return "original"

    assert f() == ("first scheduled", ("second scheduled", "original"))


def test_set_result_on_fall_off_and_in_a_loop_scheduled_call():
    def f():
        defer(lambda: set_result("top level"))
        for _ in range(1):
            defer(lambda: set_result(("from loop", result())))

    assert f() == "top level"

    def g():
        for _ in range(1):
            defer(lambda: set_result(("from loop", result())))

    assert g() == ("from loop", None)


def test_set_result_replaces_the_returned_object():
    sentinel = object()

    def f():
        defer(lambda: set_result(sentinel))
        return [1, 2, 3]

    assert f() is sentinel


def test_result_raises_lookup_error_when_exiting_by_exception():
    def f():
        defer(lambda: LOG.append(_try(result)))
        raise ValueError("leaving")

    with pytest.raises(ValueError, match="leaving"):
        f()
    assert LOG == ["LookupError"]


def test_result_outside_a_deferred_call_raises_lookup_error():
    with pytest.raises(LookupError):
        result()

    def f():
        return result()

    with pytest.raises(LookupError):
        f()


def test_set_result_outside_a_deferred_call_raises_lookup_error():
    with pytest.raises(LookupError):
        set_result(1)


def test_result_in_an_errdefer_after_a_deferred_call_raised():
    def f():
        errdefer(lambda: LOG.append(_try(result)))
        defer(lambda: 1 / 0)
        return "value"

    with pytest.raises(ZeroDivisionError):
        f()
    assert LOG == ["LookupError"]


# --- generators and coroutines ------------------------------------------------------------------


def test_recover_in_a_generator_ends_it_normally():
    def gen():
        defer(log_recovered)
        yield 1
        raise ValueError("in generator")

    assert list(gen()) == [1]
    assert isinstance(LOG[0], ValueError)


def test_recover_in_a_generator_after_throw():
    def gen():
        @defer
        def _():
            LOG.append(recover())

        yield 1
        yield 2

    g = gen()
    next(g)
    with pytest.raises(StopIteration):
        g.throw(KeyError("thrown"))
    assert isinstance(LOG[0], KeyError)


def test_result_and_set_result_in_a_generator():
    def gen():
        defer(lambda: set_result((result(), "replaced")))
        yield 1
        return "gen value"

    g = gen()
    assert next(g) == 1
    with pytest.raises(StopIteration) as info:
        next(g)
    assert info.value.value == ("gen value", "replaced")


def test_recover_and_set_result_in_a_coroutine():
    async def work(fail):
        @defer
        def _():
            if recover() is not None:
                set_result("recovered")

        await asyncio.sleep(0)
        if fail:
            raise ValueError
        return "normal"

    async def main():
        return await work(True), await work(False)

    assert asyncio.run(main()) == ("recovered", "normal")


def test_go_spec_example_in_a_coroutine():
    async def work():
        defer(lambda: set_result(result() * 7))
        await asyncio.sleep(0)
        return 6

    assert asyncio.run(work()) == 42


# --- module and class bodies --------------------------------------------------------------------


@pytest.fixture
def import_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def do_import(src: str):
        name = f"gd_recover_mod_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(src))
        importlib.invalidate_caches()
        names.append(name)
        return importlib.import_module(name)

    yield do_import
    for name in names:
        sys.modules.pop(name, None)


def test_recover_in_a_module_body_lets_the_import_succeed(import_file):
    mod = import_file(
        """
        from godefer import defer, recover

        LOG = []


        @defer
        def _():
            LOG.append(repr(recover()))


        before = 1
        raise ValueError("top level")
        after = 2
        """
    )
    assert mod.LOG == ["ValueError('top level')"]
    assert mod.before == 1
    assert not hasattr(mod, "after")


def test_unrecovered_module_body_exception_fails_the_import(import_file):
    with pytest.raises(ValueError, match="top level"):
        import_file(
            """
            from godefer import defer, recover

            defer(lambda: recover(KeyError))
            raise ValueError("top level")
            """
        )


def test_recover_in_a_class_body_creates_the_class(import_file):
    mod = import_file(
        """
        from godefer import defer, recover

        LOG = []


        class K:
            defer(lambda: LOG.append(repr(recover())))
            a = 1
            raise KeyError("class body")
            b = 2


        LOG.append(("class", K.a, hasattr(K, "b")))
        """
    )
    assert mod.LOG == ["KeyError('class body')", ("class", 1, False)]


def test_recover_in_an_async_generator(import_file):
    # In a module file of its own, so that a failure to prepare it cannot hide the other tests.
    mod = import_file(
        """
        import asyncio

        from godefer import defer, recover

        LOG = []


        async def agen():
            defer(lambda: LOG.append(recover()))
            yield 1
            raise ValueError("agen")


        async def main():
            return [item async for item in agen()]
        """
    )
    assert asyncio.run(mod.main()) == [1]
    assert isinstance(mod.LOG[0], ValueError)


def test_module_body_block_recovery(import_file):
    mod = import_file(
        """
        from godefer import defer, recover, scope

        LOG = []
        with scope():
            defer(lambda: LOG.append(repr(recover())))
            raise ValueError("in block")
        LOG.append("after block")
        """
    )
    assert mod.LOG == ["ValueError('in block')", "after block"]
