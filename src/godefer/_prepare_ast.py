"""The pieces of generated code every part of preparation uses: the reserved names and how
inserted nodes get their positions."""

from __future__ import annotations

import ast

RT = "__godefer_rt__"
RV = "__godefer_rv__"
STATE = "__godefer_st__"
EXC = "__godefer_exc__"


def no_location(node: ast.AST) -> ast.AST:
    for n in ast.walk(node):
        if isinstance(n, (ast.stmt, ast.expr, ast.excepthandler, ast.arg, ast.keyword)):
            n.lineno = n.end_lineno = -1
            n.col_offset = n.end_col_offset = -1
    return node


def at_line(node: ast.AST, line: int) -> ast.AST:
    """Give an inserted exception handler a line of its own: the scope's first line.

    Handlers are reached only by an exception, where a line event for "the scope is exiting" is
    honest; and CPython 3.13.0's compiler miscounts the stack of exception handlers that have no
    location at all ("Invalid CFG, stack underflow").
    """
    for n in ast.walk(node):
        if isinstance(n, (ast.stmt, ast.expr, ast.excepthandler, ast.arg, ast.keyword)):
            n.lineno = n.end_lineno = line
            n.col_offset, n.end_col_offset = 0, 0
    return node


def rt_attr(attr: str, like: ast.AST) -> ast.Attribute:
    return ast.copy_location(
        ast.Attribute(
            value=ast.copy_location(ast.Name(id=RT, ctx=ast.Load()), like),
            attr=attr,
            ctx=ast.Load(),
        ),
        like,
    )


def name(id_: str, ctx: ast.expr_context | None = None) -> ast.Name:
    return ast.Name(id=id_, ctx=ctx or ast.Load())


def parse(source: str) -> list[ast.stmt]:
    return ast.parse(source).body
