"""`adefer(f, ...)` statements of a coroutine own slots, awaited inline on its exits.

A coroutine whose awaited schedulers are all `adefer(...)` statements outside loops and
`with scope():` blocks keeps them in frame locals like defers: its return awaits each slot in
place (through the core's check that the call gave an awaitable), and so does the handler of an
exception leaving the body. What inline code cannot finish (a slot raising, a recovery, entries
the core holds for the frame) goes to the core as an AsyncExit the frame steps.

Each case runs twice, prepared both times: as written (open-coded) and with every awaited call in
a one-pass loop, which keeps them all in the core. Both must leave the same log and outcome.
"""

from __future__ import annotations

import re
import sys
import textwrap

import pytest

from godefer import _core, adefer
from slot_log import drive, open_coded, prepared_namespace

PRELUDE = """\
import sys
from godefer import adefer, defer, errdefer, okdefer, recover, result, set_result, ScopeBound

class Suspend:
    def __await__(self):
        yield

async def arec(log, tag):
    await Suspend()
    log.append((tag, repr(sys.exception())))

async def aboom(log, tag):
    await Suspend()
    log.append((tag, repr(sys.exception())))
    raise KeyError(tag)

async def arecover(log, tag):
    await Suspend()
    log.append((tag, repr(recover())))

async def atimes7(log, tag):
    await Suspend()
    set_result(result() * 7)
    log.append((tag, result()))

class Tracked(ScopeBound):
    def __init__(self, log, tag):
        self.log, self.tag = log, tag
    def close(self):
        self.log.append((self.tag, repr(sys.exception())))
"""

CASES = {
    "one": """
        async def f(log, fail):
            adefer(arec, log, "a")
            if fail:
                raise ValueError("body")
            return 1
    """,
    "mixed_with_plain_defers": """
        async def f(log, fail):
            defer(log.append, "plain first")
            adefer(arec, log, "a1")
            errdefer(log.append, "on error")
            adefer(arec, log, tag="a2")
            okdefer(log.append, "on success")
            if fail:
                raise ValueError("body")
            return "value"
    """,
    "under_an_if": """
        async def f(log, fail):
            if not fail:
                adefer(arec, log, "taken")
            adefer(arec, log, "always")
            if fail:
                return "early"
            adefer(arec, log, "late")
            return "late return"
    """,
    "a_slot_raises_on_return": """
        async def f(log, fail):
            adefer(arec, log, "first")
            defer(log.append, "plain")
            adefer(aboom, log, "raises")
            adefer(arec, log, "last")
            if fail:
                raise ValueError("body")
            return 2
    """,
    "recovered": """
        async def f(log, fail):
            adefer(arec, log, "outer")
            adefer(arecover, log, "recover")
            adefer(arec, log, "inner")
            if fail:
                raise ValueError("body")
            return 3
    """,
    "result_times_seven": """
        async def f(log, fail):
            adefer(atimes7, log, "times 7")
            if fail:
                raise ValueError("body")
            return 6
    """,
    "after_the_core_holds_entries": """
        async def f(log, fail):
            adefer(arec, log, "before")
            Tracked(log, "tracked")
            adefer(arec, log, "after")
            if fail:
                raise ValueError("body")
            return 4
    """,
    "not_callable": """
        async def f(log, fail):
            adefer(arec, log, "before")
            adefer(fail or 5)
            log.append("unreached")
    """,
    "not_awaitable": """
        async def f(log, fail):
            adefer(arec, log, "outer")
            adefer(log.append, "plain")
            if fail:
                raise ValueError("body")
    """,
    "inside_a_handled_exception": """
        async def f(log, fail):
            try:
                raise LookupError("outer")
            except LookupError:
                await g(log, fail)

        async def g(log, fail):
            adefer(arec, log, "sees the outer one")
            adefer(arecover, log, "recover")
            if fail:
                raise ValueError("body")
    """,
}

# Statements that stay core-held in a one-pass loop (the core's own AsyncExit path).
LOOPED = "for _ in range(1):\n    "


def _core_held(src: str) -> str:
    """`src` with each adefer statement in a one-pass loop: the core keeps every call."""
    lines = []
    for line in src.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("adefer("):
            indent = line[: len(line) - len(stripped)]
            lines.append(indent + LOOPED.replace("\n    ", "\n" + indent + "    ") + stripped)
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _outcome(f, fail: bool) -> str:
    """What `f(log, fail)` left in its log and returned or raised, with no object addresses."""
    log: list = []
    try:
        got: object = ("returned", drive(f(log, fail)))
    except Exception as exc:  # the outcome is what is compared
        got = ("raised", type(exc).__name__, str(exc), repr(exc.__context__))
    return re.sub(r"0x[0-9a-f]+", "0x", repr((log, got)))


def _functions(src: str, tmp_path, name: str):
    """(f, the function whose adefers are checked: g if the case has one, else f)."""
    ns = prepared_namespace(PRELUDE + src, str(tmp_path / f"{name}.py"))
    return ns["f"], ns.get("g", ns["f"])


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_open_coded_adefer_agrees_with_the_core(case, fail, tmp_path):
    src = textwrap.dedent(CASES[case])
    inline, inline_user = _functions(src, tmp_path, "inline")
    held, held_user = _functions(_core_held(src), tmp_path, "held")
    assert open_coded(inline_user)
    assert "__godefer_await__" in inline_user.__code__.co_names
    assert "__godefer_await__" not in held_user.__code__.co_names
    assert _outcome(inline, fail) == _outcome(held, fail)


def test_open_coded_adefer_runs_without_the_core():
    log: list = []

    class Suspend:
        def __await__(self):
            yield

    async def arec(tag):
        await Suspend()
        log.append((tag, _core._pending_frames()))

    async def f():
        adefer(arec, "a1")
        adefer(arec, "a2")
        log.append(("body", _core._pending_frames()))
        return "done"

    assert open_coded(f)
    assert drive(f()) == "done"
    assert log == [("body", 0), ("a2", 0), ("a1", 0)]


def test_a_deferred_call_that_gives_no_awaitable_is_named():
    log: list = []

    async def f():
        adefer(log.append, "x")

    assert open_coded(f)
    with pytest.raises(TypeError, match=r"adefer\(\): the deferred call .*append.* returned "):
        drive(f())
    assert log == ["x"]


def test_a_non_callable_adefer_raises_at_its_line_and_schedules_nothing():
    log: list = []

    async def arec(tag):
        log.append(tag)

    async def f():
        adefer(arec, "before")
        adefer(5)  # the line the TypeError names
        log.append("unreached")

    assert open_coded(f)
    with pytest.raises(TypeError) as info:
        drive(f())
    assert "adefer" in str(info.value)
    frame_lines = [tb.tb_lineno for tb in _walk(info.value.__traceback__)]
    assert f.__code__.co_firstlineno + 2 in frame_lines
    assert log == ["before"]


def _walk(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_cancellation_while_awaiting_an_inline_slot_runs_the_rest():
    import asyncio

    log: list = []

    async def slow(tag):
        log.append((tag, "start"))
        await asyncio.sleep(30)
        log.append((tag, "end"))

    async def quick(tag):
        log.append((tag, repr(sys.exception())))

    async def worker(started):
        adefer(quick, "outer")
        adefer(slow, "inner")
        started.set()
        return "value"

    async def main():
        started = asyncio.Event()
        task = asyncio.create_task(worker(started))
        await started.wait()
        await asyncio.sleep(0)  # the worker is now awaiting slow() on its return
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert open_coded(worker)
    asyncio.run(main())
    assert log == [("inner", "start"), ("outer", "CancelledError()")]
