"""Preparation: rewrite code that uses godefer into plain try/except that calls the C++ core.

A prepared scope (function, module body or class body) that schedules anything keeps its
statements and positions, and gets one exit handler:

    def f(...):                                   def f(...):
        defer(g, x)                                   __godefer_rv__ = None
        ...                                           __godefer_st__ = 0
        return y                                      try:
                                                          __godefer_rt__.defer(g, x)
                                                          ...
                                                          return (__godefer_rv__ := y)
                                                      except BaseException as __godefer_exc__:
                                                          __godefer_st__ = 1
                                                          __godefer_rv__ = __godefer_rt__.unwind(__godefer_exc__)
                                                          if __godefer_rv__ is __godefer_rt__.RERAISE:
                                                              raise
                                                          return __godefer_rv__
                                                      finally:
                                                          if not __godefer_st__:
                                                              return __godefer_rt__.complete(__godefer_rv__)

The deferred calls themselves live in the core, keyed by the frame, so a scope whose deferred
calls never ran allocates nothing and ScopeBound objects share the scope's one LIFO stack.
Inserted statements carry no line of their own (they inherit the line before them), so
tracebacks, coverage and debuggers see only the user's lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field

RT = "__godefer_rt__"
RV = "__godefer_rv__"
STATE = "__godefer_st__"
EXC = "__godefer_exc__"

# Public names whose calls preparation rewrites, and what they become on the runtime object.
SCHEDULERS = {"defer": "defer", "errdefer": "errdefer", "okdefer": "okdefer", "scoped": "scoped"}
STATEMENT_FORMS = ("defer", "errdefer", "okdefer")
OTHER_NAMES = ("scope", "recover", "result", "set_result", "adefer", "ascoped", "ScopeBound")


@dataclass
class Aliases:
    """The names a module bound to godefer's API by importing it."""

    names: dict[str, str] = field(default_factory=dict)  # local name -> public name
    modules: set[str] = field(default_factory=set)  # local names bound to the godefer module

    @classmethod
    def of(cls, tree: ast.AST) -> Aliases:
        aliases = cls()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "godefer" and not node.level:
                for alias in node.names:
                    if alias.name == "*":
                        aliases.names.update({n: n for n in SCHEDULERS})
                    elif alias.name in SCHEDULERS or alias.name in OTHER_NAMES:
                        aliases.names[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "godefer":
                        aliases.modules.add(alias.asname or "godefer")
        return aliases

    def role(self, expr: ast.expr, shadowed: frozenset[str]) -> str | None:
        """The public godefer name `expr` refers to, if any."""
        if isinstance(expr, ast.Name) and expr.id not in shadowed:
            return self.names.get(expr.id)
        if (
            isinstance(expr, ast.Attribute)
            and isinstance(expr.value, ast.Name)
            and expr.value.id in self.modules
            and expr.value.id not in shadowed
            and (expr.attr in SCHEDULERS or expr.attr in OTHER_NAMES)
        ):
            return expr.attr
        return None


def uses_godefer(tree: ast.AST) -> bool:
    aliases = Aliases.of(tree)
    return bool(aliases.names or aliases.modules)


class PrepareError(SyntaxError):
    """A godefer construct that preparation rejects, reported at its file and line."""


def _syntax_error(msg: str, node: ast.AST, filename: str, source_lines: list[str]) -> PrepareError:
    lineno = getattr(node, "lineno", 1)
    text = source_lines[lineno - 1] if 0 < lineno <= len(source_lines) else None
    col = getattr(node, "col_offset", 0) + 1
    end_lineno = getattr(node, "end_lineno", lineno)
    end_col = (getattr(node, "end_col_offset", None) or col - 1) + 1
    return PrepareError(msg, (filename, lineno, col, text, end_lineno, end_col))


def _no_location(node: ast.AST) -> ast.AST:
    for n in ast.walk(node):
        if isinstance(n, (ast.stmt, ast.expr, ast.excepthandler, ast.arg, ast.keyword)):
            n.lineno = n.end_lineno = -1
            n.col_offset = n.end_col_offset = -1
    return node


def _rt_attr(attr: str, like: ast.AST) -> ast.Attribute:
    return ast.copy_location(
        ast.Attribute(
            value=ast.copy_location(ast.Name(id=RT, ctx=ast.Load()), like),
            attr=attr,
            ctx=ast.Load(),
        ),
        like,
    )


def _bound_names(body: Iterable[ast.stmt], args: ast.arguments | None) -> frozenset[str]:
    """Names a function binds itself (parameters and stores), which shadow module aliases."""
    names: set[str] = set()
    if args is not None:
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                names.add(a.arg)
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue  # their bodies are their own scopes
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if _imports_godefer(node):
                continue  # binds godefer's own names: an alias, not a shadow
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return frozenset(names)


def _imports_godefer(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.module == "godefer" and not node.level
    return any(a.name == "godefer" for a in node.names)


class _Scope:
    def __init__(self, kind: str, shadowed: frozenset[str]) -> None:
        self.kind = kind  # "module", "class", "function", "generator", "async_generator"
        self.shadowed = shadowed
        self.schedules = False  # rewrote a scheduling call in its own body


class Preparer(ast.NodeTransformer):
    """Rewrites one module's AST in place; see the module docstring."""

    def __init__(self, aliases: Aliases, filename: str, source: str) -> None:
        self.aliases = aliases
        self.filename = filename
        self.source_lines = source.splitlines()
        self.scopes: list[_Scope] = []
        self.prepared_any = False

    # -- scopes -------------------------------------------------------------------------------

    def visit_Module(self, node: ast.Module) -> ast.Module:
        self.scopes.append(_Scope("module", frozenset()))
        node.body = self._visit_body(node.body)
        scope = self.scopes.pop()
        head, rest = _split_head(node.body)
        if scope.schedules and rest:
            rest = [self._wrap_block(rest)]
        node.body = head + rest
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        node.decorator_list = self._visit_decorators(node.decorator_list)
        node.bases = [self.visit(b) for b in node.bases]
        node.keywords = [self.visit(k) for k in node.keywords]
        self.scopes.append(_Scope("class", _bound_names(node.body, None)))
        node.body = self._visit_body(node.body)
        scope = self.scopes.pop()
        if scope.schedules:
            head, rest = _split_head(node.body, future=False)
            node.body = head + ([self._wrap_block(rest)] if rest else [])
        return node

    def _visit_decorators(self, decorators: list[ast.expr]) -> list[ast.expr]:
        """`@defer` schedules the decorated function in the scope evaluating the decorator."""
        out = []
        for d in decorators:
            role = self.aliases.role(d, self._shadowed())
            if role in SCHEDULERS and self._scope_kind() != "lambda":
                out.append(_rt_attr(SCHEDULERS[role], d))
                self.scopes[-1].schedules = True
                self.prepared_any = True
            else:
                out.append(self.visit(d))
        return out

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.stmt:
        node.decorator_list = self._visit_decorators(node.decorator_list)
        node.args = self.visit(node.args)
        if node.returns is not None:
            node.returns = self.visit(node.returns)
        kind = _function_kind(node)
        self.scopes.append(_Scope(kind, _bound_names(node.body, node.args) | self._enclosing()))
        node.body = self._visit_body(node.body)
        scope = self.scopes.pop()
        if scope.schedules:
            node.body = self._wrap_function(node.body, kind)
        return node

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node: ast.Lambda) -> ast.Lambda:
        # A lambda cannot hold an exit handler: calls deferred in it stay on the runtime path.
        self.scopes.append(_Scope("lambda", frozenset()))
        node.body = self.visit(node.body)
        self.scopes.pop()
        return node

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> ast.GeneratorExp:
        # A generator expression is its own scope and has no statements: runtime path.
        self.scopes.append(_Scope("lambda", frozenset()))
        self.generic_visit(node)
        self.scopes.pop()
        return node

    # -- rewrites -----------------------------------------------------------------------------

    def _visit_body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            new = self.visit(stmt)
            if new is None:
                continue
            out.extend(new if isinstance(new, list) else [new])
        return out

    def visit_Expr(self, node: ast.Expr) -> ast.stmt:
        value = node.value
        if isinstance(value, ast.Compare) and self._is_statement_form(value):
            call = value.left
            assert isinstance(call, ast.Call)
            role = self.aliases.role(value.comparators[0], self._shadowed())
            assert role is not None
            if self._scope_kind() == "lambda":  # unreachable: lambdas hold no statements
                return node
            func = self.visit(call.func)
            args = [self.visit(a) for a in call.args]
            keywords = [self.visit(k) for k in call.keywords]
            self.scopes[-1].schedules = True
            self.prepared_any = True
            new_call = ast.copy_location(
                ast.Call(func=_rt_attr(role, value.comparators[0]), args=[func, *args],
                         keywords=keywords),
                value,
            )
            return ast.copy_location(ast.Expr(value=new_call), node)
        node.value = self.visit(value)
        return node

    def _is_statement_form(self, node: ast.Compare) -> bool:
        return (
            len(node.ops) == 1
            and isinstance(node.ops[0], ast.In)
            and isinstance(node.left, ast.Call)
            and self.aliases.role(node.comparators[0], self._shadowed()) in STATEMENT_FORMS
        )

    def visit_Compare(self, node: ast.Compare) -> ast.Compare:
        # Reached only for comparisons that are not a whole `CALL in defer` statement.
        for comparator, op in zip(node.comparators, node.ops, strict=True):
            role = self.aliases.role(comparator, self._shadowed())
            if role in STATEMENT_FORMS and isinstance(op, (ast.In, ast.NotIn)):
                raise self._misuse(node, role)
        self.generic_visit(node)
        return node

    def _misuse(self, node: ast.Compare, role: str) -> PrepareError:
        if not isinstance(node.left, ast.Call):
            why = f"the left operand of `in {role}` must be a call, like `f(x) in {role}`"
        else:
            why = (
                f"`CALL in {role}` must be a statement of its own; it has no value to use "
                f"(write `f(x) in {role}` on its own line, or call {role}(f, x))"
            )
        return _syntax_error(f"invalid use of `in {role}`: {why}", node, self.filename,
                             self.source_lines)

    def visit_Call(self, node: ast.Call) -> ast.Call:
        role = self.aliases.role(node.func, self._shadowed())
        self.generic_visit(node)
        if role in SCHEDULERS and self._scope_kind() != "lambda":
            node.func = _rt_attr(SCHEDULERS[role], node.func)
            self.scopes[-1].schedules = True
            self.prepared_any = True
        elif role == "scope" and self._scope_kind() != "lambda":
            node.func = _rt_attr("scope", node.func)
        return node

    def visit_Return(self, node: ast.Return) -> ast.Return:
        if node.value is not None:
            node.value = self.visit(node.value)
            if self._scope_kind() in ("function", "generator"):
                node.value = ast.copy_location(
                    ast.NamedExpr(target=ast.copy_location(ast.Name(id=RV, ctx=ast.Store()),
                                                           node.value),
                                  value=node.value),
                    node.value,
                )
        return node

    # -- exit handlers ------------------------------------------------------------------------

    def _wrap_function(self, body: list[ast.stmt], kind: str) -> list[ast.stmt]:
        docstring, rest = _split_docstring(body)
        valued = kind != "async_generator"  # `return value` is illegal in an async generator
        if valued:
            template = f"""
{RV} = None
{STATE} = 0
try:
    pass
except BaseException as {EXC}:
    {STATE} = 1
    {RV} = {RT}.unwind({EXC})
    if {RV} is {RT}.RERAISE:
        raise
    return {RV}
finally:
    if not {STATE}:
        return {RT}.complete({RV})
"""
        else:
            template = f"""
{STATE} = 0
try:
    pass
except BaseException as {EXC}:
    {STATE} = 1
    if {RT}.unwind({EXC}) is {RT}.RERAISE:
        raise
    return
finally:
    if not {STATE}:
        {RT}.complete(None)
"""
        stmts = [_no_location(s) for s in ast.parse(template).body]
        try_stmt = stmts[-1]
        assert isinstance(try_stmt, ast.Try)
        try_stmt.body = rest or [_no_location(ast.Pass())]
        return docstring + stmts

    def _wrap_block(self, body: list[ast.stmt]) -> ast.stmt:
        """Module and class bodies: no `return`, so normal completion is the `else`."""
        template = f"""
try:
    pass
except BaseException as {EXC}:
    if {RT}.unwind({EXC}) is {RT}.RERAISE:
        raise
else:
    {RT}.complete(None)
"""
        try_stmt = _no_location(ast.parse(template).body[0])
        assert isinstance(try_stmt, ast.Try)
        try_stmt.body = body
        return try_stmt

    # -- helpers ------------------------------------------------------------------------------

    def _enclosing(self) -> frozenset[str]:
        """Names bound by enclosing functions, visible to a nested function as closures."""
        for scope in reversed(self.scopes):
            if scope.kind not in ("class", "module"):
                return scope.shadowed
        return frozenset()

    def _shadowed(self) -> frozenset[str]:
        return self.scopes[-1].shadowed if self.scopes else frozenset()

    def _scope_kind(self) -> str:
        return self.scopes[-1].kind if self.scopes else "module"


def _function_kind(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    yields = any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(node.body))
    if isinstance(node, ast.AsyncFunctionDef):
        return "async_generator" if yields else "function"
    return "generator" if yields else "function"


def _own_nodes(body: list[ast.stmt]) -> Iterable[ast.AST]:
    """Nodes of a function body, not descending into nested scopes."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _split_docstring(body: list[ast.stmt]) -> tuple[list[ast.stmt], list[ast.stmt]]:
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[:1], body[1:]
    return [], body


def _split_head(body: list[ast.stmt], future: bool = True) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """Docstring and `from __future__` imports, which must stay first."""
    head, rest = _split_docstring(body)
    while future and rest and isinstance(rest[0], ast.ImportFrom) and rest[0].module == "__future__":
        head.append(rest.pop(0))
    return head, rest


def _runtime_import(like: ast.stmt) -> list[ast.stmt]:
    """`import godefer._rt as __godefer_rt__` plus marking the module's code prepared, carrying
    the line of the statement they precede (no line of their own)."""
    stmts = ast.parse(f"import godefer._rt as {RT}\n{RT}.mark_running_module()").body
    line = like.lineno
    for stmt in stmts:
        for n in ast.walk(stmt):
            if isinstance(n, (ast.stmt, ast.expr, ast.alias)):
                n.lineno = n.end_lineno = line
                n.col_offset, n.end_col_offset = 0, 0
    return stmts


def prepare_tree(tree: ast.Module, filename: str, source: str) -> bool:
    """Prepare a parsed module in place. Returns whether anything was rewritten.

    Raises SyntaxError (PrepareError) for a misused `in defer`, naming file and line.
    """
    aliases = Aliases.of(tree)
    if not (aliases.names or aliases.modules):
        return False
    preparer = Preparer(aliases, filename, source)
    preparer.visit(tree)
    if preparer.prepared_any:
        head, rest = _split_head(tree.body)
        if rest:
            tree.body = head + _runtime_import(rest[0]) + rest
        # No ast.fix_missing_locations: every inserted node has a full position already, and
        # it would give other rewriters' nodes (pytest's carry no end_lineno) invalid ranges.
    return preparer.prepared_any


def prepare_source(source: str | bytes, filename: str) -> tuple[object, bool]:
    """Parse, prepare and compile a module's source. Returns (code, prepared)."""
    tree = ast.parse(source, filename=filename)
    text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
    prepared = prepare_tree(tree, filename, text)
    code = compile(tree, filename, "exec", dont_inherit=True)
    return code, prepared
