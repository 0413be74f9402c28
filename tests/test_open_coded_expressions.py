"""defer() used as an expression or as a decorator, and ``with scope():`` blocks, in open-coded
functions.

This module is prepared by godefer's pytest plugin. A defer whose value is used (``x =
defer(f)``, ``return defer(f)``) fills a slot like the statement form when it is the only
defer of its statement and outside loops, and so does ``@defer`` as the outermost decorator of
a nested def outside loops; other defers are pushed onto a list slot of their statement or loop;
a ``with scope():`` block keeps its own calls in the core without taking the function's slots
away. The rest stays generic and equally correct.
"""

from __future__ import annotations

import functools
import traceback

import pytest

from godefer import defer, errdefer, okdefer, recover, scope, scoped
from slot_log import (
    LOG,
    Tracked,
    note,
    open_coded,
    slot_log,  # noqa: F401  (the fixture pytestmark names)
)

pytestmark = pytest.mark.usefixtures("slot_log")


def value_is_the_callee():
    first = note("first")
    got = defer(first)
    LOG.append(got is first)
    return defer(note("second"))


def test_the_value_of_defer_is_its_callable_and_the_call_runs_at_exit():
    assert open_coded(value_is_the_callee)
    returned = value_is_the_callee()
    assert callable(returned)
    assert LOG == [True, "second", "first"]


def arguments_in_expression(items, extra):
    _ = defer(lambda *a, **k: LOG.append((a, k)), *items, key=extra)
    items.append("later")
    return okdefer(LOG.append, "ok") and errdefer(LOG.append, "err") is None


def test_arguments_are_evaluated_at_the_expression():
    # Two defers in the return statement: both are pushed onto that statement's list slot.
    assert open_coded(arguments_in_expression)
    assert arguments_in_expression([1, 2], "x") is False
    assert LOG == ["ok", ((1, 2), {"key": "x"})]


def single_expression_with_arguments(items):
    _ = defer(lambda *a, **k: LOG.append((a, k)), *items, key=len(items))
    items.append("later")
    return len(items)


def test_starred_and_keyword_arguments_in_an_expression_slot():
    assert open_coded(single_expression_with_arguments)
    assert single_expression_with_arguments([1, 2]) == 3
    assert LOG == [((1, 2), {"key": 2})]


def non_callable_in_expression(value):
    defer(note("before"))
    _ = defer(value)  # L:expr-defer
    LOG.append("not reached")


def test_a_non_callable_is_a_type_error_at_the_expression_and_nothing_is_scheduled():
    with pytest.raises(TypeError, match="needs a callable") as info:
        non_callable_in_expression(42)
    line = non_callable_in_expression.__code__.co_firstlineno + 2
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(f.name == "non_callable_in_expression" and f.lineno == line for f in frames)
    assert LOG == ["before"]


def recovers_through_expression_slot():
    _ = defer(lambda: LOG.append(recover()))
    raise ValueError("body")


def test_recover_from_an_expression_slot():
    assert open_coded(recovers_through_expression_slot)
    assert recovers_through_expression_slot() is None
    assert isinstance(LOG[0], ValueError)


def expression_after_core_entry():
    _ = defer(note("slot 0"))
    Tracked("core")
    _ = defer(note("after core"))  # the core holds entries now: this joins them
    return 1


def test_an_expression_slot_after_a_core_entry_keeps_the_order():
    assert open_coded(expression_after_core_entry)
    assert expression_after_core_entry() == 1
    assert LOG == ["after core", "core", "slot 0"]


def expression_in_loop(n):
    for i in range(n):
        _ = defer(LOG.append, i)
    return n


def test_an_expression_defer_in_a_loop_is_pushed_onto_the_loop_list():
    assert open_coded(expression_in_loop)
    assert expression_in_loop(3) == 3
    assert LOG == [2, 1, 0]


def with_a_block(fail):
    defer(note("function"))
    with scope():
        defer(note("block"))
        LOG.append("in block")
    LOG.append("after block")
    if fail:
        raise KeyError
    return "done"


@pytest.mark.parametrize("fail", [False, True])
def test_a_scope_block_in_an_open_coded_function_runs_at_the_block_end(fail):
    assert open_coded(with_a_block)
    if fail:
        with pytest.raises(KeyError):
            with_a_block(True)
    else:
        assert with_a_block(False) == "done"
    assert LOG == ["in block", "block", "after block", "function"]


def returns_from_inside_a_block():
    defer(note("function"))
    with scope():
        defer(note("block"))
        return "inside"


def test_returning_from_a_block_runs_the_block_then_the_function():
    assert open_coded(returns_from_inside_a_block)
    assert returns_from_inside_a_block() == "inside"
    assert LOG == ["block", "function"]


def logged(fn):
    @functools.wraps(fn)
    def wrapper():
        LOG.append("wrapped")
        return fn()

    return wrapper


def decorated_slots(fail):
    @defer
    def first():
        LOG.append(("first", recover()))

    @defer
    @logged
    def second():
        LOG.append("second")

    LOG.append(first.__name__)
    if fail:
        raise ValueError("body")
    return "done"


