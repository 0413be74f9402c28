"""Reference and memory leak check for godefer (run by scripts/refleak.sh).

Release builds have no ``sys.gettotalrefcount``, so a leak is looked for four ways, each over
100,000 calls (``GODEFER_REFLEAK_CALLS``) of a function that uses godefer, after a warm-up:

* the reference count of the argument handed to the deferred call (a leaked reference to the
  call's arguments shows up one for one);
* the number of objects the garbage collector tracks (a leaked frame, exception, scope object);
* bytes traced by ``tracemalloc`` (leaked Python allocations of any kind), on a shorter run;
* resident set size (leaked C++ allocations, which the other three cannot see);
* and ``sys.gettotalrefcount`` too, when the interpreter is a debug build.

Every scenario runs twice: from code built by ``exec`` of a string (godefer's runtime path) and
from the same source imported from a real module file (prepared by godefer's import hook, when
it does). Exits non-zero when a bound is exceeded or a deferred call did not run as often as it
should have.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

import godefer

CALLS = int(os.environ.get("GODEFER_REFLEAK_CALLS", "100000"))
WARMUP = 5000

# Bounds on growth across CALLS calls (after warm-up). A leak of one object or one reference
# per call exceeds each of them by orders of magnitude.
MAX_REF_GROWTH = 0  # references to the deferred call's argument
MAX_OBJ_GROWTH = 64  # gc-tracked objects
MAX_TRACED_GROWTH = 64 * 1024  # bytes, over CALLS // 5 calls under tracemalloc
MAX_RSS_GROWTH = 2 * 1024 * 1024  # bytes (64 B of library memory per pending call is the bar)
MAX_TOTALREF_GROWTH = 2000  # debug builds only

SCENARIOS_SRC = """
import godefer
from godefer import ScopeBound, adefer, ascoped, defer, errdefer, okdefer, recover, scope, scoped

COUNT = [0]


class Boom(Exception):
    pass


def sink(x):
    COUNT[0] += 1


def sink_raises(x):
    COUNT[0] += 1
    raise Boom(x)


class CM:
    def __init__(self, x):
        self.x = x

    def __enter__(self):
        return self.x

    def __exit__(self, typ, exc, tb):
        COUNT[0] += 1
        return False


class Closable:
    def __init__(self, x):
        self.x = x

    def close(self):
        COUNT[0] += 1


class Res(ScopeBound):
    def __init__(self, x):
        self.x = x

    def close(self):
        COUNT[0] += 1


def s_defer(x):
    defer(sink, x)
    return x


def s_defer_kwargs(x):
    defer(sink, x=x)
    return x


def s_defer_three(x):
    defer(sink, x)
    defer(sink, x)
    defer(sink, x)
    return x


def s_errdefer_raise(x):
    errdefer(sink, x)
    raise Boom(x)


def s_okdefer_raise(x):
    okdefer(sink, x)
    raise Boom(x)


def s_defer_raise(x):
    defer(sink, x)
    raise Boom(x)


def s_deferred_raises(x):
    defer(sink_raises, x)
    return x


def s_scoped_cm(x):
    return scoped(CM(x))


def s_scoped_close(x):
    scoped(Closable(x))
    return x


def s_scopebound(x):
    Res(x)
    return x


def s_with_scope(x):
    with scope():
        defer(sink, x)
    return x


def s_with_scope_loop(x):
    for _ in range(3):
        with scope():
            defer(sink, x)
    return x


def s_block_recover(x):
    with scope():
        defer(sink, x)
        defer(_recovers)
        raise Boom(x)
    return x


def s_block_scopebound(x):
    with scope():
        defer(sink, x)
        Res(x)
    return x


def s_block_raise(x):
    with scope():
        errdefer(sink, x)
        raise Boom(x)


def s_scoped_loop(x):
    for _ in range(2):
        scoped(CM(x))
        scoped(Closable(x))
    return x


def _gen(x):
    defer(sink, x)
    yield x
    yield x


def s_generator_exhausted(x):
    for _ in _gen(x):
        pass
    return x


def s_generator_abandoned(x):
    g = _gen(x)
    next(g)
    g.close()
    return x


def s_loop(x):
    for _ in range(3):
        defer(sink, x)
    return x


def s_loop_kwargs(x):
    for _ in range(2):
        defer(sink, x=x)
    return x


def s_loop_plain(x):
    for _ in range(2):
        defer(lambda: sink(x))
    return x


