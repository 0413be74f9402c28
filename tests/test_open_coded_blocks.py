"""Open-coded `with scope():` blocks: the block's defers live in frame locals too.

This module is prepared by godefer's pytest plugin. A block of an open-coded function keeps its
calls in locals (``__godefer_b<K>_...``) when its defers have slots outside loops, and no
return/break/continue leaving it sits in a try or with inside it (a nested block counts as a
with); blocks nested in it are open-coded the same way. Its
normal exits (the end, break, continue, return) call the slots inline; an exception goes to the
core, which also holds what a ScopeBound made in the block schedules. These tests pin each of
those paths against what `with scope():` means (DESIGN.md §1, §2).
"""

from __future__ import annotations

import functools
import sys

import pytest

from godefer import defer, errdefer, okdefer, recover, result, scope, scoped
from slot_log import LOG, Tracked, note, slot_log  # noqa: F401

pytestmark = pytest.mark.usefixtures("slot_log")


def open_blocks(fn) -> int:
    """How many open-coded blocks preparation gave `fn`."""
    return sum(
        1 for n in fn.__code__.co_varnames if n.startswith("__godefer_b") and n.endswith("_st__")
    )


class Resource:
    def __init__(self, tag):
        self.tag = tag

    def __enter__(self):
        LOG.append(("enter", self.tag))
        return self.tag

    def __exit__(self, *exc):
        LOG.append(("exit", self.tag, exc[0]))
        return False


def every_exit(items):
    for it in items:
        with scope():
            defer(note(("d", it)))
            if it == "continue":
                continue
            if it == "break":
                break
            value = scoped(Resource(it))
            okdefer(note(("ok", value)))
            errdefer(note(("err", it)))
            if it == "return":
                return "returned"
            if it == "raise":
                raise KeyError(it)
        LOG.append(("after", it))
    return "end"


def test_every_exit_of_the_block_runs_its_calls_in_reverse_order():
    assert open_blocks(every_exit) == 1
    assert every_exit(["a", "continue", "return", "b"]) == "returned"
    assert LOG == [
        ("enter", "a"),
        ("ok", "a"),
        ("exit", "a", None),
        ("d", "a"),
        ("after", "a"),
        ("d", "continue"),
        ("enter", "return"),
        ("ok", "return"),
        ("exit", "return", None),
        ("d", "return"),
    ]
    LOG.clear()
    assert every_exit(["break", "a"]) == "end"
    assert LOG == [("d", "break")]
    LOG.clear()
    with pytest.raises(KeyError):
        every_exit(["raise"])
    assert [
        ("enter", "raise"),
        ("err", "raise"),
        ("exit", "raise", KeyError),
        ("d", "raise"),
    ] == LOG


def scope_bound_in_block():
    with scope():
        defer(note("slot 0"))
        Tracked("core 1")  # the block's first core entry
        defer(note("slot 1"))  # the core holds entries: this one joins them
        Tracked("core 2")
    LOG.append("after block")
    Tracked("function")  # after the block: the function's scope, not the block's
    LOG.append("end")


def test_a_scope_bound_made_in_the_block_belongs_to_the_block():
    assert open_blocks(scope_bound_in_block) == 1
    scope_bound_in_block()
    assert LOG == ["core 2", "slot 1", "core 1", "slot 0", "after block", "end", "function"]


def raising_slot_on_normal_exit():
    with scope():
        defer(note("first"))
        defer(lambda: LOG.append(("sees", repr(sys.exception()))))
        defer(lambda: (_ for _ in ()).throw(ValueError("from slot")))
        LOG.append("body")
    LOG.append("not reached")


def test_a_slot_raising_on_a_normal_exit_replaces_nothing_and_the_rest_still_run():
    with pytest.raises(ValueError, match="from slot"):
        raising_slot_on_normal_exit()
    assert LOG == ["body", ("sees", "ValueError('from slot')"), "first"]


