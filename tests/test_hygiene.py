"""Hygiene (DESIGN.md §2): once a call has run the library holds no reference to it or to its
arguments; once a scope has exited nothing in the library refers to its frame; an exception that
passes through deferred calls gains no reference cycle that try/finally would not have; a
registration never fires for another frame.

Most checks run WITHOUT ``gc.collect()``: reference counting alone must free everything right
after the scope exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import weakref

import pytest

from godefer import ScopeBound, defer, errdefer, okdefer, recover, scope, scoped
from runtime_path import raiser, run_src


class Obj:
    """Weak-referenceable, callable, with a method."""

    def __call__(self, *args, **kwargs):
        pass

    def method(self, *args, **kwargs):
        pass


def noop(*args, **kwargs):
    pass


@pytest.fixture
def no_gc():
    """Run the test with the cyclic collector off: only reference counting frees objects."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --- callables and arguments are released (reference counting only) --------------------


@pytest.mark.parametrize("kind", ["defer", "errdefer", "okdefer"])
@pytest.mark.parametrize("fail", [False, True], ids=["normal", "exception"])
def test_callable_and_arguments_released_at_scope_exit(no_gc, kind, fail):
    sched = {"defer": defer, "errdefer": errdefer, "okdefer": okdefer}[kind]
    refs = []

    def f():
        target, arg, kwarg = Obj(), Obj(), Obj()
        refs.extend(weakref.ref(o) for o in (target, arg, kwarg))
        sched(target.method, arg, k=kwarg)
        del target, arg, kwarg
        if fail:
            raise ValueError

    try:
        f()
    except ValueError:
        pass
    # whether the call ran or was skipped, nothing may be left
    assert [r() for r in refs] == [None, None, None]


def test_closure_objects_released_at_scope_exit(no_gc):
    refs = []

    def f():
        captured = Obj()
        refs.append(weakref.ref(captured))
        defer(lambda: captured.method())

        @defer
        def _():
            captured.method()

    f()
    assert refs[0]() is None


def test_frame_locals_released_at_scope_exit(no_gc):
    refs = []

    def f():
        unrelated_local = Obj()
        refs.append(weakref.ref(unrelated_local))
        defer(noop)
        return "r"

    assert f() == "r"
    assert refs[0]() is None


def test_frame_locals_released_after_exception_is_dropped(no_gc):
    refs = []

    def f():
        local = Obj()
        refs.append(weakref.ref(local))
        defer(noop, local)
        errdefer(noop, local)
        raise KeyError("k")

    try:
        f()
    except KeyError:
        pass
    assert refs[0]() is None


def test_refcounts_restored(no_gc):
    target = Obj()
    arg = Obj()
    kwarg = Obj()
    before = [sys.getrefcount(o) for o in (target, arg, kwarg)]

    def f(t, a, k, fail):
        defer(t, a, k=k)
        errdefer(t.method, a, k=k)
        okdefer(t.method, a, k=k)
        scoped(contextlib.nullcontext(a))
        if fail:
            raise ValueError

    for _ in range(5):
        f(target, arg, kwarg, False)
        try:
            f(target, arg, kwarg, True)
        except ValueError:
            pass
    after = [sys.getrefcount(o) for o in (target, arg, kwarg)]
    assert after == before


def test_refcounts_restored_after_block_scopes(no_gc):
    arg = Obj()
    snapshots = []

    def f():
        base = sys.getrefcount(arg)
        for _ in range(3):
            with scope():
                defer(noop, arg)
                errdefer(noop, arg)
                okdefer(noop, arg)
            snapshots.append(sys.getrefcount(arg) - base)
        with scope():
            defer(noop, arg)
            defer(lambda: recover())
            raise ValueError
        snapshots.append(sys.getrefcount(arg) - base)

    f()
    assert snapshots == [0, 0, 0, 0]


def test_block_scope_releases_its_calls_when_the_block_exits(no_gc):
    refs = []
    alive_after_block = []

    def f():
        with scope():
            a = Obj()
            refs.append(weakref.ref(a))
            defer(noop, a)
            defer(a.method)
            del a
        alive_after_block.append(refs[0]() is not None)
        return "function still running"

    assert f() == "function still running"
    assert alive_after_block == [False]