def s_loop_entry_raises(x):
    for i in range(2):
        defer(sink_raises if i else sink, x)
    return x


def s_loop_raise(x):
    for _ in range(2):
        defer(sink, x)
    raise Boom(x)


def _recovers():
    COUNT[0] += 1
    godefer.recover()


def s_recover_inline(x):
    defer(_recovers)
    raise Boom(x)


def s_expression(x):
    _ = defer(sink, x)
    return x


def s_decorated(x):
    @defer
    def _():
        sink(x)

    return x


def s_star(x):
    defer(*(sink, x))
    errdefer(*(sink,), x=x)
    defer(sink, x)
    defer(*(sink, x), **{})
    return x


def s_star_raise(x):
    defer(sink, x)
    Res(x)
    defer(*(sink, x))
    raise Boom(x)


def s_pair(x):
    _ = (defer(sink, x), errdefer(sink, x), defer(sink, defer(sink, x)))
    return x


def s_pushed(x):
    _ = (defer(sink, x), defer(sink, x)) if x is not None else None
    return x


def s_pushed_raise(x):
    _ = (defer(sink, x), errdefer(sink, x)) if x is not None else None
    raise Boom(x)


def s_scoped_expression(x):
    return [scoped(CM(x)), scoped(Closable(x)).x][0]


def s_nested_blocks(x):
    with scope():
        defer(sink, x)
        with scope():
            defer(sink, x)
            Res(x)
    return x


def s_nested_blocks_raise(x):
    with scope():
        defer(sink, x)
        with scope():
            errdefer(sink, x)
            raise Boom(x)


def s_comprehension(x):
    defer(sink, x)
    return [scoped(CM(x)) for _ in range(2) if defer(sink, x)][0]


def s_loop_expression(x):
    for _ in range(2):
        _ = defer(sink, x)
        _ = [scoped(CM(x))]
    return x


class _Suspend:
    def __await__(self):
        yield


async def asink(x):
    await _Suspend()
    COUNT[0] += 1


async def asink_raises(x):
    await _Suspend()
    COUNT[0] += 1
    raise Boom(x)


class ACM:
    def __init__(self, x):
        self.x = x

    async def __aenter__(self):
        await _Suspend()
        return self.x

    async def __aexit__(self, typ, exc, tb):
        await _Suspend()
        COUNT[0] += 1


def _drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


async def _adefer(x):
    adefer(asink, x)
    defer(sink, x)
    return x


def s_adefer(x):
    return _drive(_adefer(x))


async def _adefer_raise(x):
    adefer(asink, x)
    await ascoped(ACM(x))
    raise Boom(x)


def s_adefer_raise(x):
    return _drive(_adefer_raise(x))


async def _awaited_raises(x):
    adefer(asink, x)
    adefer(asink_raises, x)


def s_awaited_raises(x):
    return _drive(_awaited_raises(x))


async def _ablock(x):
    for _ in range(2):
        with scope():
            adefer(asink, x)


def s_ablock(x):
    return _drive(_ablock(x))


async def _arecover(x):
    @adefer
    async def _():
        await _Suspend()
        COUNT[0] += 1
        recover()

    raise Boom(x)


def s_arecover(x):
    return _drive(_arecover(x))


async def _aslots_raise(x):
    adefer(asink, x)
    defer(sink, x)
    adefer(arecovers, x)
    adefer(asink_raises, x)
    raise Boom(x)


async def arecovers(x):
    await _Suspend()
    COUNT[0] += 1
    recover()


def s_aslots_raise(x):
    return _drive(_aslots_raise(x))


async def _aslots_core(x):
    adefer(asink, x)
    Res(x)
    adefer(asink, x)


def s_aslots_core(x):
    return _drive(_aslots_core(x))


async def _aclosed(x):
    defer(sink, x)
    adefer(asink, x)


def s_aclosed(x):
    coro = _aclosed(x)
    coro.send(None)  # suspended in asink: close() throws GeneratorExit there
    coro.close()
