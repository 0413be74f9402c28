"""Debuggers, coverage and profilers on prepared code (DESIGN.md §2 "Coexistence", §3 "positions
preserved so tracebacks, coverage and debuggers see the user's lines").

The code under test is a real module file imported through godefer's import hook, so it is
prepared. pdb must stop exactly where it would in the same code without godefer's exit handler;
coverage.py (its C tracer and, on 3.12+, its sys.monitoring core) must report exactly the lines
the user's code executed and missed; cProfile must show the user's functions and the deferred
call under their own names.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import json
import os
import pdb
import pstats
import re
import subprocess
import sys
import uuid

import pytest

import godefer
import godefer._core
import godefer._rt

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(godefer.__file__)))

# Line numbers below are fixed by this text (see the comments at the right).
MODULE_SRC = """\
from godefer import adefer, defer, errdefer, scope


def cleanup(log):
    log.append("cleanup")


def work(log):
    defer(cleanup, log)
    x = 1
    log.append(x)
    return x


def statement(log):
    log.append("stmt deferred") in defer
    if log:
        log.append("branch")
    return len(log)


def failing(log):
    errdefer(cleanup, log)
    log.append("before")
    raise ValueError("failing")


def on_error(log):
    log.append("error")


def coverage_target(log, flag):
    defer(*(cleanup, log))
    errdefer(on_error, log)
    log.append("body")
    if flag:
        log.append("flag")
    log.append("stmt") in defer
    for i in range(2):
        log.append(i)
    return len(log)


def unused():
    return 1


RESULT = coverage_target([], False)
try:
    failing([])
except ValueError:
    CAUGHT = True
MODULE_LOG = []
defer(MODULE_LOG.append, "module exit")
if not RESULT:
    MODULE_LOG.append("never")


async def awaiting(log, flag):
    adefer(acleanup, log)
    with scope():
        adefer(acleanup, log)
        log.append("block")
    if flag:
        return 1
    return 2


async def acleanup(log):
    log.append("acleanup")


import asyncio
ASYNC_RESULT = asyncio.run(awaiting([], True))


def falls_off(log, flag):
    defer(cleanup, log)
    if flag:
        log.append("not run")


