"""`@scope` on a function: prepare it explicitly, ahead of its first call.

The function is recompiled from its source inside a stand-in for its enclosing scope that binds
exactly its free variables, so the prepared code has the same free variables in the same order;
the new function reuses the original's closure cells. A prepared closure therefore still shares
its cells with the enclosing function and its sibling closures (compiling the function on its own
would turn its free variables into globals: the `exec` closure trap).
"""

from __future__ import annotations

import ast
import inspect
import os
import textwrap
from collections.abc import Callable
from types import CodeType, FunctionType, ModuleType
from typing import Any

from godefer import _core, _rt
from godefer._prepare import AWAITED, SCHEDULERS, Aliases, Preparer

OUTER = "__godefer_outer__"


def preparation_enabled() -> bool:
    return os.environ.get("GODEFER_PREPARE", "1") != "0"


def _aliases_in(globals_: dict[str, Any]) -> Aliases:
    """The names this function's module bound to godefer's API, found by identity."""
    public = {name: getattr(_core, name) for name in (*SCHEDULERS, *AWAITED, "scope")}
    aliases = Aliases()
    for name, value in globals_.items():
        if isinstance(value, ModuleType) and value.__name__ == "godefer":
            aliases.modules.add(name)
            continue
        for public_name, obj in public.items():
            if value is obj:
                aliases.names[name] = public_name
    return aliases


def _function_node(source: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    tree = ast.parse(textwrap.dedent(source))
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def prepare_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    if (
        not isinstance(fn, FunctionType)
        or not preparation_enabled()
        or _rt.is_prepared(fn.__code__)
    ):
        return fn
    code = fn.__code__
    try:
        source = inspect.getsource(fn)
        node = _function_node(source)
    except (OSError, TypeError, SyntaxError):
        return fn  # no source: the runtime path runs it
    if node is None or node.name != code.co_name:
        return fn
    node.decorator_list = []
    freevars = code.co_freevars
    outer = ast.parse(f"def {OUTER}():\n    pass").body[0]
    assert isinstance(outer, ast.FunctionDef)
    outer.body = [ast.parse(f"{name} = None").body[0] for name in freevars]
    outer.body += [node, ast.parse(f"return {node.name}").body[0]]
    module = ast.Module(body=[outer], type_ignores=[])
    ast.increment_lineno(node, code.co_firstlineno - 1)
    preparer = Preparer(_aliases_in(fn.__globals__), code.co_filename, source)
    preparer.visit(module)
    if not preparer.prepared_any:
        return fn
    compiled = compile(module, code.co_filename, "exec", dont_inherit=True)
    outer_code = next(c for c in compiled.co_consts if isinstance(c, CodeType))
    new_code = next(
        (c for c in outer_code.co_consts if isinstance(c, CodeType) and c.co_name == node.name),
        None,
    )
    if new_code is None or set(new_code.co_freevars) - set(freevars):
        return fn
    cells = dict(zip(freevars, fn.__closure__ or (), strict=True))
    closure = tuple(cells[name] for name in new_code.co_freevars) or None
    _rt.mark_prepared(new_code)
    _rt.install(fn.__globals__)
    new = FunctionType(new_code, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__annotations__ = fn.__annotations__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    new.__dict__.update(fn.__dict__)
    new.__wrapped__ = fn  # type: ignore[attr-defined]
    return new


_core._set_function_preparer(prepare_function)
