"""Preparation: rewrite code that uses godefer into plain try/except that calls the C++ core.

A prepared scope (function, module body or class body) that schedules anything keeps its
statements and positions, and gets one exit handler (`_exit_structure`). Functions whose defers
all have a slot (statements, expressions and `@defer` defs outside loops; the defers of a loop
share one) keep them in frame locals and call them inline (`OpenCoder`, Go 1.14's open-coded
defers); the others, and module and class bodies, keep their deferred calls in the core, keyed
by the frame:

    def f(x):                      def f(x):
        defer(g, x)                    __godefer_rv__ = None; __godefer_st__ = None
        x = scoped(h(x))               try:
        return x                           try:
                                               __godefer_rt__.defer(g, x)
                                               x = __godefer_rt__.scoped(h(x))
                                               return (__godefer_rv__ := x)
                                           except BaseException:
                                               __godefer_st__ = 1
                                               raise
                                           finally:
                                               if __godefer_st__ is None:
                                                   __godefer_st__ = 4
                                                   return __godefer_rt__.complete(__godefer_rv__)
                                       except BaseException as __godefer_exc__:
                                           <__godefer_rt__.unwind(...): re-raise, or return
                                            after a recovery>

A scope whose deferred calls never ran allocates nothing, and ScopeBound objects share the
scope's one LIFO stack. Inserted statements on the way out of a `return` have no line of their
own (they inherit the `return`'s), so tracebacks, coverage and debuggers see the user's lines; an
exception exit reports the scope's first line once.
"""

from __future__ import annotations

import ast
import copy
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from godefer import _async_exits
from godefer._async_exits import EXIT
from godefer._prepare_ast import EXC, RT, RV, STATE
from godefer._prepare_ast import at_line as _at_line
from godefer._prepare_ast import name as _name
from godefer._prepare_ast import no_location as _no_location
from godefer._prepare_ast import parse as _parse
from godefer._prepare_ast import rt_attr as _rt_attr

# Public names whose calls preparation rewrites, and what they become on the runtime object.
SCHEDULERS = {"defer": "defer", "errdefer": "errdefer", "okdefer": "okdefer", "scoped": "scoped"}
STATEMENT_FORMS = ("defer", "errdefer", "okdefer")
# Module globals prepared code reads besides RT (one LOAD_GLOBAL each, not RT's load and an
# attribute's): the fill of a slot whose call has no arguments, per role, and its _rt name.
SLOT_FILLS = {
    "defer": ("__godefer_fill_d__", "slot_defer"),
    "errdefer": ("__godefer_fill_e__", "slot_errdefer"),
    "okdefer": ("__godefer_fill_o__", "slot_okdefer"),
}
# ... and of a scope's first slot when nothing before it can have scheduled anything.
FIRST_FILLS = {
    "defer": ("__godefer_first_d__", "slot_first_defer"),
    "errdefer": ("__godefer_first_e__", "slot_first_errdefer"),
    "okdefer": ("__godefer_first_o__", "slot_first_okdefer"),
}
# ... and of a function's later slots, per role: the frame local a slot is filled through by a
# subscript (`__godefer_1__ = __godefer_ck_d__[f]`, the core's SlotCheck), the module global that
# local starts as, and its _rt name.
SLOT_CHECKS = {
    "defer": ("__godefer_ck_d__", "__godefer_check_d__", "slot_check_defer"),
    "errdefer": ("__godefer_ck_e__", "__godefer_check_e__", "slot_check_errdefer"),
    "okdefer": ("__godefer_ck_o__", "__godefer_check_o__", "slot_check_okdefer"),
}
# The _rt function that splits `defer(*args)` into its callee and the other arguments, per role.
STAR_SPLITS = {
    "defer": "slot_star_defer",
    "errdefer": "slot_star_errdefer",
    "okdefer": "slot_star_okdefer",
}
# The module global an awaited slot is called through on an open-coded coroutine's exit (the
# core checks what the call returns can be awaited), and its _rt name.
SLOT_AWAIT = ("__godefer_await__", "slot_await")
# The local `return defer(*args)` binds the callee to before it returns it (_hoisted_star).
HOISTED_RESULT = "__godefer_r__"
# Schedulers of awaited calls: only an async function's own body may use them (_async_exits).
AWAITED = ("adefer", "ascoped")
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


class SlotCall(NamedTuple):
    """A defer statement an open-coded function keeps in frame locals."""

    role: str  # defer, errdefer or okdefer
    call: ast.Call  # defer(f, *args, **kwargs), whatever the source's form
    loop: int | None  # id of the outermost loop around it: its slot holds a list
    expression: bool = False  # used as an expression, not a statement of its own
    decorator: bool = False  # `@defer` on a nested def (call.args[0] is unused)
    # Pushed onto its list slot by an expression (list_expression): a defer that has no slot of
    # its own and is not a loop's plain statement (see _open_coded_slots). `loop` keys the list.
    pushed: bool = False


# An open-coded `with scope():` block: its slot calls, and its own open-coded blocks.
BlockPlan = tuple[dict[int, SlotCall], dict[int, "BlockPlan"]]


class PrepareError(SyntaxError):
    """A godefer construct that preparation rejects, reported at its file and line."""


def _syntax_error(msg: str, node: ast.AST, filename: str, source_lines: list[str]) -> PrepareError:
    lineno = getattr(node, "lineno", 1)
    text = source_lines[lineno - 1] if 0 < lineno <= len(source_lines) else None
    col = getattr(node, "col_offset", 0) + 1
    end_lineno = getattr(node, "end_lineno", lineno)
    end_col = (getattr(node, "end_col_offset", None) or col - 1) + 1
    return PrepareError(msg, (filename, lineno, col, text, end_lineno, end_col))


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
        self.awaits = False  # an async function whose exits await (adefer, ascoped)
        self.async_blocks = 0  # `with scope():` blocks in it rewritten to await their exits


