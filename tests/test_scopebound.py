"""``ScopeBound``: objects closed by the scope of the code block that called the class.

DESIGN.md §1: after construction completes, ``close()`` is scheduled in the caller's scope; an
``__init__`` that raises schedules nothing; ``close()`` runs exactly once per instance (also under
a cooperative ``super().close()`` diamond); ``release()`` takes the instance out of its scope.
"""

from __future__ import annotations

import copy
import gc
import io
import os
import sys
import threading
import traceback
import weakref

import pytest

import godefer
from godefer import ScopeBound, defer, scope, scoped
from runtime_path import here, run_src

GODEFER_DIR = os.path.dirname(os.path.abspath(godefer.__file__))


LOG: list = []


class Res(ScopeBound):
    """Does not call super().__init__()."""

    def __init__(self, name, fail=False):
        self.name = name
        LOG.append(("init", name))
        if fail:
            raise ValueError(name)

    def close(self):
        LOG.append(("close", self.name))


@pytest.fixture(autouse=True)
def _clear_log():
    LOG.clear()
    yield
    LOG.clear()


# --- scheduling --------------------------------------------------------------------------


def test_closed_at_the_end_of_the_creating_function_in_reverse_order():
    def f():
        a = Res("a")
        b = Res("b")
        LOG.append("body")
        return a, b

    a, b = f()
    assert isinstance(a, Res)
    assert b.name == "b"
    assert LOG == [("init", "a"), ("init", "b"), "body", ("close", "b"), ("close", "a")]


def test_closed_when_an_exception_leaves():
    def f():
        Res("a")
        raise KeyError("k")

    with pytest.raises(KeyError):
        f()
    assert LOG == [("init", "a"), ("close", "a")]


def test_init_raising_schedules_nothing():
    def f():
        Res("ok")
        Res("bad", fail=True)

    with pytest.raises(ValueError, match="bad"):
        f()
    assert LOG == [("init", "ok"), ("init", "bad"), ("close", "ok")]


def test_init_raising_and_caught_schedules_nothing():
    def f():
        try:
            Res("bad", fail=True)
        except ValueError:
            LOG.append("caught")
        return "r"

    assert f() == "r"
    assert LOG == [("init", "bad"), "caught"]


def test_scope_is_the_code_block_that_called_the_class():
    def make(name):
        return Res(name)

    def f():
        r = make("made by helper")
        LOG.append(("closed already", r.name))

    f()
    # make() called the class, so make's scope closed it when make returned
    assert LOG == [
        ("init", "made by helper"),
        ("close", "made by helper"),
        ("closed already", "made by helper"),
    ]


def test_works_with_super_init_and_init_arguments():
    class WithSuper(ScopeBound):
        def __init__(self, a, *, b):
            super().__init__()
            self.value = (a, b)

        def close(self):
            LOG.append(("close", self.value))

    def f():
        return WithSuper(1, b=2).value

    assert f() == (1, 2)
    assert LOG == [("close", (1, 2))]


def test_without_init_at_all():
    class Plain(ScopeBound):
        def close(self):
            LOG.append("close")

    def f():
        Plain()
        LOG.append("body")

    f()
    assert LOG == ["body", "close"]


def test_shares_the_stack_with_defer():
    def f():
        defer(LOG.append, "defer 1")
        Res("r")
        defer(LOG.append, "defer 2")

    f()
    assert LOG == [("init", "r"), "defer 2", ("close", "r"), "defer 1"]


def test_in_a_block_scope():
    def f():
        for i in range(2):
            with scope():
                Res(i)
                LOG.append(("body", i))
        LOG.append("after")

    f()
    assert LOG == [
        ("init", 0),
        ("body", 0),
        ("close", 0),
        ("init", 1),
        ("body", 1),
        ("close", 1),
        "after",
    ]


def test_in_a_comprehension_belongs_to_the_function():
    def f():
        rs = [Res(i) for i in range(2)]
        LOG.append(("made", len(rs)))

    f()
    assert LOG == [("init", 0), ("init", 1), ("made", 2), ("close", 1), ("close", 0)]


