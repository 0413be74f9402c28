"""Differential test of awaited exits (adefer): prepared async programs against the try/finally
oracle with ``await`` in its ``finally:`` blocks.

Each program of ``oracle_programs`` (base and extended streams) is rendered with every function
an ``async def`` (``op.render_awaited_module``): generated functions are awaited where called,
and some ``defer`` sites become ``adefer`` of an awaitable twin of their callee (``aobs``,
``aboom``, ``arec``, or the generated coroutine function itself), which suspends once before it
records. The oracle awaits the same call in the ``finally:`` that the site opens. Run by a plain
driver (``drive``: ``send(None)`` until done), both must agree on every recorded event (with
``sys.exception()`` inside every deferred call), the result, the whole ``__context__`` chain of
an escaping exception, and ``sys.exception()`` afterwards.

A coroutine whose awaited calls are all ``adefer`` statements outside loops and blocks keeps them
in frame locals and awaits them inline; any other function that schedules an awaited call keeps
its calls in the core and steps its exits in its own frame (``_async_exits``); the others are
open-coded coroutines. A self-check makes sure both awaited paths are compared. The runtime path
cannot await (NotPreparedError), so only prepared code is compared.

Programs whose awaited translation nests near CPython's block limit are left out
(``op.awaited_translation_fits``: CPython 3.12.1's compiler crashes on some of them, on the
oracle's code); a self-check bounds how many.

Environment: ``GODEFER_ORACLE_N`` (programs, default 1000) and ``GODEFER_ORACLE_SEED``.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

import module_files
import oracle_programs as op

N = int(os.environ.get("GODEFER_ORACLE_N", "1000"))
_seed_text = os.environ.get("GODEFER_ORACLE_SEED", str(op.DEFAULT_SEED))
SEED: int | str = int(_seed_text) if _seed_text.isdigit() else _seed_text
CHUNKS = 4
BATCH = 10


@pytest.fixture(scope="module", autouse=True)
def _remove_module_dirs():
    yield
    module_files.remove_made_dirs()


def _program(i: int) -> op.Program:
    return op.generate_program(SEED, i, extended=i % 2 == 1)


def _oracle(prog: op.Program, i: int) -> op.Outcome:
    return op.run_source(op.render_awaited_module(prog, "tryfinally"), f"<async-oracle-{i}>")


def _awaits(prog: op.Program) -> bool:
    return any(
        isinstance(s, op.Defer) and op.is_awaited(s)
        for f in prog.functions
        for s, _ in op._walk(f.body)
    )


def _prepared(progs: list[op.Program]) -> list[op.Outcome]:
    """Import the programs ``BATCH`` to a module (the import hook prepares them) and run each."""
    out: list[op.Outcome] = []
    for j in range(0, len(progs), BATCH):
        batch = progs[j : j + BATCH]
        src = op.render_batch_module(batch, "godefer", awaited=True)
        (module,) = module_files.import_sources([src], "godefer_oracle_async")
        if isinstance(module, BaseException):
            raise module
        for k in range(len(batch)):
            ns = op.batch_namespace(vars(module), k)
            events: list[tuple] = []
            out.append(op.run_namespace(ns, lambda *values, ev=events: ev.append(values), events))
    return out


def _compared(lo: int, hi: int) -> list[int]:
    return [i for i in range(lo, hi) if op.awaited_translation_fits(_program(i))]


def _failures(lo: int, hi: int) -> list[str]:
    indexes = _compared(lo, hi)
    progs = [_program(i) for i in indexes]
    failures = []
    for i, prog, got in zip(indexes, progs, _prepared(progs), strict=True):
        want = _oracle(prog, i)
        if got != want:
            failures.append(
                f"program {i} (extended={i % 2 == 1}):\n"
                + op.describe_difference(got, want, "prepared", "oracle")
                + "\n"
                + op.render_awaited_module(prog, "godefer")
            )
    return failures


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_awaited_exits_match_tryfinally(chunk):
    lo, hi = chunk * N // CHUNKS, (chunk + 1) * N // CHUNKS
    failures = _failures(lo, hi)
    assert not failures, f"{len(failures)} of {hi - lo} programs differ; first:\n{failures[0]}"


def test_selfcheck_few_programs_are_left_out():
    left_out = N - len(_compared(0, N))
    assert left_out <= N // 50, f"{left_out} of {N} programs nest too deeply to compare"


def test_selfcheck_programs_reach_awaited_exits():
    """The programs exercise what this test is for: awaited calls in most programs, mixed with
    plain ones in the same scope, in blocks, raising, and with an outer handled exception."""
    seen: Counter = Counter()
    for i in range(min(N, 300)):
        prog = _program(i)
        seen["awaits"] += _awaits(prog)
        seen["outer handled"] += prog.outer_handled and _awaits(prog)
        for f in prog.functions:
            sites = [s for s, _ in op._walk(f.body) if isinstance(s, op.Defer)]
            kinds = {op.is_awaited(s) for s in sites}
            seen["mixed scopes"] += kinds == {True, False}
            seen["awaited raises"] += any(
                op.is_awaited(s) and isinstance(s.target, op.BoomT) for s in sites
            )
            seen["awaited functions"] += any(isinstance(s.target, op.FnT) for s in sites)
        seen["blocks"] += any(
            isinstance(s, op.Scope) and _awaits(op.Program((op.Function(0, s.body),), 0))
            for f in prog.functions
            for s, _ in op._walk(f.body)
        )
    assert seen["awaits"] >= 150, seen
    for key in ("outer handled", "mixed scopes", "awaited raises", "awaited functions", "blocks"):
        assert seen[key] >= 10, seen


def test_selfcheck_awaited_calls_are_open_coded_and_core_held():
    """Both ways an awaiting coroutine exits are compared: with its adefer statements in frame
    locals, awaited inline (the core steps what is left), and with every call kept by the core
    (adefer in a loop or a block)."""
    seen: Counter = Counter()
    progs = [_program(i) for i in range(min(N, 100))]
    for j in range(0, len(progs), BATCH):
        src = op.render_batch_module(progs[j : j + BATCH], "godefer", awaited=True)
        (module,) = module_files.import_sources([src], "godefer_oracle_async_kinds")
        assert not isinstance(module, BaseException), module
        for value in vars(module).values():
            code = getattr(value, "__code__", None)
            if code is None or not code.co_flags & 0x80:  # CO_COROUTINE
                continue
            seen["open-coded awaited slots"] += "__godefer_await__" in code.co_names
            seen["core-held awaited calls"] += "acomplete" in code.co_names
    assert seen["open-coded awaited slots"] >= 10, seen
    assert seen["core-held awaited calls"] >= 20, seen


def test_selfcheck_oracle_tells_awaited_order():
    """A prepared run that awaited its calls first-scheduled-first would be caught: the oracle
    of a program with two awaited sites in one scope differs from its FIFO variant."""
    for i in range(200):
        prog = _program(i)
        for f in prog.functions:
            sites = [s for s in f.body if isinstance(s, op.Defer) and op.is_awaited(s)]
            if len(sites) < 2:
                continue
            a, b = sites[:2]
            body = list(f.body)
            ia, ib = body.index(a), body.index(b)
            body[ia], body[ib] = b, a
            swapped = op.Program(
                tuple(op.Function(g.index, tuple(body)) if g is f else g for g in prog.functions),
                prog.entry_arg,
                prog.outer_handled,
            )
            if _oracle(swapped, i) != _oracle(prog, i):
                return
    pytest.fail("no program whose awaited order the oracle tells apart")
