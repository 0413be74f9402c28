"""Exits that await: the code preparation writes for an async function that uses adefer() or
ascoped(), and for the `with scope():` blocks in it that do.

A coroutine whose awaited schedulers are all adefer() statements outside loops and blocks is
open-coded (_prepare.OpenCoder with `awaits`): it awaits its slots inline and hands what is left of
an exit to the core as an AsyncExit that `stepped()` below steps. Any other such function keeps
every deferred call in the core (no open-coded slots), and its exits step through the scope with
a loop of its own (see async_exit.cpp for why the loop must run in the function's frame):

    async def f():
        for conn in conns:
            adefer(close, conn)
        return await use(conns)

becomes a function with _prepare._exit_structure's exit handler, whose exit by return is

    ax = __godefer_rt__.acomplete(rv)           # None: the core holds nothing of the frame
    if ax is not None:
        while (aw := ax.step()) is not None:    # runs plain entries; gives out awaited ones
            try:
                ax.done(await aw)
            except BaseException as e:
                ax.failed(e)                    # now the exception in flight
        rv = ax.finish()                        # or raises what replaced the exception
    return rv

(ax, aw, e stand for __godefer_ax__, __godefer_aw__, __godefer_ae__), and whose exit by an
exception is the same loop from __godefer_rt__.aunwind(exc).

`await ascoped(cm)` becomes `ascoped_push(await aenter(__godefer_acm__ := cm), __godefer_acm__)`:
cm's __aexit__ is scheduled once its __aenter__ has been awaited, as `async with` would.
"""

from __future__ import annotations

import ast

from godefer._prepare_ast import EXC, RT, RV, STATE, at_line, no_location, parse, rt_attr

EXIT = "__godefer_ax__"  # the AsyncExit being stepped
AWAITED = "__godefer_aw__"  # what step() gave out, then what awaiting it gave
FAILED = "__godefer_ae__"  # what awaiting it raised
ENTERED = "__godefer_acm__"  # the context manager ascoped() is entering
BLOCK_EXC = "__godefer_be__"  # the exception leaving an async block


def _loop() -> list[ast.stmt]:
    """Steps EXIT to its end. (`while True` with a break: CPython 3.13.0 miscompiles a `while`
    whose test has no line number, falling from one copy of its test into another.)"""
    return ast.parse(
        f"while True:\n    {AWAITED} = {EXIT}.step()\n    if {AWAITED} is None:\n"
        f"        break\n    try:\n        {EXIT}.done(await {AWAITED})\n"
        f"    except BaseException as {FAILED}:\n        {EXIT}.failed({FAILED})\n"
    ).body


def _with_loops(template: str, line: int) -> list[ast.stmt]:
    """`template` with each `pass` statement in it replaced by the loop. The statement that
    holds the loop in its own body, and those after it, carry `line`; the others have no
    location, so they inherit the line of the code they follow (a `return`'s). CPython 3.13.0
    miscompiles the loop and the finish() after it without a line number: it copies a small
    block that has none into a block jumping to it, and the copy can fall through into the
    original, so step() and finish() ran twice."""
    return _filled([no_location(s) for s in parse(template)], line)


def _filled(stmts: list[ast.stmt], line: int) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for i, stmt in enumerate(stmts):
        if isinstance(stmt, ast.Pass):
            return out + [at_line(s, line) for s in _loop() + _filled(stmts[i + 1 :], line)]
        if isinstance(stmt, ast.If) and any(isinstance(s, ast.Pass) for s in stmt.body):
            stmt.body = _filled(stmt.body, line)
            return out + [at_line(s, line) for s in stmts[i:]]
        if isinstance(stmt, ast.If):
            stmt.body = _filled(stmt.body, line)
        out.append(stmt)
    return out