def test_in_a_generator():
    def gen():
        Res("g")
        yield 1
        yield 2

    g = gen()
    next(g)
    assert LOG == [("init", "g")]
    g.close()
    assert LOG == [("init", "g"), ("close", "g")]


def test_close_raising_propagates_from_the_scope():
    class Bad(ScopeBound):
        def close(self):
            raise OSError("close failed")

    def f():
        Bad()
        return "lost"

    with pytest.raises(OSError, match="close failed"):
        f()


# --- close exactly once --------------------------------------------------------------------


def test_explicit_early_close_runs_once():
    def f():
        r = Res("r")
        r.close()
        LOG.append("after explicit close")
        r.close()
        LOG.append("after second close")

    f()
    assert LOG == [("init", "r"), ("close", "r"), "after explicit close", "after second close"]


def test_close_after_the_scope_closed_it_does_nothing():
    def f():
        return Res("r")

    r = f()
    r.close()
    assert LOG == [("init", "r"), ("close", "r")]


def test_diamond_cooperative_close_runs_in_full_once():
    class Base(ScopeBound):
        def close(self):
            LOG.append("Base")

    class Left(Base):
        def close(self):
            LOG.append("Left")
            super().close()

    class Right(Base):
        def close(self):
            LOG.append("Right")
            super().close()

    class Diamond(Left, Right):
        def close(self):
            LOG.append("Diamond")
            super().close()

    def f():
        d = Diamond()
        LOG.append("body")
        return d

    d = f()
    assert LOG == ["body", "Diamond", "Left", "Right", "Base"]
    d.close()
    assert LOG == ["body", "Diamond", "Left", "Right", "Base"]


def test_diamond_explicit_close_then_scope():
    class Base(ScopeBound):
        def close(self):
            LOG.append("Base")

    class Left(Base):
        def close(self):
            LOG.append("Left")
            super().close()

    class Right(Base):
        def close(self):
            LOG.append("Right")
            super().close()

    class Diamond(Left, Right):
        pass

    def f():
        d = Diamond()
        d.close()
        LOG.append("explicitly closed")

    f()
    assert LOG == ["Left", "Right", "Base", "explicitly closed"]


def test_subclass_of_a_subclass_overriding_close():
    class Child(Res):
        def close(self):
            LOG.append(("child close", self.name))
            super().close()

    def f():
        Child("c")

    f()
    assert LOG == [("init", "c"), ("child close", "c"), ("close", "c")]


# --- release ---------------------------------------------------------------------------


def test_release_returns_the_instance_and_it_is_not_closed():
    got = []

    def f():
        r = Res("r")
        got.append(r.release() is r)
        return r

    r = f()
    assert got == [True]
    assert LOG == [("init", "r")]
    r.close()
    r.close()
    assert LOG == [("init", "r"), ("close", "r")]


def test_released_instance_can_be_adopted_with_scoped():
    def make():
        return Res("moved").release()

    def owner():
        r = scoped(make())
        LOG.append(("owner has", r.name))

    owner()
    assert LOG == [("init", "moved"), ("owner has", "moved"), ("close", "moved")]


def test_release_drops_the_scopes_reference():
    refs = []
    alive_inside = []

    def f():
        r = Res("r")
        refs.append(weakref.ref(r))
        r.release()
        del r
        gc.collect()
        alive_inside.append(refs[0]() is not None)
        LOG.append("end of f")

    f()
    assert alive_inside == [False]
    assert LOG == [("init", "r"), "end of f"]


def test_release_only_affects_that_instance():
    def f():
        a = Res("a")
        Res("b").release()
        Res("c")
        return a

    f()
    assert LOG == [("init", "a"), ("init", "b"), ("init", "c"), ("close", "c"), ("close", "a")]


# --- subclasses without close() --------------------------------------------------------


