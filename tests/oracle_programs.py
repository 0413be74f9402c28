"""Random programs for the try/finally oracle (DESIGN.md section 2, "Exceptions - the oracle").

A seeded generator builds small programs in a tiny IR; renderers turn one program into

* the **godefer form** (``defer`` / ``errdefer`` / ``okdefer`` and ``with scope():``),
* the **try/finally form**: the same program hand-translated to nested ``try`` statements, plain
  Python without godefer. This is the oracle: every scheduled call opens a ``try:`` at the point
  of scheduling whose ``finally:`` makes the call, with the rest of the block nested inside,
* the **fake form**: the godefer form run against :class:`FakeGodefer`, a small pure-Python
  model of the semantics (an explicit LIFO stack per scope). It exists only to check the
  generator and the renderers themselves (the fake must agree with the oracle, and deliberately
  broken variants of it must not).

Every rendering is a complete module defining ``run(rec)``: ``rec(*values)`` records an event.
:func:`render_godefer_module` is the entry point for writing a program to a ``.py`` file and
importing it (prepared code); :func:`run_source` executes a rendering from a source string
(godefer's runtime path) and returns an :class:`Outcome` that can be compared with ``==``.

Reproduce one program from the command line::

    python tests/oracle_programs.py --seed 20250521 --index 17 --style godefer [--extended]

``generate_program(seed, i, extended=True)`` draws from a second stream that also uses what
prepared code supports beyond the base programs (the base stream is unchanged by it): ``if``
blocks whose branches schedule calls in the enclosing scope, ``for`` loops whose body schedules
in the enclosing scope (Go's ``for ... { defer ... }``) and, in some programs, the statement form
``fn(args) in defer`` (prepared code only: :func:`uses_statement_form`).

Translation rules (the oracle), for a statement ``K(fn, args)`` followed by ``REST`` in a scope:

* ``defer``:    ``try: REST`` / ``finally: fn(args)``
* ``errdefer``: ``try: REST`` / ``except BaseException: fn(args); raise``
* ``okdefer``:  ``ok = True; try: REST`` / ``except BaseException: ok = False; raise`` /
  ``finally: if ok: fn(args)``. (Not ``try/else``: ``else`` is skipped by ``return``,
  ``break`` and ``continue``, which are successful exits. Not ``sys.exception() is None``
  either: inside an ``except`` handler that names the *handled* exception, which is not in
  flight through this scope.)

Arguments that are variables are captured in temporaries before the ``try`` (Go evaluates
callee and arguments when the call is scheduled). ``with scope():`` translates to its body
inlined in place: ``break`` / ``continue`` / ``return`` run the enclosing ``finally`` blocks.

Extended programs (exact, by duplication): ``if c: A`` / ``else: B`` followed by ``REST`` whose
branches schedule calls becomes ``if c: A; REST`` / ``else: B; REST``, so the calls a branch
schedules wrap the rest of the block. A ``for`` loop whose body schedules calls in the enclosing
scope is unrolled (``i = 0; BODY; i = 1; BODY; ...; REST``) with ``continue`` replaced by the
following iterations and ``REST``, and ``break`` by ``REST`` (hence such a loop's jumps may only
sit in its body or in ``if`` blocks there). The statement form translates like the call form.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

DEFAULT_SEED = 20250521
MAX_DEPTH = 3  # nesting of scope / for / try blocks inside a function body
MAX_STMTS = 8  # statements per block
MAX_FUNCS = 4
KINDS = ("defer", "errdefer", "okdefer")
KIND_PREFIX = {"defer": "d", "errdefer": "e", "okdefer": "o"}
EXC_CLASSES = {"E1": "Exception", "E2": "Exception", "E3": "LookupError", "B1": "BaseException"}
CATCH_CHOICES = (("E1",), ("E1", "E2"), ("LookupError",), ("Exception",))
STMT_FORM_PROGRAMS = 0.3  # extended programs that use the ``CALL in defer`` statement form
MAX_TRANSLATION_LINES = 1200  # extended programs: longest try/finally rendering accepted
STYLES = ("godefer", "tryfinally", "fake")

# --------------------------------------------------------------------------------------------
# IR
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    var: str  # "x" (function argument), "n" (counter) or a loop variable "i<depth>"
    value: int

    def render(self) -> str:
        return f"{self.var} == {self.value}"


@dataclass(frozen=True)
class Rec:
    tag: str
    arg: str | None = None  # rec("tag"[, arg])


@dataclass(frozen=True)
class Inc:
    """``n += 1``: changes what later ``defer(..., n)`` capture."""


@dataclass(frozen=True)
class Raise:
    cls: str
    msg: str
    cond: Cond | None = None


@dataclass(frozen=True)
class Return:
    value: str  # an expression: a string literal or "n"
    cond: Cond | None = None


@dataclass(frozen=True)
class Break:
    cond: Cond | None = None


@dataclass(frozen=True)
class Continue:
    cond: Cond | None = None


@dataclass(frozen=True)
class Call:
    """``rec(tag, f<fn>(rec, arg))``: a nested call of another generated function."""

    tag: str
    fn: int
    arg: str


@dataclass(frozen=True)
class RecT:
    """Deferred ``rec("tag"[, arg])``: the callee is the recorder itself."""

    tag: str
    arg: str | None = None


@dataclass(frozen=True)
class ObsT:
    """Deferred ``obs(rec, "tag", arg)``: records ``repr(sys.exception())`` at call time."""

    tag: str
    arg: str | None = None
    kw: bool = False  # pass arg as ``val=arg``


@dataclass(frozen=True)
class BoomT:
    """Deferred ``boom(rec, "tag", cls, "msg")``: records sys.exception(), then raises."""

    tag: str
    cls: str
    msg: str


@dataclass(frozen=True)
class FnT:
    """Deferred ``f<fn>(rec, arg)``: another generated function (with its own defers)."""

    fn: int
    arg: str


Target = RecT | ObsT | BoomT | FnT


@dataclass(frozen=True)
class Defer:
    kind: str  # "defer" | "errdefer" | "okdefer"
    target: Target
    site: int  # unique per program: names the temporaries of the translation
    # "call": ``defer(fn, args)``; "stmt": the statement form ``fn(args) in defer``, which only
    # prepared code understands (extended programs only, see :func:`generate_program`)
    form: str = "call"


@dataclass(frozen=True)
class Scope:
    body: tuple


@dataclass(frozen=True)
class For:
    var: str
    count: int
    body: tuple
    # Extended programs only: the body belongs directly to the enclosing scope and may schedule
    # calls there (Go's ``for ... { defer ... }``); they accumulate and run at the scope's exit.
    # The translation unrolls the loop, so ``break`` / ``continue`` of such a loop may only
    # appear directly in its body or in ``if`` blocks there (not inside try / scope / for).
    defers: bool = False


@dataclass(frozen=True)
class If:
    """``if cond: body`` / ``else: orelse`` (extended programs only).

    At scope level the branches may schedule calls in the enclosing scope; the translation then
    nests the rest of the enclosing block into both branches (exact, by duplication).
    """

    cond: Cond
    body: tuple
    orelse: tuple = ()


@dataclass(frozen=True)
class Try:
    """``try: body`` / ``except catch as _e<site>: rec(tag, chain(_e)); handler``."""

    body: tuple
    catch: tuple
    tag: str
    site: int
    handler: tuple


@dataclass(frozen=True)
class _Assign:
    """``var = value``: an iteration of an unrolled loop (translation-internal, never generated)."""

    var: str
    value: int


Stmt = Rec | Inc | Raise | Return | Break | Continue | Call | Defer | Scope | For | Try | If


@dataclass(frozen=True)
class Function:
    index: int
    body: tuple


@dataclass(frozen=True)
class Program:
    functions: tuple  # of Function; functions[0] is f0, the entry
    entry_arg: int  # run(rec) returns f0(rec, entry_arg)
    # run(rec) calls f0 inside ``except E2:`` of an exception raised there (sys.exception() is
    # then never None, yet that exception is not in flight through any scope of the program)
    outer_handled: bool = False

    def function(self, index: int) -> Function:
        for f in self.functions:
            if f.index == index:
                return f
        raise KeyError(index)


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    fn: int
    nfuncs: int
    depth: int
    loops: tuple  # ((var, count), ...) of the enclosing for loops in this function
    scope_level: bool  # statements here belong directly to a scope: defers allowed
    # Extended programs only (base programs never change these defaults):
    jumps: bool = True  # break / continue allowed here (see For.defers)
    deferloop: bool = False  # the innermost enclosing loop is a For with defers=True
    in_deferloop: bool = False  # some enclosing loop is (they do not nest: translation size)


class _Generator:
    def __init__(self, rng: random.Random, extended: bool = False) -> None:
        self.rng = rng
        self.counter = 0
        self.extended = extended
        self.stmt_forms = False  # this program uses the ``CALL in defer`` statement form

    def fresh(self) -> int:
        self.counter += 1
        return self.counter

    def program(self) -> Program:
        if not self.extended:
            return self._program()
        # Duplication and unrolling make some translations large, or nest blocks deeper than
        # CPython compiles ("too many statically nested blocks"): draw again (deterministic).
        for _ in range(100):
            self.counter = 0
            self.stmt_forms = self.rng.random() < STMT_FORM_PROGRAMS
            prog = self._program()
            if _translation_fits(prog):
                return prog
        raise RuntimeError("no extended program fits")  # pragma: no cover

    def _program(self) -> Program:
        nfuncs = self.rng.choice((1, 2, 2, 3, 3, 4))
        funcs = []
        for k in range(nfuncs):
            ctx = _Ctx(fn=k, nfuncs=nfuncs, depth=0, loops=(), scope_level=True)
            funcs.append(Function(k, self.block(ctx)))
        return Program(tuple(funcs), self.rng.randrange(3), self.rng.random() < 0.2)

    # -- pieces ---------------------------------------------------------------------------

    def cond(self, ctx: _Ctx) -> Cond:
        r = self.rng
        options = [("x", 0, 3), ("n", 1, 3)] + [(v, 0, c) for v, c in ctx.loops]
        var, low, top = r.choice(options)
        return Cond(var, r.randrange(low, top))

    def argexpr(self, ctx: _Ctx) -> str:
        r = self.rng
        options = [str(r.randrange(10)), "n", "x"] + [v for v, _ in ctx.loops]
        return r.choice(options)

    def target(self, ctx: _Ctx, kind: str) -> Target:
        r = self.rng
        tag = f"{KIND_PREFIX[kind]}{self.fresh()}"
        weights = {"rec": 2.0, "obs": 3.0, "boom": 1.5}
        if ctx.fn + 1 < ctx.nfuncs:
            weights["fn"] = 1.2
        what = r.choices(list(weights), weights=list(weights.values()))[0]
        if what == "rec":
            return RecT(tag, self.argexpr(ctx) if r.random() < 0.5 else None)
        if what == "obs":
            arg = self.argexpr(ctx) if r.random() < 0.5 else None
            return ObsT(tag, arg, kw=arg is not None and r.random() < 0.5)
        if what == "boom":
            return BoomT(tag, self.exc_class(), f"m{self.fresh()}")
        return FnT(r.randint(ctx.fn + 1, ctx.nfuncs - 1), self.argexpr(ctx))

    def exc_class(self) -> str:
        return self.rng.choices(("E1", "E2", "E3", "B1"), weights=(3, 2, 1.5, 1))[0]

    def return_value(self) -> str:
        return "n" if self.rng.random() < 0.2 else repr(f"v{self.fresh()}")

    # -- blocks ---------------------------------------------------------------------------

    def block(self, ctx: _Ctx, *, allow_empty: bool = False) -> tuple:
        r = self.rng
        low = 2 if ctx.depth == 0 else 0 if allow_empty else 1
        length = r.randint(low, 7 if ctx.depth == 0 else 4)
        stmts = [self.stmt(ctx) for _ in range(length)]
        # Sometimes end the block with an unconditional exit.
        x = r.random()
        if x < 0.08:
            stmts.append(Raise(self.exc_class(), f"m{self.fresh()}"))
        elif x < 0.13:
            stmts.append(Return(self.return_value()))
        elif ctx.loops and ctx.jumps and x < 0.17:
            stmts.append(Break())
        elif ctx.loops and ctx.jumps and x < 0.21:
            stmts.append(Continue())
        return tuple(stmts[:MAX_STMTS])

    def defer(self, ctx: _Ctx) -> Defer:
        r = self.rng
        kind = r.choices(KINDS, weights=(3, 2, 2))[0]
        d = Defer(kind, self.target(ctx, kind), self.fresh())
        if self.stmt_forms and r.random() < 0.5:
            d = replace(d, form="stmt")
        return d

    def stmt(self, ctx: _Ctx) -> Stmt:
        r = self.rng
        weights: dict[str, float] = {"rec": 3, "inc": 1.2, "raise": 1.3, "return": 1}
        if ctx.fn + 1 < ctx.nfuncs:
            weights["call"] = 1.5
        if ctx.scope_level:
            weights["defer"] = 6.5
        if ctx.depth < MAX_DEPTH:
            weights.update({"scope": 2, "for": 1, "try": 1.3})
        if ctx.loops and ctx.jumps:
            weights.update({"break": 0.8, "continue": 0.8})
        if self.extended:
            # Fewer early exits, so that more of the extended constructs are reached.
            weights.update({"raise": 0.7, "return": 0.6})
        if self.extended and ctx.depth < MAX_DEPTH:
            weights["if"] = 1.6
            if ctx.scope_level and not ctx.in_deferloop:
                weights["deferloop"] = 0.9
        what = r.choices(list(weights), weights=list(weights.values()))[0]
        if what == "rec":
            return Rec(f"r{self.fresh()}", self.argexpr(ctx) if r.random() < 0.3 else None)
        if what == "inc":
            return Inc()
        if what == "raise":
            return Raise(self.exc_class(), f"m{self.fresh()}", self.cond(ctx))
        if what == "return":
            return Return(self.return_value(), self.cond(ctx))
        if what == "call":
            return Call(
                f"c{self.fresh()}", r.randint(ctx.fn + 1, ctx.nfuncs - 1), self.argexpr(ctx)
            )
        if what == "defer":
            return self.defer(ctx)
        if what == "break":
            return Break(self.cond(ctx))
        if what == "continue":
            return Continue(self.cond(ctx))
        inner = replace(ctx, depth=ctx.depth + 1)
        if what == "if":
            cond = self.cond(ctx)
            body = self.block(inner)
            orelse = self.block(inner, allow_empty=True) if r.random() < 0.6 else ()
            if ctx.scope_level and r.random() < 0.5:
                body = (self.defer(inner), *body)[:MAX_STMTS]
            return If(cond, body, orelse)
        if what == "deferloop":
            var, count = f"i{ctx.depth}", r.randint(2, 3)
            in_loop = replace(
                inner,
                loops=(*ctx.loops, (var, count)),
                jumps=True,
                deferloop=True,
                in_deferloop=True,
            )
            body = self.block(in_loop)
            if r.random() < 0.6:
                body = (self.defer(in_loop), *body)[:MAX_STMTS]
            return For(var, count, body, defers=True)
        # Inside a scope or try block in the body of a For(defers=True), break and continue
        # would leave that block: the unrolled translation cannot express it.
        inner = replace(inner, jumps=ctx.jumps and not ctx.deferloop)
        if what == "scope":
            return Scope(self.block(replace(inner, scope_level=True)))
        if what == "for":
            loops = (*ctx.loops, (f"i{ctx.depth}", r.randint(2, 3)))
            var, count = loops[-1]
            in_loop = replace(inner, loops=loops, jumps=True, deferloop=False)
            if r.random() < 0.85:
                body: list[Stmt] = []
                if r.random() < 0.3:
                    body.append(Rec(f"r{self.fresh()}", var))
                body.append(Scope(self.block(replace(in_loop, scope_level=True))))
                if r.random() < 0.3:
                    body.append(Rec(f"r{self.fresh()}", var))
                return For(var, count, tuple(body))
            return For(var, count, self.block(replace(in_loop, scope_level=False)))
        assert what == "try"
        plain = replace(inner, scope_level=False)
        body = self.block(plain)
        if self.rng.random() < 0.4 and len(body) < MAX_STMTS:
            body = (*body, Raise(self.exc_class(), f"m{self.fresh()}"))
        site = self.fresh()
        handler = self.block(plain, allow_empty=True) if r.random() < 0.7 else ()
        return Try(body, r.choice(CATCH_CHOICES), f"t{site}", site, handler)


def generate_program(seed: int | str, index: int, *, extended: bool = False) -> Program:
    """Program number ``index`` of the stream for ``seed`` (each is independent of the others).

    ``extended=True`` draws from a separate stream whose programs also use what prepared code
    supports beyond the base programs: defers in ``if`` blocks and in loops at scope level
    (:class:`If`, ``For(defers=True)``) and, in some programs, the statement form
    ``fn(args) in defer`` (:func:`uses_statement_form`; such a program can only be run
    prepared). The base stream (``extended=False``) is unchanged by these features.
    """
    if extended:
        rng = random.Random(f"godefer-oracle-extended:{seed}:{index}")
        return _Generator(rng, extended=True).program()
    return _Generator(random.Random(f"godefer-oracle:{seed}:{index}")).program()


def uses_statement_form(prog: Program) -> bool:
    """Whether ``prog`` uses ``fn(args) in defer`` (a NotPreparedError on the runtime path)."""
    return any(
        isinstance(s, Defer) and s.form == "stmt" for f in prog.functions for s, _ in _walk(f.body)
    )


CO_MAXBLOCKS = 20  # CPython's limit of statically nested blocks (3.11 - 3.13 allow at least 20)


def _surely_compiles(src: str, margin: int = 1) -> bool:
    """Cheap sufficient test that CPython compiles ``src``: no statement under more blocks than
    :data:`CO_MAXBLOCKS` allows, and indentation well below the tokenizer's limit (100 levels).

    Blocks are counted as CPython's compiler pushes them, rounded up: a ``try`` body 1 (2 with
    both ``except`` and ``finally``), a handler 2 (3 with a ``finally`` too), a ``finally`` body
    1, ``for`` and ``with`` 1 each, ``if`` / ``else`` none. Pure text: the same on every version.
    """
    lines = [(len(line) - len(line.lstrip(" ")), line.lstrip(" ")) for line in src.splitlines()]
    # Pass 1: which clauses each ``try:`` has (by the line index of its header).
    clauses: dict[int, set[str]] = {}
    open_trys: list[tuple[int, int]] = []  # (indent, line index) of enclosing ``try:``
    for k, (indent, text) in enumerate(lines):
        if not text:
            continue
        while open_trys and open_trys[-1][0] > indent:
            open_trys.pop()
        if text.startswith(("except", "finally:")):
            if open_trys and open_trys[-1][0] == indent:
                clauses[open_trys[-1][1]].add(text.split()[0].rstrip(":"))
            continue
        while open_trys and open_trys[-1][0] >= indent:
            open_trys.pop()
        if text == "try:":
            open_trys.append((indent, k))
            clauses[k] = set()
    # Pass 2: the depth of every line.
    stack: list[tuple[int, int]] = []  # (indent of a header, blocks its body is under)
    depth = 0
    last_try: dict[int, int] = {}  # indent -> line index of the latest ``try:`` there
    for k, (indent, text) in enumerate(lines):
        if not text:
            continue
        if indent > 4 * 80:
            return False
        while stack and stack[-1][0] >= indent:
            depth -= stack.pop()[1]
        if depth > CO_MAXBLOCKS - margin:
            return False
        if text == "try:":
            last_try[indent] = k
            cost = 2 if clauses[k] >= {"except", "finally"} else 1
        elif text.startswith("except"):
            cost = 3 if "finally" in clauses.get(last_try.get(indent, -1), ()) else 2
        elif text.startswith(("finally:", "for ", "with ")):
            cost = 1
        else:
            cost = 0
        if cost:
            stack.append((indent, cost))
            depth += cost
    return True


def _translation_fits(prog: Program) -> bool:
    # Only the version-independent bound, never compile(): the limits differ between CPython
    # versions, and the stream of programs must not.
    try:
        src = _Renderer("tryfinally", limit=MAX_TRANSLATION_LINES).module(prog)
    except _TooLong:
        return False
    return _surely_compiles(src)


# --------------------------------------------------------------------------------------------
# Static analysis: validity (for the shrinker) and feature counts (for coverage assertions)
# --------------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"[nx]|i\d+")


def _exprs_ok(exprs: list[str | None], loops: tuple) -> bool:
    names = {"n", "x"} | {v for v, _ in loops}
    return all(e is None or not _VAR_RE.fullmatch(e) or e in names for e in exprs)


def _stmt_exprs(s: Stmt) -> list[str | None]:
    if isinstance(s, Rec):
        return [s.arg]
    if isinstance(s, (Raise, Return, Break, Continue)) and s.cond is not None:
        return [s.cond.var] + ([s.value] if isinstance(s, Return) else [])
    if isinstance(s, Return):
        return [s.value]
    if isinstance(s, Call):
        return [s.arg]
    if isinstance(s, If):
        return [s.cond.var]
    if isinstance(s, Defer):
        t = s.target
        return [getattr(t, "arg", None)]
    return []


@dataclass(frozen=True)
class _Valid:
    """Where a statement sits, for :func:`validate`."""

    fn: int
    loops: tuple = ()
    scope_level: bool = True
    jumps: bool = True  # break / continue allowed (see For.defers)
    deferloop: bool = False  # the innermost loop is a For(defers=True)


def validate(prog: Program) -> bool:
    """True if ``prog`` obeys the structural rules both renderers rely on."""
    indexes = {f.index for f in prog.functions}
    if 0 not in indexes:
        return False

    def stmt_ok(s: Stmt, c: _Valid) -> bool:
        if not _exprs_ok(_stmt_exprs(s), c.loops):
            return False
        if isinstance(s, Defer):
            t = s.target
            return c.scope_level and (not isinstance(t, FnT) or c.fn < t.fn in indexes)
        if isinstance(s, Call):
            return c.fn < s.fn in indexes
        if isinstance(s, (Break, Continue)):
            return bool(c.loops) and c.jumps
        if isinstance(s, If):
            return block_ok(s.body, c) and block_ok(s.orelse, c)
        if isinstance(s, For):
            loops = (*c.loops, (s.var, s.count))
            if s.defers:
                return block_ok(s.body, replace(c, loops=loops, jumps=True, deferloop=True))
            return block_ok(
                s.body, replace(c, loops=loops, scope_level=False, jumps=True, deferloop=False)
            )
        nested = replace(c, jumps=c.jumps and not c.deferloop)
        if isinstance(s, Scope):
            return block_ok(s.body, replace(nested, scope_level=True))
        if isinstance(s, Try):
            plain = replace(nested, scope_level=False)
            return block_ok(s.body, plain) and block_ok(s.handler, plain)
        return True

    def block_ok(stmts: tuple, c: _Valid) -> bool:
        return all(stmt_ok(s, c) for s in stmts)

    return all(block_ok(f.body, _Valid(f.index)) for f in prog.functions)


def _walk(stmts: tuple, in_handler: bool = False) -> Iterator[tuple[Stmt, bool]]:
    for s in stmts:
        yield s, in_handler
        if isinstance(s, (Scope, For)):
            yield from _walk(s.body, in_handler)
        elif isinstance(s, If):
            yield from _walk(s.body, in_handler)
            yield from _walk(s.orelse, in_handler)
        elif isinstance(s, Try):
            yield from _walk(s.body, in_handler)
            yield from _walk(s.handler, True)


def static_features(prog: Program) -> Counter:
    """Which language features ``prog`` uses (each counted once per program)."""
    feats: set[str] = set()
    for f in prog.functions:
        for s, in_handler in _walk(f.body):
            if isinstance(s, Defer):
                feats.add(s.kind)
                t = s.target
                feats.add(
                    {
                        RecT: "target_rec",
                        ObsT: "target_obs",
                        BoomT: "target_boom",
                        FnT: "target_fn",
                    }[type(t)]
                )
                if getattr(t, "arg", None) in ("n", "x") or (
                    getattr(t, "arg", None) or ""
                ).startswith("i"):
                    feats.add("captured_arg")
                if isinstance(t, ObsT) and t.kw:
                    feats.add("kwarg")
            elif isinstance(s, Scope):
                feats.add("scope_in_handler" if in_handler else "scope")
            elif isinstance(s, For) and s.defers:
                feats.add("deferloop")
                if _schedules(s.body):
                    feats.add("deferloop_schedules")
                if _has_jump(s.body):
                    feats.add("deferloop_jump")
            elif isinstance(s, For):
                feats.add("for")
                if any(isinstance(b, Scope) for b in s.body):
                    feats.add("for_scope")
            elif isinstance(s, If):
                feats.add("if")
                if _schedules(s.body) or _schedules(s.orelse):
                    feats.add("if_schedules")
            elif isinstance(s, (Break, Continue, Try, Call, Raise, Return, Inc)):
                feats.add(type(s).__name__.lower())
            if isinstance(s, Defer) and s.form == "stmt":
                feats.add("statement_form")
    if len(prog.functions) > 1:
        feats.add("multi_function")
    if prog.outer_handled:
        feats.add("outer_handled")
    return Counter(feats)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

PRELUDE = """\
import sys