def test_generator_releases_at_close_and_exhaustion(no_gc):
    refs = []

    def gen():
        a = Obj()
        refs.append(weakref.ref(a))
        defer(a.method, a)
        yield 1
        yield 2

    g = gen()
    next(g)
    g.close()
    assert refs[0]() is None
    del g
    for _ in gen():
        pass
    assert refs[1]() is None
    g = gen()
    next(g)
    del g
    assert refs[2]() is None


def test_coroutine_releases_at_completion(no_gc):
    refs = []

    async def co():
        a = Obj()
        refs.append(weakref.ref(a))
        defer(a.method, a)
        await asyncio.sleep(0)

    asyncio.run(co())
    gc.collect()  # asyncio.run's loop itself may hold cycles; the check is about godefer
    assert refs[0]() is None


def test_scopebound_instance_released_after_scope(no_gc):
    refs = []

    class R(ScopeBound):
        def close(self):
            pass

    def f():
        r = R()
        refs.append(weakref.ref(r))

    f()
    assert refs[0]() is None


def test_scoped_context_manager_released_after_scope(no_gc):
    refs = []

    class CM:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def f(fail):
        cm = CM()
        refs.append(weakref.ref(cm))
        scoped(cm)
        del cm
        if fail:
            raise ValueError

    f(False)
    try:
        f(True)
    except ValueError:
        pass
    assert [r() for r in refs] == [None, None]


def test_released_when_code_comes_from_exec(no_gc):
    ns = run_src(
        """
        import weakref
        from godefer import defer

        class Obj:
            def method(self, *a):
                pass

        refs = []

        def f():
            a = Obj()
            refs.append(weakref.ref(a))
            defer(a.method, a)

        f()
        alive = refs[0]() is not None
        """
    )
    assert ns["alive"] is False


def test_no_reference_to_a_recovered_exception(no_gc):
    refs = []

    class Err(Exception):
        pass

    def make_err():
        e = Err()
        refs.append(weakref.ref(e))
        return e

    def f():
        with scope():
            defer(lambda: recover())
            raise make_err()  # no local name: a local would make a cycle through the frame

    f()
    assert refs[0]() is None


# --- exceptions gain no reference cycles ------------------------------------------------------


def count_cycles(fn, n=20):
    """Unreachable objects found by gc after ``n`` calls of ``fn`` with the collector off."""
    try:
        fn()
    except Exception:
        pass
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            try:
                fn()
            except Exception:
                pass
        return gc.collect()
    finally:
        gc.enable()


def with_defer_raise():
    defer(noop)
    errdefer(noop)
    okdefer(noop)
    raise ValueError("x")


def with_finally_raise():
    try:
        try:
            raise ValueError("x")
        finally:
            noop()
    finally:
        noop()


def with_defer_replace():
    defer(raiser, KeyError("d"))
    raise ValueError("x")


def with_finally_replace():
    try:
        raise ValueError("x")
    finally:
        raiser(KeyError("d"))


def with_defer_sys_exception():
    defer(lambda: sys.exception())
    raise ValueError("x")


def with_finally_sys_exception():
    try:
        raise ValueError("x")
    finally:
        sys.exception()


class ExitCM:
    def __enter__(self):
        return self

    def __exit__(self, typ, val, tb):
        return False


def with_scoped_raise():
    scoped(ExitCM())
    raise ValueError("x")


def with_with_raise():
    with ExitCM():
        raise ValueError("x")


def with_block_recover():
    with scope():
        defer(lambda: recover())
        raise ValueError("x")


def with_except_recover():
    try:
        raise ValueError("x")
    except Exception:
        pass


def with_block_raise():
    with scope():
        defer(noop)
        raise ValueError("x")


def with_scopebound_raise():
    _Closing()
    raise ValueError("x")


class _Closing(ScopeBound):
    def close(self):
        pass


def with_generator_close():
    def gen():
        defer(noop)
        yield 1

    g = gen()
    next(g)
    g.close()