FELL_OFF = falls_off([], False)
"""

WORK_DEF, WORK_FIRST, WORK_RETURN = 8, 9, 12
CLEANUP_DEF, CLEANUP_BODY = 4, 5

# Coverage: the statements coverage.py finds in MODULE_SRC, and those missed by importing it and
# then calling coverage_target([], True).
STATEMENTS = {1, 4, 5, 8, *range(9, 13), 15, *range(16, 20), *range(22, 26), 28, 29}
STATEMENTS |= {*range(32, 42), 44, 45, *range(48, 57)}
STATEMENTS |= {*range(59, 67), 69, 70, 73, 74}  # the async function with awaited exits
STATEMENTS |= {77, 78, 79, 80, 83}  # falling off the end past an `if` not taken
MISSING = {9, 10, 11, 12, 16, 17, 18, 19, 29, 45, 56, 66, 80}
EXECUTED = STATEMENTS - MISSING


@pytest.fixture
def mod(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"gd_tools_{uuid.uuid4().hex[:10]}"
    path = tmp_path / f"{name}.py"
    path.write_text(MODULE_SRC)
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    module.PATH = str(path)
    yield module
    sys.modules.pop(name, None)


def test_module_under_test_is_prepared(mod):
    for fn in (mod.work, mod.statement, mod.failing, mod.coverage_target, mod.awaiting):
        assert godefer._rt.is_prepared(fn.__code__), fn.__name__
    assert mod.MODULE_LOG == ["module exit"]
    assert mod.CAUGHT


# --- pdb ---------------------------------------------------------------------------------------

STOP = re.compile(r"^> (?P<path>.+)\((?P<line>\d+)\)(?P<func>[^()]+)\(\)")


def run_pdb(fn, *args, commands: list[str]):
    out = io.StringIO()
    debugger = pdb.Pdb(
        stdin=io.StringIO("\n".join(commands) + "\n"), stdout=out, nosigint=True, readrc=False
    )
    debugger.use_rawinput = False
    old = sys.gettrace()
    try:
        value = debugger.runcall(fn, *args)
    finally:
        sys.settrace(old)
        OUTPUTS.append(out.getvalue())
    return value, out.getvalue()


OUTPUTS: list[str] = []  # pdb's output, also when the function under the debugger raised


def stops(output: str, path: str) -> list[tuple[str, str, int]]:
    """(event, function, line) of every pdb stop in `path`, in order."""
    found = []
    event = "line"
    for raw in output.splitlines():
        line = raw.replace("(Pdb) ", "").strip()
        if line == "--Call--":
            event = "call"
        elif line == "--Return--":
            event = "return"
        elif m := STOP.match(line):
            if m["path"] == path:
                found.append((event, m["func"], int(m["line"])))
            event = "line"
    return found


def test_pdb_step_stops_only_on_user_lines(mod):
    expected = [
        ("line", "work", WORK_FIRST),
        ("line", "work", WORK_FIRST + 1),
        ("line", "work", WORK_FIRST + 2),
        ("line", "work", WORK_RETURN),
        ("call", "cleanup", CLEANUP_DEF),
        ("line", "cleanup", CLEANUP_BODY),
        ("return", "cleanup", CLEANUP_BODY),
        ("return", "work", WORK_RETURN),
    ]
    log: list[object] = []
    value, output = run_pdb(mod.work, log, commands=["step"] * (len(expected) + 2) + ["continue"])
    assert value == 1
    assert log == [1, "cleanup"]
    assert stops(output, mod.PATH) == expected, output


def test_pdb_next_stops_only_on_user_lines(mod):
    expected = [
        ("line", "work", WORK_FIRST),
        ("line", "work", WORK_FIRST + 1),
        ("line", "work", WORK_FIRST + 2),
        ("line", "work", WORK_RETURN),
        ("return", "work", WORK_RETURN),
    ]
    log: list[object] = []
    value, output = run_pdb(mod.work, log, commands=["next"] * (len(expected) + 2) + ["continue"])
    assert value == 1
    assert log == [1, "cleanup"]  # the deferred call ran while pdb was stepping
    assert stops(output, mod.PATH) == expected, output


def test_pdb_next_through_the_statement_form(mod):
    # The statement form defers the append, so `if log:` is false and its body does not run.
    expected = [
        ("line", "statement", 16),
        ("line", "statement", 17),
        ("line", "statement", 19),
        ("return", "statement", 19),
    ]
    log: list[str] = []
    value, output = run_pdb(
        mod.statement, log, commands=["next"] * (len(expected) + 2) + ["continue"]
    )
    assert value == 0
    assert log == ["stmt deferred"]
    assert stops(output, mod.PATH) == expected, output


def test_pdb_next_through_an_exception_exit(mod):
    expected = [
        ("line", "failing", 23),
        ("line", "failing", 24),
        ("line", "failing", 25),
        ("line", "failing", 25),  # pdb reports the exception at the raise line
        ("return", "failing", 25),
    ]
    log: list[str] = []
    with pytest.raises(ValueError, match="failing"):
        run_pdb(mod.failing, log, commands=["next"] * (len(expected) + 2) + ["continue"])
    assert log == ["before", "cleanup"]


def test_pdb_breakpoint_in_a_deferred_call_shows_the_exiting_line(mod):
    log: list[object] = []
    value, output = run_pdb(
        mod.work,
        log,
        commands=[f"break {mod.PATH}:{CLEANUP_BODY}", "continue", "where", "continue"],
    )
    assert value == 1
    assert log == [1, "cleanup"]
    assert ("line", "cleanup", CLEANUP_BODY) in stops(output, mod.PATH)
    # `where` inside the deferred call: the exiting frame is at the user's return line.
    assert f"{mod.PATH}({WORK_RETURN})work()" in output
    assert f"{mod.PATH}(-1)" not in output and f"{mod.PATH}(0)" not in output


# --- coverage.py -------------------------------------------------------------------------------

COVERAGE_DRIVER = """\
import importlib, json, sys
import godefer, godefer._rt
import coverage