class E1(Exception):
    pass


class E2(Exception):
    pass


class E3(LookupError):
    pass


class B1(BaseException):
    pass


def obs(rec, tag, val=None):
    rec(tag, repr(sys.exception()), val)


def boom(rec, tag, cls, msg):
    rec(tag, repr(sys.exception()))
    raise cls(msg)


def chain(e):
    out = []
    while e is not None and len(out) < 8:
        out.append(repr(e))
        e = e.__context__
    return tuple(out)
"""

GODEFER_IMPORT = "from godefer import defer, errdefer, okdefer, scope"

# The awaited rendering's additions: awaitable twins of the deferred callees, and ``drive``, which
# runs a coroutine to its end without an event loop (``suspend`` hands control back once).
AWAITED_PRELUDE = """

class _Suspend:
    def __await__(self):
        yield


suspend = _Suspend()


async def arec(rec, *values):
    await suspend
    rec(*values)


async def aobs(rec, tag, val=None):
    await suspend
    rec(tag, repr(sys.exception()), val)


async def aboom(rec, tag, cls, msg):
    await suspend
    rec(tag, repr(sys.exception()))
    raise cls(msg)


def drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value
"""


def prelude(style: str, awaited: bool = False) -> str:
    """The common head of every rendering: exception classes, ``obs``, ``boom``, ``chain`` (and
    for the awaited rendering, see :func:`render_awaited_batch_module`, their awaitable twins)."""
    head = PRELUDE + AWAITED_PRELUDE if awaited else PRELUDE
    if style == "godefer":
        names = GODEFER_IMPORT + (", adefer" if awaited else "")
        return head.replace("import sys\n", f"import sys\n\n{names}\n", 1)
    return head


def is_awaited(d: Defer) -> bool:
    """In the awaited rendering: whether ``d`` is an ``adefer`` (an awaited call). A generated
    function is a coroutine function there, so deferring it always awaits it."""
    return d.kind == "defer" and (isinstance(d.target, FnT) or d.site % 2 == 0)


def _awaited_parts(d: Defer, prefix: str) -> tuple[str, list[str], list[tuple[str, str]]]:
    """:func:`_call_parts` for the awaited rendering: ``arec``/``aobs``/``aboom`` for awaited
    calls, and ``obs`` for an errdefer/okdefer of a generated function (which cannot await)."""
    t = d.target
    if isinstance(t, FnT) and not is_awaited(d):
        return "obs", ["rec", repr(f"f{t.fn}"), t.arg], []
    callee, pos, kw = _call_parts(t, prefix)
    if is_awaited(d) and not isinstance(t, FnT):
        if callee == "rec":
            return "arec", ["rec", *pos], kw
        return "a" + callee, pos, kw
    return callee, pos, kw


def _call_parts(t: Target, prefix: str = "") -> tuple[str, list[str], list[tuple[str, str]]]:
    """(callee, positional argument expressions, keyword arguments) of a deferred call."""
    if isinstance(t, RecT):
        return "rec", [repr(t.tag)] + ([t.arg] if t.arg is not None else []), []
    if isinstance(t, ObsT):
        if t.arg is None:
            return "obs", ["rec", repr(t.tag)], []
        if t.kw:
            return "obs", ["rec", repr(t.tag)], [("val", t.arg)]
        return "obs", ["rec", repr(t.tag), t.arg], []
    if isinstance(t, BoomT):
        return "boom", ["rec", repr(t.tag), t.cls, repr(t.msg)], []
    return f"{prefix}f{t.fn}", ["rec", t.arg], []


def _arglist(pos: list[str], kw: list[tuple[str, str]]) -> str:
    return ", ".join([*pos, *(f"{k}={v}" for k, v in kw)])


def _schedules(stmts: tuple) -> bool:
    """Whether ``stmts`` schedule calls in the scope they belong to (not in nested scopes)."""
    for s in stmts:
        if isinstance(s, Defer):
            return True
        if isinstance(s, If) and (_schedules(s.body) or _schedules(s.orelse)):
            return True
        if isinstance(s, For) and s.defers and _schedules(s.body):
            return True
    return False


def _has_jump(stmts: tuple) -> bool:
    """Whether ``stmts`` hold a break / continue of their loop (directly or in ``if`` blocks)."""
    return any(
        isinstance(s, (Break, Continue))
        or (isinstance(s, If) and (_has_jump(s.body) or _has_jump(s.orelse)))
        for s in stmts
    )


def _expand(stmts: tuple, cont: tuple, brk: tuple) -> tuple:
    """One unrolled iteration: ``stmts`` followed by ``cont`` (the next iterations and the code
    after the loop), with ``continue`` replaced by ``cont`` and ``break`` by ``brk`` (the code
    after the loop). ``if c: A`` / ``else: B`` followed by ``R`` is ``if c: A; R`` /
    ``else: B; R``, so every jump becomes the tail of its branch."""
    for j, s in enumerate(stmts):
        head, tail = stmts[:j], stmts[j + 1 :]
        if isinstance(s, (Break, Continue)):
            target = brk if isinstance(s, Break) else cont
            if s.cond is None:
                return head + target
            return (*head, If(s.cond, target, _expand(tail, cont, brk)))
        if isinstance(s, If) and (_has_jump(s.body) or _has_jump(s.orelse)):
            return (
                *head,
                If(s.cond, _expand(s.body + tail, cont, brk), _expand(s.orelse + tail, cont, brk)),
            )
    return stmts + cont


def _unroll(loop: For, rest: tuple) -> tuple:
    """``for var in range(count): body`` followed by ``rest``, as straight-line statements.

    Calls scheduled by the body belong to the enclosing scope and so must wrap every later
    iteration and ``rest``: unrolled, the try/finally translation nests them exactly."""
    seq = rest
    for k in reversed(range(loop.count)):
        seq = (_Assign(loop.var, k), *_expand(loop.body, seq, rest))
    return seq


class _TooLong(Exception):
    pass


class _Renderer:
    def __init__(
        self, style: str, prefix: str = "", limit: int | None = None, awaited: bool = False
    ) -> None:
        if style not in STYLES or (awaited and style == "fake"):
            raise ValueError(style)
        self.style = style
        self.awaited = awaited  # async functions, some defers awaited (adefer)
        self.prefix = prefix  # of the program's function names (several programs, one module)
        self.limit = limit  # raise _TooLong beyond this many lines
        self.out: list[str] = []
        # Unrolled loops render one Defer several times, nested: each copy needs temporaries
        # of its own (the first copy keeps the plain names).
        self.copies: Counter = Counter()

    def line(self, ind: int, text: str) -> None:
        self.out.append("    " * ind + text)
        if self.limit is not None and len(self.out) > self.limit:
            raise _TooLong

    def block(self, stmts: tuple, ind: int) -> None:
        start = len(self.out)
        paired = False
        for k, s in enumerate(stmts):
            if paired:  # rendered with the defer before it
                paired = False
                continue
            nxt = stmts[k + 1] if k + 1 < len(stmts) else None
            if self._pairs(s, nxt):
                # Two defers in one statement, scheduled left to right as two statements would
                # be: a slot each outside loops, the loop's list inside one.
                assert isinstance(s, Defer) and isinstance(nxt, Defer)
                self.line(ind, f"_p{s.site} = ({self._call(s)}, {self._call(nxt)})")
                paired = True
                continue
            if self.style == "tryfinally":
                rest = stmts[k + 1 :]
                if isinstance(s, Defer):
                    self.translated_defer(s, rest, ind)
                    break
                if isinstance(s, For) and s.defers:
                    self.block(_unroll(s, rest), ind)
                    break
                if isinstance(s, If) and (_schedules(s.body) or _schedules(s.orelse)):
                    # The calls a branch schedules wrap the rest of the block: nest it into
                    # both branches (exact: ``if c: A`` / ``else: B`` then ``R`` is
                    # ``if c: A; R`` / ``else: B; R``).
                    self.if_stmt(s.cond, s.body + rest, s.orelse + rest, ind)
                    break
            self.stmt(s, ind)
        if len(self.out) == start:
            self.line(ind, "pass")

    def _pairs(self, s: object, nxt: object) -> bool:
        return (
            self.style == "godefer"
            and isinstance(s, Defer)
            and isinstance(nxt, Defer)
            and s.site % 4 == 3
        )

    def _parts(self, d: Defer) -> tuple[str, list[str], list[tuple[str, str]]]:
        if self.awaited:
            return _awaited_parts(d, self.prefix)
        return _call_parts(d.target, self.prefix)

    def _kind(self, d: Defer) -> str:
        return "adefer" if self.awaited and is_awaited(d) else d.kind

    def _call(self, d: Defer) -> str:
        callee, pos, kw = self._parts(d)
        return f"{self._kind(d)}({_arglist([callee, *pos], kw)})"

    def guarded(self, cond: Cond | None, ind: int, text: str) -> None:
        if cond is None:
            self.line(ind, text)
        else:
            self.line(ind, f"if {cond.render()}:")
            self.line(ind + 1, text)

    def if_stmt(self, cond: Cond, body: tuple, orelse: tuple, ind: int) -> None:
        self.line(ind, f"if {cond.render()}:")
        self.block(body, ind + 1)
        if orelse:
            self.line(ind, "else:")
            self.block(orelse, ind + 1)

    def stmt(self, s: Stmt | _Assign, ind: int) -> None:
        if isinstance(s, Rec):
            self.line(ind, f"rec({_arglist([repr(s.tag)] + ([s.arg] if s.arg else []), [])})")
        elif isinstance(s, Inc):
            self.line(ind, "n += 1")
        elif isinstance(s, Raise):
            self.guarded(s.cond, ind, f"raise {s.cls}({s.msg!r})")
        elif isinstance(s, Return):
            self.guarded(s.cond, ind, f"return {s.value}")
        elif isinstance(s, Break):
            self.guarded(s.cond, ind, "break")
        elif isinstance(s, Continue):
            self.guarded(s.cond, ind, "continue")
        elif isinstance(s, Call):
            wait = "await " if self.awaited else ""
            self.line(ind, f"rec({s.tag!r}, {wait}{self.prefix}f{s.fn}(rec, {s.arg}))")
        elif isinstance(s, Defer):
            callee, pos, kw = self._parts(s)
            kind = self._kind(s)
            if s.form == "stmt" and self.style == "godefer" and kind != "adefer":
                self.line(ind, f"{callee}({_arglist(pos, kw)}) in {kind}")
            elif self.style == "godefer" and s.site % 3 == 1:
                # The value of defer() used (it is the callee): one site in three, so that
                # preparation also meets defers in expressions (open-coded outside loops); one
                # of those in four with the callee from a starred argument, which is inside a
                # tuple every other time (a starred defer inside a larger expression).
                star = s.site % 4 == 3 and kind != "adefer"
                call = f"{kind}({_arglist([f'*({callee},)' if star else callee, *pos], kw)})"
                value = f"({call},)[0]" if star and s.site % 8 == 7 else call
                self.line(ind, f"_d{s.site} = {value}")
            elif self.style == "godefer" and s.site % 5 == 2:
                # In a conditional expression (whose test is always true): pushed onto a list
                # slot of the statement, or of the loop around it.
                call = f"{kind}({_arglist([callee, *pos], kw)})"
                self.line(ind, f"_d{s.site} = {call} if rec is not None else None")
            elif self.style == "godefer" and s.site % 4 == 3 and kind != "adefer":
                # The callee from a starred argument (a slot of its own outside loops).
                self.line(ind, f"{kind}({_arglist([f'*({callee},)', *pos], kw)})")
            else:  # the fake has no statement form: the call form means the same
                self.line(ind, f"{kind}({_arglist([callee, *pos], kw)})")
        elif isinstance(s, If):
            self.if_stmt(s.cond, s.body, s.orelse, ind)
        elif isinstance(s, _Assign):
            self.line(ind, f"{s.var} = {s.value}")
        elif isinstance(s, Scope):
            if self.style == "tryfinally":
                self.block(s.body, ind)  # inlined: the try/finally nest is the scope
            else:
                self.line(ind, "with scope():")
                self.block(s.body, ind + 1)
        elif isinstance(s, For):
            self.line(ind, f"for {s.var} in range({s.count}):")
            self.block(s.body, ind + 1)
        elif isinstance(s, Try):
            self.line(ind, "try:")
            self.block(s.body, ind + 1)
            catch = s.catch[0] if len(s.catch) == 1 else f"({', '.join(s.catch)})"
            self.line(ind, f"except {catch} as _e{s.site}:")
            self.line(ind + 1, f"rec({s.tag!r}, chain(_e{s.site}))")
            self.block(s.handler, ind + 1)
        else:  # pragma: no cover
            raise TypeError(s)

    def translated_defer(self, d: Defer, rest: tuple, ind: int) -> None:
        callee, pos, kw = self._parts(d)
        copy = self.copies[d.site]
        self.copies[d.site] += 1
        uniq = f"_u{copy}" if copy else ""
        # Capture variable arguments now: the call is made with the values of this moment.
        temps = 0

        def capture(expr: str) -> str:
            nonlocal temps
            if not _VAR_RE.fullmatch(expr):
                return expr
            name = f"_a{d.site}_{temps}{uniq}"
            temps += 1
            self.line(ind, f"{name} = {expr}")
            return name

        pos = [capture(e) for e in pos]
        kw = [(k, capture(v)) for k, v in kw]
        call = f"{callee}({_arglist(pos, kw)})"
        if self.awaited and is_awaited(d):
            call = f"await {call}"
        if d.kind == "okdefer":
            self.line(ind, f"_ok{d.site}{uniq} = True")
        self.line(ind, "try:")
        self.block(rest, ind + 1)
        if d.kind == "defer":
            self.line(ind, "finally:")
            self.line(ind + 1, call)
        elif d.kind == "errdefer":
            self.line(ind, "except BaseException:")
            self.line(ind + 1, call)
            self.line(ind + 1, "raise")
        else:
            self.line(ind, "except BaseException:")
            self.line(ind + 1, f"_ok{d.site}{uniq} = False")
            self.line(ind + 1, "raise")
            self.line(ind, "finally:")
            self.line(ind + 1, f"if _ok{d.site}{uniq}:")
            self.line(ind + 2, call)

    def module(self, prog: Program) -> str:
        self.out = [prelude(self.style, self.awaited).rstrip("\n")]
        self.functions(prog)
        return "\n".join(self.out) + "\n"

    def functions(self, prog: Program) -> None:
        f0 = f"{self.prefix}f0"
        for f in prog.functions:
            self.line(0, "")
            self.line(0, "")
            define = "async def" if self.awaited else "def"
            self.line(0, f"{define} {self.prefix}f{f.index}(rec, x):")
            self.line(1, "n = 0")
            if self.style == "fake":
                # The fake runtime has no frame hooks: give every function an explicit scope.
                self.line(1, "with scope():")
                self.block(f.body, 2)
            else:
                self.block(f.body, 1)
        self.line(0, "")
        self.line(0, "")
        self.line(0, f"def {self.prefix}run(rec):")
        entry = f"{f0}(rec, {prog.entry_arg})"
        if self.awaited:
            entry = f"drive({entry})"
        if prog.outer_handled:
            self.line(1, "try:")
            self.line(2, "raise E2('outer')")
            self.line(1, "except E2:")
            self.line(2, f"return {entry}")
        else:
            self.line(1, f"return {entry}")


def render_module(prog: Program, style: str) -> str:
    """Render ``prog`` as a module defining ``run(rec)``, in one of :data:`STYLES`.

    ``fake`` is the godefer form without the import, each function body wrapped in
    ``with scope():``; run it with ``FakeGodefer().namespace()`` as globals.
    """
    return _Renderer(style).module(prog)


def render_godefer_module(prog: Program) -> str:
    """The godefer form of ``prog``: a self-contained module (imports godefer) with ``run(rec)``."""
    return render_module(prog, "godefer")


def render_tryfinally_module(prog: Program) -> str:
    """The oracle form of ``prog``: plain Python try/finally, a module with ``run(rec)``."""
    return render_module(prog, "tryfinally")


def awaited_translation_fits(prog: Program) -> bool:
    """Whether CPython compiles the awaited try/finally translation of ``prog`` safely. An
    ``await`` adds handlers of its own to those of the blocks around it, and CPython 3.12.1's
    compiler overflows its handler stack (a segmentation fault, not the SyntaxError of too many
    nested blocks) for an ``await`` in a ``finally:`` near the block limit: such programs are
    left out of the awaited comparison (test_oracle_async counts them)."""
    return _surely_compiles(render_awaited_module(prog, "tryfinally"), margin=2)


def render_awaited_module(prog: Program, style: str) -> str:
    """``prog`` with every function an ``async def``: generated functions are awaited where
    called, and the ``defer`` sites :func:`is_awaited` picks schedule an awaited call
    (``adefer(aobs, ...)``; the oracle's ``finally:`` awaits it). ``run(rec)`` drives ``f0`` to
    its end (:data:`AWAITED_PRELUDE`)."""
    return _Renderer(style, awaited=True).module(prog)


def batch_prefix(k: int) -> str:
    """The name prefix of program ``k`` in :func:`render_batch_module`."""
    return f"p{k}_"


def render_batch_module(progs: list[Program], style: str = "godefer", awaited: bool = False) -> str:
    """Several programs in one module, sharing only the prelude (stateless helpers).

    Program ``k``'s functions are ``p<k>_f0``, ``p<k>_f1``, ... and its entry point is
    ``p<k>_run`` (see :func:`batch_prefix` and :func:`batch_namespace`). ``awaited``: see
    :func:`render_awaited_module`.
    """
    r = _Renderer(style, awaited=awaited)
    r.out = [prelude(style, awaited).rstrip("\n")]
    for k, prog in enumerate(progs):
        r.prefix = batch_prefix(k)
        r.functions(prog)
    return "\n".join(r.out) + "\n"


def batch_namespace(namespace: dict[str, Any], k: int) -> dict[str, Any]:
    """Program ``k`` of a :func:`render_batch_module` module, under its own names (``run``,
    ``f0``, ...), as :func:`run_namespace` expects."""
    prefix = batch_prefix(k)
    return {key[len(prefix) :]: value for key, value in namespace.items() if key.startswith(prefix)}


# --------------------------------------------------------------------------------------------
# A pure-Python model of the semantics, for self-checks of this module only
# --------------------------------------------------------------------------------------------

MUTANTS = (
    "fifo",  # run deferred calls first-scheduled-first
    "errdefer_always",  # errdefer ignores whether an exception is in flight
    "okdefer_always",  # okdefer ignores whether an exception is in flight
    "stop_after_raise",  # once a deferred call raised, skip the rest
    "keep_first",  # an exception from a deferred call does not replace the one in flight
    "no_context",  # the replacing exception loses its __context__
    "no_exc_visible",  # deferred calls see sys.exception() as it was outside the unwinding
)


class _FakeScope:
    def __init__(self, owner: FakeGodefer) -> None:
        self.owner = owner
        self.calls: list[tuple[str, Callable[..., Any], tuple, dict]] = []

    def __enter__(self) -> None:
        self.owner.stack.append(self)

    def __exit__(self, et: object, exc: BaseException | None, tb: object) -> bool:
        popped = self.owner.stack.pop()
        assert popped is self, "fake scopes must nest"
        mutant = self.owner.mutant
        calls, self.calls = self.calls, []
        pending = exc
        for kind, fn, args, kwargs in calls if mutant == "fifo" else reversed(calls):
            if kind == "errdefer" and pending is None and mutant != "errdefer_always":
                continue
            if kind == "okdefer" and pending is not None and mutant != "okdefer_always":
                continue
            if mutant == "stop_after_raise" and pending is not exc:
                break
            try:
                if pending is None or mutant == "no_exc_visible":
                    fn(*args, **kwargs)
                else:
                    _call_while_handling(pending, fn, args, kwargs)
            except BaseException as new:
                if mutant == "keep_first":
                    continue
                if mutant == "no_context":
                    new.__context__ = None
                pending = new
        if pending is exc:
            return False
        assert pending is not None
        _raise_keeping_context(pending)
        raise AssertionError("unreachable")  # pragma: no cover


def _call_while_handling(
    exc: BaseException, fn: Callable[..., Any], args: tuple, kwargs: dict
) -> None:
    """Call ``fn`` with ``exc`` as ``sys.exception()``, as a ``finally:`` block would."""
    ctx = exc.__context__
    try:
        raise exc
    except BaseException:
        exc.__context__ = ctx  # raising it again here must not rewrite its chain
        fn(*args, **kwargs)


def _raise_keeping_context(exc: BaseException) -> None:
    ctx = exc.__context__
    try:
        raise exc
    except BaseException:
        exc.__context__ = ctx
        raise


class FakeGodefer:
    """Pure-Python stand-in for godefer's four names, for the ``fake`` rendering only.

    Scopes are explicit (``with scope():`` around every function body, see :func:`render_module`)
    and kept on one stack, which is enough for the generated programs: they are sequential, and
    every deferred call is scheduled directly in its innermost scope.
    """

    def __init__(self, mutant: str | None = None) -> None:
        if mutant is not None and mutant not in MUTANTS:
            raise ValueError(mutant)
        self.mutant = mutant
        self.stack: list[_FakeScope] = []

    def _push(self, kind: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        self.stack[-1].calls.append((kind, fn, args, kwargs))
        return fn

    def namespace(self) -> dict[str, Any]:
        def defer(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            return self._push("defer", fn, args, kwargs)

        def errdefer(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            return self._push("errdefer", fn, args, kwargs)

        def okdefer(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            return self._push("okdefer", fn, args, kwargs)

        def scope() -> _FakeScope:
            return _FakeScope(self)

        return {"defer": defer, "errdefer": errdefer, "okdefer": okdefer, "scope": scope}


# --------------------------------------------------------------------------------------------
# Running and comparing
# --------------------------------------------------------------------------------------------

CHAIN_LIMIT = 10


def exc_chain(e: BaseException | None) -> tuple:
    """The ``__context__`` chain of ``e``, outermost first, as comparable values (depth-limited).

    Each link: (type name, str(exc), has __cause__, __suppress_context__).
    """
    out = []
    while e is not None and len(out) < CHAIN_LIMIT:
        out.append((type(e).__name__, str(e), e.__cause__ is not None, e.__suppress_context__))
        e = e.__context__
    return tuple(out)


@dataclass(frozen=True)
class Outcome:
    events: tuple  # every rec(...) call, in order
    result: tuple  # ("return", value) | ("raise", exc_chain) | ("exec-error", chain)
    exception_after: str  # repr(sys.exception()) in the caller once run() is over


def run_source(
    src: str,
    filename: str,
    globals_: dict[str, Any] | None = None,
    after_exec: Callable[[dict[str, Any]], None] | None = None,
) -> Outcome:
    """``exec(compile(src, filename, "exec"), ns)``, then ``ns["run"](rec)``, observed."""
    ns: dict[str, Any] = {"__name__": filename.strip("<>").replace("-", "_")}
    if globals_:
        ns.update(globals_)
    events: list[tuple] = []

    def rec(*values: Any) -> None:
        events.append(values)

    try:
        exec(compile(src, filename, "exec"), ns)
    except BaseException as e:
        return Outcome(tuple(events), ("exec-error", exc_chain(e)), repr(sys.exception()))
    if after_exec is not None:
        after_exec(ns)
    return run_namespace(ns, rec, events)


def run_namespace(ns: dict[str, Any], rec: Callable[..., None], events: list[tuple]) -> Outcome:
    """Call ``ns["run"](rec)`` where ``rec`` appends to ``events``; works for imported modules."""
    try:
        result: tuple = ("return", ns["run"](rec))
    except BaseException as e:
        result = ("raise", exc_chain(e))
    return Outcome(tuple(events), result, repr(sys.exception()))


def run_program(prog: Program, style: str, filename: str, mutant: str | None = None) -> Outcome:
    """Render ``prog`` in ``style`` and run it from source (``fake`` uses :class:`FakeGodefer`)."""
    extra = FakeGodefer(mutant).namespace() if style == "fake" else None
    return run_source(render_module(prog, style), filename, extra)


def describe_difference(
    got: Outcome, want: Outcome, got_name: str = "godefer", want_name: str = "oracle"
) -> str:
    lines = []
    if got.events != want.events:
        k = next(
            (k for k, (a, b) in enumerate(zip(got.events, want.events, strict=False)) if a != b),
            min(len(got.events), len(want.events)),
        )
        lines.append(f"  events differ from #{k}:")
        lines.append(f"    {got_name:>8}: {list(got.events[k : k + 6])}")
        lines.append(f"    {want_name:>8}: {list(want.events[k : k + 6])}")
    if got.result != want.result:
        lines.append(f"  result {got_name:>8}: {got.result!r}")
        lines.append(f"  result {want_name:>8}: {want.result!r}")
    if got.exception_after != want.exception_after:
        lines.append(
            f"  sys.exception() after run(): {got_name}={got.exception_after} "
            f"{want_name}={want.exception_after}"
        )
    return "\n".join(lines)


def dynamic_features(prog: Program, outcome: Outcome) -> Counter:
    """Observed behaviour of a run of ``prog`` (each counted once per program)."""
    feats: set[str] = set()
    ran = {ev[0] for ev in outcome.events if ev and isinstance(ev[0], str)}
    scheduled = {}
    booms = set()
    for f in prog.functions:
        for s, _ in _walk(f.body):
            if isinstance(s, Defer) and not isinstance(s.target, FnT):
                scheduled[s.target.tag] = s.kind
                if isinstance(s.target, BoomT):
                    booms.add(s.target.tag)
    for tag, kind in scheduled.items():
        feats.add(f"{kind}_ran" if tag in ran else f"{kind}_skipped")
    if booms & ran:
        feats.add("deferred_call_raised")
    for ev in outcome.events:
        if len(ev) >= 2 and ev[0] in scheduled and isinstance(ev[1], str) and ev[1] != "None":
            feats.add("deferred_saw_exception")
        if ev and isinstance(ev[0], str) and ev[0].startswith("t"):
            feats.add("caught")
            if len(ev[1]) >= 2:
                feats.add("caught_with_context")
    if outcome.result[0] == "raise":
        feats.add("raised")
        if len(outcome.result[1]) >= 2:
            feats.add("raised_with_context")
        if len(outcome.result[1]) >= 3:
            feats.add("raised_context_depth3")
    elif outcome.result[1] is not None:
        feats.add("returned_value")
    return Counter(feats)


# --------------------------------------------------------------------------------------------
# Shrinking a failing program
# --------------------------------------------------------------------------------------------


def require_feature_coverage(
    static: Counter,
    dynamic: Counter,
    need_static: dict[str, float],
    need_dynamic: dict[str, float],
    *,
    total: int,
    what: str,
) -> None:
    """Fail unless each feature occurred in at least its fraction of `total` programs, so a
    differential test can never pass on programs that exercise nothing."""
    short = [
        f"{k}: {counts[k]} < {frac:.0%} of {total}"
        for counts, need in ((static, need_static), (dynamic, need_dynamic))
        for k, frac in need.items()
        if counts[k] < frac * total
    ]
    print(f"static features: {dict(sorted(static.items()))}")
    print(f"dynamic features: {dict(sorted(dynamic.items()))}")
    assert not short, f"{what} coverage too low: {short}"


def _stmt_variants(s: Stmt) -> Iterator[tuple]:
    """Smaller replacements (as statement sequences) for ``s``."""
    if isinstance(s, Scope):
        yield s.body
        for b in _block_variants(s.body):
            yield (Scope(b),)
    elif isinstance(s, For):
        yield s.body
        if s.count > 1:
            yield (replace(s, count=s.count - 1),)
        for b in _block_variants(s.body):
            yield (replace(s, body=b),)
    elif isinstance(s, If):
        yield s.body
        if s.orelse:
            yield s.orelse
            yield (replace(s, orelse=()),)
        for b in _block_variants(s.body):
            yield (replace(s, body=b),)
        for b in _block_variants(s.orelse):
            yield (replace(s, orelse=b),)
    elif isinstance(s, Try):
        yield s.body
        if s.handler:
            yield (replace(s, handler=()),)
        for b in _block_variants(s.body):
            yield (replace(s, body=b),)
        for b in _block_variants(s.handler):
            yield (replace(s, handler=b),)
    elif isinstance(s, Defer):
        if not isinstance(s.target, RecT):
            yield (replace(s, target=RecT(getattr(s.target, "tag", f"x{s.site}"))),)
        elif s.target.arg is not None:
            yield (replace(s, target=RecT(s.target.tag)),)
        if s.kind != "defer":
            yield (replace(s, kind="defer"),)
        if s.form != "call":
            yield (replace(s, form="call"),)
    elif isinstance(s, Rec) and s.arg is not None:
        yield (Rec(s.tag),)


def _block_variants(block: tuple) -> Iterator[tuple]:
    for k in range(len(block)):
        yield block[:k] + block[k + 1 :]
    for k, s in enumerate(block):
        for inner in _stmt_variants(s):
            yield block[:k] + inner + block[k + 1 :]


def _reachable(prog: Program) -> Program:
    seen, todo = set(), [0]
    while todo:
        k = todo.pop()
        if k in seen:
            continue
        seen.add(k)
        for s, _ in _walk(prog.function(k).body):
            if isinstance(s, Call):
                todo.append(s.fn)
            elif isinstance(s, Defer) and isinstance(s.target, FnT):
                todo.append(s.target.fn)
    return replace(prog, functions=tuple(f for f in prog.functions if f.index in seen))


def shrink(prog: Program, fails: Callable[[Program], bool], max_tries: int = 4000) -> Program:
    """Greedily minimise ``prog`` while ``fails(prog)`` stays true."""
    prog = _reachable(prog)
    tries = 0
    progress = True
    while progress and tries < max_tries:
        progress = False
        for fi, f in enumerate(prog.functions):
            for body in _block_variants(f.body):
                funcs = list(prog.functions)
                funcs[fi] = Function(f.index, body)
                cand = replace(prog, functions=tuple(funcs))
                if not validate(cand):
                    continue
                cand = _reachable(cand)
                tries += 1
                if fails(cand):
                    prog, progress = cand, True
                    break
                if tries >= max_tries:
                    break
            if progress or tries >= max_tries:
                break
    return prog


def program_size(prog: Program) -> int:
    return sum(1 for f in prog.functions for _ in _walk(f.body))


# --------------------------------------------------------------------------------------------
# Command line: print one program
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", default=str(DEFAULT_SEED))
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--style", choices=STYLES, default="godefer")
    p.add_argument("--run", action="store_true", help="run the oracle and the fake and print both")
    p.add_argument(
        "--extended",
        action="store_true",
        help="the extended stream (defers in if / loops, statement form; see generate_program)",
    )
    args = p.parse_args(argv)
    seed: int | str = int(args.seed) if args.seed.isdigit() else args.seed
    prog = generate_program(seed, args.index, extended=args.extended)
    print(render_module(prog, args.style), end="")
    if args.run:
        name = f"<oracle-{args.index}>"
        print("# oracle:", run_program(prog, "tryfinally", name))
        print("# fake:  ", run_program(prog, "fake", name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
