"""``with scope():`` block scopes (DESIGN.md §1 ``scope()``, §2 "Scope", "When").

A block scope collects the calls deferred in that block by the same frame and runs them when
the ``with`` exits: falling off its end, ``break``, ``continue``, ``return`` or an exception.
Runtime path; key cases run again from an ``exec`` string.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from godefer import defer, errdefer, okdefer, scope
from runtime_path import raiser, run_src


def test_block_runs_at_the_end_of_each_iteration():
    log = []

    def f():
        for i in range(3):
            with scope():
                defer(log.append, ("deferred", i))
                log.append(("body", i))
        log.append("after loop")

    f()
    assert log == [
        ("body", 0),
        ("deferred", 0),
        ("body", 1),
        ("deferred", 1),
        ("body", 2),
        ("deferred", 2),
        "after loop",
    ]


def test_block_and_function_scopes_are_separate():
    log = []

    def f():
        defer(log.append, "function, before block")
        with scope():
            defer(log.append, "block 1")
            defer(log.append, "block 2")
            log.append("in block")
        log.append("after block")
        defer(log.append, "function, after block")
        return "r"

    assert f() == "r"
    assert log == [
        "in block",
        "block 2",
        "block 1",
        "after block",
        "function, after block",
        "function, before block",
    ]


def test_nested_blocks_and_return():
    log = []

    def f():
        defer(log.append, "function")
        with scope():
            defer(log.append, "outer block")
            with scope():
                defer(log.append, "inner block")
                return "r"

    assert f() == "r"
    assert log == ["inner block", "outer block", "function"]


def test_break_and_continue_out_of_a_block():
    log = []

    def f():
        for i in range(5):
            with scope():
                defer(log.append, ("deferred", i))
                if i == 1:
                    continue
                if i == 3:
                    break
                log.append(("body", i))
        log.append("after loop")

    f()
    assert log == [
        ("body", 0),
        ("deferred", 0),
        ("deferred", 1),
        ("body", 2),
        ("deferred", 2),
        ("deferred", 3),
        "after loop",
    ]


def test_while_loop_with_break():
    log = []

    def f():
        n = 0
        while True:
            with scope():
                defer(log.append, n)
                n += 1
                if n == 3:
                    break
        return n

    assert f() == 3
    assert log == [0, 1, 2]


def test_exception_out_of_a_block_runs_it_before_the_handler():
    log = []
    body = ValueError("v")

    def f():
        try:
            with scope():
                defer(log.append, "block deferred")
                errdefer(lambda: log.append(("err", sys.exception())))
                okdefer(log.append, "ok")
                raise body
        except ValueError as e:
            log.append(("handler", e))
        log.append("after")

    f()
    assert log == [("err", body), "block deferred", ("handler", body), "after"]


def test_block_exited_by_return_is_a_normal_exit():
    log = []

    def f():
        with scope():
            errdefer(log.append, "err")
            okdefer(lambda: log.append(("ok", sys.exception())))
            return "r"

    assert f() == "r"
    assert log == [("ok", None)]


def test_exception_caught_inside_a_block_is_not_an_exit():
    log = []

    def f():
        with scope():
            errdefer(log.append, "err")
            okdefer(log.append, "ok")
            try:
                raise ValueError
            except ValueError:
                log.append("handled in block")
            log.append("block continues")
        return "r"

    assert f() == "r"
    assert log == ["handled in block", "block continues", "ok"]


def test_exception_through_block_and_function():
    log = []
    body = KeyError("k")
    dexc = RuntimeError("block defer raised")

    def f():
        defer(log.append, "function")
        with scope():
            defer(raiser, dexc)
            raise body

    with pytest.raises(RuntimeError) as info:
        f()
    assert info.value is dexc
    assert dexc.__context__ is body
    assert log == ["function"]


def test_block_deferred_raise_on_normal_exit():
    log = []
    dexc = RuntimeError("d")

    def f():
        try:
            with scope():
                defer(log.append, "first")
                defer(raiser, dexc)
                log.append("body")
            log.append("not reached")
        except RuntimeError as e:
            log.append(("caught", e))

    f()
    assert log == ["body", "first", ("caught", dexc)]
    assert dexc.__context__ is None


def test_block_two_raising_calls_follow_nested_try_finally():
    ea = ValueError("a")
    eb = KeyError("b")

    def f():
        with scope():
            defer(raiser, ea)
            defer(raiser, eb)
        return "unused"

    with pytest.raises(ValueError) as info:
        f()
    assert info.value is ea
    assert ea.__context__ is eb
    assert eb.__context__ is None


def test_block_sys_exception_on_normal_exit_inside_handler():
    seen = []
    handled = KeyError("h")

    def f():
        try:
            raise handled
        except KeyError:
            with scope():
                defer(lambda: seen.append(sys.exception()))
        with scope():
            defer(lambda: seen.append(sys.exception()))

    f()
    assert seen[0] is handled
    assert seen[1] is None


def test_calls_deferred_by_a_callee_do_not_go_to_the_block():
    log = []

    def callee():
        defer(log.append, "callee deferred")

    def f():
        with scope():
            defer(log.append, "block deferred")
            callee()
            log.append("after callee")
        log.append("after block")

    f()
    assert log == ["callee deferred", "after callee", "block deferred", "after block"]


def test_comprehension_in_a_block_belongs_to_the_block():
    log = []

    def f():
        with scope():
            [defer(log.append, i) for i in range(3)]
            log.append("block body")
        log.append("after block")

    f()
    assert log == ["block body", 2, 1, 0, "after block"]


def test_generator_expression_in_a_block_is_its_own_scope():
    log = []

    def f():
        with scope():
            defer(log.append, "block")
            list(defer(log.append, i) for i in range(2))
            log.append("after genexp")

    f()
    assert log == [1, 0, "after genexp", "block"]


def test_block_in_a_generator_does_not_exit_at_yield():
    log = []

    def gen():
        defer(log.append, "generator")
        for i in range(2):
            with scope():
                defer(log.append, ("block", i))
                yield i
                log.append(("resumed", i))

    g = gen()
    assert next(g) == 0
    assert log == []
    assert next(g) == 1
    assert log == [("resumed", 0), ("block", 0)]
    g.close()
    assert log == [("resumed", 0), ("block", 0), ("block", 1), "generator"]


def test_block_in_a_coroutine():
    log = []

    async def co():
        with scope():
            defer(log.append, "block")
            await asyncio.sleep(0)
            log.append("after await")
        log.append("after block")

    asyncio.run(co())
    assert log == ["after await", "block", "after block"]


def test_block_with_nothing_deferred():
    log = []

    def f():
        with scope():
            log.append("empty block")
        return 1

    assert f() == 1
    assert log == ["empty block"]


def test_block_inside_a_deferred_call():
    log = []

    def cleanup():
        with scope():
            defer(log.append, "inner block")
        log.append("cleanup end")

    def f():
        defer(cleanup)
        log.append("body")

    f()
    assert log == ["body", "inner block", "cleanup end"]


def test_block_in_a_class_body():
    log = []

    class C:
        with scope():
            defer(log.append, "block")
            log.append("block body")
        log.append("class body end")

    assert C is not None
    assert log == ["block body", "block", "class body end"]


def test_block_scope_in_exec_source():
    ns = run_src(
        """
        from godefer import defer, scope
        log = []

        def f():
            defer(log.append, "function")
            for i in range(4):
                with scope():
                    defer(log.append, ("block", i))
                    if i == 1:
                        continue
                    if i == 2:
                        break
            with scope():
                [defer(log.append, ("comp", j)) for j in range(2)]
            try:
                with scope():
                    defer(log.append, "raising block")
                    raise ValueError
            except ValueError:
                log.append("handler")
            return "r"

        r = f()

        with scope():
            defer(log.append, "top-level block")
        log.append("top-level end")
        """
    )
    assert ns["r"] == "r"
    assert ns["log"] == [
        ("block", 0),
        ("block", 1),
        ("block", 2),
        ("comp", 1),
        ("comp", 0),
        "raising block",
        "handler",
        "function",
        "top-level block",
        "top-level end",
    ]