path, name, branch = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
cov = coverage.Coverage(data_file=None, include=[path], branch=branch)
cov.start()
module = importlib.import_module(name)
module.coverage_target([], True)
cov.stop()
data = cov.get_data()
_, statements, _, missing, _ = cov.analysis2(path)
print(json.dumps({
    "core": dict(cov.sys_info()).get("core"),
    "prepared": godefer._rt.is_prepared(module.coverage_target.__code__),
    "loader": type(module.__spec__.loader).__name__,
    "executed": sorted(data.lines(path) or []),
    "statements": sorted(statements),
    "missing": sorted(missing),
    "arcs": sorted(data.arcs(path) or []) if branch else [],
}))
"""


def run_coverage(tmp_path, core: str | None, branch: bool = False) -> dict:
    name = f"gd_cov_{uuid.uuid4().hex[:10]}"
    path = tmp_path / f"{name}.py"
    path.write_text(MODULE_SRC)
    env = dict(os.environ)
    env.pop("COVERAGE_CORE", None)
    env.pop("GODEFER_PREPARE", None)
    if core is not None:
        env["COVERAGE_CORE"] = core
    core_file = os.path.abspath(getattr(godefer._core, "__file__", "") or "")
    if core_file.startswith(SRC_ROOT + os.sep):  # built in place: make the tree importable
        env["PYTHONPATH"] = SRC_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", COVERAGE_DRIVER, str(path), name, "1" if branch else "0"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


CORES = [
    pytest.param(None, "CTracer", id="default-core"),
    pytest.param(
        "sysmon",
        "SysMonitor",
        id="sysmon-core",
        marks=pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+"),
    ),
]


@pytest.mark.parametrize(("core", "core_name"), CORES)
def test_coverage_lines_of_a_prepared_module(tmp_path, core, core_name):
    res = run_coverage(tmp_path, core)
    assert res["core"] == core_name
    assert res["prepared"] is True
    assert res["loader"] == "GodeferLoader"
    assert set(res["statements"]) == STATEMENTS
    assert set(res["missing"]) == MISSING
    assert set(res["executed"]) == EXECUTED  # no phantom line (0, -1, ...) and none lost


def test_coverage_arcs_only_mention_user_lines(tmp_path):
    # (coverage.py measures branches with its sys.monitoring core only on 3.14+.)
    res = run_coverage(tmp_path, None, branch=True)
    assert res["core"] == "CTracer"
    mentioned = {abs(line) for arc in res["arcs"] for line in arc}
    assert mentioned, res
    assert mentioned <= STATEMENTS, sorted(mentioned - STATEMENTS)


def test_coverage_expected_sets_are_consistent():
    # Guard for the constants above: every missed line is a statement.
    assert MISSING <= STATEMENTS
    lines = MODULE_SRC.splitlines()
    assert lines[WORK_DEF - 1].startswith("def work(")
    assert lines[WORK_RETURN - 1].strip() == "return x"
    assert lines[CLEANUP_BODY - 1].strip() == 'log.append("cleanup")'
    assert lines[36].strip() == 'log.append("flag")'
    assert lines[58].startswith("async def awaiting(")
    assert lines[65].strip() == "return 2"
    assert lines[73].startswith("ASYNC_RESULT =")


# --- line events of every slot shape -------------------------------------------------------------

SHAPES_HEAD = """\
import contextlib
from godefer import defer, errdefer, scope, scoped


def shapes(log, n):
    defer(log.append, "first")
"""
SHAPES_TAIL = """\
    log.append("end")
    return len(log)