def recovering_block():
    try:
        raise KeyError("enclosing")
    except KeyError:
        for i in range(2):  # the block's try sits deeper in the stack than depth 0
            with scope():
                defer(lambda: LOG.append(("later", repr(sys.exception()))))
                defer(lambda: LOG.append(("recovered", repr(recover()))))
                defer(lambda: LOG.append(("first", repr(sys.exception()))))
                raise ValueError(i)  # noqa: B904 (the enclosing exception is the point)
            LOG.append(("after", i))
    return "done"


def test_recover_in_a_block_goes_on_after_it_and_later_calls_see_the_enclosing_exception():
    assert open_blocks(recovering_block) == 1
    assert recovering_block() == "done"
    enclosing = repr(KeyError("enclosing"))
    assert [
        ("first", "ValueError(0)"),
        ("recovered", "ValueError(0)"),
        ("later", enclosing),
        ("after", 0),
        ("first", "ValueError(1)"),
        ("recovered", "ValueError(1)"),
        ("later", enclosing),
        ("after", 1),
    ] == LOG


def result_in_block():
    with scope():
        defer(lambda: LOG.append(result()))
    return 1


def test_result_in_an_open_coded_block_is_a_lookup_error():
    assert open_blocks(result_in_block) == 1
    with pytest.raises(LookupError, match="block has no return value"):
        result_in_block()


def nested_blocks():
    with scope():
        defer(note("outer"))
        with scope():
            defer(note("inner"))
        LOG.append("between")


def return_in_try_in_block():
    with scope():
        defer(note("block"))
        try:
            return "value"
        finally:
            LOG.append("finally first")


def test_blocks_the_core_keeps_still_behave_the_same():
    assert open_blocks(return_in_try_in_block) == 0
    assert return_in_try_in_block() == "value"
    assert LOG == ["finally first", "block"]


def test_nested_blocks_are_open_coded_too():
    assert open_blocks(nested_blocks) == 2
    nested_blocks()
    assert LOG == ["inner", "between", "outer"]


def nested_three(fail):
    defer(note("function"))
    with scope():
        defer(note("outer"))
        with scope():
            defer(note("middle"))
            Tracked("middle bound")  # joins the middle block (the innermost running)
            with scope():
                defer(note("inner"))
                Tracked("inner bound")
                if fail == "inner":
                    raise KeyError("inner")
            LOG.append("after inner")
            if fail == "middle":
                raise KeyError("middle")
        Tracked("outer bound")  # the middle block has exited: joins the outer one
        LOG.append("after middle")
    LOG.append("after outer")
    return "done"


def test_scope_bounds_join_the_innermost_running_block():
    assert open_blocks(nested_three) == 3
    assert nested_three(None) == "done"
    assert LOG == [
        "inner bound",
        "inner",
        "after inner",
        "middle bound",
        "middle",
        "after middle",
        "outer bound",
        "outer",
        "after outer",
        "function",
    ]


@pytest.mark.parametrize("fail", ["inner", "middle"])
def test_an_exception_leaves_the_nested_blocks_one_by_one(fail):
    with pytest.raises(KeyError, match=fail):
        nested_three(fail)
    expected = ["inner bound", "inner", "after inner", "middle bound", "middle"]
    if fail == "inner":
        expected.remove("after inner")
    expected += ["outer", "function"]
    assert expected == LOG


def recover_in_nested(n):
    with scope():
        defer(note("outer"))
        for i in range(n):
            with scope():
                defer(lambda: LOG.append(("recovered", repr(recover()))))
                defer(note(("inner", i)))
                if i == 1:
                    continue  # leaves the inner block only
                if i == 2:
                    raise ValueError(i)
                LOG.append(("body", i))
            LOG.append(("after inner", i))
        LOG.append("after loop")


def test_recover_and_jumps_in_a_block_nested_in_a_loop_of_a_block():
    assert open_blocks(recover_in_nested) == 2
    recover_in_nested(3)
    assert LOG == [
        ("body", 0),
        ("inner", 0),
        ("recovered", "None"),
        ("after inner", 0),
        ("inner", 1),
        ("recovered", "None"),
        ("inner", 2),
        ("recovered", "ValueError(2)"),
        ("after inner", 2),
        "after loop",
        "outer",
    ]


