"""Generators, coroutines and async generators as scopes (DESIGN.md §2 "Scope", "When").

A generator's deferred calls run when it finishes, is closed, has an exception thrown out of it
or is garbage collected; never at ``yield`` (or ``await``).  Runtime path; key cases run again
from an ``exec`` string.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import types

import pytest

from godefer import defer, errdefer, okdefer
from runtime_path import raiser, run_src


@types.coroutine
def suspend():
    """Suspend the running coroutine once (a bare yield to whoever drives it)."""
    yield


# --- generators -----------------------------------------------------------------------


def test_generator_runs_at_exhaustion_not_at_yield():
    log = []

    def gen():
        defer(log.append, "deferred")
        log.append("start")
        yield 1
        log.append("resumed")
        yield 2
        log.append("end")
        return "ret"

    g = gen()
    assert log == []
    assert next(g) == 1
    assert log == ["start"]
    assert next(g) == 2
    assert log == ["start", "resumed"]
    with pytest.raises(StopIteration) as info:
        next(g)
    assert info.value.value == "ret"
    assert log == ["start", "resumed", "end", "deferred"]


def test_generator_consumed_by_a_for_loop():
    log = []

    def gen(n):
        for i in range(n):
            defer(log.append, ("deferred", i))
            yield i

    out = []
    for x in gen(3):
        out.append(x)
        log.append(("consumer", x))
    assert out == [0, 1, 2]
    assert log == [
        ("consumer", 0),
        ("consumer", 1),
        ("consumer", 2),
        ("deferred", 2),
        ("deferred", 1),
        ("deferred", 0),
    ]


def test_generator_close_runs_the_calls():
    log = []

    def gen():
        defer(log.append, "deferred")
        okdefer(log.append, "ok")
        errdefer(lambda: log.append(("err", type(sys.exception()))))
        yield 1
        log.append("not reached")

    g = gen()
    next(g)
    g.close()
    # close() raises GeneratorExit at the yield: an exception is in flight, as in a finally:
    assert log == [("err", GeneratorExit), "deferred"]
    g.close()
    assert log == [("err", GeneratorExit), "deferred"]


def test_generator_close_inside_try_block_runs_the_calls():
    log = []

    def gen():
        defer(log.append, "deferred")
        try:
            yield 1
        finally:
            log.append("finally")

    g = gen()
    next(g)
    g.close()
    assert log == ["finally", "deferred"]


def test_generator_never_started_schedules_nothing():
    log = []

    def gen():
        defer(log.append, "deferred")
        yield 1

    g = gen()
    g.close()
    assert log == []


def test_generator_throw_uncaught_runs_the_calls():
    log = []
    thrown = KeyError("thrown")

    def gen():
        defer(log.append, "deferred")
        errdefer(lambda: log.append(("err", sys.exception())))
        yield 1

    g = gen()
    next(g)
    with pytest.raises(KeyError) as info:
        g.throw(thrown)
    assert info.value is thrown
    assert log == [("err", thrown), "deferred"]


def test_generator_throw_caught_inside_is_not_an_exit():
    log = []

    def gen():
        defer(log.append, "deferred")
        try:
            yield 1
        except ValueError:
            log.append("caught")
        yield 2
        log.append("end")

    g = gen()
    next(g)
    assert g.throw(ValueError) == 2
    assert log == ["caught"]
    with pytest.raises(StopIteration):
        next(g)
    assert log == ["caught", "end", "deferred"]


def test_generator_deferred_exception_replaces_stop_iteration():
    dexc = KeyError("from defer")

    def gen():
        defer(raiser, dexc)
        yield 1

    g = gen()
    next(g)
    with pytest.raises(KeyError) as info:
        next(g)
    assert info.value is dexc


def test_generator_deferred_stop_iteration_becomes_runtime_error():
    def stop():
        raise StopIteration

    def gen():
        defer(stop)
        yield 1

    # PEP 479, exactly as a StopIteration raised in a finally: block of the generator
    with pytest.raises(RuntimeError, match="generator raised StopIteration") as info:
        list(gen())
    assert type(info.value.__cause__) is StopIteration


def test_generator_close_with_a_raising_deferred_call():
    def gen():
        defer(raiser, ZeroDivisionError("in cleanup"))
        yield 1

    g = gen()
    next(g)
    with pytest.raises(ZeroDivisionError) as info:
        g.close()
    assert type(info.value.__context__) is GeneratorExit


def test_generator_collected_by_refcount_runs_the_calls():
    log = []

    def gen():
        defer(log.append, "deferred")
        yield 1

    g = gen()
    next(g)
    log.append("before del")
    del g
    assert log == ["before del", "deferred"]


def test_generator_in_a_reference_cycle_runs_the_calls_when_collected():
    log = []

    def gen(box):
        defer(log.append, "deferred")
        yield box

    box = []
    g = gen(box)
    box.append(g)
    next(g)
    del g, box
    gc.collect()
    assert log == ["deferred"]


def test_generator_return_in_the_middle():
    log = []

    def gen(stop):
        defer(log.append, "deferred")
        yield 1
        if stop:
            return "early"
        yield 2

    assert list(gen(True)) == [1]
    assert log == ["deferred"]


def test_yield_from_subgenerator_has_its_own_scope():
    log = []

    def sub():
        defer(log.append, "sub deferred")
        yield "s1"
        yield "s2"
        return "sub result"

    def outer():
        defer(log.append, "outer deferred")
        r = yield from sub()
        log.append(("outer got", r))
        yield "o"

    g = outer()
    assert next(g) == "s1"
    assert next(g) == "s2"
    assert log == []
    assert next(g) == "o"
    assert log == ["sub deferred", ("outer got", "sub result")]
    g.close()
    assert log == ["sub deferred", ("outer got", "sub result"), "outer deferred"]


def test_closing_outer_generator_closes_delegated_subgenerator():
    log = []

    def sub():
        defer(log.append, "sub deferred")
        yield 1

    def outer():
        defer(log.append, "outer deferred")
        yield from sub()

    g = outer()
    next(g)
    g.close()
    assert log == ["sub deferred", "outer deferred"]


def test_generator_driver_and_generator_keep_separate_scopes():
    log = []

    def gen():
        defer(log.append, "gen deferred")
        yield 1
        yield 2

    def driver():
        defer(log.append, "driver deferred")
        g = gen()
        next(g)
        log.append("driver between")
        return g

    g = driver()
    assert log == ["driver between", "driver deferred"]
    assert list(g) == [2]
    assert log == ["driver between", "driver deferred", "gen deferred"]


def test_defer_inside_generator_after_resume_from_another_function():
    log = []

    def gen():
        defer(log.append, 1)
        yield
        defer(log.append, 2)
        yield

    g = gen()

    def step():
        defer(log.append, "step deferred")
        next(g)

    step()
    step()
    assert log == ["step deferred", "step deferred"]
    with pytest.raises(StopIteration):
        next(g)
    assert log == ["step deferred", "step deferred", 2, 1]


def test_generator_in_exec_source():
    ns = run_src(
        """
        from godefer import defer
        log = []

        def gen():
            defer(log.append, "deferred")
            yield 1
            yield 2

        g = gen()
        next(g)
        snapshot = list(log)
        g.close()
        exhausted = list(gen())
        """
    )
    assert ns["snapshot"] == []
    assert ns["exhausted"] == [1, 2]
    assert ns["log"] == ["deferred", "deferred"]


# --- coroutines --------------------------------------------------------------------------


def test_coroutine_runs_at_return_not_at_await():
    log = []

    async def co():
        defer(log.append, "deferred")
        log.append("a")
        await suspend()
        log.append("b")
        await suspend()
        return 5

    c = co()
    c.send(None)
    assert log == ["a"]
    c.send(None)
    assert log == ["a", "b"]
    with pytest.raises(StopIteration) as info:
        c.send(None)
    assert info.value.value == 5
    assert log == ["a", "b", "deferred"]


def test_coroutine_close_and_throw_run_the_calls():
    log = []

    async def co(tag):
        defer(log.append, ("deferred", tag))
        errdefer(lambda: log.append(("err", tag, type(sys.exception()))))
        await suspend()

    c = co("close")
    c.send(None)
    c.close()
    c = co("throw")
    c.send(None)
    with pytest.raises(ValueError):
        c.throw(ValueError("v"))
    assert log == [
        ("err", "close", GeneratorExit),
        ("deferred", "close"),
        ("err", "throw", ValueError),
        ("deferred", "throw"),
    ]


def test_suspended_coroutine_collected_by_refcount_runs_the_calls():
    log = []

    async def co():
        defer(log.append, "deferred")
        await suspend()

    c = co()
    c.send(None)
    del c
    assert log == ["deferred"]


def test_coroutine_under_asyncio():
    log = []

    async def work(x):
        defer(log.append, ("deferred", x))
        await asyncio.sleep(0)
        log.append(("after await", x))
        return x * 2

    async def main():
        defer(log.append, "main deferred")
        r = await work(21)
        log.append(("main got", r))
        return r

    assert asyncio.run(main()) == 42
    assert log == [("after await", 21), ("deferred", 21), ("main got", 42), "main deferred"]


def test_coroutine_exception_under_asyncio():
    log = []
    body = ValueError("body")

    async def work():
        errdefer(lambda: log.append(("err", sys.exception())))
        okdefer(log.append, "ok")
        await asyncio.sleep(0)
        raise body

    async def main():
        try:
            await work()
        except ValueError as e:
            return e

    assert asyncio.run(main()) is body
    assert log == [("err", body)]


def test_asyncio_cancellation_runs_the_calls():
    log = []

    async def worker(started):
        defer(log.append, "deferred")
        okdefer(log.append, "ok")
        errdefer(lambda: log.append(("err", type(sys.exception()).__name__)))
        started.set()
        await asyncio.sleep(30)
        log.append("not reached")

    async def main():
        started = asyncio.Event()
        task = asyncio.create_task(worker(started))
        await started.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(main()) is True
    assert log == [("err", "CancelledError"), "deferred"]


def test_asyncio_timeout_runs_the_calls():
    log = []

    async def slow():
        defer(log.append, "deferred")
        await asyncio.sleep(30)

    async def main():
        try:
            await asyncio.wait_for(slow(), 0.01)
        except TimeoutError:
            log.append("timeout")

    asyncio.run(main())
    assert log == ["deferred", "timeout"]


def test_interleaved_coroutines_keep_their_own_scopes():
    log = []

    async def task(name, n):
        defer(log.append, ("done", name))
        for i in range(n):
            log.append((name, i))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(task("a", 3), task("b", 1))

    asyncio.run(main())
    assert log == [("a", 0), ("b", 0), ("a", 1), ("done", "b"), ("a", 2), ("done", "a")]


def test_coroutine_in_exec_source():
    ns = run_src(
        """
        import asyncio
        from godefer import defer
        log = []

        async def work():
            defer(log.append, "deferred")
            await asyncio.sleep(0)
            log.append("after await")
            return 3

        r = asyncio.run(work())
        """
    )
    assert ns["r"] == 3
    assert ns["log"] == ["after await", "deferred"]


# --- async generators ---------------------------------------------------------------------


def test_async_generator_runs_at_exhaustion():
    log = []

    async def agen():
        defer(log.append, "deferred")
        yield 1
        log.append("resumed")
        yield 2

    async def main():
        out = []
        async for x in agen():
            out.append(x)
            log.append(("got", x))
        return out

    assert asyncio.run(main()) == [1, 2]
    assert log == [("got", 1), "resumed", ("got", 2), "deferred"]


def test_async_generator_runs_at_aclose_not_at_yield():
    log = []

    async def agen():
        defer(log.append, "deferred")
        errdefer(lambda: log.append(("err", type(sys.exception()))))
        yield 1
        await asyncio.sleep(0)
        yield 2

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        log.append("suspended")
        await g.aclose()
        log.append("closed")

    asyncio.run(main())
    assert log == ["suspended", ("err", GeneratorExit), "deferred", "closed"]


def test_async_generator_athrow_runs_the_calls():
    log = []

    async def agen():
        defer(log.append, "deferred")
        yield 1

    async def main():
        g = agen()
        await g.__anext__()
        with pytest.raises(KeyError):
            await g.athrow(KeyError("k"))
        log.append("after athrow")

    asyncio.run(main())
    assert log == ["deferred", "after athrow"]


def test_async_generator_left_suspended_is_finalized_by_asyncio_run():
    log = []

    async def agen():
        defer(log.append, "deferred")
        yield 1
        yield 2

    async def main():
        g = agen()
        await g.__anext__()
        log.append("main returns with the generator suspended")
        return g

    g = asyncio.run(main())
    # asyncio.run() shuts async generators down (aclose) before it returns
    assert log == ["main returns with the generator suspended", "deferred"]
    del g