"""
# Body parts between the head and the tail: slots that may be unreached (an `if`, a loop), a
# loop's list, a statement's slots and list, scoped() in an expression, a block, and returns.
SHAPES = {
    "if": "    if n:\n        defer(log.append, 1)\n",
    "loop": (
        "    for i in range(n):\n        defer(log.append, i)\n        x = defer(log.append, i)\n"
    ),
    "pair": "    pair = (defer(log.append, 'a'), errdefer(log.append, 'b'))\n",
    "pushed": "    c = (defer(log.append, 'c'), defer(log.append, 'd')) if n else None\n",
    "scoped": "    name = scoped(contextlib.nullcontext('v')).upper()\n",
    "block": "    with scope():\n        defer(log.append, 'block')\n",
    "star": "    defer(*(log.append, 's'))\n    if n:\n        defer(*(log.append,), n, **{})\n",
    "block_loop": (
        "    with scope():\n        defer(log.append, 'b')\n        for i in range(n):\n"
        "            defer(log.append, i)\n"
    ),
    "early": "    if n:\n        defer(log.append, 1)\n        if n > 1:\n            return 0\n",
    "bare": "    if n:\n        defer(log.append, 1)\n        if n > 1:\n            return\n",
    "fall_off": "    if n:\n        defer(log.append, 1)\n    if n > 1:\n        log.append(2)\n",
    "return_in_try": (
        "    if n:\n        defer(log.append, 1)\n    try:\n        if n > 1:\n"
        "            return 7\n    finally:\n        log.append(3)\n"
    ),
    "return_in_with": (
        "    if n:\n        defer(log.append, 1)\n    with contextlib.nullcontext():\n"
        "        if n > 1:\n            return 7\n"
    ),
}
if sys.version_info >= (3, 12):  # a comprehension's defers are pushed onto a list (3.12+)
    SHAPES["comprehension"] = "    vals = [defer(log.append, i) for i in range(n) if i]\n"
# The same lines with defer & co. doing nothing: what a tracer sees of the user's code.
FAKE_PRELUDE = """\
import contextlib
def defer(f, *a, **k): return f
errdefer = defer
scope = contextlib.nullcontext
def scoped(cm): return cm.__enter__()
"""
# A return inside a try or with statement runs the exit in a `finally` shared by every return,
# with no line of its own; on 3.11 and 3.12 the `return` after it reports the line that ran last
# a second time (docs/semantics.md, "Line events").
FINALLY_EXIT = pytest.mark.xfail(
    sys.version_info < (3, 13), strict=True, reason="3.11/3.12: one more line event (documented)"
)


def _imported_shapes(src: str, tmp_path, monkeypatch):
    """`shapes` of `src` imported as a module (the import hook prepares it)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"gd_shapes_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(src)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name).shapes
    finally:
        sys.modules.pop(name, None)


def _line_events(func, *args, code=None) -> list[int]:
    code = func.__code__ if code is None else code
    seen: list[int] = []

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None
        if event == "line":
            seen.append(frame.f_lineno - code.co_firstlineno)
        return tracer

    sys.settrace(tracer)
    try:
        func(*args)
    finally:
        sys.settrace(None)
    return seen


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(k, marks=FINALLY_EXIT) if k in ("return_in_try", "return_in_with") else k
        for k in SHAPES
    ],
)
@pytest.mark.parametrize("n", [0, 2])
def test_line_events_of_every_slot_shape_are_the_users(shape, n, tmp_path, monkeypatch):
    # A tracer (pdb, coverage's C tracer) sees each user line as often as in the same code
    # without godefer: the exit code carries its return's line.
    src = SHAPES_HEAD + SHAPES[shape] + SHAPES_TAIL
    prepared = _imported_shapes(src, tmp_path, monkeypatch)
    assert "complete_slots" in prepared.__code__.co_names  # open-coded
    fake: dict = {}
    body = src.split("\n", 2)[2]  # the function, minus the imports (lines are relative)
    exec(compile(FAKE_PRELUDE + body, "<fake>", "exec"), fake)
    assert _line_events(prepared, [], n) == _line_events(fake["shapes"], [], n)


