"""`defer(*args)`: a statement whose callee comes from a starred argument owns a slot.

Preparation evaluates the call's parts where the statement stands; the core's split checks the
callee (the first item of `args`) and hands it back with the other positional arguments as a
tuple, which the slot calls `fn(*rest, **kwargs)` on exit; `x = defer(*args)` binds the callee
too, and so does a starred defer used inside another expression (`return defer(*args)`). The
core holds nothing unless it already holds entries of the frame (a ScopeBound made there), when
it takes this call too.
Each case runs prepared and on the runtime path (compiled from a string): both must leave the
same log and outcome.
"""

from __future__ import annotations

import textwrap
import traceback

import pytest

from godefer import _core, defer, recover, result, set_result
from runtime_path import run_src
from slot_log import log_outcome, open_coded, prepared_namespace

PRELUDE = """\
from godefer import defer, errdefer, okdefer, scope, ScopeBound
class Tracked(ScopeBound):
    def __init__(self, log, tag):
        self.log, self.tag = log, tag
    def close(self):
        self.log.append(self.tag)
"""

CASES = {
    "alone": """
        def f(log, fail):
            defer(*(log.append, "star"))
            if fail:
                raise KeyError("body")
            return 1
    """,
    "rest_and_keywords": """
        def f(log, fail):
            args = [lambda *a, **k: log.append((a, k)), 1]
            defer(*args, 2, key=3, **{"more": 4})
            args.append("late")
            if fail:
                raise KeyError("body")
    """,
    "kinds": """
        def f(log, fail):
            errdefer(*(log.append, "err"))
            okdefer(*(log.append, "ok"))
            defer(*(log.append, "always"))
            if fail:
                raise KeyError("body")
    """,
    "second_slot_order": """
        def f(log, fail):
            defer(log.append, "plain")
            defer(*(log.append, "star"))
            defer(log.append, "last")
            if fail:
                raise KeyError("body")
    """,
    "after_the_core_holds_entries": """
        def f(log, fail):
            defer(log.append, "before")
            Tracked(log, "tracked")
            defer(*(log.append, "star"))
            if fail:
                raise KeyError("body")
    """,
    "in_a_block": """
        def f(log, fail):
            with scope():
                defer(*(log.append, "in block"))
                if fail:
                    raise KeyError("body")
            log.append("after block")
    """,
    "raising_star_call": """
        def f(log, fail):
            defer(log.append, "outer")
            defer(*(log.pop, 99))
            if fail:
                raise KeyError("body")
    """,
    "not_callable": """
        def f(log, fail):
            defer(log.append, "before")
            defer(*(fail, "x"))
            log.append("unreached")
    """,
    "keywords_evaluated_before_the_check": """
        def f(log, fail):
            defer(*(fail,), key=log.append("keyword evaluated"))
            log.append("unreached")
    """,
    "assigned_first": """
        def f(log, fail):
            bound = defer(*(log.append, "star"))
            log.append(("bound", bound == log.append))
            if fail:
                raise KeyError("body")
    """,
    "assigned_with_rest_and_keywords": """
        def f(log, fail):
            log.append("first")
            got = defer(*[lambda *a, **k: log.append((a, k)), 1], 2, key=3)
            log.append(("got", got.__name__))
            if fail:
                raise KeyError("body")
    """,
    "assigned_after_the_core_holds_entries": """
        def f(log, fail):
            defer(log.append, "before")
            Tracked(log, "tracked")
            bound = defer(*(log.append, "star"))
            log.append(("bound", bound == log.append))
            if fail:
                raise KeyError("body")
    """,
    "assigned_not_callable": """
        def f(log, fail):
            defer(log.append, "before")
            bound = "unbound"
            try:
                bound = defer(*(fail, "x"))
            finally:
                log.append(("target", bound))
    """,
    "returned": """
        def f(log, fail):
            log.append("first")
            if fail:
                raise KeyError("body")
            return defer(*(log.append, "star")) == log.append
    """,
    "returned_with_rest_and_keywords": """
        def f(log, fail):
            log.append("first")
            return defer(*[lambda *a, **k: log.append((a, k)), 1], 2, key=3, **{"m": fail}).__name__
    """,
    "returned_from_a_block": """
        def f(log, fail):
            defer(log.append, "function")
            with scope():
                defer(log.append, "block")
                if not fail:
                    return defer(*(log.append, "star")).__name__
                log.append("after the block")
            return "fell"
    """,
    "returned_after_the_core_holds_entries": """
        def f(log, fail):
            Tracked(log, "tracked")
            if fail:
                raise KeyError("body")
            return defer(*(log.append, "star"), **{}).__name__
    """,
    "in_an_expression_after_the_core_holds_entries": """
        def f(log, fail):
            defer(log.append, "before")
            Tracked(log, "tracked")
            log.append(("got", errdefer(*(log.append, "star"), **{}) == log.append))
            if fail:
                raise KeyError("body")
    """,
    "in_an_expression_not_callable": """
        def f(log, fail):
            defer(log.append, "before")
            log.append(("unreached", okdefer(*(fail, "x"))))
    """,
    "in_an_expression_keyword_first": """
        def f(log, fail):
            okdefer(log.append, "before")
            log.append(defer(*(log.append,), key=log.append("keyword evaluated")) and "after")
            log.append("unreached")
    """,
    "nothing_to_call": """
        def f(log, fail):
            defer(log.append, "before")
            defer(*(() if fail else (log.append, "ok")))
    """,
}


