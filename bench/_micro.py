"""Timed micro-benchmarks: one deferred no-op, N deferred calls in a loop, the exception path.

Every candidate is a function ``f`` built once, checked (the deferred calls must run, the right
number of times, at the function's exit), then timed in one process: loops scaled so one repeat
takes a fixed budget, GC off, repeats interleaved round robin with a rotating start, min of the
repeats (timeit-style). Runtime-path subjects and try/finally comparators are built with
``exec`` from strings (no source file, so godefer can never prepare them); prepared subjects
come from ``bench/_prepared.py`` through godefer's import hook.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Unavailable(Exception):
    """A candidate that cannot be measured here; the message says why."""


def _noop():
    pass


def exec_function(src: str, namespace: dict | None = None, name: str = "f"):
    """Define ``name`` from source with no file behind it: godefer keeps it on the runtime
    path."""
    namespace = {} if namespace is None else namespace
    exec(compile(src, "<godefer-bench>", "exec"), namespace)
    return namespace[name]


# ---------------------------------------------------------------------------------------------
# library access (lazy: nothing is imported until a candidate asks)


def godefer_defer():
    try:
        import godefer
    except ImportError as exc:
        raise Unavailable(f"godefer not importable: {exc}") from None
    return godefer.defer


def prepared(name: str):
    godefer_defer()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import _prepared

    func = getattr(_prepared, name)
    if not _prepared.is_prepared(func):
        raise Unavailable("the import hook did not prepare bench/_prepared.py (runtime path)")
    return func


def python_defer():
    # python-defer (yasyf/python-defer): ``from defer.sugarfree import defer; defer(fn, *args)``.
    # It works through sys.settrace: importing it leaves a global trace function installed, and
    # each call installs one again if none is. clear_trace() removes it after each of its runs
    # so the other candidates are timed without a tracer; its own samples include the tracer,
    # as a user would pay it.
    prior = sys.gettrace()
    try:
        from defer.sugarfree import defer as pd_defer
    except ImportError:
        raise Unavailable("not installed (pip install python-defer)") from None
    except Exception as exc:
        raise Unavailable(f"does not run on this version: {type(exc).__name__}: {exc}") from None
    finally:
        sys.settrace(prior)
    return pd_defer


def clear_trace():
    sys.settrace(None)


def deferrer():
    # deferrer (Azureblade3808/py-deferrer): ``defer(fn)(*args)``; on 3.11 a function must be
    # wrapped in ``defer_scope`` (its README), on 3.12+ it works bare.
    try:
        import deferrer as dr
    except ImportError:
        raise Unavailable("not installed (pip install deferrer)") from None
    except Exception as exc:
        raise Unavailable(f"does not run on this version: {type(exc).__name__}: {exc}") from None
    return dr


def deferrer_function(src: str):
    dr = deferrer()
    func = exec_function(src, {"d": dr.defer})
    return dr.defer_scope(func) if sys.version_info < (3, 12) else func


DEFERRER_311_NOTE = "wrapped in defer_scope (required on 3.11)"

# ---------------------------------------------------------------------------------------------
# candidates


class Candidate:
    def __init__(
        self,
        key: str,
        label: str,
        build: Callable,
        cleanup: Callable | None = None,
        expected: int | None = None,
    ):
        self.key = key
        self.expected = expected  # deferred calls per call of f, when not the table's
        self.label = label
        self.build = build  # () -> f
        self.cleanup = cleanup or (lambda: None)  # undo global side effects (python-defer)
        self.func = None
        self.status = "ok"
        self.note = ""
        self.loops = 0
        self.samples: list[float] = []

    def row(self, unit_count: int = 1) -> dict:
        best = min(self.samples) / unit_count if self.samples else None
        return {
            "label": self.label,
            "status": self.status,
            "note": self.note,
            "ns": best,
            "loops": self.loops,
            "samples": [s / unit_count for s in self.samples],
        }


def _src(body: str, args: str = "fn") -> str:
    lines = body.strip("\n").split("\n")
    return f"def f({args}):\n" + "".join(f"    {ln}\n" for ln in lines)


def one_defer_candidates() -> list[Candidate]:
    rt = lambda body: lambda: exec_function(_src(body), {"defer": godefer_defer()})
    plain = lambda body: lambda: exec_function(_src(body), {"ExitStack": contextlib.ExitStack})
    exits = lambda body: (
        lambda: exec_function(
            _src(body), {"ExitStack": contextlib.ExitStack, "Exits": _exits_class()}
        )
    )
    return [
        Candidate("plain", "plain call fn() (no cleanup guarantee)", plain("fn()")),
        Candidate("tryfinally", "try/finally (hand-written: the limit)", plain(TRY_ONE)),
        Candidate(
            "tryfinally_if",
            "try/finally, call under an if (hand-written)",
            plain(TRY_IF),
        ),
        Candidate(
            "godefer_prepared",
            "godefer prepared: top-level defer (open-coded)",
            lambda: prepared("one_defer"),
        ),
        Candidate(
            "godefer_prepared_block",
            "godefer prepared: defer inside an if (open-coded)",
            lambda: prepared("one_defer_in_block"),
        ),
        Candidate(
            "godefer_prepared_expr",
            "godefer prepared: _ = defer(fn) (open-coded)",
            lambda: prepared("one_defer_expression"),
        ),
        Candidate(
            "godefer_prepared_scope",
            "godefer prepared: in a scope() block (open-coded)",
            lambda: prepared("one_defer_scope"),
        ),
        Candidate(
            "tryfinally_star",
            "try/finally calling args[0](*args[1:]) (hand-written)",
            plain(TRY_STAR),
        ),
        Candidate(
            "godefer_prepared_star",
            "godefer prepared: defer(*args) (open-coded)",
            lambda: prepared("one_defer_star"),
        ),
        Candidate(
            "godefer_prepared_star_returned",
            "godefer prepared: return defer(*args) (open-coded)",
            lambda: prepared("one_defer_star_returned"),
        ),
        Candidate("with_cm", "with Exits(fn): (hand-written)", exits(WITH_CM)),
        Candidate(
            "godefer_prepared_scoped",
            "godefer prepared: scoped(Exits(fn)) (open-coded)",
            lambda: prepared("one_scoped"),
        ),
        Candidate("godefer_runtime", "godefer runtime path (exec'd function)", rt("defer(fn)")),
        Candidate("exitstack", "contextlib.ExitStack().callback(fn)", plain(EXITSTACK_ONE)),
        Candidate(
            "exitstack_star",
            "contextlib.ExitStack().callback(args[0], *args[1:])",
            plain(EXITSTACK_STAR),
        ),
        Candidate(
            "exitstack_cm",
            "contextlib.ExitStack().enter_context(Exits(fn))",
            exits(EXITSTACK_CM),
        ),
        Candidate(
            "python_defer",
            "python-defer  defer(fn)",
            lambda: exec_function(_src("d(fn)"), {"d": python_defer()}),
            cleanup=clear_trace,
        ),
        Candidate("deferrer", "deferrer  defer(fn)()", lambda: deferrer_function(_src("d(fn)()"))),
    ]


def _exits_class() -> type:
    """bench/_prepared.py's Exits, so both sides of the scoped() rows make the same object."""
    prepared("one_scoped")
    from bench import _prepared

    return _prepared.Exits