"""

# name -> (exception the call raises or None, deferred calls made per call)
SCENARIOS = {
    "defer": (None, 1),
    "defer(kwargs)": (None, 1),
    "defer x3": (None, 3),
    "errdefer + exception": ("Boom", 1),
    "okdefer + exception": ("Boom", 0),
    "defer + exception": ("Boom", 1),
    "deferred call raises": ("Boom", 1),
    "scoped(context manager)": (None, 1),
    "scoped(closable)": (None, 1),
    "ScopeBound": (None, 1),
    "with scope()": (None, 1),
    "with scope() in a loop": (None, 3),
    "scoped() in a loop": (None, 4),
    "with scope() + recover()": (None, 2),
    "with scope() + ScopeBound": (None, 2),
    "with scope() + exception": ("Boom", 1),
    "generator exhausted": (None, 1),
    "generator closed early": (None, 1),
    "defer in a loop": (None, 3),
    "defer(kwargs) in a loop": (None, 2),
    "defer(lambda) in a loop": (None, 2),
    "loop entry raises": ("Boom", 2),
    "loop + exception": ("Boom", 2),
    "recover() inline": (None, 1),
    "defer as an expression": (None, 1),
    "@defer def": (None, 1),
    "defer(*args)": (None, 3),
    "defer(*args) + exception": ("Boom", 3),
    "several defers in a statement": (None, 3),
    "defers pushed onto a list": (None, 2),
    "pushed + exception": ("Boom", 2),
    "scoped() in an expression": (None, 2),
    "expressions in a loop": (None, 4),
    "nested blocks + ScopeBound": (None, 3),
    "nested blocks + exception": ("Boom", 2),
    "defers in a comprehension": (None, 5),
    "adefer": (None, 2),
    "adefer + ascoped + exception": ("Boom", 2),
    "awaited call raises": ("Boom", 2),
    "adefer in a block": (None, 2),
    "recover() awaited": (None, 1),
    "closed in an awaited exit": (None, 1),
    "adefer slots + exception + recover()": (None, 4),
    "adefer slots + ScopeBound": (None, 3),
}
FUNCS = {
    "defer": "s_defer",
    "defer(kwargs)": "s_defer_kwargs",
    "defer x3": "s_defer_three",
    "errdefer + exception": "s_errdefer_raise",
    "okdefer + exception": "s_okdefer_raise",
    "defer + exception": "s_defer_raise",
    "deferred call raises": "s_deferred_raises",
    "scoped(context manager)": "s_scoped_cm",
    "scoped(closable)": "s_scoped_close",
    "ScopeBound": "s_scopebound",
    "with scope()": "s_with_scope",
    "with scope() in a loop": "s_with_scope_loop",
    "scoped() in a loop": "s_scoped_loop",
    "with scope() + recover()": "s_block_recover",
    "with scope() + ScopeBound": "s_block_scopebound",
    "with scope() + exception": "s_block_raise",
    "generator exhausted": "s_generator_exhausted",
    "generator closed early": "s_generator_abandoned",
    "defer in a loop": "s_loop",
    "defer(kwargs) in a loop": "s_loop_kwargs",
    "defer(lambda) in a loop": "s_loop_plain",
    "loop entry raises": "s_loop_entry_raises",
    "loop + exception": "s_loop_raise",
    "recover() inline": "s_recover_inline",
    "defer as an expression": "s_expression",
    "@defer def": "s_decorated",
    "defer(*args)": "s_star",
    "defer(*args) + exception": "s_star_raise",
    "several defers in a statement": "s_pair",
    "defers pushed onto a list": "s_pushed",
    "pushed + exception": "s_pushed_raise",
    "scoped() in an expression": "s_scoped_expression",
    "expressions in a loop": "s_loop_expression",
    "nested blocks + ScopeBound": "s_nested_blocks",
    "nested blocks + exception": "s_nested_blocks_raise",
    "defers in a comprehension": "s_comprehension",
    "adefer": "s_adefer",
    "adefer + ascoped + exception": "s_adefer_raise",
    "awaited call raises": "s_awaited_raises",
    "adefer in a block": "s_ablock",
    "recover() awaited": "s_arecover",
    "closed in an awaited exit": "s_aclosed",
    "adefer slots + exception + recover()": "s_aslots_raise",
    "adefer slots + ScopeBound": "s_aslots_core",
}


class Token:
    """The argument handed to every deferred call; its refcount is watched."""


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _loop(func, arg, n: int, exc_type) -> None:
    if exc_type is None:
        for _ in range(n):
            func(arg)
    else:
        for _ in range(n):
            try:
                func(arg)
            except exc_type:
                pass


def _settle() -> None:
    for _ in range(3):
        gc.collect()


def _load_runtime(tmp: Path):
    ns: dict = {"__name__": "godefer_refleak_runtime"}
    exec(compile(SCENARIOS_SRC, "<godefer-refleak-runtime>", "exec"), ns)
    return ns


def _load_prepared(tmp: Path):
    path = tmp / "godefer_refleak_prepared.py"
    path.write_text(SCENARIOS_SRC)
    sys.path.insert(0, str(tmp))
    try:
        mod = importlib.import_module("godefer_refleak_prepared")
    finally:
        sys.path.remove(str(tmp))
    return vars(mod)


def check(flavour: str, ns: dict, name: str) -> tuple[bool, str]:
    exc_name, per_call = SCENARIOS[name]
    func = ns[FUNCS[name]]
    exc_type = ns[exc_name] if exc_name else None
    count = ns["COUNT"]
    not_prepared = getattr(godefer, "NotPreparedError", None)
    token = Token()

    count[0] = 0
    try:
        _loop(func, token, 1, exc_type)
    except Exception as exc:
        if not_prepared is not None and isinstance(exc, not_prepared):
            return True, f"skipped: not supported on this path ({exc})"
        return False, f"first call failed: {type(exc).__name__}: {exc}"
    if count[0] != per_call:
        return False, f"one call made {count[0]} deferred calls, expected {per_call}"

    _loop(func, token, WARMUP, exc_type)
    _settle()
    total0 = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else None
    ref0 = sys.getrefcount(token)
    objs0 = len(gc.get_objects())
    rss0 = _rss()
    count[0] = 0

    _loop(func, token, CALLS, exc_type)

    _settle()
    rss1 = _rss()
    objs1 = len(gc.get_objects())
    ref1 = sys.getrefcount(token)
    total1 = sys.gettotalrefcount() if total0 is not None else None
    ran = count[0]

    short = max(CALLS // 5, 1)
    tracemalloc.start()
    try:
        _loop(func, token, 1000, exc_type)
        _settle()
        traced0 = tracemalloc.get_traced_memory()[0]
        _loop(func, token, short, exc_type)
        _settle()
        traced1 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()

    problems = []
    if ran != per_call * CALLS:
        problems.append(f"deferred calls made {ran}, expected {per_call * CALLS}")
    if ref1 - ref0 > MAX_REF_GROWTH:
        problems.append(f"argument refcount +{ref1 - ref0}")
    if objs1 - objs0 > MAX_OBJ_GROWTH:
        problems.append(f"gc objects +{objs1 - objs0}")
    if traced1 - traced0 > MAX_TRACED_GROWTH:
        problems.append(f"tracemalloc +{traced1 - traced0} B over {short} calls")
    if rss0 is not None and rss1 is not None and rss1 - rss0 > MAX_RSS_GROWTH:
        problems.append(f"RSS +{(rss1 - rss0) / 1024:.0f} KiB")
    if total0 is not None and total1 - total0 > MAX_TOTALREF_GROWTH:
        problems.append(f"sys.gettotalrefcount +{total1 - total0}")

    rss_txt = f"{(rss1 - rss0) / 1024:+.0f} KiB" if rss0 is not None and rss1 is not None else "n/a"
    detail = (
        f"refs {ref1 - ref0:+d}, gc objs {objs1 - objs0:+d}, "
        f"traced {traced1 - traced0:+d} B/{short}, RSS {rss_txt}"
    )
    if total0 is not None:
        detail += f", totalrefs {total1 - total0:+d}"
    if problems:
        return False, detail + "  <-- " + "; ".join(problems)
    return True, detail


def main() -> int:
    print(f"godefer {godefer.__version__} from {Path(godefer.__file__).parent}")
    print(f"Python {sys.version.split()[0]}; {CALLS} calls per scenario after {WARMUP} warm-up")
    if hasattr(sys, "gettotalrefcount"):
        print("debug build: sys.gettotalrefcount is checked too")
    else:
        print("release build: no sys.gettotalrefcount; using refcounts, gc, tracemalloc, RSS")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for flavour, loader in (("runtime", _load_runtime), ("imported", _load_prepared)):
            try:
                ns = loader(Path(tmp))
            except Exception as exc:
                print(f"\n[{flavour}] could not load the scenarios: {type(exc).__name__}: {exc}")
                failures += 1
                continue
            print(f"\n[{flavour} path]")
            for name in SCENARIOS:
                ok, detail = check(flavour, ns, name)
                failures += not ok
                print(f"  {'ok  ' if ok else 'FAIL'} {name:26} {detail}", flush=True)
    if failures:
        print(f"\nrefleak: {failures} scenario(s) FAILED")
        return 1
    print("\nrefleak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