# Functions that fall off their end after a compound statement, and blocks left by a jump: the
# exit code needs a line there (on 3.11 and 3.12 a location-less exit's `return` would take the
# line laid out before it, which may not have run: a phantom line to coverage).
FALL_OFF_HEAD = """\
import contextlib
from godefer import defer, scope


def shapes(log, n):
"""
FALL_OFF_SHAPES = {
    "if": "    defer(log.append, 0)\n    if n > 1:\n        log.append(1)\n",
    "if_slot_then_if": (
        "    if n:\n        defer(log.append, 0)\n    if n > 1:\n        log.append(1)\n"
    ),
    "elif": (
        "    defer(log.append, 0)\n    if n > 1:\n        log.append(1)\n    elif n:\n"
        "        log.append(2)\n    else:\n        pass\n"
    ),
    "nested_if": (
        "    defer(log.append, 0)\n    if n:\n        if n > 1:\n            log.append(1)\n"
        "    else:\n        log.append(2)\n"
    ),
    "for": "    defer(log.append, 0)\n    for i in range(n):\n        log.append(i)\n",
    "while": "    defer(log.append, 0)\n    while n > 1:\n        n -= 1\n",
    "with": (
        "    defer(log.append, 0)\n    with contextlib.nullcontext():\n        if n > 1:\n"
        "            log.append(2)\n"
    ),
    "try_finally": (
        "    defer(log.append, 0)\n    try:\n        log.append(1)\n    finally:\n"
        "        log.append(2)\n"
    ),
    "try_except": (
        "    defer(log.append, 0)\n    try:\n        log.append(1)\n    except KeyError:\n"
        "        log.append(2)\n"
    ),
    "loop_list_then_if": (
        "    for i in range(n):\n        defer(log.append, i)\n    if n > 1:\n"
        "        log.append('end')\n"
    ),
    "block_loop": (
        "    with scope():\n        for i in range(n):\n            defer(log.append, i)\n"
    ),
    "block_break": (
        "    for j in range(2):\n        with scope():\n            for i in range(n):\n"
        "                defer(log.append, i)\n            if j:\n                break\n"
        "    return 1\n"
    ),
    "block_continue": (
        "    for j in range(3):\n        with scope():\n            defer(log.append, j)\n"
        "            if j:\n                continue\n            log.append(9)\n    return 1\n"
    ),
    "block_return": (
        "    with scope():\n        defer(log.append, 1)\n        if n:\n            return\n"
        "        log.append(9)\n"
    ),
    "block_return_value": (
        "    with scope():\n        defer(log.append, 1)\n        if n:\n            return n\n"
        "        log.append(9)\n    return 0\n"
    ),
}
# After a try/except, falling off the end reports the `try` line once more on 3.11 and 3.12 (the
# exit carries it: which of its branches ran last is not known where the exit code stands). After
# an open-coded block, 3.11 reports its `with` line once more (the jump past the block's handler
# has no line there). Both are lines that ran (docs/semantics.md, "Line events").
ONE_MORE_EVENT = {("try_except", n): sys.version_info < (3, 13) for n in (0, 1, 3)}
ONE_MORE_EVENT |= {("block_loop", n): sys.version_info < (3, 12) for n in (0, 1, 3)}
ONE_MORE_EVENT[("block_return", 0)] = sys.version_info < (3, 12)
FALL_OFF_CASES = [
    pytest.param(
        shape,
        n,
        marks=pytest.mark.xfail(strict=True, reason="one more line event, on a line that ran")
        if ONE_MORE_EVENT.get((shape, n))
        else (),
    )
    for shape in FALL_OFF_SHAPES
    for n in (0, 1, 3)
]


def _fall_off_events(shape: str, n: int, tmp_path, monkeypatch) -> tuple[list[int], list[int]]:
    src = FALL_OFF_HEAD + FALL_OFF_SHAPES[shape]
    prepared = _imported_shapes(src, tmp_path, monkeypatch)
    assert "complete_slots" in prepared.__code__.co_names  # open-coded
    fake: dict = {}
    exec(compile(FAKE_PRELUDE + src.split("\n", 2)[2], "<fake>", "exec"), fake)
    return _line_events(prepared, [], n), _line_events(fake["shapes"], [], n)


@pytest.mark.parametrize(("shape", "n"), FALL_OFF_CASES)
def test_line_events_of_fall_offs_and_block_exits_are_the_users(shape, n, tmp_path, monkeypatch):
    seen, want = _fall_off_events(shape, n, tmp_path, monkeypatch)
    assert seen == want


@pytest.mark.parametrize("shape", list(FALL_OFF_SHAPES))
def test_no_phantom_line_on_any_exit(shape, tmp_path, monkeypatch):
    # Coverage counts a line as run when it sees an event for it: an exit may repeat a line that
    # ran (the documented cases), never report one that did not.
    for n in (0, 1, 3):
        seen, want = _fall_off_events(shape, n, tmp_path, monkeypatch)
        assert set(seen) <= set(want), (n, seen, want)