# What `scoped(Exits(fn))` is by hand, and with an ExitStack.
WITH_CM = """
with Exits(fn):
    pass
"""
EXITSTACK_CM = """
with ExitStack() as stack:
    stack.enter_context(Exits(fn))
"""
TRY_ONE = """
try:
    pass
finally:
    fn()
"""
# What `defer(*(fn,))` is by hand: the callee and its arguments come from one tuple.
TRY_STAR = """
args = (fn,)
try:
    pass
finally:
    args[0](*args[1:])
"""
# What `if fn: defer(fn)` is by hand: the condition decides at the exit too.
TRY_IF = """
armed = False
try:
    if fn:
        armed = True
finally:
    if armed:
        fn()
"""
# What `defer(*(fn,))` is with an ExitStack: the callee and its arguments come from one tuple.
EXITSTACK_STAR = """
args = (fn,)
with ExitStack() as stack:
    stack.callback(args[0], *args[1:])
"""
EXITSTACK_ONE = """
with ExitStack() as stack:
    stack.callback(fn)
"""


def loop_candidates() -> list[Candidate]:
    args = "fn, n"
    loop = "for _ in range(n):\n    {}"
    return [
        Candidate(
            "listfinally",
            "list + try/finally (hand-written)",
            lambda: exec_function(_src(LIST_FINALLY, args)),
        ),
        Candidate(
            "godefer_prepared",
            "godefer prepared (open-coded list)",
            lambda: prepared("loop_defer"),
        ),
        Candidate(
            "godefer_runtime",
            "godefer runtime path",
            lambda: exec_function(_src(loop.format("defer(fn)"), args), {"defer": godefer_defer()}),
        ),
        Candidate(
            "exitstack",
            "contextlib.ExitStack",
            lambda: exec_function(
                _src(
                    "with ExitStack() as st:\n    for _ in range(n):\n        st.callback(fn)", args
                ),
                {"ExitStack": contextlib.ExitStack},
            ),
        ),
        Candidate(
            "python_defer",
            "python-defer",
            lambda: exec_function(_src(loop.format("d(fn)"), args), {"d": python_defer()}),
            cleanup=clear_trace,
        ),
        Candidate(
            "deferrer",
            "deferrer",
            lambda: deferrer_function(_src(loop.format("d(fn)()"), args)),
        ),
    ]


