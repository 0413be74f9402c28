"""Defers in loops of open-coded functions: one list slot per outermost loop.

This module is prepared by godefer's pytest plugin. Each subject keeps its loop's deferred calls
in a ``DeferList`` local (checked by ``list_slot``), run last first on return and given to the
core on an exception. The rules are the ones every defer has (DESIGN.md section 2); these tests
pin what the list slot could get wrong: order against the slots around the loop, entries of
every shape, a raising entry, kinds, the TypeError at the defer line, and mixing with entries the
core holds.
"""

from __future__ import annotations

import traceback

import pytest

from godefer import defer, errdefer, okdefer, recover, result, scoped, set_result
from slot_log import (
    LOG,
    Tracked,
    list_slot,
    note,
    slot_log,  # noqa: F401  (the fixture pytestmark names)
)

pytestmark = pytest.mark.usefixtures("slot_log")


def around_two_loops(n):
    defer(LOG.append, "before")
    for i in range(n):
        defer(LOG.append, ("a", i))
        for j in range(2):
            defer(LOG.append, ("b", i, j))
    defer(LOG.append, "between")
    k = 0
    while k < n:
        defer(LOG.append, ("c", k))
        k += 1
    return n


def test_loop_entries_run_last_first_between_the_slots_around_them():
    assert list_slot(around_two_loops)
    assert around_two_loops(2) == 2
    assert LOG == [
        ("c", 1),
        ("c", 0),
        "between",
        ("b", 1, 1),
        ("b", 1, 0),
        ("a", 1),
        ("b", 0, 1),
        ("b", 0, 0),
        ("a", 0),
        "before",
    ]


def test_a_loop_that_defers_nothing_allocates_no_list():
    assert around_two_loops(0) == 0
    assert LOG == ["between", "before"]


def every_shape(items):
    for x in items:
        defer(LOG.append, x)
        defer(lambda *a, **k: LOG.append((a, k)), *items, key=x)
        defer(lambda **k: LOG.append(k), **{"kw": x})
        LOG.append(x) in defer
    return len(items)


def test_arguments_of_every_shape_are_taken_at_the_defer():
    assert list_slot(every_shape)
    items = [1, 2]
    assert every_shape(items) == 2
    items.append(3)  # the starred arguments were evaluated at the defer
    second = [2, {"kw": 2}, ((1, 2), {"key": 2}), 2]
    first = [1, {"kw": 1}, ((1, 2), {"key": 1}), 1]
    assert second + first == LOG


def kinds_in_a_loop(fail):
    for i in range(2):
        errdefer(LOG.append, ("err", i))
        okdefer(LOG.append, ("ok", i))
    if fail:
        raise ValueError
    return "done"


def test_errdefer_and_okdefer_in_a_loop():
    assert kinds_in_a_loop(False) == "done"
    assert LOG == [("ok", 1), ("ok", 0)]
    LOG.clear()
    with pytest.raises(ValueError):
        kinds_in_a_loop(True)
    assert LOG == [("err", 1), ("err", 0)]


def boom():
    raise KeyError("entry")


def raising_entry():
    defer(LOG.append, "slot below")
    for i in range(3):
        defer(boom if i == 1 else note(i))
    return 1


def test_an_entry_raising_on_return_lets_the_rest_run_and_propagates():
    assert list_slot(raising_entry)
    with pytest.raises(KeyError):
        raising_entry()
    assert LOG == [2, 0, "slot below"]


def recovering_loop():
    for i in range(2):
        defer(note(i))
    defer(lambda: LOG.append(recover()))
    raise ValueError("body")


def test_recover_and_order_on_an_exception_through_the_core():
    assert recovering_loop() is None
    assert isinstance(LOG[0], ValueError)
    assert LOG[1:] == [1, 0]


def result_from_loop_entries():
    for _ in range(3):
        defer(lambda: set_result(result() + 1))
    return 10


def test_result_and_set_result_from_loop_entries_on_return():
    assert result_from_loop_entries() == 13


def not_callable_in_loop(values):
    for v in values:
        defer(v)  # L:defer-line
    return "unreachable"


