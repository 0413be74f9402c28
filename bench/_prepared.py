"""Benchmark subjects that live in a real source file, so godefer can prepare them.

godefer's import hook rewrites modules that import it before their code first runs (the fast
path of DESIGN.md section 3). The bench imports this module lazily, only in the measurements
that are about godefer, and reports whether each code object was actually rewritten.

``defer`` statements outside loops (up to 8 in a function, top level or inside an ``if``) are
open-coded: kept in frame locals and called inline on return. A defer in a loop, in an
expression or in a ``with scope():`` block makes the function keep its deferred calls in the C++
core, keyed by the frame (``one_defer_core`` is the cheapest way to get that for one call).
``raise_ten`` has more defers than open coding takes, so it uses the core too.
"""

from godefer import defer


def is_prepared(func) -> bool:
    from godefer import _rt

    return _rt.is_prepared(func.__code__)


def one_defer(fn):
    defer(fn)


def one_defer_in_block(fn):
    if fn:
        defer(fn)


def one_defer_core(fn):
    _ = defer(fn)


def loop_defer(fn, n):
    for _ in range(n):
        defer(fn)


def loop_defer_arg(fn, arg, n, probe):
    for _ in range(n):
        defer(fn, arg)
    probe()


def raise_one(fn):
    defer(fn)
    raise ValueError


def raise_ten(fn):
    defer(fn)
    defer(fn)
    defer(fn)
    defer(fn)
    defer(fn)
    defer(fn)
    defer(fn)
    defer(fn)
    defer(fn)
    defer(fn)
    raise ValueError


def run_pending(fn, body):
    """Call ``body()`` while this frame holds a pending deferred call of ``fn``."""
    defer(fn)
    return body()