def _prepared(src: str, tmp_path) -> dict:
    return prepared_namespace(PRELUDE + src, str(tmp_path / "starred.py"))


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_starred_callee_agrees_with_the_runtime_path(case, fail, tmp_path):
    src = textwrap.dedent(CASES[case])
    prepared = _prepared(src, tmp_path)["f"]
    assert any(n.startswith("slot_star_") for n in prepared.__code__.co_names)
    runtime = run_src(PRELUDE + src)["f"]
    assert not open_coded(runtime)
    assert log_outcome(prepared, fail) == log_outcome(runtime, fail)


def test_the_core_holds_nothing_for_a_starred_slot():
    log: list = []

    def f():
        defer(*(log.append, "star"), **{})
        log.append(_core._pending_frames())

    assert open_coded(f)
    f()
    assert log == [0, "star"]


def test_the_slot_keeps_the_arguments_of_the_statement():
    log: list = []

    def f():
        args = [log.append, "then"]
        defer(*args)
        args[1] = "now"
        log.append(args[1])

    f()
    assert log == ["now", "then"]


def test_a_non_callable_starred_callee_is_a_type_error_at_its_line():
    log: list = []

    def f(bad):
        defer(log.append, "before")
        defer(*(bad, 1))  # the line the TypeError names
        log.append("unreached")

    line = f.__code__.co_firstlineno + 2
    with pytest.raises(TypeError, match=r"defer\(\) needs a callable") as info:
        f(42)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "f" and frames[-1].lineno == line
    assert log == ["before"]


def test_recover_and_set_result_from_a_starred_slot():
    log: list = []

    def rescue(tag):
        log.append((tag, type(recover()).__name__))

    def f(fail):
        defer(*(rescue, "rescue"))
        defer(*(lambda: fail or set_result(result() * 7),))
        if fail:
            raise KeyError("body")
        return 6

    assert f(False) == 42
    assert f(True) is None
    assert log == [("rescue", "NoneType"), ("rescue", "KeyError")]


def test_a_starred_slot_in_a_closed_generator_runs():
    log: list = []

    def gen():
        defer(*(log.append, "closed"))
        yield 1
        yield 2

    g = gen()
    assert next(g) == 1
    g.close()
    assert log == ["closed"]


def test_a_starred_non_iterable_names_defer_in_cpythons_error():
    def f(x):
        defer(*x)

    with pytest.raises(TypeError, match=r"defer\(\) argument after \* must be an iterable") as info:
        f(5)
    assert "_prepared" not in str(info.value)


def test_an_assigned_starred_defer_has_a_slot_and_binds_the_callee():
    log: list = []

    def f():
        log.append("first")  # a call: the fill is not hoisted, and may go to the core
        bound = defer(*(log.append, "star"), **{})
        log.append((_core._pending_frames(), bound == log.append))

    assert open_coded(f)
    assert any(n.startswith("slot_star_") for n in f.__code__.co_names)
    f()
    assert log == ["first", (0, True), "star"]


def test_a_returned_starred_defer_has_a_slot_and_returns_the_callee():
    log: list = []

    def f():
        log.append("first")  # a call: nothing before the fill is hoisted
        return defer(*(log.append, "star"), **{})

    assert open_coded(f)
    assert any(n.startswith("slot_star_") for n in f.__code__.co_names)
    got = f()
    assert got == log.append
    assert log == ["first", "star"]
    log.clear()

    def g():
        log.append(_core._pending_frames())
        log.append((defer(*(log.append, "star")) == log.append, _core._pending_frames()))

    assert open_coded(g)
    g()
    assert log == [0, (True, 0), "star"]
