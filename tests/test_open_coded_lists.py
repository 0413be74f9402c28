"""Defers in statements that hold several, and defers pushed onto a list slot.

Preparation gives each defer of a function a slot in frame locals when it can: one per defer
outside loops, including each defer of a statement that holds several when the statement
evaluates its parts left to right (slots in the order the calls complete, a call after its
arguments); a loop's plain statements share the loop's list. Every other defer of the
function's own code (in a conditional expression or an assignment's targets, a defer used as an
expression in a loop or a while test, scoped() among several defers, `@defer` on a def in a
loop, the groups beyond the 16th) is pushed, as it runs, onto a list slot of its statement (or of
its outermost loop); a starred callee used as an expression goes to the core. Each case here is
prepared from source and run side by side with the same source on the runtime path (compiled
from a string, so not prepared): both must leave the same log and outcome.
"""

from __future__ import annotations

import textwrap
import traceback

import pytest

from godefer._prepare import COMPREHENSIONS_INLINED, MAX_OPEN_CODED
from runtime_path import run_src
from slot_log import log_outcome, open_coded, prepared_namespace

PRELUDE = """\
import contextlib
from godefer import defer, errdefer, okdefer, scoped, ScopeBound

class Tracked(ScopeBound):
    def __init__(self, log, tag):
        self.log, self.tag = log, tag
    def close(self):
        self.log.append(self.tag)

@contextlib.contextmanager
def cm(log, name):
    log.append(("enter", name))
    try:
        yield name
    finally:
        log.append(("exit", name))

class Closing:
    def __init__(self, log, name):
        self.log, self.name = log, name
    def close(self):
        self.log.append(("close", self.name))
"""