def test_defer_as_outermost_decorator_fills_a_slot():
    assert open_coded(decorated_slots)
    assert decorated_slots(False) == "done"
    assert LOG == ["first", "wrapped", "second", ("first", None)]


def test_a_decorated_slot_recovers_an_exception():
    assert decorated_slots(True) is None
    assert LOG[:3] == ["first", "wrapped", "second"]
    tag, exc = LOG[3]
    assert tag == "first" and isinstance(exc, ValueError)


def defer_not_outermost():
    @logged
    @defer
    def inner():
        LOG.append("inner")

    LOG.append("body")


def test_defer_below_another_decorator_stays_generic_and_correct():
    assert not open_coded(defer_not_outermost)
    defer_not_outermost()
    assert LOG == ["body", "inner"]


def assigned_after_core_entry():
    Tracked("core")
    handle = defer(note("assigned"))  # the core holds entries: the fallback branch assigns
    LOG.append(callable(handle))
    return 2


def test_an_assigned_defer_after_a_core_entry_still_assigns_the_callee():
    assert open_coded(assigned_after_core_entry)
    assert assigned_after_core_entry() == 2
    assert LOG == [True, "assigned", "core"]


def assigned_non_callable(value):
    bound = "unbound"
    try:
        bound = defer(value)
    except TypeError:
        LOG.append(bound)
    return bound


def test_an_assigned_non_callable_binds_nothing():
    assert open_coded(assigned_non_callable)
    assert assigned_non_callable(7) == "unbound"
    assert LOG == ["unbound"]


class Managed:
    """A context manager that logs its exit and may stop the exception."""

    def __init__(self, tag, suppress=False):
        self.tag, self.suppress = tag, suppress

    def __enter__(self):
        LOG.append(("enter", self.tag))
        return self.tag

    def __exit__(self, kind, value, tb):
        LOG.append(("exit", self.tag, kind))
        return self.suppress


class Closable:
    def close(self):
        LOG.append("closed")


def entered(fail, suppress=False):
    value = scoped(Managed("a", suppress))
    scoped(Closable())
    defer(LOG.append, "deferred")
    LOG.append(value)
    if fail:
        raise KeyError("body")
    return "done"


def test_scoped_fills_a_slot_and_exits_on_return():
    assert open_coded(entered)
    assert entered(False) == "done"
    assert LOG == [("enter", "a"), "a", "deferred", "closed", ("exit", "a", None)]


def test_scoped_exit_sees_the_exception_and_can_stop_it():
    with pytest.raises(KeyError):
        entered(True)
    assert LOG[-1] == ("exit", "a", KeyError)
    LOG.clear()
    assert entered(True, suppress=True) is None  # stopped, as `with` would
    assert LOG[-1] == ("exit", "a", KeyError)


def enters_then_fails(obj):
    scoped(Managed("first"))
    bound = scoped(obj)
    LOG.append(("bound", bound))


def test_scoped_of_something_else_is_a_type_error_and_the_rest_still_exits():
    with pytest.raises(TypeError, match="context manager"):
        enters_then_fails(42)
    assert [("enter", "first"), ("exit", "first", TypeError)] == LOG


class FailsToEnter:
    def __enter__(self):
        raise OSError("cannot enter")

    def __exit__(self, *exc):
        LOG.append("must not run")


def test_an_enter_that_raises_schedules_nothing():
    with pytest.raises(OSError):
        enters_then_fails(FailsToEnter())
    assert [("enter", "first"), ("exit", "first", OSError)] == LOG


def scoped_after_core_entry():
    Tracked("core")
    value = scoped(Managed("cm"))  # the core holds entries: the core enters it
    return value


def test_scoped_after_a_core_entry_keeps_the_order():
    assert open_coded(scoped_after_core_entry)
    assert scoped_after_core_entry() == "cm"
    assert LOG == [("enter", "cm"), ("exit", "cm", None), "core"]


def several_targets():
    a = b = scoped(Managed("t"))
    return a, b


def test_scoped_with_several_targets():
    assert open_coded(several_targets)
    assert several_targets() == ("t", "t")


def lambda_and_plain_def():
    defer(lambda: LOG.append("lambda"))

    @defer
    def _():
        LOG.append("def")


def decorated_below(fn):
    defer(fn)

    @defer
    @logged
    def _():
        LOG.append("def")


def test_a_lambda_or_undecorated_def_needs_no_callable_check():
    assert open_coded(lambda_and_plain_def)
    assert "callable" not in lambda_and_plain_def.__code__.co_names
    lambda_and_plain_def()
    assert LOG == ["def", "lambda"]
    # Anything else can be a non-callable, so its slot is checked (TypeError at its line).
    assert "callable" in decorated_below.__code__.co_names


def defer_in_a_while_test(n):
    count = 0
    while defer(LOG.append, count) and count < n:
        count += 1
    return count


def test_a_defer_in_a_while_test_runs_once_per_evaluation():
    # The test is evaluated n + 1 times: each evaluation pushes a call onto the loop's list.
    assert open_coded(defer_in_a_while_test)
    assert defer_in_a_while_test(2) == 2
    assert LOG == [2, 1, 0]