def function_exits(valued: bool, line: int) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(on_return, on_exception) for _prepare._exit_structure: a function's exits by return and
    by an exception. `valued`: it returns a value (a coroutine, not an async generator)."""
    if valued:
        on_return = (
            f"if {STATE} is None:\n    {STATE} = 4\n    {EXIT} = {RT}.acomplete({RV})\n"
            f"    if {EXIT} is not None:\n        pass\n        {RV} = {EXIT}.finish()\n"
            f"    return {RV}"
        )
        on_exception = (
            f"if {STATE} == 4:\n    raise\n{EXIT} = {RT}.aunwind({EXC})\n"
            f"if {EXIT} is None:\n    raise\npass\n{RV} = {EXIT}.finish()\n"
            f"if {RV} is {RT}.RERAISE:\n    raise\nreturn {RV}"
        )
    else:
        on_return = (
            f"if {STATE} is None:\n    {STATE} = 4\n    {EXIT} = {RT}.acomplete(None)\n"
            f"    if {EXIT} is not None:\n        pass\n        {EXIT}.finish()\n    return"
        )
        on_exception = (
            f"if {STATE} == 4:\n    raise\n{EXIT} = {RT}.aunwind({EXC})\n"
            f"if {EXIT} is None:\n    raise\npass\n"
            f"if {EXIT}.finish() is {RT}.RERAISE:\n    raise\nreturn"
        )
    return _with_loops(on_return, line), _with_loops(on_exception, line)


def stepped(after: str, line: int) -> list[ast.stmt]:
    """`EXIT = <placeholder>`, the loop stepping it, then `after`: how an open-coded coroutine
    with adefer slots hands the rest of an exit to the core (_prepare.OpenCoder._stepped, which
    puts the call that makes the AsyncExit in place of the placeholder)."""
    return _with_loops(f"{EXIT} = None\npass\n{after}", line)


def block(node: ast.With, number: int, body: list[ast.stmt]) -> list[ast.stmt]:
    """A `with scope():` block (one item, its body already prepared) whose exit awaits:

    __godefer_bK__ = __godefer_rt__.scope().__enter__()     # the with statement's line
    [target = __godefer_bK__]
    __godefer_bsK__ = None
    try:
        try:
            <body>
        except BaseException:
            __godefer_bsK__ = 1
            raise
        finally:                                 # a normal exit, break, continue, return
            if __godefer_bsK__ is None:
                __godefer_bsK__ = 4
                <step ablock_exit(__godefer_bK__, None); finish()>
    except BaseException as __godefer_be__:      # the with statement's line
        if __godefer_bsK__ == 4:
            raise
        <step ablock_exit(__godefer_bK__, __godefer_be__)>
        if finish() is RERAISE: raise            # else recovered: go on after the block
    """
    line = node.lineno
    scope_obj, state = f"__godefer_b{number}__", f"__godefer_bs{number}__"
    head = parse(f"{scope_obj} = {RT}.scope().__enter__()\n{state} = None")
    target = node.items[0].optional_vars
    if target is not None:
        head.insert(1, ast.Assign(targets=[target], value=ast.Name(id=scope_obj, ctx=ast.Load())))
    for stmt in head:
        at_line(stmt, line)
    if target is not None:
        ast.copy_location(head[1], target)  # the target keeps its own position
    on_normal = _with_loops(
        f"if {state} is None:\n    {state} = 4\n    {EXIT} = {RT}.ablock_exit({scope_obj}, None)\n"
        f"    if {EXIT} is not None:\n        pass\n        {EXIT}.finish()",
        line,
    )
    on_exception = _with_loops(
        f"if {state} == 4:\n    raise\n{EXIT} = {RT}.ablock_exit({scope_obj}, {BLOCK_EXC})\n"
        f"if {EXIT} is None:\n    raise\npass\nif {EXIT}.finish() is {RT}.RERAISE:\n    raise",
        line,
    )
    outer = no_location(
        ast.parse(
            "try:\n    try:\n        pass\n    except BaseException:\n"
            f"        {state} = 1\n        raise\n    finally:\n        pass\n"
            f"except BaseException as {BLOCK_EXC}:\n    pass\n"
        ).body[0]
    )
    assert isinstance(outer, ast.Try) and isinstance(outer.body[0], ast.Try)
    inner = outer.body[0]
    inner.body = body
    inner.finalbody = on_normal
    handler = outer.handlers[0]
    handler.body = on_exception
    at_line(handler, line)
    return [*head, outer]


def entered(node: ast.Await, cm: ast.expr) -> ast.expr:
    """`await ascoped(cm)`, `cm` already prepared: ascoped_push(await aenter(cm), cm), every
    inserted node at the await's position."""
    store = ast.copy_location(ast.Name(id=ENTERED, ctx=ast.Store()), node)
    walrus = ast.copy_location(ast.NamedExpr(target=store, value=cm), node)
    enter = ast.copy_location(
        ast.Call(func=rt_attr("aenter", node), args=[walrus], keywords=[]), node
    )
    args = [
        ast.copy_location(ast.Await(value=enter), node),
        ast.copy_location(ast.Name(id=ENTERED, ctx=ast.Load()), node),
    ]
    call = ast.Call(func=rt_attr("ascoped_push", node), args=args, keywords=[])
    return ast.copy_location(call, node)