def only_nested_defers():
    with scope():
        with scope():
            defer(note("inner"))
        LOG.append("between")
        with scope():
            defer(note("second"))
            s = scope()
            with s:  # a block preparation cannot see, inside an open-coded nested one
                defer(note("core block"))
                Tracked("core bound")
            LOG.append("after core block")
    LOG.append("after")


def test_a_block_holding_only_blocks_and_a_core_block_inside_a_nested_one():
    assert open_blocks(only_nested_defers) == 3
    only_nested_defers()
    assert LOG == [
        "inner",
        "between",
        "core bound",
        "core block",
        "after core block",
        "second",
        "after",
    ]


def holds_nothing_after(arg):
    with scope():
        defer(id, arg)  # holds nothing itself
        defer(note("plain"))
    return sys.getrefcount(arg)


def refcount_in_a_call(arg):
    return sys.getrefcount(arg)


def test_a_finished_block_holds_no_reference_to_its_calls():
    assert open_blocks(holds_nothing_after) == 1
    arg = object()
    # The same count as in a call that defers nothing: the block's locals let go of the call.
    assert holds_nothing_after(arg) == refcount_in_a_call(arg)
    assert LOG == ["plain"]


def generator_with_block():
    for i in range(3):
        with scope():
            defer(note(("closed", i)))
            yield i
        LOG.append(("after", i))


def test_a_generator_closed_inside_an_open_coded_block_runs_the_blocks_calls():
    assert open_blocks(generator_with_block) == 1
    gen = generator_with_block()
    assert next(gen) == 0
    assert next(gen) == 1
    gen.close()
    assert LOG == [("closed", 0), ("after", 0), ("closed", 1)]


async def coroutine_with_block(event):
    with scope():
        defer(note("block exit"))
        LOG.append("waiting")
        await event.wait()
    LOG.append("not reached")


def test_a_cancelled_coroutine_runs_its_open_coded_blocks_calls():
    import asyncio

    assert open_blocks(coroutine_with_block) == 1

    async def main():
        event = asyncio.Event()
        task = asyncio.ensure_future(coroutine_with_block(event))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert LOG == ["waiting", "block exit"]


def block_in_except_clause_returning():
    try:
        raise KeyError("handled")
    except KeyError:
        with scope():
            defer(lambda: LOG.append(("sees", repr(sys.exception()))))
            return "from the block"


def test_a_return_from_a_block_in_an_except_clause_sees_the_handled_exception():
    assert open_blocks(block_in_except_clause_returning) == 1
    assert block_in_except_clause_returning() == "from the block"
    assert [("sees", repr(KeyError("handled")))] == LOG


def block_preparation_cannot_see_inside_an_open_coded_block():
    with scope():
        defer(note("outer slot"))
        inner = scope()
        with inner:  # not `with scope():`, so preparation leaves it to the core
            Tracked("inner core")
            LOG.append("in inner")
        LOG.append("after inner")


def test_a_core_block_inside_an_open_coded_block_keeps_its_own_entries():
    assert open_blocks(block_preparation_cannot_see_inside_an_open_coded_block) == 1
    block_preparation_cannot_see_inside_an_open_coded_block()
    assert LOG == ["in inner", "inner core", "after inner", "outer slot"]


def block_exiting_through_the_core(arg, star):
    with scope():
        if star:
            defer(*(functools.partial(LOG.append, arg),))
        else:
            defer(functools.partial(LOG.append, arg))
        for _ in range(2):
            with scope():  # a core block: the open block's exit goes through the core
                try:
                    break
                except ValueError:
                    raise
    return sys.getrefcount(arg)


def raising_star_slot_exiting_through_the_core():
    with scope():
        defer(*(fail_with, "star"))
        for _ in range(2):
            with scope():
                try:
                    break
                except ValueError:
                    raise


def fail_with(tag):
    LOG.append(tag)
    raise KeyError(tag)


