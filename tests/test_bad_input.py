"""Bad input: a clear error at the line that caused it, nothing scheduled, nothing lost
(DESIGN.md §1 table, §4 "Bad input gets a clear error at the line that caused it").
"""

from __future__ import annotations

import os
import traceback

import pytest

import godefer
from godefer import ScopeBound, defer, errdefer, okdefer, scope, scoped
from runtime_path import here, run_src

GODEFER_DIR = os.path.dirname(os.path.abspath(godefer.__file__))


def last_user_frame(exc: BaseException) -> traceback.FrameSummary:
    """The innermost traceback entry outside the godefer package."""
    frames = [
        fr
        for fr in traceback.extract_tb(exc.__traceback__)
        if not os.path.abspath(fr.filename).startswith(GODEFER_DIR + os.sep)
    ]
    return frames[-1]


SCHEDULERS = pytest.mark.parametrize(
    "sched", [defer, errdefer, okdefer], ids=["defer", "errdefer", "okdefer"]
)


@SCHEDULERS
@pytest.mark.parametrize("bad", [5, None, "text", [1]], ids=["int", "None", "str", "list"])
def test_non_callable_is_a_type_error_at_the_line(sched, bad):
    log = []
    lines = []

    def f():
        defer(log.append, "earlier call")
        lines.append(here() + 1)
        sched(bad)
        log.append("not reached")

    with pytest.raises(TypeError) as info:
        f()
    assert "callable" in str(info.value)
    frame = last_user_frame(info.value)
    assert (frame.name, frame.lineno) == ("f", lines[0])
    assert log == ["earlier call"]


@SCHEDULERS
def test_non_callable_with_arguments_schedules_nothing(sched):
    log = []

    def f():
        defer(log.append, "earlier call")
        try:
            sched(42, log.append, "argument")
        except TypeError:
            log.append("caught")
        defer(log.append, "later call")
        return "r"

    assert f() == "r"
    assert log == ["caught", "later call", "earlier call"]


@SCHEDULERS
def test_missing_callable_is_a_type_error_at_the_line(sched):
    log = []
    lines = []

    def f():
        defer(log.append, "earlier call")
        lines.append(here() + 1)
        sched()

    with pytest.raises(TypeError) as info:
        f()
    frame = last_user_frame(info.value)
    assert (frame.name, frame.lineno) == ("f", lines[0])
    assert log == ["earlier call"]


@SCHEDULERS
def test_callable_is_positional_only(sched):
    log = []

    def rec(*args, **kwargs):
        log.append(("rec called", args, kwargs))

    def f():
        sched(fn=rec)

    with pytest.raises(TypeError):
        f()
    assert log == []


def test_non_callable_in_a_block_scope():
    log = []

    def f():
        with scope():
            defer(log.append, "block call")
            try:
                defer(object())
            except TypeError as e:
                log.append(("caught", "callable" in str(e)))
        log.append("after block")

    f()
    assert log == [("caught", True), "block call", "after block"]


def test_non_callable_in_a_generator():
    log = []
    lines = []

    def gen():
        defer(log.append, "generator call")
        yield 1
        lines.append(here() + 1)
        defer(2)

    g = gen()
    next(g)
    with pytest.raises(TypeError) as info:
        next(g)
    frame = last_user_frame(info.value)
    assert (frame.name, frame.lineno) == ("gen", lines[0])
    assert log == ["generator call"]


@pytest.mark.parametrize("bad", [42, "text", object()], ids=["int", "str", "object"])
def test_scoped_bad_object_is_a_type_error_at_the_line(bad):
    log = []
    lines = []

    def f():
        defer(log.append, "earlier call")
        lines.append(here() + 1)
        scoped(bad)

    with pytest.raises(TypeError) as info:
        f()
    assert type(bad).__name__ in str(info.value)
    frame = last_user_frame(info.value)
    assert (frame.name, frame.lineno) == ("f", lines[0])
    assert log == ["earlier call"]


def test_scoped_without_argument():
    def f():
        scoped()

    with pytest.raises(TypeError):
        f()


def test_half_a_context_manager_is_rejected_or_closed():
    # an object with __enter__ but no __exit__ is not a context manager; with close() it is a
    # closeable, without it a TypeError; either way __enter__ must not have been called
    log = []

    class EnterOnly:
        def __enter__(self):
            log.append("enter")
            return self

    def f():
        scoped(EnterOnly())

    with pytest.raises(TypeError) as info:
        f()
    assert "EnterOnly" in str(info.value)
    assert log == []


def test_scopebound_without_close_is_a_type_error_at_the_line():
    class NoClose(ScopeBound):
        pass

    lines = []

    def f():
        lines.append(here() + 1)
        NoClose()

    with pytest.raises(TypeError) as info:
        f()
    frame = last_user_frame(info.value)
    assert (frame.name, frame.lineno) == ("f", lines[0])


BAD_SRC = """
from godefer import defer, scoped
log = []
outcomes = []

def f(which):
    defer(log.append, ("earlier", which))
    if which == "defer":
        defer(5)  # BAD-DEFER
    else:
        scoped(5)  # BAD-SCOPED

for which in ("defer", "scoped"):
    try:
        f(which)
    except TypeError as e:
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        outcomes.append((which, tb.tb_frame.f_code.co_filename, tb.tb_lineno))
"""


def line_of(src: str, marker: str) -> int:
    (lineno,) = [i for i, text in enumerate(src.splitlines(), 1) if marker in text]
    return lineno


def test_bad_input_in_exec_source_points_at_the_line():
    ns = run_src(BAD_SRC)
    assert ns["outcomes"] == [
        ("defer", "<string>", line_of(BAD_SRC, "# BAD-DEFER")),
        ("scoped", "<string>", line_of(BAD_SRC, "# BAD-SCOPED")),
    ]
    assert ns["log"] == [("earlier", "defer"), ("earlier", "scoped")]