def test_a_non_callable_in_a_loop_is_a_type_error_at_the_defer_line():
    with pytest.raises(TypeError, match="needs a callable") as info:
        not_callable_in_loop([note("ran"), 5, note("never")])
    line = not_callable_in_loop.__code__.co_firstlineno + 2
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(f.name == "not_callable_in_loop" and f.lineno == line for f in frames)
    assert LOG == ["ran"]  # what was scheduled before still ran; nothing after


def loop_and_core_entries():
    for i in range(2):
        defer(note(("loop", i)))
    Tracked("core")  # the core holds an entry of this frame from now on
    for i in range(2):
        defer(note(("after", i)))
    return 5


def test_loop_entries_and_core_entries_keep_one_order():
    assert loop_and_core_entries() == 5
    assert LOG == [("after", 1), ("after", 0), "core", ("loop", 1), ("loop", 0)]


def generator_with_loop(n):
    for i in range(n):
        defer(note(i))
        yield i


def test_a_generator_closed_early_runs_its_loop_entries():
    assert list_slot(generator_with_loop)
    gen = generator_with_loop(5)
    assert next(gen) == 0 and next(gen) == 1
    gen.close()
    assert LOG == [1, 0]


# --- scoped() in a loop --------------------------------------------------------------------------


class Managed:
    def __init__(self, tag, suppress=False):
        self.tag, self.suppress = tag, suppress

    def __enter__(self):
        LOG.append(("enter", self.tag))
        return f"value {self.tag}"

    def __exit__(self, exc_type, exc, tb):
        LOG.append(("exit", self.tag, exc_type.__name__ if exc_type else None))
        return self.suppress


class Closable:
    def __init__(self, tag):
        self.tag = tag

    def close(self):
        LOG.append(("close", self.tag))


def scoped_in_a_loop(n, fail=False, suppress_at=None):
    values = []
    defer(note("before the loop"))
    for i in range(n):
        value = scoped(Managed(i, suppress=i == suppress_at))
        values.append(value)
        scoped(Closable(i))
    if fail:
        raise ValueError("body")
    return values


def test_scoped_in_a_loop_keeps_its_exits_in_the_loops_list():
    assert list_slot(scoped_in_a_loop)
    assert scoped_in_a_loop(2) == ["value 0", "value 1"]
    assert LOG == [
        ("enter", 0),
        ("enter", 1),
        ("close", 1),
        ("exit", 1, None),
        ("close", 0),
        ("exit", 0, None),
        "before the loop",
    ]


def test_scoped_in_a_loop_exits_with_the_exception_and_may_suppress_it():
    with pytest.raises(ValueError):
        scoped_in_a_loop(2, fail=True)
    assert LOG[-5:] == [
        ("close", 1),
        ("exit", 1, "ValueError"),
        ("close", 0),
        ("exit", 0, "ValueError"),
        "before the loop",
    ]
    LOG.clear()
    assert scoped_in_a_loop(2, fail=True, suppress_at=1) is None  # stopped, as `with` would
    assert LOG[2:] == [
        ("close", 1),
        ("exit", 1, "ValueError"),
        ("close", 0),
        ("exit", 0, None),
        "before the loop",
    ]


def scoped_in_a_loop_after_core_entry():
    Tracked("core")
    for i in range(2):
        scoped(Closable(i))


def test_scoped_in_a_loop_after_a_core_entry_joins_the_core():
    scoped_in_a_loop_after_core_entry()
    assert LOG == [("close", 1), ("close", 0), "core"]


def mixed_entries_one_raising():
    def boom():
        LOG.append("boom")
        raise ValueError("entry")

    for i in range(5):
        if i == 0:
            defer(note(0))  # plain: called by the frame's bytecode
        elif i == 1:
            defer(LOG.append, ("args", 1))  # with arguments: called by the drain
        elif i == 2:
            defer(boom)
        elif i == 3:
            okdefer(LOG.append, ("ok", 3))
        else:
            errdefer(LOG.append, ("err", 4))  # returning: dropped
            defer(note(4))
    return "done"


def test_a_raising_entry_hands_the_rest_of_the_list_to_the_core():
    assert list_slot(mixed_entries_one_raising)
    with pytest.raises(ValueError, match="entry"):
        mixed_entries_one_raising()
    assert LOG == [4, ("ok", 3), "boom", ("args", 1), 0]