LIST_FINALLY = """
pending = []
try:
    for _ in range(n):
        pending.append(fn)
finally:
    for g in reversed(pending):
        g()
"""


async def _anoop():
    pass


def awaited_candidates() -> list[Candidate]:
    """One awaited no-op at a coroutine's exit (adefer), each call driven to its end by send()."""
    plain = lambda body: (
        lambda: exec_function("async " + _src(body), {"AsyncExitStack": contextlib.AsyncExitStack})
    )
    return [
        Candidate("tryfinally", "try/finally awaiting fn() (hand-written)", plain(TRY_AWAIT)),
        Candidate(
            "godefer_prepared",
            "godefer prepared: adefer(fn) (open-coded)",
            lambda: prepared("one_adefer"),
        ),
        Candidate(
            "listfinally",
            "list + try/finally awaiting each, one-pass loop (hand-written)",
            plain(LIST_AWAIT),
        ),
        Candidate(
            "godefer_prepared_core",
            "godefer prepared: adefer(fn) in a one-pass loop (core-held)",
            lambda: prepared("one_adefer_core"),
        ),
        Candidate(
            "exitstack",
            "contextlib.AsyncExitStack().push_async_callback(fn)",
            plain(ASYNC_EXITSTACK),
        ),
    ]


# What `for _ in range(1): adefer(fn)` is by hand: the loop's calls in a list.
LIST_AWAIT = """
pending = []
try:
    for _ in range(1):
        pending.append(fn)
finally:
    for g in reversed(pending):
        await g()
"""
TRY_AWAIT = """
try:
    pass
finally:
    await fn()
"""
ASYNC_EXITSTACK = """
async with AsyncExitStack() as stack:
    stack.push_async_callback(fn)
"""


def _nested_finally(depth: int, body: str = "raise ValueError") -> str:
    lines = []
    for i in range(depth):
        lines.append("    " * i + "try:")
    lines.append("    " * depth + body)
    for i in reversed(range(depth)):
        lines.append("    " * i + "finally:")
        lines.append("    " * (i + 1) + "fn()")
    return "\n".join(lines)


def return_candidates(count: int) -> list[Candidate]:
    """Several deferred no-ops and a normal return (the instruction-count tables only)."""
    name = {2: "return_two", 10: "return_ten"}[count]
    return [
        Candidate(
            "tryfinally",
            f"try/finally x{count} (hand-written)",
            lambda: exec_function(_src(_nested_finally(count, "pass"))),
        ),
        Candidate("godefer_prepared", "godefer prepared", lambda: prepared(name)),
    ]


