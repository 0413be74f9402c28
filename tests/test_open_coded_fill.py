"""Filling a slot with `defer(f)`: the core checks f and returns it for the slot.

This module is prepared by godefer's pytest plugin. A defer with no arguments fills a function's
later slots through a check local, `__godefer_ck_d__[f]` (a block's through
`__godefer_fill_d__(f, state)`): a non-callable f is a TypeError at the defer's line with nothing
scheduled; when the core already holds entries of the frame (a ScopeBound made there), the core
takes f instead, so the scope's one stack keeps its order.
"""

from __future__ import annotations

import sys
import traceback

import pytest

import godefer._core
from godefer import ScopeBound, defer, errdefer, okdefer, scope
from runtime_path import here
from slot_log import LOG, Tracked, note, open_coded, slot_log  # noqa: F401

pytestmark = pytest.mark.usefixtures("slot_log")

LINES: list[int] = []
NOT_CALLABLE = 42


CHECKS = ("__godefer_ck_d__", "__godefer_ck_e__", "__godefer_ck_o__")


def fills_through_checks(fn) -> bool:
    return all(name in fn.__code__.co_varnames for name in CHECKS)


def bad_defer():
    defer(note("earlier"))
    LINES.append(here() + 1)
    defer(NOT_CALLABLE)
    LOG.append("not reached")


def bad_errdefer():
    defer(note("earlier"))
    LINES.append(here() + 1)
    errdefer(NOT_CALLABLE)
    LOG.append("not reached")


def bad_okdefer():
    defer(note("earlier"))
    LINES.append(here() + 1)
    okdefer(NOT_CALLABLE)
    LOG.append("not reached")


@pytest.mark.parametrize("fn", [bad_defer, bad_errdefer, bad_okdefer])
def test_a_non_callable_is_a_type_error_at_its_line_and_schedules_nothing(fn):
    LINES.clear()
    assert open_coded(fn)
    with pytest.raises(TypeError, match="callable") as info:
        fn()
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (last.name, last.lineno) == (fn.__name__, LINES[0])
    assert LOG == ["earlier"]  # the earlier slot ran; nothing for the bad one


def defer_after_core_entry(fail):
    defer(note("slot 0"))
    Tracked("core 1")  # the core holds entries now: later defers join its stack
    defer(note("defer"))
    errdefer(note("errdefer"))
    okdefer(note("okdefer"))
    Tracked("core 2")
    if fail:
        raise ValueError


def test_fills_after_a_core_entry_run_in_reverse_order_on_return():
    assert open_coded(defer_after_core_entry) and fills_through_checks(defer_after_core_entry)
    defer_after_core_entry(False)
    assert LOG == ["core 2", "okdefer", "defer", "core 1", "slot 0"]


def test_fills_after_a_core_entry_run_in_reverse_order_on_an_exception():
    with pytest.raises(ValueError):
        defer_after_core_entry(True)
    assert LOG == ["core 2", "errdefer", "defer", "core 1", "slot 0"]


def non_callable_after_core_entry():
    Tracked("core")
    defer(NOT_CALLABLE)


def test_a_non_callable_after_a_core_entry_still_raises_and_the_entry_runs():
    with pytest.raises(TypeError, match="callable"):
        non_callable_after_core_entry()
    assert LOG == ["core"]


def assigned_fills(bad):
    target = "before"
    try:
        target = defer(NOT_CALLABLE if bad else note("assigned"))
    except TypeError:
        LOG.append(("target", target))  # not rebound: defer() raised before returning
        raise
    return target


def test_x_equals_defer_fills_through_the_core_and_binds_the_callee():
    assert "__godefer_ck_d__" in assigned_fills.__code__.co_varnames
    fn = assigned_fills(False)
    assert LOG == ["assigned"]
    assert callable(fn)
    LOG.clear()
    with pytest.raises(TypeError, match="callable"):
        assigned_fills(True)
    assert LOG == [("target", "before")]


def assigned_after_core_entry():
    Tracked("core")
    bound = defer(note("assigned"))  # the core takes it; the name still gets the callee
    LOG.append(("bound", callable(bound)))


def test_x_equals_defer_after_a_core_entry_binds_the_callee_and_runs_first():
    assigned_after_core_entry()
    assert LOG == [("bound", True), "assigned", "core"]


# --- the check local: swapped when the core starts holding entries of the frame -------------


def check_state() -> str:
    """What the calling frame's defer check is: "open" (slots keep calls), or "core"."""
    check = sys._getframe(1).f_locals["__godefer_ck_d__"]
    return "core" if "core" in repr(check) else "open"


def callee_makes_a_core_entry():
    defer(note("slot 0"))
    defer(note("slot 1"))
    LOG.append(("check", check_state()))
    # Evaluating the callee makes the core hold an entry of this frame: the defer must go after
    # it, to the core, though the check local was the open one when the statement began.
    defer((Tracked("core"), note("after core"))[1])
    LOG.append(("check", check_state()))


def test_a_callee_making_a_core_entry_is_evaluated_before_the_check():
    assert fills_through_checks(callee_makes_a_core_entry) is False  # only defer's
    assert "__godefer_ck_d__" in callee_makes_a_core_entry.__code__.co_varnames
    callee_makes_a_core_entry()
    assert LOG == [
        ("check", "open"),
        ("check", "core"),
        "after core",
        "core",
        "slot 1",
        "slot 0",
    ]


