"""A function's top-level slots are left unbound until their statement fills them.

Preparation gives the slots of defers at a function's top level (no return before them) no None
before the body: every return comes after their statements, so they are bound wherever a return
reads them, and the exception handler first binds the ones the body did not reach to None
(`_prepared_bind_slots`). These tests raise at every point between such fills, in every way a
fill can fail, and compare with the same function written with try/finally.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from godefer import _rt, adefer, defer, recover
from slot_log import LOG, Tracked, prepared_namespace, slot_log  # noqa: F401

pytestmark = pytest.mark.usefixtures("slot_log")

# Ways a statement can fill slot k, as godefer source and as the try/finally that is its oracle
# (`{body}` is what follows the statement).
FORMS = {
    "plain": ("defer(note({k}))", "try:\n{body}\nfinally:\n    note({k})()"),
    "args": ("defer(LOG.append, {k})", "try:\n{body}\nfinally:\n    LOG.append({k})"),
    "star": ("defer(*(LOG.append, {k}))", "try:\n{body}\nfinally:\n    LOG.append({k})"),
    "assigned": ("_ = defer(note({k}))", "try:\n{body}\nfinally:\n    note({k})()"),
    "errdefer": (
        "errdefer(LOG.append, {k})",
        "try:\n{body}\nexcept BaseException:\n    LOG.append({k})\n    raise",
    ),
    "okdefer": (
        "okdefer(LOG.append, {k})",
        "try:\n{body}\nexcept BaseException:\n    raise\nelse:\n    LOG.append({k})",
    ),
}
# Where the function fails: after the fill of slot `at` (`raise`), or in the fill of slot `at`
# itself: a callee that is not callable, or an argument that raises.
FAILS = ("raise", "not_callable", "argument")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _statements(forms: tuple[str, ...], at: int | None, fail: str) -> list[str]:
    out = []
    for k, form in enumerate(forms):
        if k == at and fail == "not_callable":
            out.append("defer(NOT_CALLABLE)")
            break
        if k == at and fail == "argument":
            out.append(f"defer(LOG.append, boom({k}))")
            break
        out.append(FORMS[form][0].format(k=k))
        if k == at:
            out.append(f"raise ValueError({k})")
            break
    return out


def _oracle(forms: tuple[str, ...], at: int | None, fail: str) -> str:
    """The try/finally translation of _statements: one try per slot filled, around the rest."""
    if at is None:
        filled, body = len(forms), 'LOG.append("end")'
    elif fail == "raise":
        filled, body = at + 1, f"raise ValueError({at})"
    elif fail == "not_callable":
        filled, body = at, "raise TypeError"
    else:
        filled, body = at, f"boom({at})"
    for k in reversed(range(filled)):
        body = FORMS[forms[k]][1].format(k=k, body=_indent(body))
    return body


PRELUDE = """
from godefer import defer, errdefer, okdefer
LOG = []
NOT_CALLABLE = 42
def note(tag):
    return lambda: LOG.append(tag)
def boom(k):
    raise KeyError(k)
"""


def _run(fn, log: list) -> tuple[list, type | None]:
    log.clear()
    try:
        value = fn()
    except BaseException as exc:  # the oracle compares every outcome
        return [*log, None], type(exc)
    return [*log, value], None


CASES = [
    (forms, at, fail)
    for forms in (
        ("plain", "plain", "plain", "plain"),
        ("args", "star", "assigned", "plain"),
        ("errdefer", "okdefer", "args", "errdefer"),
        ("plain", "okdefer", "star", "args"),
    )
    for at in (None, 0, 1, 2, 3)
    for fail in (FAILS if at is not None else FAILS[:1])
]


@pytest.mark.parametrize(("forms", "at", "fail"), CASES)
def test_failing_between_unbound_slots_matches_try_finally(forms, at, fail, tmp_path):
    statements = _statements(forms, at, fail)
    if at is None:
        statements.append('LOG.append("end")')
    src = PRELUDE + "def f():\n" + _indent("\n".join(statements)) + "\n    return 'done'\n"
    oracle = PRELUDE + "def f():\n" + _indent(_oracle(forms, at, fail)) + "\n    return 'done'\n"
    prepared = prepared_namespace(src, str(tmp_path / "unbound.py"))
    assert "__godefer_0__" in prepared["f"].__code__.co_varnames  # open-coded
    plain: dict = {}
    exec(compile(oracle, "oracle.py", "exec"), plain)
    assert _run(prepared["f"], prepared["LOG"]) == _run(plain["f"], plain["LOG"]), src


def three_defers():
    defer(LOG.append, 0)
    seen_before = _probe_caller()
    defer(LOG.append, 1)
    defer(LOG.append, 2)
    return seen_before


def _probe_caller() -> set[str]:
    return {n for n in sys._getframe(1).f_locals if n.startswith("__godefer_")}


def test_a_later_top_level_slot_is_unbound_before_its_statement():
    seen = three_defers()
    assert LOG == [2, 1, 0]
    assert "__godefer_0__" in seen  # filled
    assert "__godefer_1__" not in seen and "__godefer_2__" not in seen  # no None before the body


def slot_after_an_early_return(early):
    defer(LOG.append, 0)
    if early:
        return "early"
    seen = _probe_caller()
    defer(LOG.append, 1)
    return seen


def test_a_slot_after_a_return_keeps_its_none_and_runs_only_when_reached():
    assert slot_after_an_early_return(True) == "early"
    assert LOG == [0]
    LOG.clear()
    seen = slot_after_an_early_return(False)
    assert "__godefer_1__" in seen  # a return may come before it: bound to None up front
    assert LOG == [1, 0]


def recovers_before_later_slots():
    defer(LOG.append, 0)
    defer(lambda: LOG.append(("recovered", type(recover()).__name__)))
    raise ValueError("before slot 2")
    defer(LOG.append, 2)  # unreachable on purpose: its slot stays unbound


def test_recover_with_later_slots_unreached_returns_none():
    assert recovers_before_later_slots() is None
    assert LOG == [("recovered", "ValueError"), 0]


def core_entry_then_raise():
    defer(LOG.append, 0)
    Tracked("core")  # the core holds entries of the frame now: the exit goes through it
    defer(LOG.append, 1)
    raise ValueError
    defer(LOG.append, 2)  # unreachable on purpose


def test_an_exit_through_the_core_reads_unreached_slots_as_none():
    with pytest.raises(ValueError):
        core_entry_then_raise()
    assert LOG == [1, "core", 0]


def generator_closed_early():
    defer(LOG.append, 0)
    yield 1
    defer(LOG.append, 1)
    yield 2


def test_closing_a_generator_before_its_later_fills():
    gen = generator_closed_early()
    assert next(gen) == 1
    gen.close()
    assert LOG == [0]


async def coroutine_raising_early(fail):
    async def log(k):
        LOG.append(k)

    adefer(log, 0)
    if fail:
        raise ValueError
    adefer(log, 1)


def test_a_coroutine_raising_before_its_later_awaited_slots():
    with pytest.raises(ValueError):
        asyncio.run(coroutine_raising_early(True))
    assert LOG == [0]
    LOG.clear()
    asyncio.run(coroutine_raising_early(False))
    assert LOG == [1, 0]


def test_bind_slots_names_a_local_the_caller_lacks():
    with pytest.raises(SystemError, match="__not_a_slot__"):
        _rt.bind_slots(("__not_a_slot__",))
