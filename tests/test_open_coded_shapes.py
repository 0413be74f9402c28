"""Every arrangement of open-coded slots runs each deferred call exactly once, last first.

Open coding turns a function's defers into straight-line code on the way out, with an ``if``
around each slot that may be unreached. CPython 3.13.0 miscompiled one such arrangement (a call
without a line number after such an ``if`` ran twice), so this checks the arrangements
exhaustively: three defers (four, for the places that make joins), each at the top level,
inside an ``if``, in a loop, used as an expression, as ``@defer`` on a nested def, as
``scoped(cm)``, or in a ``with scope():`` block (which runs it at the block's end), returning
normally or raising, under condition patterns that reach and skip each ``if``.
"""

from __future__ import annotations

import itertools

import pytest

from godefer._prepare import prepare_source

PLACES = ("top", "if", "loop", "expr", "block", "deco", "scoped")
# Every condition pattern that tells the four `if`s apart: each slot reached and unreached, next
# to a reached and to an unreached neighbour.
CONDS = [
    (False,) * 4,
    (True,) * 4,
    (True, False) * 2,
    (False, True) * 2,
    (True, True, False, False),
]


def source(places: tuple[str, ...]) -> str:
    lines = [
        "from godefer import defer, scope, scoped",
        "class Exits:",
        "    def __init__(self, log, k):",
        "        self.log, self.k = log, k",
        "    def __enter__(self):",
        "        return self",
        "    def __exit__(self, *exc):",
        "        self.log.append(self.k)",
        "def f(log, conds, n, fail):",
    ]
    for k, place in enumerate(places):
        if place == "top":
            lines.append(f"    defer(log.append, {k})")
        elif place == "if":
            lines += [f"    if conds[{k}]:", f"        defer(log.append, {k})"]
        elif place == "loop":
            lines += ["    for i in range(n):", f"        defer(log.append, ({k}, i))"]
        elif place == "expr":
            lines.append(f"    assert defer(log.append, {k}) == log.append")
        elif place == "scoped":
            entered = f"scoped(Exits(log, {k}))"  # assigned or as a statement
            lines.append(f"    e{k} = {entered}" if k % 2 else f"    {entered}")
        elif place == "deco":
            lines += ["    @defer", f"    def _{k}():", f"        log.append({k})"]
        else:
            lines += ["    with scope():", f"        defer(log.append, ('block', {k}))"]
    lines += ["    if fail:", "        raise ValueError", '    return "done"']
    return "\n".join(lines) + "\n"


def expected(places: tuple[str, ...], conds: tuple[bool, ...], n: int) -> list:
    blocks: list = []  # run at once, at the block's end
    ran: list = []
    for k, place in enumerate(places):
        if place in ("top", "expr", "deco", "scoped") or (place == "if" and conds[k]):
            ran.append(k)
        elif place == "loop":
            ran += [(k, i) for i in range(n)]
        elif place == "block":
            blocks.append(("block", k))
    return blocks + ran[::-1]


# Every place in every arrangement of three defers, and the places that make joins on the way
# out (an `if`, a loop's list, an entered context manager) in every arrangement of four.
JOINS = ("top", "if", "loop", "scoped")
SHAPES = {
    first: [(first, *rest) for rest in itertools.product(PLACES, repeat=2)]
    + ([(first, *rest) for rest in itertools.product(JOINS, repeat=3)] if first in JOINS else [])
    for first in PLACES
}


@pytest.mark.parametrize("first", PLACES)
def test_each_deferred_call_runs_once_in_reverse_order(first, tmp_path):
    for places in SHAPES[first]:
        code, _ = prepare_source(source(places), str(tmp_path / "shapes.py"))
        ns: dict = {"__name__": "gd_shapes"}
        exec(code, ns)
        f = ns["f"]
        if set(places) != {"block"}:
            assert "__godefer_0__" in f.__code__.co_varnames, places  # open-coded
        for conds in CONDS:
            for n in (0, 2):
                for fail in (False, True):
                    log: list = []
                    if fail:
                        with pytest.raises(ValueError):
                            f(log, conds, n, fail)
                    else:
                        assert f(log, conds, n, fail) == "done"
                    assert log == expected(places, conds, n), (places, conds, n, fail)