# A coroutine's adefer statements own slots too, awaited inline on its exits.
ASYNC_SHAPES_HEAD = """\
from godefer import adefer, defer


async def shapes(log, n):
    adefer(acleanup, log)
"""
ASYNC_SHAPES = {
    "top": "",
    "if": "    if n:\n        adefer(acleanup, log, 1)\n",
    "mixed": "    defer(log.append, 0)\n    adefer(acleanup, log, 2)\n",
    "early": (
        "    if n:\n        adefer(acleanup, log, 1)\n        if n > 1:\n            return 0\n"
    ),
    "fall_off": (
        "    if n:\n        adefer(acleanup, log, 1)\n    if n > 1:\n        log.append(2)\n"
    ),
    "return_in_try": (
        "    try:\n        if n > 1:\n            return 7\n    finally:\n        log.append(3)\n"
    ),
    # No return: the awaits carry the line of the last statement, which ran.
    "falls_off": "    defer(log.append, 0)\n    log.append(1)\n",
    "falls_off_an_if": "    if n > 1:\n        log.append(2)\n",
}
ASYNC_SHAPES_RETURN = """\
    log.append("end")
    return len(log)
"""
ASYNC_SHAPES_TAIL = """\


async def acleanup(log, *values):
    log.append(values)
"""
# An await needs a line of its own (CPython 3.13.0 cannot compile one without: "Invalid CFG"): a
# return inside a try or with statement awaits the slots at the scope's first line (in a
# `finally` shared by every return), one more line event there (docs/semantics.md, "Line
# events"). Falling off the end after an `if` is exact: each branch gets its own return.
AWAITS_LOCATED = pytest.mark.xfail(strict=True, reason="one more line event (documented)")
ASYNC_FAKE_PRELUDE = """\
def adefer(f, *a, **k): return f
def defer(f, *a, **k): return f
"""


def _drive(coro) -> None:
    try:
        while True:
            coro.send(None)
    except StopIteration:
        pass


@pytest.mark.parametrize(
    "shape",
    [pytest.param(k, marks=AWAITS_LOCATED) if k == "return_in_try" else k for k in ASYNC_SHAPES],
)
@pytest.mark.parametrize("n", [0, 2])
def test_line_events_of_a_coroutine_awaiting_its_slots_are_the_users(
    shape, n, tmp_path, monkeypatch
):
    tail = "" if shape.startswith("falls_off") else ASYNC_SHAPES_RETURN
    src = ASYNC_SHAPES_HEAD + ASYNC_SHAPES[shape] + tail + ASYNC_SHAPES_TAIL
    prepared = _imported_shapes(src, tmp_path, monkeypatch)
    assert "__godefer_await__" in prepared.__code__.co_names  # awaited slots
    fake: dict = {}
    body = src.split("\n", 2)[2]
    exec(compile(ASYNC_FAKE_PRELUDE + body, "<fake>", "exec"), fake)
    seen = _line_events(lambda *a: _drive(prepared(*a)), [], n, code=prepared.__code__)
    want = _line_events(lambda *a: _drive(fake["shapes"](*a)), [], n, code=fake["shapes"].__code__)
    assert seen == want


# --- cProfile ----------------------------------------------------------------------------------


def test_cprofile_shows_user_function_names(mod):
    log: list[object] = []
    profiler = cProfile.Profile()
    assert profiler.runcall(mod.work, log) == 1
    with pytest.raises(ValueError):
        profiler.runcall(mod.failing, log)
    assert log == [1, "cleanup", "before", "cleanup"]
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    in_module = {key: value for key, value in stats.items() if key[0] == mod.PATH}
    assert (mod.PATH, WORK_DEF, "work") in in_module
    assert (mod.PATH, 22, "failing") in in_module
    assert (mod.PATH, CLEANUP_DEF, "cleanup") in in_module
    primitive_calls = {key[2]: value[0] for key, value in in_module.items()}
    assert primitive_calls == {"work": 1, "failing": 1, "cleanup": 2}
    # No entry for anything preparation inserted.
    assert not any("__godefer" in key[2] for key in stats)
    assert all(line > 0 for _, line, _ in in_module)


def test_cprofile_printed_report_names_the_deferred_function(mod):
    log: list[object] = []
    profiler = cProfile.Profile()
    profiler.runcall(mod.statement, log)
    profiler.runcall(mod.work, log)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("filename", "line").print_stats()
    report = out.getvalue()
    base = os.path.basename(mod.PATH)
    assert f"{base}:{WORK_DEF}(work)" in report
    assert f"{base}:{CLEANUP_DEF}(cleanup)" in report
    assert f"{base}:15(statement)" in report
    assert log == ["stmt deferred", 1, "cleanup"]