SLOTS, LIST = "slots", "list"
# A defer in a comprehension: pushed onto the statement's list from 3.12 (the comprehension runs
# in the function's frame); on 3.11 the function stays generic.
IN_COMPREHENSION = "comprehension"
CASES = {
    "several_in_one_statement": (
        SLOTS,
        """
        def f(log, fail):
            defer(log.append, "s0")
            pair = (defer(log.append, "p1"), errdefer(log.append, "p2"), okdefer(log.append, "p3"))
            log.append(len(pair))
            defer(log.append, "s4")
            if fail:
                raise KeyError("body")
            return "done"
    """,
    ),
    "nested_in_arguments": (
        SLOTS,
        """
        def f(log, fail):
            defer(log.append, defer(log.append, "inner") is not None)
            log.append("body")
            if fail:
                raise KeyError("body")
    """,
    ),
    "expression_in_loop": (
        LIST,
        """
        def f(log, fail):
            for i in range(3):
                got = defer(log.append, i)
                log.append(got is log.append)
            defer(log.append, "after")
            if fail:
                raise KeyError("body")
            return i
    """,
    ),
    "while_test": (
        LIST,
        """
        def f(log, fail):
            n = 0
            while defer(log.append, n) and n < 2:
                n += 1
            if fail:
                raise KeyError("body")
            return n
    """,
    ),
    "scoped_in_expression": (
        SLOTS,
        """
        def f(log, fail):
            name = scoped(cm(log, "a")).upper()
            log.append(name)
            closing = [scoped(Closing(log, "b"))][0]
            log.append(closing.name)
            made = cm(log, "c")
            log.append(scoped(made).upper())  # a name: evaluated in the branch taking it
            if fail:
                raise KeyError("body")
    """,
    ),
    "scoped_in_expression_after_a_core_entry": (
        SLOTS,
        """
        def f(log, fail):
            defer(log.append, "slot")
            Tracked(log, "core")
            made = cm(log, "c")
            log.append(scoped(made).upper())
            log.append(scoped(cm(log, "d")).upper())
            if fail:
                raise KeyError("body")
    """,
    ),
    "scoped_in_a_conditional": (
        LIST,
        """
        def f(log, fail):
            name = scoped(cm(log, "a")).upper() if defer(log.append, "d") else None
            log.append(name)
            if fail:
                raise KeyError("body")
    """,
    ),
    "scoped_expression_in_loop": (
        LIST,
        """
        def f(log, fail):
            for name in "xy":
                log.append(scoped(cm(log, name)) + "!")
            if fail:
                raise KeyError("body")
    """,
    ),
    "decorated_def_in_loop": (
        LIST,
        """
        def f(log, fail):
            for i in range(2):
                @defer
                def _(i=i):
                    log.append(("dec", i))
            log.append("body")
            if fail:
                raise KeyError("body")
    """,
    ),
    # Starred callees own slots too (test_open_coded_star.py).
    "starred_callee": (
        SLOTS,
        """
        def f(log, fail):
            defer(log.append, "slot")
            defer(*(log.append, "star"))
            okdefer(*(log.append,), **{})
            log.append("body")
            if fail:
                raise KeyError("body")
    """,
    ),
    "keywords_and_kinds": (
        SLOTS,
        """
        def f(log, fail):
            got = [
                defer(lambda *a, **k: log.append((a, k)), 1, key="d"),
                errdefer(lambda *a, **k: log.append((a, k)), 2, key="e"),
                okdefer(lambda *a, **k: log.append((a, k)), 3, **{"key": "o"}),
            ]
            log.append(len(got))
            if fail:
                raise KeyError("body")
    """,
    ),
    "core_joins_the_slots": (
        SLOTS,
        """
        def f(log, fail):
            pair = (defer(log.append, "p0"), defer(log.append, "p1"))
            Tracked(log, "core")
            later = (defer(log.append, "p2"), defer(log.append, "p3"))
            if fail:
                raise KeyError("body")
            return len(pair) + len(later)
    """,
    ),
    "returned_pair": (
        SLOTS,
        """
        def f(log, fail):
            if fail:
                raise KeyError("body")
            return (defer(log.append, "r0"), defer(log.append, "r1"))[0] is log.append
    """,
    ),
    "slot_raising": (
        SLOTS,
        """
        def f(log, fail):
            def boom():
                log.append("boom")
                raise ValueError("deferred")
            defer(log.append, "s0")
            pair = (defer(boom), defer(log.append, "p1"))
            if fail:
                raise KeyError("body")
    """,
    ),
    "beyond_the_limit": (
        LIST,
        "\n".join(
            ["def f(log, fail):"]
            + [f"    defer(log.append, {i})" for i in range(MAX_OPEN_CODED - 2)]
            + ["    for i in range(2):", "        defer(log.append, ('loop', i))"]
            + [f"    x{i} = defer(log.append, 'x{i}')" for i in range(3)]
            + ["    scoped(cm(log, 'tail'))", "    if fail:", "        raise KeyError('body')"]
        ),
    ),
    "conditional_pair_core_joins": (
        LIST,
        """
        def f(log, fail):
            pair = (defer(log.append, "p0"), defer(log.append, "p1")) if log is not None else 0
            Tracked(log, "core")
            later = 0 if log is None else (defer(log.append, "p2"), defer(log.append, "p3"))
            if fail:
                raise KeyError("body")
            return len(pair) + len(later)
    """,
    ),
    "conditional_pair_raising": (
        LIST,
        """
        def f(log, fail):
            def boom():
                log.append("boom")
                raise ValueError("deferred")
            defer(log.append, "s0")
            pair = (defer(boom), defer(log.append, "p1")) if log is not None else None
            if fail:
                raise KeyError("body")
    """,
    ),
    "targets_after_the_value": (
        LIST,
        """
        def f(log, fail):
            slots = {}
            slots[defer(log.append, "target")] = defer(log.append, "value")
            if fail:
                raise KeyError("body")
            return len(slots)
    """,
    ),
    # A ScopeBound made while a defer's parts are evaluated is scheduled before that defer: the
    # state is tested after the parts, so the defer goes to the core behind it.
    "bound_made_in_the_callee": (
        SLOTS,
        """
        def f(log, fail):
            defer(log.append, "first")
            defer(Tracked(log, "t").close)
            x = defer(Tracked(log, "u").close)
            scoped(Closing(Tracked(log, "v"), "w"))
            if fail:
                raise KeyError("body")
    """,
    ),
    "bound_made_in_a_loop": (
        LIST,
        """
        def f(log, fail):
            for i in range(2):
                defer(Tracked(log, ("t", i)).close)
                scoped(Closing(Tracked(log, ("u", i)), "v"))
                x = (defer(Tracked(log, ("w", i)).close), 0)
            if fail:
                raise KeyError("body")
    """,
    ),
    "comprehensions": (
        IN_COMPREHENSION,
        """
        def f(log, fail):
            defer(log.append, "first")
            vals = [scoped(cm(log, i)) for i in range(2) if defer(log.append, ("if", i))]
            got = {i: defer(log.append, ("d", i)) for i in range(2)}
            both = {errdefer(log.append, ("e", i)) for i in range(2)}
            log.append(("body", vals, len(got), len(both)))
            if fail:
                raise KeyError("body")
            return [len(v) for v in ([1], [2, 3])]
    """,
    ),
    "comprehension_in_a_loop": (
        IN_COMPREHENSION,
        """
        def f(log, fail):
            for j in range(2):
                pair = [defer(log.append, (j, i)) for i in range(2)]
                defer(log.append, ("loop", j))
            if fail:
                raise KeyError("body")
    """,
    ),
    "argument_after_a_call_inside": (
        SLOTS,
        """
        def f(log, fail):
            log.append(callable(defer(log.append, ("outer", defer(log.append, "in") is not None))))
            if fail:
                raise KeyError("body")
    """,
    ),
}