def exception_candidates(count: int) -> list[Candidate]:
    defers = "\n".join(["defer(fn)"] * count) + "\nraise ValueError"
    stack = "\n".join(["    st.callback(fn)"] * count)
    name = "raise_one" if count == 1 else "raise_ten"
    if count not in (1, 10):
        raise ValueError(count)
    return [
        Candidate(
            "plain",
            "raise, no cleanup",
            lambda: exec_function(_src("raise ValueError")),
            expected=0,
        ),
        Candidate(
            "tryfinally",
            f"try/finally x{count} (hand-written)",
            lambda: exec_function(_src(_nested_finally(count))),
        ),
        Candidate("godefer_prepared", "godefer prepared", lambda: prepared(name)),
        Candidate(
            "godefer_runtime",
            "godefer runtime path",
            lambda: exec_function(_src(defers), {"defer": godefer_defer()}),
        ),
        Candidate(
            "exitstack",
            "contextlib.ExitStack",
            lambda: exec_function(
                _src(f"with ExitStack() as st:\n{stack}\n    raise ValueError"),
                {"ExitStack": contextlib.ExitStack},
            ),
        ),
    ]


# ---------------------------------------------------------------------------------------------
# timing

_TIMERS = {
    "call1": """
def timer(n, f, fn, arg, _pc):
    t0 = _pc()
    for _ in range(n):
        f(fn)
    return _pc() - t0
""",
    "call2": """
def timer(n, f, fn, arg, _pc):
    t0 = _pc()
    for _ in range(n):
        f(fn, arg)
    return _pc() - t0
""",
    "await": """
def timer(n, f, fn, arg, _pc):
    t0 = _pc()
    for _ in range(n):
        try:
            f(fn).send(None)
        except StopIteration:
            pass
    return _pc() - t0
""",
    "raise": """
def timer(n, f, fn, arg, _pc):
    t0 = _pc()
    for _ in range(n):
        try:
            f(fn)
        except ValueError:
            pass
    return _pc() - t0
""",
}
TIMERS = {k: exec_function(v, name="timer") for k, v in _TIMERS.items()}


def _time_once(timer, func, arg, loops: int) -> int:
    """Nanoseconds for ``loops`` calls, GC off (as timeit does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        fn = _anoop if timer is TIMERS["await"] else _noop
        return timer(loops, func, fn, arg, time.perf_counter_ns)
    finally:
        if was_enabled:
            gc.enable()


def autorange(run_once: Callable[[int], float], budget_s: float) -> int:
    """Smallest loop count in 1, 2, 5, 10, 20, 50, ... whose run takes at least ``budget_s``."""
    loops = 1
    while True:
        for mult in (1, 2, 5):
            n = loops * mult
            if run_once(n) >= budget_s * 1e9:
                return n
        loops *= 10


def drive(coro):
    """Runs a coroutine that never suspends to its end; returns its value."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise Unavailable("the coroutine suspended")


def _awaited_probe(ran: list[int]) -> Callable:
    async def probe():
        ran.append(1)

    return probe


def _check(cand: Candidate, kind: str, arg, expected: int) -> None:
    ran: list[int] = []
    probe = lambda: ran.append(1)
    raised = False
    try:
        if kind == "await":
            drive(cand.func(_awaited_probe(ran)))
        elif kind == "call2":
            cand.func(probe, arg)
        else:
            cand.func(probe)
    except ValueError:
        raised = True
    finally:
        cand.cleanup()
    if kind == "raise" and not raised:
        raise Unavailable("the function did not raise")
    if len(ran) != expected:
        raise Unavailable(f"deferred calls ran {len(ran)} times instead of {expected}")