class Preparer(ast.NodeTransformer):
    """Rewrites one module's AST in place; see the module docstring."""

    def __init__(self, aliases: Aliases, filename: str, source: str) -> None:
        self.aliases = aliases
        self.filename = filename
        self.source_lines = source.splitlines()
        self.scopes: list[_Scope] = []
        self.prepared_any = False
        self.open_coder: OpenCoder | None = None  # the open-coded function being rewritten

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
            if role == "adefer":
                self._require_awaits(d, role)
                out.append(_rt_attr("adefer", d))
                self.scopes[-1].schedules = True
                self.prepared_any = True
            elif role in SCHEDULERS and self._scope_kind() != "lambda":
                out.append(_rt_attr(SCHEDULERS[role], d))
                self.scopes[-1].schedules = True
                self.prepared_any = True
            else:
                out.append(self.visit(d))
        return out

    def _visit_function(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> ast.stmt | list[ast.stmt]:
        if self.open_coder is not None and id(node) in self.open_coder.slot_calls:
            # `@defer def ...` nested in an if/try/with of an open-coded function.
            return self.open_coder.slot(node, self.open_coder.slot_calls[id(node)], may_skip=True)
        node.decorator_list = self._visit_decorators(node.decorator_list)
        node.args = self.visit(node.args)
        if node.returns is not None:
            node.returns = self.visit(node.returns)
        kind = _function_kind(node)
        self.scopes.append(_Scope(kind, _bound_names(node.body, node.args) | self._enclosing()))
        if isinstance(node, ast.AsyncFunctionDef):
            _SyncScopeBlocks(self.aliases, self.scopes[-1].shadowed).visit_body(node.body)
        awaits = isinstance(node, ast.AsyncFunctionDef) and self._schedules_awaited(node.body)
        self.scopes[-1].awaits = awaits
        found = None
        if not awaits or (kind == "function" and self._adefers_in_slots(node.body)):
            found = self._open_coded_slots(node.body)
        if found is not None and not (found[0] or found[1]):
            found = None  # schedules nothing of its own
        if found is not None:
            slots, blocks = found
            outer, self.open_coder = (
                self.open_coder,
                OpenCoder(
                    self,
                    kind,
                    _first_line(node),
                    slots,
                    blocks=blocks,
                    awaits=awaits,
                    tuples=_tuple_names(node),
                ),
            )
            try:
                node.body = self.open_coder.rewrite(node.body)
            finally:
                self.open_coder = outer
            self.scopes.pop()
            self.prepared_any = True
            return node
        outer, self.open_coder = self.open_coder, None  # nested generic function: no slots here
        try:
            node.body = self._visit_body(node.body)
        finally:
            self.open_coder = outer
        scope = self.scopes.pop()
        if scope.schedules:
            node.body = self._wrap_function(node.body, kind, _first_line(node), awaits)
        return node

    def _schedules_awaited(self, body: list[ast.stmt]) -> bool:
        """Whether `body`'s own code calls adefer() or ascoped(), or decorates a def with
        @adefer: its scope's exits must await."""
        shadowed = self._shadowed()
        for node in _own_nodes(body):
            if isinstance(node, ast.Call) and self.aliases.role(node.func, shadowed) in AWAITED:
                return True
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                self.aliases.role(d, shadowed) == "adefer" for d in node.decorator_list
            ):
                return True
        return False

    def _adefers_in_slots(self, body: list[ast.stmt]) -> bool:
        """Whether every awaited scheduler of a coroutine's own code is an `adefer(f, ...)`
        statement outside loops and `with scope():` blocks (callee not starred): each can own a
        slot that its exits await inline (OpenCoder, `awaits`). Anything else (ascoped(),
        `@adefer`, adefer() in a loop, a block or an expression) keeps the calls in the core."""
        shadowed = self._shadowed()
        slotted: set[int] = set()
        for stmt, loop, block in self._statements(body):
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            if (
                loop is None
                and not block
                and isinstance(call, ast.Call)
                and self.aliases.role(call.func, shadowed) == "adefer"
                and call.args
                and not isinstance(call.args[0], ast.Starred)
            ):
                slotted.add(id(call))
        for node in _own_nodes(body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                self.aliases.role(d, shadowed) == "adefer" for d in node.decorator_list
            ):
                return False
            if (
                isinstance(node, ast.Call)
                and self.aliases.role(node.func, shadowed) in AWAITED
                and id(node) not in slotted
            ):
                return False
        return True

    def _require_awaits(self, node: ast.AST, role: str) -> None:
        """adefer() and ascoped() schedule awaited calls: only an async function's own body can
        await them at its exit."""
        if self.scopes and self.scopes[-1].awaits:
            return
        instead = "defer()" if role == "adefer" else "scoped()"
        raise _syntax_error(
            f"{role}() schedules a call that is awaited at the scope's exit, so it must be used "
            "in the body of an `async def` itself (not in a plain def, lambda, generator "
            f"expression, class or module body); use {instead} here",
            node,
            self.filename,
            self.source_lines,
        )

    def _slot_call(self, stmt: ast.stmt) -> tuple[str, ast.Call] | None:
        """(kind, call) when `stmt` is a `defer(f, ...)` or `f(...) in defer` statement."""
        if not isinstance(stmt, ast.Expr):
            return None
        value, shadowed = stmt.value, self._shadowed()
        if isinstance(value, ast.Call):
            role = self.aliases.role(value.func, shadowed)
            if role in STATEMENT_FORMS and value.args:
                return role, value  # a starred callee too (_star_slot)
            if role == "adefer" and self.scopes[-1].awaits:
                return role, value  # its slot is awaited (_adefers_in_slots)
        if isinstance(value, ast.Compare) and self._is_statement_form(value):
            role = self.aliases.role(value.comparators[0], shadowed)
            call = value.left
            assert isinstance(call, ast.Call) and role is not None
            return role, ast.copy_location(
                ast.Call(
                    func=value.comparators[0], args=[call.func, *call.args], keywords=call.keywords
                ),
                call,
            )
        return None

    def _open_coded_slots(self, body: list[ast.stmt]) -> BlockPlan | None:
        """The defers of a function that can all live in frame locals, in textual order, by id
        of their statement (or, for a defer used as an expression, of its call); None when the
        function needs the generic handler (or schedules nothing).

        In a function, a statement outside any loop runs at most once per call, and such
        statements run in textual order, so each can own a slot; so can a defer used as an
        expression in such a statement, when it is the statement's only one (the order in which
        a statement evaluates its parts is not always textual). The defers of one outermost
        loop share a slot holding a list: all of them run between the slots before the loop and
        those after it. By the same argument, the defers of a statement that holds several and
        cannot give each a slot (_slots_of_uses) share a list slot of the statement, and defers
        used as expressions in a loop are pushed onto the loop's list (_pushed); a statement
        `defer(*args)` owns a slot too (_star_slot), as an expression as well (_star_expression).
        Beyond
        MAX_OPEN_CODED groups, the last groups share one list (_overflowed). Defers in a
        `with scope():` block belong to the block, which keeps them in the core, unless the
        block can be open-coded too (_block_slots, which plans its body the same way). A defer
        in a comprehension is pushed onto its statement's list from 3.12, and makes the function
        generic on 3.11 (see _uses). Returns (slots, blocks), both empty when nothing in `body`
        schedules.
        """
        slots: dict[int, SlotCall] = {}
        blocks: dict[int, BlockPlan] = {}
        groups: list[int] = []  # the keys of the slots' groups, in textual order
        claimed: set[int] = set()  # the expressions naming defer & co. that slots or blocks take
        shadowed = self._shadowed()
        for stmt, loop, block in self._statements(body):
            if self._block_statement(stmt, block, claimed, blocks):
                continue
            found_uses = self._uses(stmt, shadowed)
            if found_uses is None:
                continue  # left unclaimed: the function is generic
            uses, repeated = found_uses
            key = id(stmt) if loop is None else id(loop)
            found = self._slot_of(stmt, loop, shadowed) if len(uses) <= 1 and not repeated else None
            several = None
            if not (found or repeated or loop is not None):
                several = self._slots_of_uses(stmt, uses)
            if found is not None:
                slot_key, slot_call, name = found
                slots[slot_key] = slot_call
                claimed.add(name)
                key = slot_key if loop is None else key
            elif several is not None:
                slots.update(several)
                claimed.update(id(name) for _, name in uses)
                groups += [k for k in several if k not in groups]
                continue
            elif (
                uses
                and len(uses) == 1
                and loop is None
                and not (repeated or isinstance(stmt, _LOOPS))
            ):
                # `scoped(*args)`, `defer()`: the core takes it when it runs (the frame's state
                # becomes 3), cheaper for one call than a list of its own.
                claimed.add(id(uses[0][1]))
                continue
            elif uses:
                slots.update(self._pushed(stmt, uses, key))
                claimed.update(id(name) for _, name in uses)
            else:
                decorated = self._decorated_slot(stmt, shadowed)
                if decorated is None:
                    continue
                assert isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
                slots[id(stmt)] = decorated._replace(loop=key)  # `@defer def` in a loop
                claimed.add(id(stmt.decorator_list[0]))
            if key not in groups:
                groups.append(key)
        if not self._all_claimed(body, claimed):
            return None
        if len(groups) > MAX_OPEN_CODED:
            slots = _overflowed(slots, groups)
        return slots, blocks

    def _uses(
        self, stmt: ast.stmt, shadowed: frozenset[str]
    ) -> tuple[list[tuple[ast.expr, ast.expr]], bool] | None:
        """The uses of defer & co. in a statement's own expressions, as (the call, or the
        statement form's comparison; the expression naming defer & co.), in textual order, and
        whether one is in a list, set or dict comprehension (it runs once per item: a list).
        None when such a use cannot rebind a list slot: in a comprehension's iterable (no
        assignment expression there), or on 3.11, where a comprehension is a function of its
        own and reading the frame's state in it would turn that local into a cell. Lambdas and
        generator expressions are scopes of their own (the runtime path)."""
        uses: list[tuple[ast.expr, ast.expr]] = []
        repeated = False
        # (node, where): 0 the statement's own, 1 in a comprehension, 2 in one's iterable
        stack: list[tuple[ast.AST, int]] = [(root, 0) for root in _own_expressions(stmt)]
        while stack:
            node, where = stack.pop()
            if isinstance(node, (ast.Lambda, ast.GeneratorExp)):
                continue
            name: ast.expr | None = None
            if isinstance(node, ast.Call) and self.aliases.role(node.func, shadowed) in SCHEDULERS:
                name = node.func
            elif (
                isinstance(stmt, ast.Expr)
                and node is stmt.value
                and isinstance(node, ast.Compare)
                and self._is_statement_form(node)
            ):  # (anywhere else, it is the SyntaxError visit_Compare raises)
                name = node.comparators[0]
            if name is not None:
                if where == 2 or (where == 1 and not COMPREHENSIONS_INLINED):
                    return None
                assert isinstance(node, (ast.Call, ast.Compare))
                uses.append((node, name))
                repeated = repeated or where == 1
            stack += reversed(_children_where(node, where))
        return uses, repeated

    def _slots_of_uses(
        self, stmt: ast.stmt, uses: list[tuple[ast.expr, ast.expr]]
    ) -> dict[int, SlotCall] | None:
        """A slot for each defer of a statement outside loops that holds several, in the order
        they fill (a call fills after its arguments: by where each call ends), when the
        statement evaluates its parts left to right and the defers are plain calls; else None
        (they are pushed onto a list). Not left to right: the targets of an assignment (after
        its value), a conditional expression (its test first), a call with a starred argument
        after a keyword (positional arguments first)."""
        shadowed = self._shadowed()
        if not isinstance(stmt, (ast.Expr, ast.Return, ast.Assign)):
            return None
        if isinstance(stmt, ast.Assign) and not _runs_nothing(stmt.targets):  # type: ignore[arg-type]
            return None
        for node in _own_nodes([stmt]):
            if isinstance(node, ast.IfExp):
                return None
            if isinstance(node, ast.Call) and node.keywords:
                first_kw = min((kw.value.lineno, kw.value.col_offset) for kw in node.keywords)
                if any(
                    isinstance(a, ast.Starred) and (a.lineno, a.col_offset) > first_kw
                    for a in node.args
                ):
                    return None
        slots: dict[int, SlotCall] = {}
        for node, name in sorted(uses, key=lambda u: (u[0].end_lineno, u[0].end_col_offset)):
            role = self.aliases.role(name, shadowed)
            if isinstance(node, ast.Compare):  # `f(defer(g)) in defer`: the statement's slot
                form = self._slot_call(stmt)
                assert form is not None and role is not None
                slots[id(stmt)] = SlotCall(role, form[1], loop=None)
                continue
            assert isinstance(node, ast.Call)
            if (
                role not in STATEMENT_FORMS
                or not node.args
                or isinstance(node.args[0], ast.Starred)
            ):
                return None
            assert role is not None
            statement = isinstance(stmt, ast.Expr) and node is stmt.value
            key = id(stmt) if statement else id(node)
            slots[key] = SlotCall(role, node, loop=None, expression=not statement)
        return slots

    def _pushed(
        self, stmt: ast.stmt, uses: list[tuple[ast.expr, ast.expr]], key: int
    ) -> dict[int, SlotCall]:
        """The uses of a statement that has no slot of its own (several defers in it, a defer
        used as an expression in a loop): each is pushed onto one list slot, the statement's or
        its loop's, as it runs.
        A statement runs at most once per call outside loops, so its list runs between the
        slots before it and after it, as a loop's does."""
        pushed: dict[int, SlotCall] = {}
        for node, name in uses:
            role = self.aliases.role(name, self._shadowed())
            assert role is not None
            if isinstance(node, ast.Compare):  # `f(defer(g)) in defer`: the statement
                form = self._slot_call(stmt)
                assert form is not None
                pushed[id(stmt)] = SlotCall(role, form[1], loop=key, pushed=True)
            else:
                assert isinstance(node, ast.Call)
                pushed[id(node)] = SlotCall(role, node, loop=key, expression=True, pushed=True)
        return pushed

    def _slot_of(
        self, stmt: ast.stmt, loop: ast.stmt | None, shadowed: frozenset[str]
    ) -> tuple[int, SlotCall, int] | None:
        """The slot `stmt` fills, as (key, slot call, id of the expression naming defer & co.),
        or None. In a loop only the statement form and `[x =] scoped(obj)` have one (the
        loop's list)."""
        entered = self._scoped_slot_call(stmt, shadowed)
        if entered is not None:
            key, call = entered
            in_loop = None if loop is None else id(loop)
            scoped = SlotCall("scoped", call, loop=in_loop, expression=key == id(call))
            return key, scoped, id(call.func)
        decorated = self._decorated_slot(stmt, shadowed)
        if decorated is not None and loop is None:
            assert isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            return id(stmt), decorated, id(stmt.decorator_list[0])
        slot = self._slot_call(stmt)
        if slot is not None:
            # The statement form's comparator becomes the call's func in _slot_call.
            in_loop = SlotCall(*slot, loop=None if loop is None else id(loop))
            return id(stmt), in_loop, id(slot[1].func)
        calls = [
            (node, nested)
            for node, nested in _expression_nodes(stmt)
            if isinstance(node, ast.Call) and self.aliases.role(node.func, shadowed) in SCHEDULERS
        ]
        if len(calls) != 1 or loop is not None:
            return None
        call, nested = calls[0]
        role = self.aliases.role(call.func, shadowed)
        if nested or role not in SCHEDULERS or not call.args:
            return None
        if isinstance(call.args[0], ast.Starred) and role not in STATEMENT_FORMS:
            return None  # `scoped(*args)`: the core takes it when it runs
        if role == "scoped" and (len(call.args) != 1 or call.keywords):
            return None
        return id(call), SlotCall(role, call, loop=None, expression=True), id(call.func)

    def _scoped_slot_call(
        self, stmt: ast.stmt, shadowed: frozenset[str]
    ) -> tuple[int, ast.Call] | None:
        """`scoped(x)` as a statement (keyed by the statement) or as the whole value of an
        assignment (keyed by the call, as an expression slot is)."""
        value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
        if (
            not isinstance(value, ast.Call)
            or self.aliases.role(value.func, shadowed) != "scoped"
            or len(value.args) != 1
            or isinstance(value.args[0], ast.Starred)
            or value.keywords
        ):
            return None
        return (id(stmt) if isinstance(stmt, ast.Expr) else id(value)), value

    def _decorated_slot(self, stmt: ast.stmt, shadowed: frozenset[str]) -> SlotCall | None:
        """`@defer` as the outermost decorator of a nested def (Go's `defer func() {...}()`):
        a slot filled with the decorated function once the def has run."""
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) or not stmt.decorator_list:
            return None
        first, *rest = stmt.decorator_list
        role = self.aliases.role(first, shadowed)
        if role not in STATEMENT_FORMS or any(
            self.aliases.role(d, shadowed) in SCHEDULERS for d in rest
        ):
            return None
        call = ast.copy_location(ast.Call(func=first, args=[], keywords=[]), first)
        return SlotCall(role, call, loop=None, decorator=True)

    def _statements(
        self, body: list[ast.stmt], loop: ast.stmt | None = None, block: bool = False
    ) -> Iterable[tuple[ast.stmt, ast.stmt | None, bool]]:
        """The statements of a function body in textual order, each with the outermost loop
        around it (None: it runs at most once per call) and whether it belongs to a
        `with scope():` block (not to the function)."""
        for stmt in body:
            yield stmt, loop, block
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue  # their own scopes
            is_loop = isinstance(stmt, (ast.For, ast.AsyncFor, ast.While))
            is_block = self._is_scope_block(stmt)
            inner_loop = loop if loop is not None or not is_loop else stmt
            inner = (inner_loop, block or is_block)
            for part in ("body", "orelse", "finalbody"):
                yield from self._statements(getattr(stmt, part, []), *inner)
            for handler in getattr(stmt, "handlers", []):
                yield from self._statements(handler.body, *inner)
            for case in getattr(stmt, "cases", []):
                yield from self._statements(case.body, *inner)

    def _is_scope_block(self, stmt: ast.stmt) -> bool:
        return isinstance(stmt, (ast.With, ast.AsyncWith)) and any(
            isinstance(item.context_expr, ast.Call)
            and self.aliases.role(item.context_expr.func, self._shadowed()) == "scope"
            for item in stmt.items
        )

    def _all_claimed(self, body: list[ast.stmt], claimed: set[int]) -> bool:
        """Whether every use of defer & co. in `body` is one a slot (or a block) takes."""
        shadowed = self._shadowed()
        for node in _own_nodes(body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and any(
                self.aliases.role(d, shadowed) in SCHEDULERS and id(d) not in claimed
                for d in node.decorator_list
            ):
                return False
            expr = node.func if isinstance(node, ast.Call) else None
            if isinstance(node, ast.Compare):
                expr = node.comparators[0]
            if (
                expr is not None
                and id(expr) not in claimed
                and (self.aliases.role(expr, shadowed) in SCHEDULERS)
            ):
                return False  # scheduled where no slot can take it
        return True

    def _block_statement(
        self, stmt: ast.stmt, in_block: bool, claimed: set[int], blocks: dict[int, BlockPlan]
    ) -> bool:
        """Whether `stmt` is a nested `with scope():` block or in one: its defers are the
        block's (open-coded, planned into `blocks`, or the core's), so all are claimed."""
        if in_block:
            for n in _own_nodes([stmt]):
                claimed.add(id(n))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    claimed.update(id(d) for d in n.decorator_list)  # `@defer def` in it
            return True
        if not self._is_scope_block(stmt):
            return False
        plan = self._block_slots(stmt)
        if plan is not None:
            blocks[id(stmt)] = plan
        return True

    def _block_slots(self, stmt: ast.stmt) -> BlockPlan | None:
        """The slot calls of a `with scope():` block that can be open-coded, and of the blocks in
        it that can be too; or None.

        It can when it is `with scope():` alone (no `as`), its body can be planned as a
        function's (_open_coded_slots: slots, and lists for its loops), and no `return`, `break`
        or `continue` leaving it sits inside a try or with statement in it (its exit code runs
        where such a statement stands, so nothing else may still run after it). A block in it
        that cannot be open-coded keeps its calls in the core, as in a function."""
        if not isinstance(stmt, ast.With) or len(stmt.items) != 1:
            return None
        item = stmt.items[0]
        call = item.context_expr
        if item.optional_vars is not None or not isinstance(call, ast.Call):
            return None
        if call.args or call.keywords or _leaving_block(stmt.body) is None:
            return None
        return self._open_coded_slots(stmt.body)

    def visit_With(self, node: ast.With) -> ast.stmt | list[ast.stmt]:
        if self.open_coder is not None and id(node) in self.open_coder.blocks:
            return self.open_coder.block(node)
        if (
            self.scopes
            and self.scopes[-1].awaits
            and self._is_scope_block(node)
            and self._schedules_awaited(node.body)
        ):
            return self._awaiting_block(node)
        self.generic_visit(node)
        return node

    def _awaiting_block(self, node: ast.With) -> ast.stmt | list[ast.stmt]:
        """A `with scope():` block in which awaited calls are scheduled: its exit awaits them
        (_async_exits.block). `with a, b:` is `with a: with b:`."""
        if len(node.items) > 1:
            rest = ast.With(items=node.items[1:], body=node.body)
            first = node.items[1].context_expr
            node.items, node.body = node.items[:1], [ast.copy_location(rest, first)]
            rest.end_lineno, rest.end_col_offset = node.end_lineno, node.end_col_offset
        call = node.items[0].context_expr
        if not (
            isinstance(call, ast.Call)
            and self.aliases.role(call.func, self._shadowed()) == "scope"
            and not (call.args or call.keywords)
        ):
            self.generic_visit(node)  # a `with` around the block: visit_With meets it inside
            return node
        scope = self.scopes[-1]
        number = scope.async_blocks
        scope.async_blocks += 1
        return _async_exits.block(node, number, self._visit_body(node.body))

    def _leaves_block(self, node: ast.stmt) -> bool:
        return self.open_coder is not None and id(node) in self.open_coder.leaving

    def visit_Break(self, node: ast.Break) -> ast.stmt | list[ast.stmt]:
        return self.open_coder.block_exit_site(node) if self._leaves_block(node) else node

    def visit_Continue(self, node: ast.Continue) -> ast.stmt | list[ast.stmt]:
        return self.open_coder.block_exit_site(node) if self._leaves_block(node) else node

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

    def visit_Expr(self, node: ast.Expr) -> ast.stmt | list[ast.stmt]:
        if self.open_coder is not None and id(node) in self.open_coder.slot_calls:
            # A defer nested in an if/try/with/loop of an open-coded function: it may not be
            # reached.
            return self.open_coder.slot(node, self.open_coder.slot_calls[id(node)], may_skip=True)
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
                ast.Call(
                    func=_rt_attr(role, value.comparators[0]), args=[func, *args], keywords=keywords
                ),
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
        return _syntax_error(
            f"invalid use of `in {role}`: {why}", node, self.filename, self.source_lines
        )

    def visit_Await(self, node: ast.Await) -> ast.expr:
        call = node.value
        if (
            isinstance(call, ast.Call)
            and self.aliases.role(call.func, self._shadowed()) == "ascoped"
        ):
            self._require_awaits(call, "ascoped")
            if len(call.args) != 1 or call.keywords or isinstance(call.args[0], ast.Starred):
                raise _syntax_error(
                    "ascoped() takes exactly one asynchronous context manager: "
                    "`value = await ascoped(cm)`",
                    call,
                    self.filename,
                    self.source_lines,
                )
            self.scopes[-1].schedules = True
            self.prepared_any = True
            return _async_exits.entered(node, self.visit(call.args[0]))
        self.generic_visit(node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        role = self.aliases.role(node.func, self._shadowed())
        if role == "ascoped":
            raise _syntax_error(
                "ascoped(cm) must be awaited where it is called: `value = await ascoped(cm)`",
                node,
                self.filename,
                self.source_lines,
            )
        if role == "adefer":
            self._require_awaits(node, role)
            self.generic_visit(node)
            node.func = _rt_attr("adefer", node.func)
            self.scopes[-1].schedules = True
            self.prepared_any = True
            return node
        if self.open_coder is not None and id(node) in self.open_coder.slot_calls:
            slot = self.open_coder.slot_calls[id(node)]
            if slot.pushed:
                return self.open_coder.list_expression(slot)
            return self.open_coder.expression_slot(node, slot)
        self.generic_visit(node)
        if role in SCHEDULERS and self._scope_kind() != "lambda":
            node.func = _rt_attr(SCHEDULERS[role], node.func)
            self.scopes[-1].schedules = True
            self.prepared_any = True
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.stmt | list[ast.stmt]:
        if (
            self.open_coder is not None
            and isinstance(node.value, ast.Call)
            and id(node.value) in self.open_coder.slot_calls
            and not self.open_coder.slot_calls[id(node.value)].pushed
        ):
            return self.open_coder.assigned_slot(node)
        self.generic_visit(node)
        return node

    def visit_Return(self, node: ast.Return) -> ast.stmt | list[ast.stmt]:
        hoisted = self._hoisted_star(node)
        if hoisted:
            return [*hoisted, *_as_list(self.visit_Return(node))]
        if self._leaves_block(node):
            assert self.open_coder is not None
            return self.open_coder.block_exit_site(node)
        if self.open_coder is not None and self.open_coder.inline_returns:
            return self.open_coder.return_site(node)
        if node.value is not None:
            node.value = self.visit(node.value)
        if self.open_coder is None:  # a function the core keeps, if it schedules: _wrap_function
            return node
        return _storing_result(node)

    def _hoisted_star(self, node: ast.Return) -> list[ast.stmt]:
        """`return defer(*args)`: the call is all the statement evaluates, so it runs first as
        `__godefer_r__ = defer(*args)` (assigned_slot's starred form, whose fill is cheaper than
        the expression's tuple of assignment expressions) and the return returns that local.
        Empty for any other return."""
        value = node.value
        coder = self.open_coder
        if (
            coder is None
            or not isinstance(value, ast.Call)
            or id(value) not in coder.slot_calls
            or coder.slot_calls[id(value)].pushed
            or not value.args
            or not isinstance(value.args[0], ast.Starred)
        ):
            return []
        target = ast.copy_location(_name(HOISTED_RESULT, ast.Store()), value)
        assign = ast.copy_location(ast.Assign(targets=[target], value=value), node)
        node.value = ast.copy_location(_name(HOISTED_RESULT), value)
        return coder.assigned_slot(assign)

    # -- exit handlers ------------------------------------------------------------------------

    def _wrap_function(
        self, body: list[ast.stmt], kind: str, line: int, awaits: bool = False
    ) -> list[ast.stmt]:
        docstring, rest = _split_docstring(body)
        valued = kind != "async_generator"  # `return value` is illegal in an async generator
        if valued:
            rest = _results_stored(rest)
        init = f"{RV} = None\n{STATE} = None" if valued else f"{STATE} = None"
        first = _first_user_line(rest) if rest else line
        on_return, on_exception = (
            _async_exits.function_exits(valued, line) if awaits else _core_exits(valued)
        )
        return docstring + _exit_structure(
            init=[_at_line(s, first) for s in _parse(init)],
            body=rest + _fall_off(valued),
            on_return=on_return,
            on_exception=on_exception,
            line=line,
            located_return=awaits,
        )

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
        for handler in try_stmt.handlers:
            _at_line(handler, body[0].lineno)
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


MAX_OPEN_CODED = 16
# A list slot runs on return through a loop in the frame's bytecode on 3.13+. On 3.11 and 3.12
# that loop (the exit code has no line of its own, so its back edge stops the propagation of the
# return's line) makes the `return` report its line a second time to tracers: the core runs the
# list there.
DRAIN_IN_BYTECODE = sys.version_info >= (3, 13)
# Falling off the end after a compound statement: exit code with no location makes CPython 3.11
# and 3.12 give its closing `return` the line laid out before it (a line that may not have run,
# a phantom line to coverage). There it carries the line of the body's last statement instead,
# which ran (the header of a compound one); 3.13 leaves a location-less exit without a line.
FALL_OFF_LOCATED = sys.version_info < (3, 13)
# CPython 3.13 fuses two adjacent stores to locals into STORE_FAST_STORE_FAST (a chain
# `a = b = None` or a two-name unpacking). On the project machine a function running one took
# about 20 ns longer (40% of a try/finally function's call) in most processes, in none with the
# stores apart (bench/README.md, "3.13 and paired stores"). So on 3.13 the inits store their
# names one statement each: 7 instructions more per pair under callgrind.
SPLIT_STORES = sys.version_info >= (3, 13)
# Values of the state local of an open-coded function besides None (running); the core reads
# them too (open_coded.hpp).
OPEN_BODY_RAISED = 1  # the body raised: the handler calls the reached slots inline
OPEN_CORE = 3  # the core holds entries of this frame: it runs everything at the exit
OPEN_CORE_DONE = 4  # the core ran (or is running) the exit
OPEN_CORE_RAISED = 5  # the body raised and the core holds entries of this frame
OPEN_RETURNING = 100  # + i: slot i is being called on return
OPEN_UNWINDING = 200  # + i: slot i is being called with the body's exception in flight
OPEN_RECOVERED = 300  # + i: slot i recovered that exception
KIND_CODES = {"defer": 0, "errdefer": 1, "okdefer": 2, "adefer": 4}  # adefer: Kind::await_call
KIND_EXIT_CM = 3  # the core's Kind::exit_cm: call __exit__(type, value, tb)


class OpenCoder:
    """Open-coded defers (Go 1.14's model): each defer of a function outside loops owns a slot,
    frame locals holding its callee and arguments; the defers of one outermost loop share a slot
    holding a DeferList. A normal exit calls the reached slots inline, last first; so does the
    handler of an exception leaving the body. The core takes over only for what inline code
    cannot do: a loop's list or a raising slot on the exception path, a recovery's remaining
    slots, and frames whose core holds entries too (a ScopeBound constructed there):

        __godefer_st__ = __godefer_rv__ = __godefer_0__ = __godefer_1__ = None
        __godefer_ck_d__ = __godefer_check_d__                   # the core's SlotCheck
        try:
            __godefer_0__, __godefer_0_0__ = f, x                 # defer(f, x), evaluated here
            if __godefer_st__ is not None or not callable(__godefer_0__):  # the core holds
                __godefer_0__, __godefer_f__ = None, __godefer_0__  # entries, or a non-callable:
                __godefer_rt__.defer(__godefer_f__, __godefer_0_0__)  # TypeError at this line
            __godefer_1__ = __godefer_ck_d__[g]                   # defer(g): the same, checked
            ...                                                   # in C (see _filled)
            __godefer_rv__ = value                                # return value:
            if __godefer_st__ is None:
                __godefer_st__ = 100                              # result()/set_result() and
                if __godefer_1__ is not None:                     # the core read the state
                    try:                                          # (the `if`: when it may be
                        __godefer_1__()                           # unreached)
                    except BaseException:
                        __godefer_st__ = 101                      # slot 1 raised
                        raise
                __godefer_0__(__godefer_0_0__)
                return __godefer_rv__
            if __godefer_st__ == 3:                               # the core holds newer entries
                __godefer_st__ = 4
                return __godefer_rt__.complete_slots(__godefer_rv__, 3, *groups)
        except BaseException:                                     # the scope's first line
            <_on_exception: the slots inline (state 200 + i), or the core>

    That is the shape when no return is inside a try or with statement (returning_structure);
    otherwise the return code sits in a `finally` (exit_structure).
    """

    def __init__(
        self,
        preparer: Preparer,
        kind: str,
        line: int,
        slot_calls: dict[int, SlotCall],
        *,
        blocks: dict[int, BlockPlan] | None = None,
        prefix: str = "__godefer_",
        root: OpenCoder | None = None,
        awaits: bool = False,
        tuples: frozenset[str] = frozenset(),
    ) -> None:
        self.preparer = preparer
        # Names that always hold a tuple here (a `*args` the function never rebinds): unpacking
        # them runs no code (_hoisted).
        self.tuples = tuples
        # A coroutine with adefer slots: its exits await them inline, and hand what is left to
        # the core as an AsyncExit to step (_async_exits), never to a drain that cannot await.
        self.awaits = awaits
        self.fall_off_line = line  # the last statement's, once rewrite() knows it
        self.kind = kind
        self.slot_calls = slot_calls  # by id(statement), in textual order
        # The open-coded `with scope():` blocks of the scope: id(with) -> their plan.
        self.blocks = blocks or {}
        self.root = root or self  # the function's coder, which numbers the blocks
        self.block_count = 0
        self.p = prefix  # slot locals are <prefix><i>__, the state local <prefix>st__
        self.st = f"{prefix}st__"
        # A block's coder: the ids of the return/break/continue statements leaving the block.
        self.leaving: set[int] = set()
        self.uses_temp = False  # a slot's callee passes through __godefer_f__ (assigned_slot)
        self.checks: set[str] = set()  # roles whose slots are filled through a check local
        self.first_site: tuple[ast.Assign, str] | None = None  # a function's first fill, role
        self.uses_scoped_temps = False  # scoped() as an expression (_entered_expression)
        # Slots holding what scoped_slot() returned, (exit callable, kind, value), whole.
        self.entered_tuples: set[int] = set()
        self.number = -1  # a block's K
        self.temporaries = 0  # sites whose parts went through temporaries (_temporaries)
        self.first_fill = False  # the next fill is the scope's first, before its try (_hoisted)
        self.head = 0  # a block's statements that go before its init and try
        self.none_exits: set[int] = set()  # return sites of a lean function returning None
        self.list_slots: dict[int, int] = {}  # id(loop) -> the index of its slot
        self.inline_returns = False  # every return runs the slots where it is (no `finally`)
        self.exits: set[int] = set()  # ids of the return sites' placeholders
        self.exit_lines: dict[int, int] = {}  # placeholder id -> the line of its `return`
        self.line = line  # the def line: where inserted exception handlers report
        self.valued = kind != "async_generator"
        self.slots: list[tuple[str, list[tuple[str, ast.expr]]]] = []  # (kind, [(local, arg)])
        # How each slot is called: positional and keyword arguments, as loads of its locals.
        self.call_shapes: list[tuple[list[ast.expr], list[ast.keyword]]] = []
        # Per slot: whether a `return` can come before its statement (so it may be unreached).
        self.may_skip: list[bool] = []
        # Slots of the function's top level with no None before the body (_note_unbound): the
        # init's stores cost about 25 instructions a slot (3.13), more than the fill itself.
        self.unbound: list[int] = []
        # The ids of the returns _return_at_branch_ends made: falling off, with the result None.
        self.fall_offs: set[int] = set()

    def rewrite(self, body: list[ast.stmt]) -> list[ast.stmt]:
        docstring, _ = _split_docstring(body)
        if (FALL_OFF_LOCATED or self.awaits) and len(body) > len(docstring):
            _return_at_branch_ends(body, self.fall_offs)
        # No return inside a try or with statement (where code still runs after it): each return
        # can run the exit where it stands.
        self.inline_returns = _leaving_block(body) is not None
        self.fall_off_line = _last_run_line(body[-1])  # (the docstring, if nothing else)
        out, head = self._emit(body[len(docstring) :], (ast.Return,))
        filled = 1 if head else 0  # a hoisted first slot is assigned before the init
        result = [] if self._lean() else [RV]
        locals_ = [
            self.st,
            *result,
            *(f"{self.p}{i}__" for i in range(filled, len(self.slots)) if i not in self.unbound),
        ]
        head_stmts, early = out[:head], self._check_first_fill()
        if early is not None:  # before the statements before it (they run no code), at their line
            check_init = _parse(_check_init(early))
            head_stmts = [*(_at_line(s, head_stmts[0].lineno) for s in check_init), *head_stmts]
        init = _none_init(locals_) + "\n"
        init += "".join(_check_init(role) for role in sorted(self.checks) if role != early)
        # The init carries the line of the statement before it: no line event of its own.
        first = out[head - 1].lineno if head else (_first_user_line(out) if out else self.line)
        init_stmts = [*head_stmts, *(_at_line(s, first) for s in _parse(init))]
        out = out[head:]
        if self.inline_returns:
            # Falling off the end is one more return site. The result is still None there: no
            # return stored a value and then failed to leave.
            out.append(self._sentinel(none=True))
            replace = _ReplaceSentinels(self.exits)
            replace.make = lambda node: [
                self._at_exit_line(s, id(node))
                for s in self._on_return(none=id(node) in self.none_exits)
            ]
            out = replace.visit_body(out)
            return docstring + self.returning_structure(init_stmts, out)
        has_value_return = any(
            isinstance(n, ast.Return) and n.value is not None for n in _own_nodes(body)
        )
        return docstring + self.exit_structure(
            init_stmts,
            out + (_fall_off(self.valued) if has_value_return else []),
        )

    def _check_first_fill(self) -> str | None:
        """When the function fills later slots of its first slot's role through a check local:
        the first fill goes through it too, `__godefer_0__ = __godefer_ck_d__[f]`, cheaper than
        the call of `__godefer_first_d__(f)` once the local is there. Returns that role, whose
        local must then be set first (None if the first fill stays a call)."""
        if self.first_site is None or self.first_site[1] not in self.checks:
            return None
        assign, role = self.first_site
        call = assign.value
        assert isinstance(call, ast.Call)
        check = ast.Subscript(value=_name(SLOT_CHECKS[role][0]), slice=call.args[0], ctx=ast.Load())
        assign.value = ast.copy_location(check, call)
        ast.copy_location(check.value, call)
        return role

    # -- open-coded `with scope():` blocks ------------------------------------------------------

    def block(self, node: ast.With) -> list[ast.stmt]:
        """`with scope(): <body>` whose defers can all live in locals of the frame:

            __godefer_bK_st__ = __godefer_bK_0__ = None           # at the `with` line
            try:
                <body: slots filled as in a function>
                <_block_exit>                                     # also before each return,
            except BaseException:                                 # break or continue leaving
                __godefer_t__, __godefer_bK_st__ = __godefer_bK_st__, 4    # the block
                if __godefer_rt__.block_unwind(__godefer_t__, K, *groups) is __godefer_rt__.RERAISE:
                    raise                                         # else: recovered, go on

        The state is None while the block runs, so a ScopeBound made in it joins the block
        through the core (state 3); every exit leaves another value in it."""
        # Numbered in the order the blocks start: a nested block gets a higher number than the
        # block around it, which is how the core tells the innermost running one.
        k = self.root.block_count
        self.root.block_count += 1
        slots, nested = self.blocks[id(node)]
        coder = OpenCoder(
            self.preparer,
            self.kind,
            node.lineno,
            slots,
            blocks=nested,
            prefix=f"__godefer_b{k}_",
            root=self.root,
        )
        coder.number = k
        leaving = _leaving_block(node.body)
        assert leaving is not None
        coder.leaving = leaving
        outer, self.preparer.open_coder = self.preparer.open_coder, coder
        try:
            body = coder.block_body(node.body)
        finally:
            self.preparer.open_coder = outer
        return coder.block_structure(node, body)

    def block_body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out, self.head = self._emit(body, (ast.Return, ast.Break, ast.Continue))
        out.append(self._sentinel())  # falling off the end of the block
        return out

    def _emit(
        self, body: list[ast.stmt], jumps: tuple[type[ast.stmt], ...]
    ) -> tuple[list[ast.stmt], int]:
        """The scope's statements with their slots filled, and how many of them go before the
        init and the try (_hoisted). A `jumps` statement (leaving the scope) before a slot's
        statement means the slot may be unreached."""
        out: list[ast.stmt] = []
        left = False
        hoist = self._hoisted(body)
        head = 0
        for index, stmt in enumerate(body):
            self.first_fill = index == hoist
            before = len(self.slots)
            if id(stmt) in self.slot_calls:
                out.extend(self.slot(stmt, self.slot_calls[id(stmt)], may_skip=left))
                self._note_unbound(before, left, index == hoist)
            elif self._assigns_slot(stmt):
                assert isinstance(stmt, ast.Assign)
                out.extend(self.assigned_slot(stmt, may_skip=left))
                self._note_unbound(before, left, index == hoist)
            else:
                left = left or any(isinstance(n, jumps) for n in _own_nodes([stmt]))
                new = self.preparer.visit(stmt)  # nested slots come back through visit_Expr
                if new is not None:
                    out.extend(new if isinstance(new, list) else [new])
            if index == hoist:
                head = len(out)
        return out, head

    def _note_unbound(self, before: int, left: bool, hoisted: bool) -> None:
        """After a statement of the function's own body that filled slots from index `before`:
        its own slot (the last: its parts' defers come first) needs no None before the body
        when every return comes after the statement (`left`: a return came before it), and its
        fill always binds it (not scoped(), whose fill leaves the slot alone when the core takes
        the call). Such a slot is bound at every return site; on the exception path the handler
        binds the unreached ones first (OpenCoder.unbound)."""
        if self.root is not self or left or hoisted or len(self.slots) == before:
            return
        if self.slots[-1][0] in KIND_CODES:
            self.unbound.append(len(self.slots) - 1)

    def block_exit_site(self, node: ast.Return | ast.Break | ast.Continue) -> list[ast.stmt]:
        """A return, break or continue leaving the block: its value (or a no-op at its line)
        first, then the block's exit code, then the jump at the `with` line (a return's value in
        the result local, as a `finally` of the function reads it)."""
        if isinstance(node, ast.Return) and node.value is not None:
            value = self.preparer.visit(node.value)
            assign = ast.copy_location(
                ast.Assign(targets=[_name(RV, ast.Store())], value=value), node
            )
            ast.copy_location(assign.targets[0], node)
            jump = _at_line(ast.Return(_name(RV)), self.line)
            return [assign, self._sentinel(), jump]
        # The statement's own line first, then the exit at the `with` line, as `with` runs its
        # exit after the jump's line: the jump carries the `with` line, where the exit left the
        # frame (no line event of its own, as after a `with`'s exit).
        here = _at_line(ast.Pass(), node.lineno)
        return [here, self._sentinel(), _at_line(node, self.line)]

    def _block_exit(self) -> list[ast.stmt]:
        """A normal exit of the block: the reached slots inline, last first, each announced in
        the state; or the core, when it holds entries of the block too."""
        inline: list[ast.stmt] = []
        guard_all = any(self.may_skip)
        called = [i for i in range(len(self.slots)) if self.slots[i][0] != "errdefer"]
        if guard_all or not called:
            inline += _parse(f"{self.st} = {OPEN_CORE_DONE}")  # no slot may set it
        released: set[str] = set()
        for i in reversed(called):
            call = self._call_slot(i)
            if isinstance(call, ast.Expr) and len(self.slots[i][1]) == 1:
                # `slot = slot()`: the call's own store lets go of the callee (what stays is
                # its return value, usually None, until the block runs again or the frame ends)
                call = ast.Assign(targets=[_name(f"{self.p}{i}__", ast.Store())], value=call.value)
                released.add(f"{self.p}{i}__")
            step = [*_parse(f"{self.st} = {OPEN_RETURNING + i}"), call]
            if guard_all:
                guard = _parse(f"if {self.p}{i}__ is not None:\n    pass")[0]
                assert isinstance(guard, ast.If)
                guard.body = step
                step = [guard]
            inline += step
        # A finished block keeps nothing: its locals let go of the calls and their arguments.
        held = [local for local in self._held_locals() if local not in released]
        inline += _parse(_none_init(held)) if held else []
        # The inline calls in the `else`, which falls through: no jump on the common path.
        exit_ = _parse(
            f"if {self.st} is not None:\n"
            f"    if {self.st} == {OPEN_CORE}:\n        {self.st} = {OPEN_CORE_DONE}\n"
            f"        {RT}.block_complete()\n"
            "else:\n    pass"
        )[0]
        assert isinstance(exit_, ast.If) and isinstance(exit_.body[0], ast.If)
        exit_.orelse = inline
        complete = exit_.body[0].body[1]
        assert isinstance(complete, ast.Expr) and isinstance(complete.value, ast.Call)
        complete.value.args = [ast.Constant(self.number), *self._groups()]
        return [exit_]

    def _held_locals(self) -> list[str]:
        """The locals of the slots: callees (or exit callables) and arguments."""
        held: list[str] = []
        for i, (role, values) in enumerate(self.slots):
            held += [local for local, _ in values]
            if role == "scoped" and i not in self.entered_tuples:
                held.append(f"{self.p}{i}_k__")
        held += ["__godefer_f__"] if self.uses_temp else []
        return held + (["__godefer_v__"] if self.uses_scoped_temps else [])

    def block_structure(self, node: ast.With, body: list[ast.stmt]) -> list[ast.stmt]:
        line = node.lineno
        replace = _ReplaceSentinels(self.exits)
        replace.make = lambda _: [_at_line(s, line) for s in self._block_exit()]
        body = replace.visit_body(body)
        head, body = body[: self.head], body[self.head :]
        filled = 1 if head else 0  # a hoisted first slot is assigned before the init
        locals_ = [self.st, *(f"{self.p}{i}__" for i in range(filled, len(self.slots)))]
        init = [_at_line(s, head[-1].lineno if head else line) for s in _parse(_none_init(locals_))]
        if head:  # the `with` line still reports first, as the `with` statement did (a no-op
            # statement: a NOP, dropped when code before already carries the line)
            head.insert(0, _at_line(ast.Expr(ast.Constant(None)), line))
        stmt = _parse(
            f"try:\n    pass\nexcept BaseException:\n"
            f"    __godefer_t__, {self.st} = {self.st}, {OPEN_CORE_DONE}\n"
            f"    if {RT}.block_unwind(__godefer_t__) is {RT}.RERAISE:\n        raise\n"
        )[0]
        assert isinstance(stmt, ast.Try)
        test = stmt.handlers[0].body[1]
        assert isinstance(test, ast.If) and isinstance(test.test, ast.Compare)
        unwind = test.test.left
        assert isinstance(unwind, ast.Call)
        unwind.args += [ast.Constant(self.number), *self._groups()]
        _at_line(stmt, line)
        stmt.body = body
        return [*head, *init, stmt]

    def _hoisted(self, body: list[ast.stmt]) -> int | None:
        """The index of the first statement that fills a slot, when it and everything before
        it can go before the scope's try: the fill is `defer(f)` (or `x = defer(f)`, or
        `defer(*t)` with `t` a tuple), and nothing before it or in `f` can run code, not even a
        C-level hook (_runs_no_code), so nothing can have made the core hold an entry of the
        scope (a ScopeBound joins the scope of the code that calls its class) or need an exit.
        If the fill raises, nothing is pending. None otherwise."""
        for index, stmt in enumerate(body):
            call = self._slot_call_of(stmt)
            if call is not None:
                slot = self.slot_calls[id(stmt) if id(stmt) in self.slot_calls else id(call)]
                plain = slot.role in SLOT_FILLS and slot.loop is None and not slot.decorator
                if not plain or len(call.args) != 1 or call.keywords:
                    return None
                first = call.args[0]
                if isinstance(first, ast.Starred):
                    # Unpacking iterates, which can run a C-level hook too, unless it is a tuple.
                    first = first.value
                    tuple_name = isinstance(first, ast.Name) and first.id in self.root.tuples
                    if not (tuple_name or isinstance(first, (ast.Tuple, ast.List))):
                        return None
                if not _runs_no_code([first]):
                    return None
                targets = stmt.targets if isinstance(stmt, ast.Assign) else []
                return index if _runs_no_code(targets) else None
            if isinstance(stmt, _COMPOUND) or not _runs_no_code([stmt]):
                return None
        return None

    def _slot_call_of(self, stmt: ast.stmt) -> ast.Call | None:
        """The defer call of a statement that fills a slot as `defer(f)` or `x = defer(f)`."""
        if id(stmt) in self.slot_calls and not self.slot_calls[id(stmt)].expression:
            return self.slot_calls[id(stmt)].call
        if self._assigns_slot(stmt):
            assert isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)
            return self.slot_calls[id(stmt.value)].call
        return None

    def _assigns_slot(self, stmt: ast.stmt) -> bool:
        """`x = defer(...)` or `x = scoped(...)` whose call has a slot (not pushed onto a list:
        that is an expression like any other)."""
        return (
            isinstance(stmt, ast.Assign)
            and id(stmt.value) in self.slot_calls
            and not self.slot_calls[id(stmt.value)].pushed
        )

    # -- returns that run the slots where they are ------------------------------------------

    def _sentinel(self, none: bool = False, line: int | None = None) -> ast.stmt:
        """A placeholder for a return site's exit code, made once every slot is known. `none`:
        the site returns None (a bare return, or falling off the end). `line`: the `return`'s,
        which the exit code carries (else it has no location)."""
        node = _no_location(ast.Pass())
        assert isinstance(node, ast.stmt)
        self.exits.add(id(node))
        if line is not None:
            self.exit_lines[id(node)] = line
        if none and self._lean():
            self.none_exits.add(id(node))
        return node

    def return_site(self, node: ast.Return) -> list[ast.stmt]:
        """`return x` outside any try or with: the value goes to the result local and the slots
        run right here, as a `finally` would have run them."""
        out: list[ast.stmt] = []
        if node.value is not None:
            value = self.preparer.visit(node.value)
            assign = ast.Assign(targets=[_name(RV, ast.Store())], value=value)
            out.append(ast.copy_location(assign, node))
            ast.copy_location(assign.targets[0], node)
        elif self.valued and not self._lean() and id(node) not in self.fall_offs:
            # (Falling off, the result is still None: every return before runs its exit where
            # it stands, so none stored a value and then failed to leave.)
            none = ast.Assign(targets=[_name(RV, ast.Store())], value=ast.Constant(None))
            out.append(_at_line(none, node.lineno))
        return [*out, self._sentinel(none=node.value is None, line=node.lineno)]

    def _at_exit_line(self, stmt: ast.stmt, site: int) -> ast.stmt:
        """Exit code at the line of its `return`: with no location, the branches around slots
        that may be unreached would end the propagation of the return's line, and the `return`
        instruction after them would report that line to tracers a second time (3.11, 3.12).
        Falling off the end has no line of its own: no location."""
        line = self.exit_lines.get(site)
        if line is None and self.awaits:  # as _on_return left it; its awaits at the last line
            return _awaits_at(stmt, self.fall_off_line)
        if line is None and FALL_OFF_LOCATED:
            line = self.fall_off_line
        node = _no_location(stmt) if line is None else _at_line(stmt, line)
        assert isinstance(node, ast.stmt)
        return node

    def _lean(self) -> bool:
        """A function with no slots of its own (its defers are in open-coded blocks) whose
        returns run the exit where they are: nothing can set its result on the way out but the
        core, so the result local is set only by `return x` and the init leaves it out."""
        return not self.slot_calls and self.inline_returns

    def returning_structure(self, init: list[ast.stmt], body: list[ast.stmt]) -> list[ast.stmt]:
        """The exit handler when every return runs the slots where it is:

            <init>
            try:
                <body: each `return x` is `rv = x; <_on_return>`>
            except BaseException:              # the scope's first line (see _at_line)
                <_on_exception>

        An exception leaving the body passes one handler, as it would one `finally`."""
        stmt = _no_location(ast.parse("try:\n    pass\nexcept BaseException:\n    pass").body[0])
        assert isinstance(stmt, ast.Try)
        stmt.body = body
        stmt.handlers[0].body = self._on_exception(body_raised=f"{self.st} is None")
        _at_line(stmt.handlers[0], self.line)
        return [*init, stmt]

    # -- one slot -----------------------------------------------------------------------------

    def slot(self, stmt: ast.stmt, slot: SlotCall, may_skip: bool) -> list[ast.stmt]:
        self.preparer.prepared_any = True
        if slot.pushed:  # `f(defer(g)) in defer`
            return self._locate(stmt, [ast.Expr(self.list_expression(slot))])
        if slot.role == "scoped" and slot.loop is not None:
            return self._entered_in_loop(stmt, slot, None)
        if slot.role == "scoped":
            self.may_skip.append(may_skip)
            return self._entered(stmt, slot.call, None)
        if slot.decorator:
            assert isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            if slot.loop is None:
                self.may_skip.append(may_skip)
            return self._decorated(stmt, slot.role, slot.loop)
        if slot.loop is None:
            self.may_skip.append(may_skip)
            return self._single_slot(stmt, slot.role, slot.call)
        return self._list_entry(stmt, slot.role, slot.call, self._list_slot(slot.loop))

    def _list_slot(self, loop: int) -> int:
        """The index of the slot holding the list of the loop `loop` (an id), made if new."""
        if loop not in self.list_slots:
            self.list_slots[loop] = len(self.slots)
            self.slots.append(("list", []))
            self.call_shapes.append(([], []))
            self.may_skip.append(True)
        return self.list_slots[loop]

    def _entered_in_loop(
        self, stmt: ast.stmt, slot: SlotCall, targets: list[ast.expr] | None
    ) -> list[ast.stmt]:
        """`[x =] scoped(obj)` in a loop: the core enters obj and appends its exit to the loop's
        list (made by the first one), returning the list and the value:

            if __godefer_st__ is not None:                        # the core holds entries
                x = __godefer_rt__.scoped(obj)
            else:
                __godefer_i__, x = __godefer_rt__.list_scoped(__godefer_i__, obj)
        """
        assert slot.loop is not None
        i = self._list_slot(slot.loop)
        fill = f"{self.p}{i}__, __godefer_v__ = {RT}.list_scoped({self.p}{i}__, None)"
        return self._scoped_fill(stmt, slot.call, targets, fill)

    def _scoped_fill(
        self, stmt: ast.stmt, call: ast.Call, targets: list[ast.expr] | None, fill: str
    ) -> list[ast.stmt]:
        """`if <state> is not None: v = scoped(obj)` (the core holds entries: it takes this one
        too) `else: <fill>`, a call into the core whose last argument is obj; then `targets`
        get the value."""
        obj = self.preparer.visit(call.args[0])
        first: list[ast.stmt] = []
        if not _runs_nothing([obj]):  # evaluated before the state is tested (_temporaries)
            first = [ast.Assign(targets=[_name("__godefer_v__", ast.Store())], value=obj)]
            obj = _name("__godefer_v__")
        stmts = ast.parse(
            f"if {self.st} is not None:\n    __godefer_v__ = {RT}.scoped(None)\nelse:\n    {fill}\n"
        ).body
        branch = stmts[0]
        assert isinstance(branch, ast.If)
        core, filled = branch.body[0], branch.orelse[0]
        assert isinstance(core, ast.Assign) and isinstance(filled, ast.Assign)
        assert isinstance(core.value, ast.Call) and isinstance(filled.value, ast.Call)
        core.value.args = [copy.deepcopy(obj)]
        filled.value.args[-1] = obj
        if targets is not None and len(targets) == 1:
            core.targets = [copy.deepcopy(targets[0])]
            unpack = filled.targets[0]
            assert isinstance(unpack, ast.Tuple)
            unpack.elts[-1] = targets[0]
        elif targets:
            stmts.append(ast.Assign(targets=targets, value=_name("__godefer_v__")))
        return self._locate(stmt, first + stmts)

    def _evaluate(
        self, call: ast.Call
    ) -> tuple[int, list[tuple[str, ast.expr]], list[ast.expr], list[ast.keyword]]:
        """The index of a new slot for `defer(f, ...)`, its callee and arguments as (local,
        expression) pairs, evaluated in source order by one assignment, and the call's shape as
        loads of those locals. The index is taken after the parts are visited: a defer among
        them fills its slot first (it runs first), so it gets the lower index."""
        visit = self.preparer.visit
        callee = visit(call.args[0])
        args, keywords = self._visited_parts(call.args[1:], call.keywords)
        i = len(self.slots)
        values, call_args, call_keywords = _bound_parts(args, keywords, f"{self.p}{i}_")
        return i, [(f"{self.p}{i}__", callee), *values], call_args, call_keywords

    def _visited_parts(
        self, args: list[ast.expr], keywords: list[ast.keyword]
    ) -> tuple[list[ast.expr], list[ast.keyword]]:
        visit = self.preparer.visit
        return [
            ast.Starred(visit(a.value), ast.Load()) if isinstance(a, ast.Starred) else visit(a)
            for a in args
        ], [ast.keyword(arg=kw.arg, value=visit(kw.value)) for kw in keywords]

    def _temporaries(
        self, args: list[ast.expr], keywords: list[ast.keyword]
    ) -> tuple[list[tuple[str, ast.expr]], list[ast.expr], list[ast.keyword]]:
        """A call's visited parts bound to temporaries of their own, when evaluating them may
        run code (a call, await or yield): that code may make the core hold entries of the
        frame, so the state is tested only after them. Else no temporaries."""
        if _runs_nothing([*args, *keywords]):
            return [], args, keywords
        self.temporaries += 1
        return _bound_parts(args, keywords, f"__godefer_a{self.temporaries}_")

    @staticmethod
    def _store(values: list[tuple[str, ast.expr]]) -> ast.Assign:
        targets = [_name(local, ast.Store()) for local, _ in values]
        return ast.Assign(
            targets=[targets[0] if len(targets) == 1 else ast.Tuple(elts=targets, ctx=ast.Store())],
            value=values[0][1]
            if len(values) == 1
            else ast.Tuple(elts=[v for _, v in values], ctx=ast.Load()),
        )

    @staticmethod
    def _core_defer(role: str, stmt: ast.AST, call_shape: tuple) -> ast.Expr:
        """The core's defer of the evaluated call: raises TypeError for a non-callable at this
        line, or joins the entries the core holds for the frame."""
        call_args, call_keywords = copy.deepcopy(call_shape)
        return ast.Expr(
            ast.Call(
                func=_rt_attr(role, stmt),
                args=[_name("__godefer_f__"), *call_args],
                keywords=call_keywords,
            )
        )

    @staticmethod
    def _locate(stmt: ast.AST, nodes: list[ast.stmt]) -> list[ast.stmt]:
        for node in nodes:
            for n in ast.walk(node):
                if isinstance(n, (ast.stmt, ast.expr, ast.keyword)):
                    ast.copy_location(n, stmt)
        return nodes

    def _single_slot(
        self, stmt: ast.stmt, role: str, call: ast.Call, fused: bool = True
    ) -> list[ast.stmt]:
        if isinstance(call.args[0], ast.Starred):
            return self._star_slot(stmt, role, call)
        i, values, call_args, call_keywords = self._evaluate(call)
        self.slots.append((role, values))
        self.call_shapes.append((call_args, call_keywords))
        callable_for_sure = isinstance(values[0][1], ast.Lambda)
        if fused and len(values) == 1 and not callable_for_sure and role in SLOT_FILLS:
            return self._locate(stmt, self._filled(i, role, values[0][1]))
        fallback = self._fill_check(i, callable_for_sure)
        fallback.body.append(self._core_defer(role, stmt, (call_args, call_keywords)))
        return self._locate(stmt, [self._store(values), fallback])

    def _star_slot(self, stmt: ast.stmt, role: str, call: ast.Call) -> list[ast.stmt]:
        """`defer(*args, ...)`, the callee the first item of `args`: the core's split checks it
        (TypeError at this line when there is none or it is not callable) and returns it with
        the other positional arguments as a tuple, which the slot's call unpacks:

            __godefer_i__, __godefer_i_0__ = __godefer_rt__.slot_star_defer(*args)

        Keywords are bound after the positional arguments, as the call evaluates them, and the
        split runs after all of them, as the call itself would."""
        i, slot, rest, split, bound = self._star_split(call, role, stmt)
        stmts: list[ast.stmt] = [self._store(bound)] if bound else []
        pair = ast.Tuple(elts=[_name(slot, ast.Store()), _name(rest, ast.Store())], ctx=ast.Store())
        stmts.append(ast.Assign(targets=[pair], value=split))
        call_args, call_keywords = self.call_shapes[i]
        if self.first_fill:  # nothing scheduled yet: the slot keeps it (see _hoisted)
            self.first_fill = False
            return self._locate(stmt, stmts)
        fallback = self._fill_check(i, callable_for_sure=True)
        fallback.body.append(self._core_defer(role, stmt, (call_args, call_keywords)))
        return self._locate(stmt, [*stmts, fallback])

    def _star_split(
        self, call: ast.Call, role: str, at: ast.AST
    ) -> tuple[int, str, str, ast.Call, list[tuple[str, ast.expr]]]:
        """A new slot for `defer(*args, ...)`: its index, its locals (the callee, the rest), the
        split's call and what is bound before it: when the call has keywords, `(*args,)` into
        the rest local and the keywords into their own, in order, and the split of the rest."""
        args, keywords = self._visited_parts(call.args, call.keywords)
        i = len(self.slots)
        slot, rest = f"{self.p}{i}__", f"{self.p}{i}_0__"
        split = ast.Call(func=_rt_attr(STAR_SPLITS[role], at), args=args, keywords=[])
        kw_values, _, call_keywords = _bound_parts([], keywords, f"{self.p}{i}_")
        bound: list[tuple[str, ast.expr]] = []
        if kw_values:
            bound = [(rest, ast.Tuple(elts=args, ctx=ast.Load())), *kw_values]
            split.args = [ast.Starred(_name(rest), ast.Load())]
        self.slots.append((role, [(slot, split), (rest, split), *kw_values]))
        self.call_shapes.append(([ast.Starred(_name(rest), ast.Load())], call_keywords))
        return i, slot, rest, split, bound

    def _filled(self, i: int, role: str, callee: ast.expr) -> list[ast.stmt]:
        """`defer(f)` into slot i: the core checks f is callable (TypeError at this line) and
        returns it for the slot, or takes the call when it holds entries of the frame (None
        for the slot). Cheaper than the test _fill_check writes; a call with arguments keeps
        that test, since the arguments are evaluated after f.

        A function's later slots subscript a check local, `__godefer_1__ = __godefer_ck_d__[f]`
        (the cheapest way from bytecode into C; the core swaps the local when it starts holding
        entries of the frame). The check is loaded before the subscript's operand, so a callee
        that may run code is evaluated into a temporary first. A block's slots pass its state:
        `__godefer_bK_1__ = __godefer_fill_d__(f, __godefer_bK_st__)`."""
        slot = _name(f"{self.p}{i}__", ast.Store())
        if self.first_fill:  # nothing scheduled yet: no state to pass (see _hoisted)
            self.first_fill = False
            fill = ast.Call(func=_name(FIRST_FILLS[role][0]), args=[callee], keywords=[])
            assign = ast.Assign(targets=[slot], value=fill)
            if self.root is self:  # rewrite() may make it a check's, as the later fills
                self.first_site = (assign, role)
            return [assign]
        if self.root is not self:
            # The state after the callee: evaluating it may make the core hold entries.
            fill = ast.Call(
                func=_name(SLOT_FILLS[role][0]), args=[callee, _name(self.st)], keywords=[]
            )
            return [ast.Assign(targets=[slot], value=fill)]
        stmts: list[ast.stmt] = []
        if not isinstance(callee, ast.Name):
            self.uses_temp = True
            stmts.append(ast.Assign(targets=[_name("__godefer_f__", ast.Store())], value=callee))
            callee = _name("__godefer_f__")
        self.checks.add(role)
        check = ast.Subscript(value=_name(SLOT_CHECKS[role][0]), slice=callee, ctx=ast.Load())
        return [*stmts, ast.Assign(targets=[slot], value=check)]

    def _fill_check(self, i: int, callable_for_sure: bool) -> ast.If:
        """After slot i is filled: the core takes the call when it holds entries of the frame,
        or, for a callee that may not be callable, to raise its TypeError at this line. A
        lambda, or a def with no other decorator, is callable: no callable() call."""
        test = f"{self.st} is not None" + (
            "" if callable_for_sure else f" or not callable({self.p}{i}__)"
        )
        fallback = ast.parse(
            f"if {test}:\n    {self.p}{i}__, __godefer_f__ = None, {self.p}{i}__\n"
        ).body[0]
        assert isinstance(fallback, ast.If)
        return fallback

    def assigned_slot(self, node: ast.Assign, may_skip: bool = True) -> list[ast.stmt]:
        """`x = defer(f, ...)`: the slot is filled as by the statement form, then the targets
        get the callee (what defer() returns), with no tuple to build. A callee with no
        arguments goes through the fill call, in a temporary so the targets get it even when
        the core takes it (the targets are bound after the fill, as after defer() returns):

            __godefer_f__ = f
            __godefer_i__ = __godefer_fill_d__(__godefer_f__, __godefer_st__)
            x = __godefer_f__
        """
        assert isinstance(node.value, ast.Call)
        slot = self.slot_calls[id(node.value)]
        self.preparer.prepared_any = True
        if slot.role == "scoped" and slot.loop is not None:
            targets = [self.preparer.visit(t) for t in node.targets]
            return self._entered_in_loop(node, slot, targets)
        self.may_skip.append(may_skip)
        if slot.role == "scoped":
            return self._entered(node, slot.call, node.targets)
        if isinstance(slot.call.args[0], ast.Starred):
            return self._assigned_star(node, slot)
        if (
            len(slot.call.args) == 1
            and not slot.call.keywords
            and not isinstance(slot.call.args[0], ast.Lambda)
        ):
            callee = self.preparer.visit(slot.call.args[0])
            i = len(self.slots)  # after the callee's own defers (see _evaluate)
            self.slots.append((slot.role, [(f"{self.p}{i}__", callee)]))
            self.call_shapes.append(([], []))
            targets = [self.preparer.visit(t) for t in node.targets]
            if self.first_fill:  # the core cannot take it: the slot itself holds the callee
                fill = self._filled(i, slot.role, callee)
                bind = ast.Assign(targets=targets, value=_name(f"{self.p}{i}__"))
                return self._locate(node, [*fill, bind])
            self.uses_temp = True
            temp = ast.Assign(targets=[_name("__godefer_f__", ast.Store())], value=callee)
            bind = ast.Assign(targets=targets, value=_name("__godefer_f__"))
            fill = self._filled(i, slot.role, _name("__godefer_f__"))
            return self._locate(node, [temp, *fill, bind])
        self.may_skip[-1] = True  # the fallback below empties the slot
        # Not fused: the targets get the callee even when the core takes it from the slot.
        store, fallback = self._single_slot(node, slot.role, slot.call, fused=False)
        assert isinstance(fallback, ast.If)
        i = len(self.slots) - 1
        targets = [self.preparer.visit(t) for t in node.targets]
        fallback.body.append(
            ast.copy_location(
                ast.Assign(targets=copy.deepcopy(targets), value=_name("__godefer_f__")), node
            )
        )
        fallback.orelse = [
            ast.copy_location(ast.Assign(targets=targets, value=_name(f"{self.p}{i}__")), node)
        ]
        return self._locate(node, [store, fallback])

    def _assigned_star(self, node: ast.Assign, slot: SlotCall) -> list[ast.stmt]:
        """`x = defer(*args, ...)`: the slot is filled as by the statement (_star_slot), then
        the targets get the callee, from the slot, or from the temporary when the core takes
        the call:

            __godefer_i__, __godefer_i_0__ = __godefer_rt__.slot_star_defer(*args)
            if __godefer_st__ is not None:
                __godefer_i__, __godefer_f__ = None, __godefer_i__
                __godefer_rt__.defer(__godefer_f__, *__godefer_i_0__)
                x = __godefer_f__
            else:
                x = __godefer_i__
        """
        stmts = self._star_slot(node, slot.role, slot.call)
        i = len(self.slots) - 1
        targets = [self.preparer.visit(t) for t in node.targets]
        bind = ast.Assign(targets=targets, value=_name(f"{self.p}{i}__"))
        fallback = stmts[-1]
        if isinstance(fallback, ast.If):  # not the first fill: the core may take the call
            self.may_skip[-1] = True  # the fallback empties the slot
            taken = ast.Assign(targets=copy.deepcopy(targets), value=_name("__godefer_f__"))
            fallback.body.append(ast.copy_location(taken, node))
            fallback.orelse = [bind]
        else:
            stmts.append(bind)
        return self._locate(node, stmts)

    def _entered(
        self, stmt: ast.stmt, call: ast.Call, targets: list[ast.expr] | None
    ) -> list[ast.stmt]:
        """`[x =] scoped(obj)`: the core enters obj (a context manager, or an object with
        close()) and returns what the slot keeps, its exit callable and kind, and the value:

            if __godefer_st__ is not None:                        # the core holds entries
                x = __godefer_rt__.scoped(obj)
            else:
                __godefer_i__, __godefer_i_k__, x = __godefer_rt__.scoped_slot(obj)
        """
        i = len(self.slots)
        self.slots.append(("scoped", [(f"{self.p}{i}__", call)]))
        self.call_shapes.append(([], []))
        fill = f"{self.p}{i}__, {self.p}{i}_k__, __godefer_v__ = {RT}.scoped_slot(None)"
        return self._scoped_fill(stmt, call, targets, fill)

    def expression_slot(self, call: ast.Call, slot: SlotCall) -> ast.expr:
        """A defer used as an expression fills a slot as the statement form does, in one
        expression whose value is the callee (what defer() returns):

            (__godefer_i__ := f, __godefer_i_0__ := x,
             __godefer_st__ is None and callable(__godefer_i__)
             or (__godefer_f__ := __godefer_i__, __godefer_i__ := None,
                 __godefer_rt__.defer(__godefer_f__, __godefer_i_0__)))[0]
        """
        self.preparer.prepared_any = True
        self.may_skip.append(True)
        if slot.role == "scoped":
            return self._entered_expression(call)
        if isinstance(slot.call.args[0], ast.Starred):
            return self._star_expression(call, slot.role)
        i, values, call_args, call_keywords = self._evaluate(slot.call)
        self.slots.append((slot.role, values))
        self.call_shapes.append((call_args, call_keywords))
        if len(values) == 1 and not isinstance(values[0][1], ast.Lambda):
            return self._filled_expression(i, slot.role, values[0][1], call)
        template = (
            f"({self.st} is None and callable({self.p}{i}__))"
            f" or (__godefer_f__ := {self.p}{i}__, {self.p}{i}__ := None, None)"
        )
        check = ast.parse(template, mode="eval").body
        assert isinstance(check, ast.BoolOp) and isinstance(check.values[1], ast.Tuple)
        core = self._core_defer(slot.role, call, (call_args, call_keywords)).value
        check.values[1].elts[2] = core
        stores: list[ast.expr] = [
            ast.NamedExpr(target=_name(local, ast.Store()), value=value) for local, value in values
        ]
        expr = ast.Subscript(
            value=ast.Tuple(elts=[*stores, check], ctx=ast.Load()),
            slice=ast.Constant(0),
            ctx=ast.Load(),
        )
        for n in ast.walk(expr):
            if isinstance(n, (ast.expr, ast.keyword)):
                ast.copy_location(n, call)
        return expr

    def _star_expression(self, call: ast.Call, role: str) -> ast.expr:
        """`defer(*args, ...)` used as an expression (`return defer(*args)`): the statement's
        split (_star_slot) in one expression whose value is the callee. The keywords, if any,
        are bound first, after `(*args,)`, as the call evaluates them:

            (__godefer_i_0__ := __godefer_rt__.slot_star_defer(*args),
             __godefer_i__ := __godefer_i_0__[0], __godefer_i_0__ := __godefer_i_0__[1],
             __godefer_st__ is None
             or (__godefer_f__ := __godefer_i__, __godefer_i__ := None,
                 __godefer_rt__.defer(__godefer_f__, *__godefer_i_0__)))[1]
        """
        self.uses_temp = True
        i, slot, rest, split, bound = self._star_split(call, role, call)
        parts: list[ast.expr] = [
            ast.NamedExpr(target=_name(n, ast.Store()), value=v) for n, v in bound
        ]
        check = ast.parse(
            f"{self.st} is None or (__godefer_f__ := {slot}, {slot} := None, None)",
            mode="eval",
        ).body
        assert isinstance(check, ast.BoolOp) and isinstance(check.values[1], ast.Tuple)
        check.values[1].elts[2] = self._core_defer(role, call, self.call_shapes[i]).value
        parts += [
            ast.NamedExpr(target=_name(rest, ast.Store()), value=split),
            ast.NamedExpr(target=_name(slot, ast.Store()), value=_item(rest, 0)),
            ast.NamedExpr(target=_name(rest, ast.Store()), value=_item(rest, 1)),
            check,
        ]
        expr = ast.Subscript(
            value=ast.Tuple(elts=parts, ctx=ast.Load()),
            slice=ast.Constant(len(parts) - 3),
            ctx=ast.Load(),
        )
        for n in ast.walk(expr):
            if isinstance(n, (ast.expr, ast.keyword)):
                ast.copy_location(n, call)
        return expr

    def _entered_expression(self, call: ast.Call) -> ast.expr:
        """`scoped(obj)` inside a larger expression, into a slot that keeps what scoped_slot()
        returns, (exit callable, kind, value), whole; its value is the value scoped() returns.
        obj is evaluated before the state is tested, through a temporary when it may run code:

            (__godefer_v__ := obj,
             __godefer_rt__.scoped(__godefer_v__) if __godefer_st__ is not None
             else (__godefer_i__ := __godefer_rt__.scoped_slot(__godefer_v__))[2])[1]
        """
        obj = self.preparer.visit(call.args[0])
        i = len(self.slots)  # after obj's own defers (see _evaluate)
        self.slots.append(("scoped", [(f"{self.p}{i}__", call)]))
        self.call_shapes.append(([], []))
        self.entered_tuples.add(i)
        temp = not _runs_nothing([obj])
        part = "__godefer_v__" if temp else "None"
        expr = ast.parse(
            f"{RT}.scoped({part}) if {self.st} is not None"
            f" else ({self.p}{i}__ := {RT}.scoped_slot({part}))[2]",
            mode="eval",
        ).body
        assert isinstance(expr, ast.IfExp) and isinstance(expr.body, ast.Call)
        assert isinstance(expr.orelse, ast.Subscript)
        filled = expr.orelse.value
        assert isinstance(filled, ast.NamedExpr) and isinstance(filled.value, ast.Call)
        if temp:
            self.uses_scoped_temps = True
            store = ast.NamedExpr(target=_name("__godefer_v__", ast.Store()), value=obj)
            expr = ast.Subscript(
                value=ast.Tuple(elts=[store, expr], ctx=ast.Load()),
                slice=ast.Constant(1),
                ctx=ast.Load(),
            )
        else:  # obj runs nothing: evaluated in the branch that takes it
            expr.body.args = [copy.deepcopy(obj)]
            filled.value.args = [obj]
        for n in ast.walk(expr):
            if isinstance(n, ast.expr):
                ast.copy_location(n, call)
        return expr

    def _filled_expression(self, i: int, role: str, callee: ast.expr, call: ast.Call) -> ast.expr:
        """`defer(f)` used as an expression, through the fill call (_filled):

            (__godefer_i__ := __godefer_fill_d__(__godefer_f__ := f, __godefer_st__))
            or __godefer_f__

        Its value is f either way: the fill returns f, or None when the core took f (and f
        itself when f is false)."""
        self.uses_temp = True
        expr = ast.parse(
            f"({self.p}{i}__ := {SLOT_FILLS[role][0]}(__godefer_f__ := None, {self.st}))"
            " or __godefer_f__",
            mode="eval",
        ).body
        assert isinstance(expr, ast.BoolOp) and isinstance(expr.values[0], ast.NamedExpr)
        fill = expr.values[0].value
        assert isinstance(fill, ast.Call) and isinstance(fill.args[0], ast.NamedExpr)
        fill.args[0].value = callee
        for n in ast.walk(expr):
            if isinstance(n, ast.expr):
                ast.copy_location(n, call)
        return expr

    def _decorated(
        self, stmt: ast.FunctionDef | ast.AsyncFunctionDef, role: str, loop: int | None
    ) -> list[ast.stmt]:
        """`@defer def f(): ...`: the def without that decorator, then its function (what the
        other decorators made of it) fills a slot as `defer(f)` would, at the decorator's line
        (in a loop: is pushed onto the loop's list)."""
        decorator = stmt.decorator_list.pop(0)
        del self.slot_calls[id(stmt)]  # the def itself is visited as any nested function
        new = self.preparer.visit(stmt)
        if loop is not None:
            call = ast.Call(func=decorator, args=[_name(stmt.name)], keywords=[])
            push = ast.Expr(self.list_expression(SlotCall(role, call, loop=loop, pushed=True)))
            return [*(new if isinstance(new, list) else [new]), *self._locate(decorator, [push])]
        i = len(self.slots)
        values: list[tuple[str, ast.expr]] = [(f"{self.p}{i}__", _name(stmt.name))]
        self.slots.append((role, values))
        self.call_shapes.append(([], []))
        fallback = self._fill_check(i, callable_for_sure=not stmt.decorator_list)
        fallback.body.append(self._core_defer(role, decorator, ([], [])))
        located = self._locate(decorator, [self._store(values), fallback])
        return [*(new if isinstance(new, list) else [new]), *located]

    def list_expression(self, slot: SlotCall) -> ast.expr:
        """A defer (or scoped()) pushed onto the list slot `slot.loop` keys, as an expression
        whose value is what the call returns. The list is made before the call's parts are
        evaluated, so a defer among them pushes onto the same list, first, as it runs first:

            (__godefer_rt__.defer(f, x) if __godefer_st__ is not None     # the core holds
             else (__godefer_i__ if __godefer_i__ is not None             # entries: it takes it
                   else (__godefer_i__ := __godefer_rt__.list_new())).push_call(0, f, x))

        (`.push(f)` for a plain defer(f), `.push_scoped(obj)` for scoped(obj)). The push checks
        the callable and returns it; push_scoped enters obj and returns the value."""
        self.preparer.prepared_any = True
        assert slot.loop is not None
        i = self._list_slot(slot.loop)
        args, keywords = self._visited_parts(slot.call.args, slot.call.keywords)
        stores, args, keywords = self._temporaries(args, keywords)
        single = len(args) == 1 and not keywords and not isinstance(args[0], ast.Starred)
        if slot.role == "scoped":
            method, shape = "push_scoped", args
        elif slot.role == "defer" and single:
            method, shape = "push", args
        else:
            method, shape = "push_call", [ast.Constant(KIND_CODES[slot.role]), *args]
        local = f"{self.p}{i}__"
        expr = ast.parse(
            f"{RT}.{SCHEDULERS[slot.role]}() if {self.st} is not None"
            f" else ({local} if {local} is not None else ({local} := {RT}.list_new())).{method}()",
            mode="eval",
        ).body
        assert isinstance(expr, ast.IfExp)
        core, push = expr.body, expr.orelse
        assert isinstance(core, ast.Call) and isinstance(push, ast.Call)
        core.args, core.keywords = copy.deepcopy(args), copy.deepcopy(keywords)
        push.args, push.keywords = shape, keywords
        if stores:  # `(temporary := part, ..., <expr>)[-1]`
            named: list[ast.expr] = [
                ast.NamedExpr(target=_name(local, ast.Store()), value=value)
                for local, value in stores
            ]
            expr = ast.Subscript(
                value=ast.Tuple(elts=[*named, expr], ctx=ast.Load()),
                slice=ast.Constant(-1),
                ctx=ast.Load(),
            )
        for n in ast.walk(expr):
            if isinstance(n, (ast.expr, ast.keyword)):
                ast.copy_location(n, slot.call)
        return expr

    def _list_entry(self, stmt: ast.stmt, role: str, call: ast.Call, i: int) -> list[ast.stmt]:
        """A defer in a loop appends to its slot's DeferList, which checks the callable: the
        callable itself for a plain `defer(f)`, else the (kind, fn, args, kwargs) group the core
        decodes. The state is tested first, so the call's parts are evaluated once, in order,
        whichever branch takes them, unless evaluating them may run code (_temporaries)."""
        args, keywords = self._visited_parts(call.args, call.keywords)
        stores, args, keywords = self._temporaries(args, keywords)
        plain = role == "defer" and len(args) == 1 and not keywords
        plain = plain and not isinstance(args[0], ast.Starred)
        push, first = ("push", "list_first") if plain else ("push_call", "list_first_call")
        stmts = ast.parse(
            f"if {self.st} is not None:\n"
            f"    pass\n"
            f"elif {self.p}{i}__ is None:\n"
            f"    {self.p}{i}__ = {RT}.{first}()\n"
            f"else:\n"
            f"    {self.p}{i}__.{push}()\n"
        ).body
        checked = stmts[0]
        assert isinstance(checked, ast.If)
        checked.body = [
            ast.Expr(
                ast.Call(
                    func=_rt_attr(role, stmt),
                    args=copy.deepcopy(args),
                    keywords=copy.deepcopy(keywords),
                )
            )
        ]
        shape = args if plain else [ast.Constant(KIND_CODES[role]), *args]
        make = checked.orelse[0]
        assert isinstance(make, ast.If)
        for target in (make.body[0].value, make.orelse[0].value):
            assert isinstance(target, ast.Call)
            target.args = copy.deepcopy(shape)
            target.keywords = copy.deepcopy(keywords)
        return self._locate(stmt, [self._store(stores), *stmts] if stores else stmts)

    # -- exits --------------------------------------------------------------------------------

    @staticmethod
    def _group(role: str, fn: str, call_shape: tuple) -> ast.Tuple:
        """(kind, fn, args tuple, kwargs dict or None): how the core takes a call."""
        call_args, call_keywords = copy.deepcopy(call_shape)
        kwargs: ast.expr
        if call_keywords:
            kwargs = ast.Dict(
                keys=[ast.Constant(kw.arg) if kw.arg else None for kw in call_keywords],
                values=[kw.value for kw in call_keywords],
            )
        else:
            kwargs = ast.Constant(None)
        return ast.Tuple(
            elts=[
                ast.Constant(KIND_CODES.get(role, 0)),
                _name(fn),
                ast.Tuple(elts=list(call_args), ctx=ast.Load()),
                kwargs,
            ],
            ctx=ast.Load(),
        )

    def _groups(self) -> list[ast.expr]:
        """Per slot, oldest first: False when not reached, else its group (a list slot: the
        list, None when not reached)."""
        groups: list[ast.expr] = []
        for i, (role, _) in enumerate(self.slots):
            if role == "list":
                groups.append(_name(f"{self.p}{i}__"))
                continue
            group = self._group(role, f"{self.p}{i}__", self.call_shapes[i])
            if i in self.entered_tuples:  # (exit callable, kind, value)
                group.elts[:2] = [_item(f"{self.p}{i}__", 1), _item(f"{self.p}{i}__", 0)]
            elif role == "scoped":
                group.elts[0] = _name(f"{self.p}{i}_k__")  # exit_cm or a plain close()
            reached = ast.Compare(
                left=_name(f"{self.p}{i}__"), ops=[ast.IsNot()], comparators=[ast.Constant(None)]
            )
            groups.append(ast.BoolOp(op=ast.And(), values=[reached, group]))
        return groups

    def _core_call(self, attr: str, result: ast.expr, state: ast.expr) -> ast.Call:
        return ast.Call(
            func=ast.Attribute(value=_name(RT), attr=attr, ctx=ast.Load()),
            args=[result, state, *self._groups()],
            keywords=[],
        )

    def _leave(self, call: ast.Call) -> list[ast.stmt]:
        """Hand the exit to the core: `call` returns RERAISE (the exception in flight goes on),
        the value to return after a recovery, or raises what replaced the exception."""
        if self.awaits:
            return self._stepped(
                call, f"{RV} = {EXIT}.finish()\nif {RV} is {RT}.RERAISE:\n    raise\nreturn {RV}"
            )
        if self.valued:
            stmts = _parse(f"{RV} = None\nif {RV} is {RT}.RERAISE:\n    raise\nreturn {RV}")
            assign = stmts[0]
            assert isinstance(assign, ast.Assign)
            assign.value = call
            return stmts
        stmts = _parse(f"if None is {RT}.RERAISE:\n    raise\nreturn")
        test = stmts[0]
        assert isinstance(test, ast.If) and isinstance(test.test, ast.Compare)
        test.test.left = call
        return stmts

    def _result(self) -> ast.expr:
        return _name(RV) if self.valued else ast.Constant(None)

    def _call_slot(self, i: int) -> ast.stmt:
        if self.slots[i][0] == "scoped":
            slot = f"{self.p}{i}__"
            exit_, kind = (
                (f"{slot}[0]", f"{slot}[1]")
                if i in self.entered_tuples
                else (slot, f"{self.p}{i}_k__")
            )
            exit_call = ast.parse(
                f"if {kind} == {KIND_EXIT_CM}:\n"
                f"    {exit_}(None, None, None)\n"
                f"else:\n"
                f"    {exit_}()\n"
            ).body[0]
            return exit_call
        if self.slots[i][0] == "list":
            if not DRAIN_IN_BYTECODE:
                return ast.parse(f"{RT}.run_list({self.p}{i}__)").body[0]
            # Last first; the drain makes the calls with arguments itself and hands the plain
            # callables over, which bytecode calls more cheaply than C can.
            return ast.parse(
                f"for __godefer_f__ in {self.p}{i}__.drain():\n    __godefer_f__()\n"
            ).body[0]
        call_args, call_keywords = copy.deepcopy(self.call_shapes[i])
        call = ast.Call(func=_name(f"{self.p}{i}__"), args=call_args, keywords=call_keywords)
        if self.slots[i][0] == "adefer":
            # Through the core, which names the slot's callee if its result cannot be awaited.
            call.args.insert(0, call.func)
            call.func = _name(SLOT_AWAIT[0])
            return ast.Expr(ast.Await(call))
        return ast.Expr(call)

    def _unwinding_chain(self) -> tuple[list[ast.stmt], int | None]:
        """The body raised: call the reached slots inline, last first, each announced in the
        state (OPEN_UNWINDING + i). A recover() in slot i sets OPEN_RECOVERED + i, which ends
        the chain; a slot raising leaves the chain for the core. okdefer slots do not run with
        an exception in flight. Returns the chain and the state it ends in (None: no slot)."""
        chain: list[ast.stmt] = []
        inner = chain
        last: int | None = None
        if self._core_unwinds():
            return chain, None
        for i in reversed(range(len(self.slots))):
            if self.slots[i][0] == "okdefer":
                continue
            if last is not None:
                guard = _parse(f"if {self.st} == {OPEN_UNWINDING + last}:\n    pass")[0]
                assert isinstance(guard, ast.If)
                guard.body = []
                inner.append(guard)
                inner = guard.body
            step = _parse(f"if {self.p}{i}__ is not None:\n    pass")[0]
            assert isinstance(step, ast.If)
            step.body = [self._call_slot(i)]
            inner += [*_parse(f"{self.st} = {OPEN_UNWINDING + i}"), step]
            last = i
        return chain, None if last is None else OPEN_UNWINDING + last

    def _core_unwinds(self) -> bool:
        """Whether the core runs every slot on an exception: a loop's list, or an entered
        context manager, whose __exit__ may stop the exception as `with` would."""
        return any(role in ("list", "scoped") for role, _ in self.slots)

    def _on_exception(self, body_raised: str | None = None) -> list[ast.stmt]:
        """The located handler's body: the exception leaving the body (state 1) runs the reached
        slots inline; anything else (a slot raised on return, the core holds entries of this
        frame) goes to the core. Its result starts as None: a function leaving by an exception
        has no value unless a deferred call sets one."""
        if body_raised is None:
            body_raised = f"{self.st} == {OPEN_BODY_RAISED}"
        out = _parse(f"{RV} = None") if self.valued else []
        if self.unbound:
            names = ", ".join(f"'{self.p}{i}__'" for i in self.unbound)
            out = [*_parse(f"{RT}.bind_slots(({names},))"), *out]
        chain, end = self._unwinding_chain()
        inline = _parse(f"if {body_raised}:\n    pass")[0]
        assert isinstance(inline, ast.If)
        if chain:
            guarded = _parse("try:\n    pass\nexcept BaseException:\n    pass")[0]
            assert isinstance(guarded, ast.Try)
            guarded.body = chain
            guarded.handlers[0].body = self._leave(
                self._core_call("unwind_slots", self._result(), _name(self.st))
            )
            recovered = _parse(f"if {self.st} != {end}:\n    pass")[0]
            assert isinstance(recovered, ast.If)
            recovered.body = self._leave_recovered()
            # In the `else`, which the chain falls into: a jump out of the `try` would have no
            # location, and landing on located code again reports the line a second time.
            guarded.orelse = [recovered, ast.Raise()]
            inline.body = [guarded]
        else:
            inline.body = [ast.Raise()]  # no slot runs with an exception in flight
        inline_part = [] if self._core_unwinds() else [inline]
        done = _parse(f"if {self.st} == {OPEN_CORE_DONE}:\n    raise")
        core = self._leave(self._core_call("unwind_slots", self._result(), _name(self.st)))
        return [*out, *inline_part, *done, *core]

    def _stepped(self, call: ast.Call, after: str) -> list[ast.stmt]:
        """An awaiting coroutine's exit through the core: `call` (complete_slots or
        unwind_slots) becomes its async twin, which returns an AsyncExit; the loop steps it in
        this frame, awaiting what it gives out, then `after` (with EXIT.finish()) ends the exit."""
        assert isinstance(call.func, ast.Attribute)
        call.func.attr = "a" + call.func.attr
        stmts = _async_exits.stepped(after, self.line)
        first = stmts[0]
        assert isinstance(first, ast.Assign)
        first.value = call
        return stmts

    def _leave_recovered(self) -> list[ast.stmt]:
        call = self._core_call("complete_slots", self._result(), _name(self.st))
        if self.awaits:
            return self._stepped(call, f"return {EXIT}.finish()")
        if self.valued:
            return [ast.Return(call)]
        return [ast.Expr(call), ast.Return()]

    def _on_return(self, none: bool = False) -> list[ast.stmt]:
        """Returning: call the reached slots inline, last first, the state saying so
        (OPEN_RETURNING: result() / set_result() know the frame is returning); or, when the
        core holds entries of this frame too, let it run everything. A slot that raises sets
        the state to OPEN_RETURNING + its index in a handler of its own, so the core knows which
        already ran: no store runs between the calls of a normal return."""
        inline: list[ast.stmt] = []
        # CPython 3.13.0 miscompiles a block without a line number that contains a call, is
        # reached from more than one place and falls through to the next test (it copies the
        # block for one of its predecessors and runs the call twice). The `if`s around slots that
        # may be unreached make such joins, so then every call gets an `if` of its own, and the
        # joins hold only the tests.
        guard_all = any(self.may_skip)
        announced = False  # the state no longer says OPEN_RETURNING (slot 0's own value)
        for i in reversed(range(len(self.slots))):
            if self.slots[i][0] == "errdefer":
                continue  # passed with nothing in flight
            call = [self._call_slot(i)]
            if not isinstance(call[0], ast.Expr):
                # A compound exit (scoped's kind test, a list's loop) in a `try` reports the
                # line a second time on 3.11: it is announced by a store instead (slot 0's
                # value is the state's already, unless another store changed it).
                if i or announced:
                    call = [*_parse(f"{self.st} = {OPEN_RETURNING + i}"), *call]
                announced = announced or i > 0
            elif i or announced:
                marked = _parse(
                    f"try:\n    pass\nexcept BaseException:\n"
                    f"    {self.st} = {OPEN_RETURNING + i}\n    raise"
                )[0]
                assert isinstance(marked, ast.Try)
                marked.body, call = call, [marked]
            if guard_all:
                step = _parse(f"if {self.p}{i}__ is not None:\n    pass")[0]
                assert isinstance(step, ast.If)
                step.body = call
                inline.append(step)
            else:
                inline += call
        if self.slots:
            inline = [*_parse(f"{self.st} = {OPEN_RETURNING}"), *inline]
        inline += _parse(f"return {RV}" if self.valued and not none else "return")
        normal = _parse(f"if {self.st} is None:\n    pass")[0]
        assert isinstance(normal, ast.If)
        normal.body = inline
        core = _parse(f"if {self.st} == {OPEN_CORE}:\n    {self.st} = {OPEN_CORE_DONE}")[0]
        assert isinstance(core, ast.If)
        result = ast.Constant(None) if none else self._result()
        complete = self._core_call("complete_slots", result, ast.Constant(OPEN_CORE))
        if self.awaits:
            core.body += self._stepped(complete, f"return {EXIT}.finish()")
            return [self._awaits_located(normal, self.line), _at_line(core, self.line)]
        if self.valued:
            core.body.append(ast.Return(complete))
        else:
            core.body += [ast.Expr(complete), ast.Return()]
        return [normal, core]

    @staticmethod
    def _awaits_located(stmt: ast.stmt, line: int) -> ast.stmt:
        """An awaiting coroutine's return code with no location (it inherits the line of the
        code before it), but for the statements awaiting a slot, at `line`: CPython 3.13.0
        cannot compile an `await` without one ("Invalid CFG, inconsistent stackdepth"), and
        without one 3.11 reports the last line again after it. Where every return runs the
        slots in place, a return's code carries its line (_at_exit_line), and falling off the
        end the line of the body's last statement, which ran; where the code sits in a
        `finally` shared by every return, the scope's first line, as the exits of a coroutine
        the core finishes report (_async_exits). **Decision**: the same on every version; after
        a compound last statement, or a return in a try or with statement, a tracer sees one
        more line event (docs/semantics.md, "Line events")."""
        located = _no_location(stmt)
        assert isinstance(located, ast.stmt)
        return _awaits_at(located, line)

    def exit_structure(self, init: list[ast.stmt], body: list[ast.stmt]) -> list[ast.stmt]:
        """The exit handler around an open-coded body:

            <init>
            try:
                try:
                    <body>
                except BaseException:          # no location: marks the path, re-raises
                    if __godefer_st__ is None:
                        __godefer_st__ = 1     # the body raised: slots run inline
                        raise
                    __godefer_st__ = 5         # ... and the core holds entries too
                    raise
                finally:
                    <_on_return>               # no location: inherits the `return`'s line
            except BaseException:              # the scope's first line (see _at_line)
                <_on_exception>

        The located handler comes last on every exception path, so an exception exit reports
        the scope's first line once, and the frame leaves from that line. It has no `as` name,
        whose cleanup would cost one more handler on the way out: the core reads the exception
        being handled itself.
        """
        mark = (
            f"if {self.st} is None:\n    {self.st} = {OPEN_BODY_RAISED}\n    raise\n"
            f"{self.st} = {OPEN_CORE_RAISED}\nraise"
        )
        return _exit_structure(
            init=init,
            body=body,
            on_return=self._on_return(),
            on_exception=self._on_exception(),
            line=self.line,
            mark=mark,
            name=None,
            located_return=self.awaits,
        )


def _as_list(stmts: ast.stmt | list[ast.stmt]) -> list[ast.stmt]:
    return stmts if isinstance(stmts, list) else [stmts]


def _awaits_at(stmt: ast.stmt, line: int) -> ast.stmt:
    """`stmt` with its statements that await a slot at `line` (see OpenCoder._awaits_located)."""
    for n in ast.walk(stmt):
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Await):
            _at_line(n, line)
    return stmt