def _prepared(src: str, tmp_path) -> dict:
    return prepared_namespace(PRELUDE + src, str(tmp_path / "listed.py"))


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_several_and_pushed_defers_agree_with_the_runtime_path(case, fail, tmp_path):
    form, src = CASES[case]
    src = textwrap.dedent(src)
    prepared = _prepared(src, tmp_path)["f"]
    in_comprehension = form == IN_COMPREHENSION
    assert open_coded(prepared) == (COMPREHENSIONS_INLINED or not in_comprehension)
    names = prepared.__code__.co_names
    listed = any(n in names for n in ("list_new", "list_first_call", "list_scoped"))
    assert listed == (form == LIST or (in_comprehension and COMPREHENSIONS_INLINED))
    runtime = run_src(PRELUDE + src)["f"]
    assert not open_coded(runtime)
    assert log_outcome(prepared, fail) == log_outcome(runtime, fail)


def test_the_value_of_a_pushed_defer_is_its_callee(tmp_path):
    ns = _prepared(
        """
def f(log):
    out = []
    for fn in (log.append, print):
        out.append(defer(fn, "x") if fn is not print else errdefer(fn))
    return out
""",
        tmp_path,
    )
    log: list = []
    assert ns["f"](log) == [log.append, print]
    assert log == ["x"]


def test_a_non_callable_pushed_defer_is_a_type_error_at_its_line(tmp_path):
    ns = _prepared(
        """
def f(log, bad):
    defer(log.append, "before")
    pair = (defer(log.append, "first"), defer(bad))
    log.append("not reached")
""",
        tmp_path,
    )
    log: list = []
    with pytest.raises(TypeError, match="callable") as info:
        ns["f"](log, 42)
    frames = traceback.extract_tb(info.value.__traceback__)
    line = PRELUDE.count("\n") + 4
    assert any(fr.name == "f" and fr.lineno == line for fr in frames)
    # What was scheduled before the bad call still runs, last first.
    assert log == ["first", "before"]


@pytest.mark.parametrize("where", ["statement", "loop"])
def test_a_starred_callee_with_nothing_to_call_is_a_type_error(where, tmp_path):
    body = "defer(*())" if where == "statement" else "for _ in (1,):\n        x = defer(*())"
    ns = _prepared(f"def f(log):\n    defer(log.append, 1)\n    {body}\n", tmp_path)
    log: list = []
    with pytest.raises(TypeError, match="needs the function to schedule"):
        ns["f"](log)
    assert log == [1]


def test_recover_and_set_result_from_a_pushed_defer(tmp_path):
    ns = _prepared(
        """
from godefer import recover, result, set_result

def f(log, fail):
    pair = (
        defer(lambda: log.append(("recovered", type(recover()).__name__))),
        defer(lambda: fail or set_result(result() * 7)),
    )
    if fail:
        raise KeyError("body")
    return 6
""",
        tmp_path,
    )
    log: list = []
    assert ns["f"](log, False) == 42
    assert log == [("recovered", "NoneType")]
    log.clear()
    assert ns["f"](log, True) is None
    assert log == [("recovered", "KeyError")]


def test_pushed_defers_in_a_generator_run_when_it_is_closed(tmp_path):
    ns = _prepared(
        """
def gen(log):
    note = log.append
    for i in range(3):
        log.append(defer(note, ("exit", i)) is note)
        yield i
""",
        tmp_path,
    )
    log: list = []
    g = ns["gen"](log)
    assert next(g) == 0 and next(g) == 1
    g.close()
    assert log == [True, True, ("exit", 1), ("exit", 0)]


def test_a_use_in_a_comprehension_iterable_keeps_the_function_generic_and_correct(tmp_path):
    # No assignment expression may stand in a comprehension's iterable: the core keeps it.
    src = (
        "def f(log, fail):\n    defer(log.append, 'first')\n"
        "    [x for x in (defer(log.append, 'it') and range(2))]\n    log.append('body')\n"
    )
    prepared = _prepared(src, tmp_path)["f"]
    assert not open_coded(prepared)
    log: list = []
    prepared(log, False)
    assert log == ["body", "it", "first"]


def test_a_list_slot_allocates_nothing_until_its_first_push(tmp_path):
    ns = _prepared(
        """
import sys

def f(log, push):
    if push:
        pair = (defer(log.append, 1), defer(log.append, 2)) if log is not None else None
    held = dict(sys._getframe().f_locals)
    return sorted(type(v).__name__ for k, v in held.items() if k.startswith("__godefer_") and v)
""",
        tmp_path,
    )
    assert ns["f"]([], False) == []
    log: list = []
    assert ns["f"](log, True) == ["DeferList"]
    assert log == [2, 1]
