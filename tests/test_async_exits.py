"""adefer() and ascoped() in prepared async functions (DESIGN.md section 1, "async").

Awaited calls share the scope's one stack with the plain ones and are awaited when the scope
exits: a coroutine's or async generator's return, an exception leaving it, its close() or
cancellation, or the end of a `with scope():` block in it. The differential test against
try/finally with awaits is test_oracle_async.py; these are the focused cases.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import traceback
import weakref

import pytest

import godefer
from godefer import (
    ScopeBound,
    adefer,
    ascoped,
    defer,
    errdefer,
    okdefer,
    recover,
    result,
    scope,
    scoped,
    set_result,
)
from godefer._prepare import PrepareError, prepare_source
from runtime_path import here
from slot_log import drive


class Suspend:
    """Hands control back to the driver once (an await that really suspends)."""

    def __await__(self):
        yield


async def arec(log, *values):
    await Suspend()
    log.append((*values, repr(sys.exception())))


class ACM:
    """An asynchronous context manager that records, suspends, and may suppress."""

    def __init__(self, log, name, suppress=False, enter_raises=None):
        self.log, self.name, self.suppress, self.enter_raises = log, name, suppress, enter_raises

    async def __aenter__(self):
        await Suspend()
        if self.enter_raises is not None:
            raise self.enter_raises
        self.log.append(("enter", self.name))
        return f"value of {self.name}"

    async def __aexit__(self, et, ev, tb):
        await Suspend()
        self.log.append(("exit", self.name, et.__name__ if et else None, repr(sys.exception())))
        return self.suppress


# --- adefer ------------------------------------------------------------------------------------


def test_adefer_awaits_at_return_in_one_stack_with_plain_defers():
    log = []

    async def f():
        defer(log.append, "plain 1")
        adefer(arec, log, "awaited 2")
        errdefer(log.append, "errdefer (not run)")
        okdefer(log.append, "okdefer 4")
        adefer(arec, log, "awaited 5")
        log.append("body")
        return 42

    assert drive(f()) == 42
    assert log == [
        "body",
        ("awaited 5", "None"),
        "okdefer 4",
        ("awaited 2", "None"),
        "plain 1",
    ]


def test_adefer_passes_arguments_and_keywords_evaluated_now():
    log = []

    async def record(*args, **kwargs):
        await Suspend()
        log.append((args, kwargs))

    async def f():
        x = 1
        adefer(record, x, k=x)
        x = 2
        log.append(("body", x))

    drive(f())
    assert log == [("body", 2), ((1,), {"k": 1})]


def test_adefer_returns_its_callable_and_works_as_decorator():
    log = []

    async def f():
        @adefer
        async def cleanup():
            await Suspend()
            log.append("decorated cleanup")

        log.append(("cleanup is a function", callable(cleanup)))

    drive(f())
    assert log == [("cleanup is a function", True), "decorated cleanup"]


def test_awaited_call_sees_the_exception_in_flight_and_replaces_it():
    log = []
    first = KeyError("body")

    async def boom():
        await Suspend()
        log.append(("boom sees", repr(sys.exception())))
        raise ValueError("from cleanup")

    async def f():
        adefer(arec, log, "after boom")
        adefer(boom)
        raise first

    with pytest.raises(ValueError, match="from cleanup") as info:
        drive(f())
    assert info.value.__context__ is first
    assert log == [
        ("boom sees", "KeyError('body')"),
        ("after boom", "ValueError('from cleanup')"),
    ]


def test_awaited_call_traceback_shows_the_function_once_and_the_cleanup():
    async def boom():
        await Suspend()
        raise ValueError("cleanup failed")

    async def f():
        adefer(boom)
        return 1

    with pytest.raises(ValueError) as info:
        drive(f())
    names = [fr.name for fr in traceback.extract_tb(info.value.__traceback__)]
    assert names.count("f") == 1
    assert names[-1] == "boom"


def test_sys_exception_after_recovery_is_the_enclosing_one():
    log = []

    async def catcher():
        await Suspend()
        log.append(("recovered", repr(recover())))

    async def f():
        adefer(arec, log, "after recovery")
        adefer(catcher)
        raise KeyError("stopped")

    try:
        raise OSError("outer")
    except OSError:
        assert drive(f()) is None
    assert log == [
        ("recovered", "KeyError('stopped')"),
        ("after recovery", "OSError('outer')"),
    ]


def test_recover_and_set_result_in_an_awaited_call():
    log = []

    async def f():
        @adefer
        async def _():
            await Suspend()
            e = recover()
            log.append(repr(e))
            set_result("recovered value")

        raise ValueError("boom")

    assert drive(f()) == "recovered value"
    assert log == ["ValueError('boom')"]


def test_go_spec_result_example_with_an_awaited_call():
    async def f():
        @adefer
        async def _():
            await Suspend()
            set_result(result() * 7)

        return 6

    assert drive(f()) == 42


def test_recover_only_directly_in_the_awaited_call():
    log = []

    async def helper():
        log.append(("helper", recover()))

    async def cleanup():
        await helper()

    async def f():
        adefer(cleanup)
        raise KeyError("goes on")

    with pytest.raises(KeyError):
        drive(f())
    assert log == [("helper", None)]


def test_awaited_call_that_returns_no_awaitable_is_a_type_error_at_exit():
    log = []

    def plain():
        log.append("plain ran")
        return 3

    async def f():
        adefer(arec, log, "still runs")
        adefer(plain)

    with pytest.raises(TypeError, match=r"adefer\(\).*returned int.*cannot be awaited"):
        drive(f())
    assert log[0] == "plain ran"
    assert log[1][0] == "still runs"
    assert log[1][1].startswith("TypeError(")


def test_adefer_of_a_non_callable_raises_at_its_line():
    lines = []
    log = []

    async def f():
        adefer(arec, log, "scheduled before")
        lines.append(here() + 1)
        adefer(3)
        log.append("not reached")

    with pytest.raises(TypeError, match=r"adefer\(\) needs a callable") as info:
        drive(f())
    frames = [fr.lineno for fr in traceback.extract_tb(info.value.__traceback__) if fr.name == "f"]
    assert frames[-1] == lines[0]
    assert log == [("scheduled before", repr(info.value))]


def test_scope_bound_and_scoped_join_the_awaited_stack():
    log = []

    class Res(ScopeBound):
        def close(self):
            log.append("ScopeBound closed")

    class CM:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            log.append("scoped exited")

    async def f():
        adefer(arec, log, "awaited")
        scoped(CM())
        Res()
        adefer(arec, log, "awaited last")

    drive(f())
    assert log == [
        ("awaited last", "None"),
        "ScopeBound closed",
        "scoped exited",
        ("awaited", "None"),
    ]


def test_nothing_deferred_at_run_time_costs_no_drain():
    async def f(schedule):
        if schedule:
            adefer(arec, [], "x")
        return "value"

    assert drive(f(False)) == "value"
    assert drive(f(True)) == "value"
    assert godefer._core._pending_frames() == 0


# --- ascoped -------------------------------------------------------------------------------


def test_ascoped_enters_now_and_exits_at_scope_exit():
    log = []

    async def f():
        v = await ascoped(ACM(log, "a"))
        log.append(("body", v))
        w = await ascoped(ACM(log, "b"))
        log.append(("body", w))
        return v

    assert drive(f()) == "value of a"
    assert log == [
        ("enter", "a"),
        ("body", "value of a"),
        ("enter", "b"),
        ("body", "value of b"),
        ("exit", "b", None, "None"),
        ("exit", "a", None, "None"),
    ]


def test_ascoped_exit_gets_the_exception_and_may_suppress_it():
    log = []

    async def f():
        await ascoped(ACM(log, "suppressing", suppress=True))
        await ascoped(ACM(log, "plain"))
        raise KeyError("k")

    assert drive(f()) is None
    assert log == [
        ("enter", "suppressing"),
        ("enter", "plain"),
        ("exit", "plain", "KeyError", "KeyError('k')"),
        ("exit", "suppressing", "KeyError", "KeyError('k')"),
    ]


def test_ascoped_whose_aenter_raises_schedules_nothing():
    log = []

    async def f():
        await ascoped(ACM(log, "outer"))
        await ascoped(ACM(log, "broken", enter_raises=OSError("no")))
        log.append("not reached")

    with pytest.raises(OSError, match="no"):
        drive(f())
    assert log == [("enter", "outer"), ("exit", "outer", "OSError", "OSError('no')")]


def test_ascoped_rejects_what_is_not_an_async_context_manager():
    class Sync:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    async def f(obj):
        await ascoped(obj)

    with pytest.raises(TypeError, match=r"ascoped\(\) needs an asynchronous.*use scoped\(cm\)"):
        drive(f(Sync()))
    with pytest.raises(TypeError, match=r"ascoped\(\) needs an asynchronous.*got int"):
        drive(f(3))


# --- async generators, close, cancellation -------------------------------------------------------


def test_async_generator_awaits_its_exits_at_the_end_and_on_aclose():
    log = []

    async def agen(n):
        adefer(arec, log, "agen exit")
        for i in range(n):
            yield i

    async def main():
        got = [i async for i in agen(2)]
        log.append(("got", got))
        g = agen(5)
        log.append(("first", await g.__anext__()))
        await g.aclose()
        log.append("closed")

    asyncio.run(main())
    assert log == [
        ("agen exit", "None"),
        ("got", [0, 1]),
        ("first", 0),
        ("agen exit", "GeneratorExit()"),
        "closed",
    ]


def test_cancellation_runs_the_awaited_exits_with_cancelled_error_in_flight():
    log = []
    started = None

    async def cleanup(name):
        await asyncio.sleep(0)
        log.append((name, type(sys.exception()).__name__))

    async def worker():
        adefer(cleanup, "first scheduled")
        adefer(cleanup, "last scheduled")
        started.set()
        await asyncio.sleep(30)

    async def main():
        nonlocal started
        started = asyncio.Event()
        task = asyncio.create_task(worker())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert log == [("last scheduled", "CancelledError"), ("first scheduled", "CancelledError")]


def test_close_during_an_awaited_exit_behaves_like_try_finally():
    """close() while an awaited exit is suspended throws GeneratorExit there; the remaining
    calls run with it in flight, and awaiting again then is CPython's RuntimeError, exactly as
    with `finally: await ...` written by hand."""

    def run(make):
        log = []
        coro = make(log)
        coro.send(None)  # suspended inside the first awaited exit
        try:
            coro.close()
            outcome = "closed"
        except BaseException as e:
            outcome = repr(e)
        return log, outcome

    def prepared(log):
        async def f():
            defer(log.append, "plain")
            adefer(arec, log, "second")
            adefer(arec, log, "first")

        return f()

    def by_hand(log):
        async def f():
            try:
                try:
                    try:
                        pass
                    finally:
                        await arec(log, "first")
                finally:
                    await arec(log, "second")
            finally:
                log.append("plain")

        return f()

    assert run(prepared) == run(by_hand)
    assert run(prepared)[0][-1] == "plain"


def test_interleaved_coroutines_keep_their_own_exits():
    log = []

    async def worker(name, steps):
        adefer(arec, log, f"{name} exit")
        for _ in range(steps):
            await asyncio.sleep(0)
        log.append(f"{name} body done")
        return name

    async def main():
        return await asyncio.gather(worker("a", 3), worker("b", 1), worker("c", 2))

    assert asyncio.run(main()) == ["a", "b", "c"]
    assert log.index("b body done") < log.index(("b exit", "None"))
    assert sorted(e for e in log if isinstance(e, tuple)) == [
        ("a exit", "None"),
        ("b exit", "None"),
        ("c exit", "None"),
    ]


def test_recursion_each_level_awaits_its_own():
    log = []

    async def f(n):
        adefer(arec, log, ("level", n))
        if n:
            await f(n - 1)

    drive(f(3))
    assert [e[0] for e in log] == [("level", 0), ("level", 1), ("level", 2), ("level", 3)]


# --- block scopes ----------------------------------------------------------------------------


def test_block_awaits_its_calls_at_the_end_of_each_iteration():
    log = []

    async def f():
        adefer(arec, log, "function exit")
        for i in range(3):
            with scope():
                adefer(arec, log, ("block", i))
                if i == 1:
                    continue
                log.append(("body", i))
        log.append("after loop")

    drive(f())
    assert log == [
        ("body", 0),
        (("block", 0), "None"),
        (("block", 1), "None"),
        ("body", 2),
        (("block", 2), "None"),
        "after loop",
        ("function exit", "None"),
    ]


def test_block_exit_on_break_and_return():
    log = []

    async def f():
        for i in range(5):
            with scope():
                adefer(arec, log, ("block", i))
                if i == 1:
                    break
        with scope():
            adefer(arec, log, "returning block")
            return "value"

    assert drive(f()) == "value"
    assert log == [
        (("block", 0), "None"),
        (("block", 1), "None"),
        ("returning block", "None"),
    ]


def test_recovered_block_goes_on_after_the_block():
    log = []

    async def catcher():
        await Suspend()
        log.append(("recovered", repr(recover())))

    async def f():
        with scope():
            adefer(arec, log, "in block, after recovery")
            adefer(catcher)
            raise KeyError("stopped in block")
        log.append("after block")
        return "normal"

    assert drive(f()) == "normal"
    assert log == [
        ("recovered", "KeyError('stopped in block')"),
        ("in block, after recovery", "None"),
        "after block",
    ]


def test_block_with_other_items_and_as_target():
    log = []

    class CM:
        def __enter__(self):
            log.append("cm enter")
            return "cm value"

        def __exit__(self, *exc):
            log.append("cm exit")

    async def f():
        with scope() as s, CM() as v:
            adefer(arec, log, ("block", v, type(s).__name__))
        log.append("after")

    drive(f())
    assert log == ["cm enter", "cm exit", (("block", "cm value", "BlockScope"), "None"), "after"]


def test_block_exception_goes_on_after_its_awaited_calls():
    log = []

    async def f():
        with scope():
            await ascoped(ACM(log, "in block"))
            raise ValueError("leaves")

    with pytest.raises(ValueError, match="leaves"):
        drive(f())
    assert log == [
        ("enter", "in block"),
        ("exit", "in block", "ValueError", "ValueError('leaves')"),
    ]


# --- hygiene -----------------------------------------------------------------------------------


def test_no_reference_cycle_and_no_leftover_after_an_exception_exit():
    async def cleanup(x):
        await Suspend()

    class Big:
        pass

    async def f(obj):
        adefer(cleanup, obj)
        raise KeyError("k")

    obj = Big()
    ref = weakref.ref(obj)
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(KeyError) as info:
            drive(f(obj))
        del obj
        assert ref() is not None  # the traceback holds f's frame, which holds its argument
        del info
        assert ref() is None  # freed by reference counting: no cycle holds it
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert godefer._core._pending_frames() == 0


def test_abandoned_coroutine_in_an_awaited_exit_leaves_nothing_behind():
    log = []

    async def f():
        defer(log.append, "plain, with GeneratorExit in flight")
        adefer(arec, log, "awaited (interrupted)")

    coro = f()
    coro.send(None)  # suspended inside the awaited exit
    del coro  # its finalizer closes it: GeneratorExit at that await
    gc.collect()
    assert log == ["plain, with GeneratorExit in flight"]
    assert godefer._core._pending_frames() == 0


# --- preparation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("def f():\n    adefer(g)\n", r"adefer\(\) schedules a call that is awaited"),
        ("adefer(g)\n", r"adefer\(\) schedules a call"),
        ("async def f():\n    h = lambda: adefer(g)\n", r"adefer\(\) schedules a call"),
        ("def f():\n    @adefer\n    async def g():\n        pass\n", r"adefer\(\) schedules"),
        ("async def f():\n    t = ascoped(cm)\n", r"ascoped\(cm\) must be awaited where"),
        ("async def f():\n    await ascoped(a, b)\n", r"ascoped\(\) takes exactly one"),
        ("def f():\n    v = await_it(ascoped(cm))\n", r"ascoped\(cm\) must be awaited"),
    ],
)
def test_misuse_is_a_syntax_error_naming_the_line(src, message):
    source = "from godefer import adefer, ascoped\n" + src
    with pytest.raises(PrepareError, match=message) as info:
        prepare_source(source, "<misuse>")
    assert info.value.filename == "<misuse>"
    assert info.value.lineno >= 2


def test_scope_decorator_prepares_an_async_function_with_adefer():
    log = []

    @scope
    async def f():
        adefer(arec, log, "decorated")
        return 5

    assert drive(f()) == 5
    assert log == [("decorated", "None")]


def test_adefer_statements_are_open_coded_other_awaited_exits_stay_in_the_core():
    from godefer import _rt

    async def awaits():
        adefer(arec, [], "x")

    async def in_a_loop():
        for _ in range(2):
            adefer(arec, [], "x")

    async def enters():
        await ascoped(ACM([], "cm"))

    async def plain():
        defer(print)

    for f in (awaits, in_a_loop, enters, plain):
        assert _rt.is_prepared(f.__code__)
    # Slots awaited inline; what is left of an exit goes to the core as an AsyncExit.
    assert "__godefer_0__" in awaits.__code__.co_varnames
    assert "acomplete_slots" in awaits.__code__.co_names
    assert "__godefer_await__" in awaits.__code__.co_names
    for f in (in_a_loop, enters):  # the core keeps every call
        assert "acomplete" in f.__code__.co_names
        assert "__godefer_0__" not in f.__code__.co_varnames
    assert "complete_slots" in plain.__code__.co_names  # open-coded: no awaited exit


# --- more edges --------------------------------------------------------------------------------


def test_recover_in_an_awaited_call_lets_cancellation_through():
    log = []

    async def catcher():
        log.append(("recover", recover()))

    async def worker(started):
        adefer(catcher)
        started.set()
        await asyncio.sleep(30)

    async def main():
        started = asyncio.Event()
        task = asyncio.create_task(worker(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert log == [("recover", None)]


def test_aexit_that_raises_replaces_the_exception_in_flight():
    class Failing:
        async def __aenter__(self):
            return self

        async def __aexit__(self, et, ev, tb):
            await Suspend()
            raise OSError(f"exit saw {et.__name__}")

    async def f():
        await ascoped(Failing())
        raise KeyError("body")

    with pytest.raises(OSError, match="exit saw KeyError") as info:
        drive(f())
    assert isinstance(info.value.__context__, KeyError)


def test_async_generator_athrow_runs_the_awaited_exits():
    log = []

    async def agen():
        adefer(arec, log, "exit")
        yield 1
        yield 2

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        with pytest.raises(KeyError):
            await g.athrow(KeyError("thrown"))

    asyncio.run(main())
    assert log == [("exit", "KeyError('thrown')")]


def test_threads_each_running_a_loop_keep_their_exits_apart():
    import threading

    results: dict[int, list] = {}

    async def cleanup(log, k):
        await asyncio.sleep(0)
        log.append(("cleanup", k, repr(sys.exception())))

    async def worker(log, k):
        adefer(cleanup, log, k)
        await asyncio.sleep(0)
        if k % 2:
            raise KeyError(k)
        return k

    async def many(log):
        return await asyncio.gather(*(worker(log, k) for k in range(20)), return_exceptions=True)

    def thread_main(t):
        log = []
        outcome = asyncio.run(many(log))
        results[t] = [outcome, sorted(log)]

    threads = [threading.Thread(target=thread_main, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for outcome, log in results.values():
        assert [o if isinstance(o, int) else repr(o) for o in outcome] == [
            k if k % 2 == 0 else repr(KeyError(k)) for k in range(20)
        ]
        assert log == sorted(
            ("cleanup", k, repr(KeyError(k)) if k % 2 else "None") for k in range(20)
        )
    assert godefer._core._pending_frames() == 0


def test_a_coroutine_freed_while_an_awaited_exit_ignores_generator_exit_matches_try_finally():
    """close() while an awaited exit is suspended, an awaited call that suspends again (CPython:
    "coroutine ignored GeneratorExit"), then the coroutine freed: the calls run or are left
    exactly as the remaining `finally:` blocks written by hand are."""

    def run(make):
        log = []
        unraisable = []
        hook, sys.unraisablehook = (
            sys.unraisablehook,
            lambda u: unraisable.append(repr(u.exc_value)),
        )
        try:
            coro = make(log)
            coro.send(None)  # suspended in the first awaited exit
            try:
                coro.close()
                closed = "closed"
            except RuntimeError as e:
                closed = repr(e)
            del coro
            gc.collect()
        finally:
            sys.unraisablehook = hook
        return log, closed, unraisable

    def prepared(log):
        async def f():
            adefer(arec, log, "third")
            defer(log.append, "plain")
            adefer(arec, log, "second")
            adefer(arec, log, "first")

        return f()

    def by_hand(log):
        async def f():
            try:
                try:
                    try:
                        try:
                            pass
                        finally:
                            await arec(log, "first")
                    finally:
                        await arec(log, "second")
                finally:
                    log.append("plain")
            finally:
                await arec(log, "third")

        return f()

    got, want = run(prepared), run(by_hand)
    assert got == want
    assert got[1] == "RuntimeError('coroutine ignored GeneratorExit')"
    assert "plain" in got[0]
    assert godefer._core._pending_frames() == 0


def test_async_with_scope_is_a_block_scope_too():
    log = []

    class Lock:
        async def __aenter__(self):
            log.append("lock")

        async def __aexit__(self, *exc):
            log.append("unlock")

    async def awaiting():
        for i in range(2):
            async with scope():
                adefer(arec, log, ("awaited", i))
                log.append(("body", i))
        async with Lock(), scope():
            defer(log.append, "inside the lock")
        log.append("after")

    async def plain():
        async with scope():
            defer(log.append, "plain block")
        log.append("plain after")

    drive(awaiting())
    drive(plain())
    assert log == [
        ("body", 0),
        (("awaited", 0), "None"),
        ("body", 1),
        (("awaited", 1), "None"),
        "lock",
        "inside the lock",
        "unlock",
        "after",
        "plain block",
        "plain after",
    ]