def measure(
    cands: list[Candidate],
    kind: str,
    budget_s: float,
    repeats: int,
    *,
    arg=None,
    expected: int = 1,
) -> list[Candidate]:
    timer = TIMERS[kind]
    for cand in cands:
        try:
            cand.func = cand.build()
            _check(cand, kind, arg, expected if cand.expected is None else cand.expected)
        except Unavailable as exc:
            cand.status, cand.note = "unavailable", str(exc)
        except Exception as exc:
            cand.status = "unavailable"
            cand.note = f"does not run on this version: {type(exc).__name__}: {exc}"
        finally:
            cand.cleanup()
        if cand.key == "deferrer" and cand.status == "ok" and sys.version_info < (3, 12):
            cand.note = DEFERRER_311_NOTE
    live = [c for c in cands if c.status == "ok"]
    for cand in live:

        def once(n, cand=cand):
            try:
                return _time_once(timer, cand.func, arg, n)
            finally:
                cand.cleanup()

        cand.loops = autorange(once, budget_s)
    for rep in range(repeats):
        order = live[rep % len(live) :] + live[: rep % len(live)] if live else []
        for cand in order:
            try:
                elapsed = _time_once(timer, cand.func, arg, cand.loops)
            finally:
                cand.cleanup()
            cand.samples.append(elapsed / cand.loops)
    return cands


def _ratios(rows: dict, base_key: str, exitstack_key: str | None = "exitstack") -> dict:
    base = rows.get(base_key, {}).get("ns")
    es = rows.get(exitstack_key, {}).get("ns") if exitstack_key else None
    for row in rows.values():
        ns = row["ns"]
        row["ratio"] = ns / base if ns and base else None
        row["exitstack_over_this"] = es / ns if ns and es else None
    return rows


def run_one_defer(budget_s: float, repeats: int) -> dict:
    cands = measure(one_defer_candidates(), "call1", budget_s, repeats)
    rows = _ratios({c.key: c.row() for c in cands}, "tryfinally")
    # A defer inside an `if`, and defer(*args), against the same code written by hand.
    for key, hand in MATCHED.items():
        row, by_hand = rows.get(key, {}), rows.get(hand, {})
        if row.get("ns") and by_hand.get("ns"):
            row["ratio_matched"] = row["ns"] / by_hand["ns"]
        # ... and against an ExitStack doing the same (the plain one where there is none).
        stack = rows.get(MATCHED_EXITSTACK.get(key, ""), {})
        if row.get("ns") and stack.get("ns"):
            row["exitstack_matched_over_this"] = stack["ns"] / row["ns"]
    return rows


# The ExitStack that does the same as a MATCHED form.
MATCHED_EXITSTACK = {
    "godefer_prepared_star": "exitstack_star",
    "godefer_prepared_star_returned": "exitstack_star",
    "godefer_prepared_scoped": "exitstack_cm",
}
# Forms whose hand-written try/finally does more than call fn(): that one is their baseline too.
MATCHED = {
    "godefer_prepared_block": "tryfinally_if",
    "godefer_prepared_star": "tryfinally_star",
    "godefer_prepared_star_returned": "tryfinally_star",
    "godefer_prepared_scoped": "with_cm",
}


LOOP_NS = (1, 10, 1000)


def run_awaited(budget_s: float, repeats: int) -> dict:
    cands = measure(awaited_candidates(), "await", budget_s, repeats)
    rows = _ratios({c.key: c.row() for c in cands}, "tryfinally")
    # adefer in a loop against the same loop by hand (its calls in a list, awaited in a finally).
    row, by_hand = rows.get("godefer_prepared_core", {}), rows.get("listfinally", {})
    if row.get("ns") and by_hand.get("ns"):
        row["ratio_matched"] = row["ns"] / by_hand["ns"]
    return rows


def run_loops(budget_s: float, repeats: int) -> dict:
    out = {}
    for n in LOOP_NS:
        cands = measure(loop_candidates(), "call2", budget_s, repeats, arg=n, expected=n)
        out[str(n)] = _ratios({c.key: c.row(n) for c in cands}, "listfinally")
    return out


def run_exceptions(budget_s: float, repeats: int) -> dict:
    out = {}
    for count in (1, 10):
        cands = measure(exception_candidates(count), "raise", budget_s, repeats, expected=count)
        out[str(count)] = _ratios({c.key: c.row() for c in cands}, "tryfinally")
    return out