@pytest.mark.parametrize("star", [False, True])
def test_a_block_the_core_ends_lets_go_of_its_calls(star):
    # Slot 0 of block 0 (`__godefer_b0_0__`) was once left holding its callee after the core
    # ran it: the release skipped names that short.
    assert open_blocks(block_exiting_through_the_core) == 1
    arg = object()
    assert block_exiting_through_the_core(arg, star) == refcount_in_a_call(arg)
    log = list(LOG)
    assert log == [arg]


def test_a_starred_slot_raising_in_an_exit_the_core_ends_raises_its_own_exception():
    assert open_blocks(raising_star_slot_exiting_through_the_core) == 1
    with pytest.raises(KeyError, match="star") as info:
        raising_star_slot_exiting_through_the_core()
    assert info.value.__context__ is None
    assert LOG == ["star"]


# --- blocks with lists: a loop's defers, several defers in a statement -------------------------


def loops_in_block(items, fail_at=None):
    for it in items:
        with scope():
            defer(note(("first", it)))
            for j in range(3):
                defer(note(("loop", it, j)))
                if j == fail_at:
                    raise KeyError(j)
            pair = (defer(note(("a", it))), defer(note(("b", it))))
            LOG.append(("body", it, len(pair)))
        LOG.append(("after", it))


def test_a_loop_in_a_block_fills_a_list_of_the_block():
    assert open_blocks(loops_in_block) == 1
    assert "list_first" in loops_in_block.__code__.co_names
    loops_in_block(["x", "y"])
    expected = []
    for it in ("x", "y"):
        expected += [("body", it, 2), ("b", it), ("a", it)]
        expected += [("loop", it, 2), ("loop", it, 1), ("loop", it, 0), ("first", it)]
        expected.append(("after", it))
    assert expected == LOG


def test_an_exception_in_a_blocks_loop_runs_the_list_so_far_and_the_earlier_slots():
    with pytest.raises(KeyError):
        loops_in_block(["x"], fail_at=1)
    assert LOG == [("loop", "x", 1), ("loop", "x", 0), ("first", "x")]


def recover_after_block_loop():
    with scope():
        defer(note("before loop"))
        for _ in range(2):

            @defer
            def _():
                LOG.append(("recovered", repr(recover())))

        raise ValueError("stopped")
    LOG.append("after block")
    return "went on"


def test_recover_from_a_blocks_list_goes_on_after_the_block():
    assert open_blocks(recover_after_block_loop) == 1
    assert recover_after_block_loop() == "went on"
    assert LOG == [
        ("recovered", "ValueError('stopped')"),
        ("recovered", "None"),
        "before loop",
        "after block",
    ]


class Abandoned(Exception):
    pass


def _abandon():
    raise Abandoned


def bare_return_after_an_abandoned_return(flag):
    defer(note("function"))
    try:
        with scope():
            okdefer(_abandon)  # raises on the way out of `return 5`
            return 5
    except Abandoned:
        LOG.append("caught")
    if flag:
        return
    return 7


def generator_bare_return_after_an_abandoned_return():
    defer(note("function"))
    try:
        with scope():
            okdefer(_abandon)
            yield 1
            return 5
    except Abandoned:
        LOG.append("caught")
    return


async def coroutine_bare_return_after_an_abandoned_return():
    defer(note("function"))
    try:
        with scope():
            okdefer(_abandon)
            return 5
    except Abandoned:
        LOG.append("caught")
    return


def test_a_bare_return_after_an_abandoned_return_returns_none():
    # `return 5`'s value sat in the result local when its block's exit raised; the exception
    # was caught in the function, so the later bare `return` means None, as in plain Python.
    assert open_blocks(bare_return_after_an_abandoned_return) == 1
    assert bare_return_after_an_abandoned_return(True) is None
    assert LOG == ["caught", "function"]
    LOG.clear()
    assert bare_return_after_an_abandoned_return(False) == 7
    gen = generator_bare_return_after_an_abandoned_return()
    assert next(gen) == 1
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value is None
    coro = coroutine_bare_return_after_an_abandoned_return()
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    assert stop.value.value is None