def with_generator_close_finally():
    def gen():
        try:
            yield 1
        finally:
            noop()

    g = gen()
    next(g)
    g.close()


@pytest.mark.parametrize(
    ("godefer_fn", "oracle_fn"),
    [
        (with_defer_raise, with_finally_raise),
        (with_defer_replace, with_finally_replace),
        (with_defer_sys_exception, with_finally_sys_exception),
        (with_scoped_raise, with_with_raise),
        (with_block_recover, with_except_recover),
        (with_block_raise, with_finally_raise),
        (with_scopebound_raise, with_finally_raise),
        (with_generator_close, with_generator_close_finally),
    ],
    ids=["raise", "replace", "sys.exception", "scoped", "recover", "block", "scopebound", "gen"],
)
def test_no_more_cycles_than_try_finally(godefer_fn, oracle_fn):
    oracle = count_cycles(oracle_fn)
    got = count_cycles(godefer_fn)
    assert got <= oracle, f"godefer variant left {got} unreachable objects, try/finally {oracle}"


# --- a registration never fires for another frame ---------------------------------------------


def test_pending_generator_registration_does_not_fire_for_other_frames():
    log = []

    def gen():
        defer(log.append, "generator deferred")
        yield 1

    def other(i):
        defer(log.append, ("other", i))

    g = gen()
    next(g)
    for i in range(50):
        other(i)
    assert log == [("other", i) for i in range(50)]
    g.close()
    assert log[-1] == "generator deferred"
    assert log.count("generator deferred") == 1
    for i in range(50):
        other(i)
    assert log.count("generator deferred") == 1


def test_closed_generator_registration_does_not_fire_for_reused_frames():
    log = []

    def gen(tag):
        defer(log.append, ("gen", tag))
        yield 1

    def same_shape(tag):
        log.append(("plain", tag))

    for i in range(20):
        g = gen(i)
        next(g)
        g.close()
        del g
        same_shape(i)
    expected = []
    for i in range(20):
        expected += [("gen", i), ("plain", i)]
    assert log == expected


def test_repeated_calls_run_each_call_exactly_once():
    log = []

    def f(i):
        defer(log.append, i)
        if i % 2:
            raise ValueError(i)

    for i in range(100):
        try:
            f(i)
        except ValueError:
            pass
    assert log == list(range(100))


# On 3.12+ a runtime-path record of a frame its thread owns holds no frame object: the frame's
# exit hook always releases it (compat::exits_always_seen). These run on the runtime path.
RUNTIME_FRAMES = """
import sys
from godefer import defer

def attached_later(log, i):
    defer(log.append, ("deferred", i))
    log.append(sys._getframe().f_code.co_name)  # a frame object made after the record

def attached_before(log, i):
    frame = sys._getframe()
    defer(log.append, ("deferred", i))
    log.append(frame.f_code.co_name)

def no_defer(log, i):
    log.append(("plain", i))

def raising(log, i):
    defer(log.append, ("deferred", i))
    raise KeyError(i)

def outer(log, depth):
    defer(log.append, ("outer", depth))
    if depth:
        outer(log, depth - 1)
    else:
        raising(log, "inner")
"""


@pytest.mark.parametrize("name", ["attached_later", "attached_before"])
def test_a_runtime_record_runs_whether_or_not_its_frame_object_exists(name):
    ns = run_src(RUNTIME_FRAMES)
    log: list = []
    for i in range(3):
        ns[name](log, i)
        ns["no_defer"](log, i)  # the same frame memory, no record: nothing fires for it
    expected: list = []
    for i in range(3):
        expected += [name, ("deferred", i), ("plain", i)]
    assert log == expected


def test_runtime_records_of_reused_frame_memory_fire_once_each():
    ns = run_src(RUNTIME_FRAMES)
    log: list = []
    for i in range(20):
        with pytest.raises(KeyError):
            ns["raising"](log, i)
        ns["no_defer"](log, i)
    with pytest.raises(KeyError):
        ns["outer"](log, 3)
    expected: list = []
    for i in range(20):
        expected += [("deferred", i), ("plain", i)]
    expected += [("deferred", "inner"), *(("outer", d) for d in range(4))]
    assert log == expected