def _core_exits(valued: bool) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(on_return, on_exception) of a function whose calls the core keeps (_exit_structure)."""
    if valued:
        on_return = f"if {STATE} is None:\n    {STATE} = 4\n    return {RT}.complete({RV})"
        on_exception = (
            f"if {STATE} == 4:\n    raise\n"
            f"{RV} = {RT}.unwind({EXC})\nif {RV} is {RT}.RERAISE:\n    raise\nreturn {RV}"
        )
    else:
        on_return = f"if {STATE} is None:\n    {STATE} = 4\n    {RT}.complete(None)\n    return"
        on_exception = (
            f"if {STATE} == 4:\n    raise\nif {RT}.unwind({EXC}) is {RT}.RERAISE:\n"
            "    raise\nreturn"
        )
    return _parse(on_return), _parse(on_exception)


def _exit_structure(
    *,
    init: list[ast.stmt],
    body: list[ast.stmt],
    on_return: list[ast.stmt],
    on_exception: list[ast.stmt],
    line: int,
    mark: str = f"{STATE} = 1\nraise",
    name: str | None = EXC,
    located_return: bool = False,
) -> list[ast.stmt]:
    """The exit handler around a function body:

        <init>                                   # at the first user line: no line event
        try:
            try:
                <body>
            except BaseException:                # no location: marks the path, re-raises
                <mark>                           # __godefer_st__ = 1; raise
            finally:
                <on_return>                      # guarded by the state; no location, so this
                                                 # code inherits the line of the `return`
        except BaseException as __godefer_exc__: # the scope's first line (see _at_line)
            <on_exception>

    Exceptions from the body and from the normal exit (a deferred call raising on return) both
    reach the one located handler, so an exception exit reports the scope's first line once.
    `name` None leaves out the `as` (whose cleanup costs one more handler on the way out).
    `located_return`: <on_return> comes with its positions set (an async exit, _async_exits).
    """
    template = "try:\n    try:\n        pass\n    except BaseException:\n        pass\n"
    template += "    finally:\n        pass\nexcept BaseException" + (f" as {name}" if name else "")
    outer = _no_location(ast.parse(template + ":\n    pass\n").body[0])
    assert isinstance(outer, ast.Try)
    inner = outer.body[0]
    assert isinstance(inner, ast.Try)
    inner.body = body
    inner.handlers[0].body = [_no_location(s) for s in _parse(mark)]
    inner.finalbody = on_return if located_return else [_no_location(s) for s in on_return]
    handler = outer.handlers[0]
    handler.body = on_exception
    _at_line(handler, line)
    return [*init, outer]


def _tuple_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> frozenset[str]:
    """The function's `*args` parameter when nothing in its body (nested scopes included) can
    rebind it, so it always holds a tuple; any other use of the name than a load counts."""
    if node.args.vararg is None:
        return frozenset()
    name = node.args.vararg.arg
    for n in ast.walk(ast.Module(body=node.body, type_ignores=[])):
        if isinstance(n, ast.Name):
            if n.id == name and not isinstance(n.ctx, ast.Load):
                return frozenset()
        elif not isinstance(n, ast.Attribute):
            for value in vars(n).values():
                if value == name or (isinstance(value, list) and name in value):
                    return frozenset()
    return frozenset({name})


def _storing_result(node: ast.Return) -> ast.stmt | list[ast.stmt]:
    """A return whose value the function's shared exit returns from the result local: `return
    (rv := x)`; a bare return stores None first (the local may still hold the value of a return
    whose exit raised and was caught in the function)."""
    if node.value is None:
        none = ast.Assign(targets=[_name(RV, ast.Store())], value=ast.Constant(None))
        return [_at_line(none, node.lineno), node]
    store = ast.NamedExpr(
        target=ast.copy_location(_name(RV, ast.Store()), node.value), value=node.value
    )
    node.value = ast.copy_location(store, node.value)
    return node


def _results_stored(body: list[ast.stmt]) -> list[ast.stmt]:
    """`body` with each of its own returns _storing_result (not those of nested scopes): only a
    function that schedules pays for the store, once it is known to schedule."""
    out: list[ast.stmt] = []
    for stmt in body:
        if isinstance(stmt, ast.Return):
            out += _as_list(_storing_result(stmt))
            continue
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for part in ("body", "orelse", "finalbody"):
                if isinstance(getattr(stmt, part, None), list):
                    setattr(stmt, part, _results_stored(getattr(stmt, part)))
            for holder in [*getattr(stmt, "handlers", []), *getattr(stmt, "cases", [])]:
                holder.body = _results_stored(holder.body)
        out.append(stmt)
    return out


def _return_at_branch_ends(body: list[ast.stmt], made: set[int]) -> None:
    """Where falling off the end needs a line (FALL_OFF_LOCATED, or awaits to locate), each
    way through a last `if` gets a bare `return` at the line that way ran last: its body's last
    statement (the header of a compound one), or the test of an `if` with no `else`. The exit
    code then reports no line but one that just ran, whichever branch was taken. After a last
    statement of another kind, the fall-off carries that statement's line (a loop's or `with`'s
    header ran last too; after a `try` or `match` a tracer may see its header once more).
    The ids of the returns made go to `made`. (After an open-coded block, 3.11 reports its `with`
    line once more: a return inside the block would put every return of the function in a
    `finally`, which costs more than the event.)"""
    last = body[-1]
    if isinstance(last, ast.If):
        _return_at_branch_ends(last.body, made)
        if last.orelse:
            _return_at_branch_ends(last.orelse, made)
        else:
            last.orelse = [_at_line(ast.Return(), last.lineno)]
            made.add(id(last.orelse[0]))
    elif not isinstance(last, (ast.Return, ast.Raise, ast.Break, ast.Continue)):
        body.append(_at_line(ast.Return(), _last_run_line(last)))
        made.add(id(body[-1]))


def _last_run_line(stmt: ast.stmt) -> int:
    """The line a statement that completed normally ran last, as far as it is one line: a
    `finally`'s or a loop's `else`'s last statement's (recursively), else the statement's first
    line (a `with` calls __exit__ and a loop tests for its end at that line)."""
    if isinstance(stmt, (ast.Try, ast.TryStar)) and stmt.finalbody:
        return _last_run_line(stmt.finalbody[-1])
    if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)) and stmt.orelse:
        return _last_run_line(stmt.orelse[-1])
    return stmt.lineno


def _fall_off(valued: bool) -> list[ast.stmt]:
    """Falling off the end returns None, even after a `return` whose value was captured and
    then abandoned (an exception raised on its way out and caught in the function)."""
    return [_no_location(s) for s in _parse(f"{RV} = None" if valued else "pass")]


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The code object's first line: the first decorator's, if any (co_firstlineno)."""
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


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


_COMPOUND = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.Try,
    ast.TryStar,
    ast.With,
    ast.AsyncWith,
    ast.Match,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Return,
)


def _check_init(role: str) -> str:
    local, global_, _ = SLOT_CHECKS[role]
    return f"{local} = {global_}\n"


def _none_init(names: list[str]) -> str:
    """Many names, `a, b, c, d, e = None, None, None, None, None`: the compiler makes the right
    side one constant tuple, which the interpreter unpacks into stores it fuses in pairs. A chain
    `a = b = c = None` costs a copy and a store per name, about 12 instructions more per name
    on 3.12 under callgrind, but the unpacking costs about 40 once: for four names or fewer the
    chain is cheaper.

    On 3.13 each name gets a statement of its own (SPLIT_STORES)."""
    if SPLIT_STORES:
        return "\n".join(f"{name} = None" for name in names)
    if len(names) <= 4:
        return " = ".join(names) + " = None"
    return ", ".join(names) + " = " + ", ".join(["None"] * len(names))


# What code before a scope's init may hold (_hoisted): names, constants and their displays, and
# stores to names. An attribute, a subscript or an operator can call a C-level hook with the
# frame as the caller (`__getattr__ = SomeScopeBound`), which joins the frame before its state
# local exists: the init would then forget that entry.
_NO_CODE = (
    ast.Name,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Load,
    ast.Store,
    ast.Assign,
    ast.Expr,
    ast.Pass,
    ast.Global,
    ast.Nonlocal,
)


def _runs_no_code(nodes: list[ast.AST]) -> bool:
    """Whether evaluating these nodes can run no code at all, not even a hook (operators on
    constants only)."""
    operators = (ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
    for n in _own_nodes(nodes):  # type: ignore[arg-type]
        if isinstance(n, (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare)):
            if not all(_constant(c) for c in ast.iter_child_nodes(n) if isinstance(c, ast.expr)):
                return False
        elif not isinstance(n, (*_NO_CODE, *operators)):
            return False
    return True


def _constant(node: ast.expr) -> bool:
    """A constant, or operators on constants."""
    if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare)):
        return all(_constant(c) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr))
    return isinstance(node, ast.Constant)


def _runs_nothing(nodes: list[ast.AST]) -> bool:
    """Whether evaluating these nodes calls nothing in the frame (no call, await or yield)."""
    runs = (ast.Call, ast.Await, ast.Yield, ast.YieldFrom)
    return not any(isinstance(n, runs) for n in _own_nodes(nodes))  # type: ignore[arg-type]


def _leaving_block(body: list[ast.stmt]) -> set[int] | None:
    """The ids of the return, break and continue statements that leave a scope with this body
    (a `with` block's, or a function's, where only returns can), or None if one of them is
    inside a try or with statement in it (code there still runs after it, before the scope's
    exit)."""
    leaving: set[int] = set()

    def walk(stmts: list[ast.stmt], guarded: bool, in_loop: bool) -> bool:
        for stmt in stmts:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            leaves = isinstance(stmt, ast.Return) or (
                isinstance(stmt, (ast.Break, ast.Continue)) and not in_loop
            )
            if leaves:
                if guarded:
                    return False
                leaving.add(id(stmt))
            inner = guarded or isinstance(stmt, (ast.Try, ast.TryStar, ast.With, ast.AsyncWith))
            is_loop = isinstance(stmt, (ast.For, ast.AsyncFor, ast.While))
            parts = [(getattr(stmt, "body", []), in_loop or is_loop)]
            parts += [(getattr(stmt, f, []), in_loop) for f in ("orelse", "finalbody")]
            parts += [(h.body, in_loop) for h in getattr(stmt, "handlers", [])]
            parts += [(c.body, in_loop) for c in getattr(stmt, "cases", [])]
            if not all(walk(part, inner, loop) for part, loop in parts):
                return False
        return True

    return leaving if walk(body, False, False) else None


class _SyncScopeBlocks(ast.NodeTransformer):
    """In an async function's own body, `async with scope():` is `with scope():` (whose exit
    awaits what needs awaiting, _async_exits.block); other items of the statement keep their
    `async with`, nested in the same order: `async with a, scope():` is `async with a:` around
    `with scope():`."""

    def __init__(self, aliases: Aliases, shadowed: frozenset[str]) -> None:
        self.aliases = aliases
        self.shadowed = shadowed

    def visit_body(self, body: list[ast.stmt]) -> None:
        body[:] = self.visit(ast.Module(body=body, type_ignores=[])).body

    def _is_scope(self, item: ast.withitem) -> bool:
        call = item.context_expr
        return (
            isinstance(call, ast.Call)
            and not (call.args or call.keywords)
            and self.aliases.role(call.func, self.shadowed) == "scope"
        )

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.stmt:
        self.generic_visit(node)
        if not any(self._is_scope(item) for item in node.items):
            return node
        body = node.body
        for k in reversed(range(len(node.items))):
            item = node.items[k]
            kind = ast.With if self._is_scope(item) else ast.AsyncWith
            stmt = ast.copy_location(kind(items=[item], body=body), node)
            if k:  # an inner statement starts where its item does
                ast.copy_location(stmt, item.context_expr)
                stmt.end_lineno, stmt.end_col_offset = node.end_lineno, node.end_col_offset
            body = [stmt]
        return body[0]

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return node  # their own scopes
        return super().generic_visit(node)


class _ReplaceSentinels(ast.NodeTransformer):
    """Puts each return site's exit code in place of its placeholder."""

    def __init__(self, coder_exits: set[int]) -> None:
        self.exits = coder_exits
        self.make: Callable[[ast.AST], list[ast.stmt]] | None = None

    def visit_body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        module = ast.Module(body=body, type_ignores=[])
        return self.visit(module).body

    def generic_visit(self, node: ast.AST) -> ast.AST | list[ast.stmt]:
        if id(node) in self.exits:
            assert self.make is not None
            return self.make(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return node  # a nested scope has its own return sites
        return super().generic_visit(node)


_LOOPS = (ast.For, ast.AsyncFor, ast.While)  # their own expressions too may run repeatedly
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp)
# PEP 709: from 3.12 a comprehension runs in the frame of the function around it.
COMPREHENSIONS_INLINED = sys.version_info >= (3, 12)


def _children_where(node: ast.AST, where: int) -> list[tuple[ast.AST, int]]:
    """The children of an expression node for _uses, each with where it is (see there): a
    comprehension's iterables are marked 2, the rest of it 1."""
    if not isinstance(node, _COMPREHENSIONS):
        return [(child, where) for child in ast.iter_child_nodes(node)]
    inside = max(where, 1)
    out: list[tuple[ast.AST, int]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.comprehension):
            out.append((child.iter, 2))
            out += [(n, inside) for n in (child.target, *child.ifs)]
        else:
            out.append((child, inside))
    return out


_NESTED_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _own_expressions(stmt: ast.stmt) -> list[ast.AST]:
    """The roots of a statement's own expressions (not of the statements it contains), in
    textual order. None for a def or a class: their decorators and defaults are checked where
    the function is rewritten."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []
    roots: list[ast.AST] = []
    for name, value in ast.iter_fields(stmt):
        if name == "handlers":
            roots += [h.type for h in value if h.type is not None]
        elif name == "cases":
            roots += [c.guard for c in value if c.guard is not None]
        elif name not in ("body", "orelse", "finalbody"):
            items = value if isinstance(value, list) else [value]
            roots += [v for v in items if isinstance(v, ast.AST)]
    return roots


def _expression_nodes(stmt: ast.stmt) -> Iterable[tuple[ast.AST, bool]]:
    """The nodes of a statement's own expressions, each with whether it can run more than once
    per execution of the statement: in a lambda, a comprehension, a while loop's test or a for
    loop's target."""
    repeated = []
    if isinstance(stmt, ast.While):
        repeated.append(stmt.test)  # evaluated once per iteration, like a loop's body
    elif isinstance(stmt, (ast.For, ast.AsyncFor)):
        repeated.append(stmt.target)
    stack = [(root, any(root is r for r in repeated)) for root in _own_expressions(stmt)]
    while stack:
        node, nested = stack.pop()
        yield node, nested
        inner = nested or isinstance(node, _NESTED_SCOPES)
        stack += [(child, inner) for child in ast.iter_child_nodes(node)]


def _item(local: str, index: int) -> ast.Subscript:
    return ast.Subscript(value=_name(local), slice=ast.Constant(index), ctx=ast.Load())


def _bound_parts(
    args: list[ast.expr], keywords: list[ast.keyword], prefix: str
) -> tuple[list[tuple[str, ast.expr]], list[ast.expr], list[ast.keyword]]:
    """A call's (visited) arguments as (local, expression) pairs named after `prefix`, and the
    call's shape as loads of those locals: `*x` is kept as the tuple `(*x,)`, `**x` as the dict
    `{**x}`, so each is evaluated once, where the call stood."""
    values: list[tuple[str, ast.expr]] = []
    call_args: list[ast.expr] = []
    call_keywords: list[ast.keyword] = []
    for j, arg in enumerate(args):
        local = f"{prefix}{j}__"
        if isinstance(arg, ast.Starred):
            values.append((local, ast.Tuple(elts=[arg], ctx=ast.Load())))
            call_args.append(ast.Starred(_name(local), ast.Load()))
        else:
            values.append((local, arg))
            call_args.append(_name(local))
    for k, kw in enumerate(keywords):
        local = f"{prefix}k{k}__"
        if kw.arg is None:
            values.append((local, ast.Dict(keys=[None], values=[kw.value])))
            call_keywords.append(ast.keyword(arg=None, value=_name(local)))
        else:
            values.append((local, kw.value))
            call_keywords.append(ast.keyword(arg=kw.arg, value=_name(local)))
    return values, call_args, call_keywords


def _overflowed(slots: dict[int, SlotCall], groups: list[int]) -> dict[int, SlotCall]:
    """More than MAX_OPEN_CODED groups: the slots of the last group that fits and of every
    group after it share one list slot, in the order they run (textual order, outside loops)."""
    last = groups[MAX_OPEN_CODED - 1]
    spilled = set(groups[MAX_OPEN_CODED - 1 :])
    out: dict[int, SlotCall] = {}
    for key, slot in slots.items():
        group = key if slot.loop is None else slot.loop
        pushed = slot.pushed or (slot.expression and slot.role in STATEMENT_FORMS)
        out[key] = slot._replace(loop=last, pushed=pushed) if group in spilled else slot
    return out


def _split_docstring(body: list[ast.stmt]) -> tuple[list[ast.stmt], list[ast.stmt]]:
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[:1], body[1:]
    return [], body


def _is_future_import(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"


def _split_head(body: list[ast.stmt], future: bool = True) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """Docstring and `from __future__` imports, which must stay first."""
    head, rest = _split_docstring(body)
    while future and rest and _is_future_import(rest[0]):
        head.append(rest.pop(0))
    return head, rest


def _first_user_line(body: list[ast.stmt]) -> int:
    """The line of the first user statement in `body` that compiles to code (so not `global`,
    `nonlocal` or `pass`), looking inside inserted handlers."""
    for stmt in body:
        if isinstance(stmt, (ast.Global, ast.Nonlocal, ast.Pass)):
            continue
        if stmt.lineno > 0:
            return stmt.lineno
        if isinstance(stmt, ast.Try):
            return _first_user_line(stmt.body)
    return 1


def imported_globals() -> list[tuple[str, str]]:
    """(global name, _rt name) of what prepared code reads as module globals besides RT."""
    checks = [(name, attr) for _, name, attr in SLOT_CHECKS.values()]
    return [*SLOT_FILLS.values(), *FIRST_FILLS.values(), *checks, SLOT_AWAIT]


def _runtime_import(line: int) -> list[ast.stmt]:
    """`import godefer._rt as __godefer_rt__` plus marking the module's code prepared, carrying
    the line of the statement they precede (so no line event of their own)."""
    fills = ", ".join(f"{attr} as {name}" for name, attr in imported_globals())
    stmts = ast.parse(
        f"import godefer._rt as {RT}\nfrom godefer._rt import {fills}\n{RT}.mark_running_module()"
    ).body
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
            tree.body = head + _runtime_import(_first_user_line(rest)) + rest
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