def test_subclass_without_close_is_a_type_error_at_construction():
    class NoClose(ScopeBound):
        def __init__(self):
            LOG.append("init")

    lines = []

    def f():
        defer(LOG.append, "earlier call")
        lines.append(here() + 1)
        NoClose()

    with pytest.raises(TypeError) as info:
        f()
    assert "close" in str(info.value)
    assert LOG[-1] == "earlier call"
    frames = [fr for fr in traceback.extract_tb(info.value.__traceback__) if fr.name == "f"]
    assert [fr.lineno for fr in frames] == lines


def test_subclass_without_close_caught_then_scope_exits_cleanly():
    class NoClose(ScopeBound):
        pass

    def f():
        try:
            NoClose()
        except TypeError:
            LOG.append("caught")
        return "r"

    assert f() == "r"
    assert LOG == ["caught"]


# --- mixins ----------------------------------------------------------------------------


def test_mixin_base_provides_close():
    made = []

    class F(ScopeBound, io.BytesIO):
        pass

    def f():
        buf = F(b"data")
        made.append(buf)
        return buf.read(), buf.closed

    assert f() == (b"data", False)
    assert made[0].closed is True


def test_python_mixin_provides_close():
    class Closing:
        def close(self):
            LOG.append(("mixin close", type(self).__name__))

    class M(ScopeBound, Closing):
        pass

    def f():
        M()

    f()
    assert LOG == [("mixin close", "M")]


def test_class_body_scope():
    class Holder:
        r = Res("class attr")
        LOG.append("class body end")

    assert LOG == [("init", "class attr"), "class body end", ("close", "class attr")]
    assert Holder.r.name == "class attr"


def test_scopebound_in_exec_source():
    ns = run_src(
        """
        from godefer import ScopeBound
        log = []

        class R(ScopeBound):
            def __init__(self, name):
                self.name = name

            def close(self):
                log.append(("close", self.name))

        def f():
            a = R("a")
            R("b")
            a.close()
            c = R("c").release()
            log.append("body")
            return c

        c = f()
        log.append("after f")
        """
    )
    # a released instance is adopted by nobody: "c" is never closed
    assert ns["log"] == [("close", "a"), "body", ("close", "b"), "after f"]
    assert ns["c"].name == "c"


def test_copy_of_an_instance_released_leaves_the_original_in_its_scope():
    def f():
        original = Res("original")
        duplicate = copy.copy(original)
        duplicate.name = "copy"
        duplicate.release()
        LOG.append("body")

    f()
    # releasing the copy must not take the original out of its scope
    assert LOG == [("init", "original"), "body", ("close", "original")]


def test_close_runs_once_when_two_threads_race():
    """Thread A is paused at each successive line of godefer's own Python code inside close()
    (if any) while thread B calls close() on the same instance: the body runs once."""
    runs = []

    class Racy(ScopeBound):
        def close(self):
            runs.append(self)

    def make():
        return Racy().release()

    counts = {}
    for pause_at in range(1, 15):
        obj = make()
        b_go = threading.Event()
        b_done = threading.Event()

        def thread_a(obj=obj, pause_at=pause_at, b_go=b_go, b_done=b_done):
            count = 0

            def local(frame, event, arg):
                nonlocal count
                if event == "line":
                    count += 1
                    if count == pause_at:
                        b_go.set()
                        b_done.wait(1.0)  # a lock-based guard may keep B waiting on A: go on
                return local

            def global_tracer(frame, event, arg):
                if os.path.abspath(frame.f_code.co_filename).startswith(GODEFER_DIR):
                    return local
                return None

            sys.settrace(global_tracer)
            try:
                obj.close()
            finally:
                sys.settrace(None)
                b_go.set()

        def thread_b(obj=obj, b_go=b_go, b_done=b_done):
            b_go.wait(30)
            obj.close()
            b_done.set()

        ta = threading.Thread(target=thread_a)
        tb = threading.Thread(target=thread_b)
        ta.start()
        tb.start()
        ta.join(30)
        tb.join(30)
        counts[pause_at] = runs.count(obj)
    # pause point -> number of times the close body ran: every value must be 1
    assert counts == dict.fromkeys(range(1, 15), 1)