def recursing(depth):
    defer(note(("outer first", depth)))
    if depth:
        recursing(depth - 1)
    else:
        Tracked("core")  # only this frame's checks change
    defer(note(("outer second", depth)))
    LOG.append((depth, check_state()))


def test_each_frame_has_its_own_checks():
    recursing(1)
    assert LOG == [
        (0, "core"),
        ("outer second", 0),
        "core",
        ("outer first", 0),
        (1, "open"),
        ("outer second", 1),
        ("outer first", 1),
    ]
    LOG.clear()
    recursing(0)  # a new frame starts with the open check again
    assert LOG[0] == (0, "core")
    LOG.clear()
    recursing(1)
    assert LOG[4] == (1, "open")


def test_the_checks_are_the_cores_and_reject_what_is_not_callable():
    from godefer import _core

    for kind in ("defer", "errdefer", "okdefer"):
        check = getattr(_core, f"_slot_check_{kind}")
        assert check[len] is len
        with pytest.raises(TypeError, match=f"{kind}\\(\\) needs a callable"):
            check[NOT_CALLABLE]
        with pytest.raises(TypeError):
            type(check)()  # not instantiable


# --- the first fill, before the scope's try ------------------------------------------------------


def first_statement_bad():
    defer(NOT_CALLABLE)


def first_after_plain_code(fn):
    total = 1 + 2
    defer(fn)
    return total


def first_after_a_call(fn):
    made = list()  # a call could have made a ScopeBound: no hoisting
    defer(fn)
    return made


def test_a_first_fill_with_nothing_before_it_skips_the_state():
    assert "__godefer_first_d__" in first_after_plain_code.__code__.co_names
    assert "__godefer_first_d__" not in first_after_a_call.__code__.co_names
    assert first_after_plain_code(note("ran")) == 3
    assert first_after_a_call(note("ran too")) == []
    assert LOG == ["ran", "ran too"]


def test_a_bad_first_fill_is_a_type_error_at_its_line_with_nothing_pending():
    from godefer import _core

    before = _core._pending_frames()
    with pytest.raises(TypeError, match="callable") as info:
        first_statement_bad()
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.name == "first_statement_bad"
    assert last.line == "defer(NOT_CALLABLE)"
    assert _core._pending_frames() == before


def log_slot():
    LOG.append("slot")


def block_first_fill():
    with scope():
        defer(log_slot)  # no call in the callee: nothing can have been scheduled before
        Tracked("core")
    LOG.append("after")


def test_a_block_first_fill_then_a_core_entry_and_the_with_line_reports_first():
    assert "__godefer_first_d__" in block_first_fill.__code__.co_names
    lines: list[int] = []

    def tracer(frame, event, arg):
        if frame.f_code is block_first_fill.__code__:
            if event == "line":
                lines.append(frame.f_lineno - block_first_fill.__code__.co_firstlineno)
            return tracer
        return None

    sys.settrace(tracer)
    try:
        block_first_fill()
    finally:
        sys.settrace(None)
    assert LOG == ["core", "slot", "after"]
    assert lines[:2] == [1, 2]  # `with scope():`, then its first statement


class JoinsOnLookup(ScopeBound):
    """Made by a failed attribute lookup (it is its class's __getattr__): CPython calls it from
    C, so it joins the frame that looked the attribute up. Callable, so it can be deferred."""

    def __init__(self, *args: object) -> None:
        self.name = args[-1]

    def __call__(self) -> None:
        LOG.append(("called", self.name))

    def close(self) -> None:
        LOG.append(("closed", self.name))


class LooksUpByJoining:
    __getattr__ = JoinsOnLookup


BY_JOINING = LooksUpByJoining()


def first_defer_of_a_joining_attribute():
    defer(BY_JOINING.cleanup)
    LOG.append("body")


def test_a_first_defer_whose_callee_joins_the_frame_keeps_both_calls_in_order():
    # The attribute lookup joins the frame before the defer schedules: a slot filled before the
    # frame's state exists (_hoisted) lost the joined entry, and kept a record of the frame.
    pending = godefer._core._pending_frames()
    first_defer_of_a_joining_attribute()
    assert LOG == ["body", ("called", "cleanup"), ("closed", "cleanup")]
    assert godefer._core._pending_frames() == pending


def first_defer_of_joining_items(items):
    defer(*items)
    LOG.append("body")


def first_defer_of_varargs(*args):
    defer(*args)
    LOG.append("body")


def test_a_first_starred_defer_whose_unpacking_joins_the_frame_keeps_both_calls():
    # Unpacking a map calls JoinsOnLookup from C with this frame as the caller: it joins the
    # frame before the defer schedules, so the fill must come after the frame's state exists.
    pending = godefer._core._pending_frames()
    first_defer_of_joining_items(map(JoinsOnLookup, ["cleanup"]))
    assert LOG == ["body", ("called", "cleanup"), ("closed", "cleanup")]
    assert godefer._core._pending_frames() == pending
    LOG.clear()
    first_defer_of_varargs(note("varargs"))  # *args is a tuple: its fill still goes first
    assert LOG == ["body", "varargs"]
