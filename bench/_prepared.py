"""Benchmark subjects that live in a real source file, so godefer can prepare them.

godefer's import hook rewrites modules that import it before their code first runs (the fast
path of DESIGN.md section 3). The bench imports this module lazily, only in the measurements
that are about godefer, and reports whether each code object was actually rewritten.

Defers are open-coded: a defer outside loops, as a statement, an expression or ``@defer`` on a
nested def, keeps its callee and arguments in frame locals; the defers of a loop, and those of a
statement that cannot give each a slot, share a list in a frame local. They run inline on return.
A ``with scope():`` block gets slots of its own in the same way (``one_defer_scope``), and so
does ``defer(*args)`` (``one_defer_star``: its slot holds the callee and the other arguments), as
a statement, as an assignment's value, or inside another expression (``one_defer_star_returned``,
``return defer(*args)``), and ``scoped(cm)`` (``one_scoped``: its slot holds the exit). A
coroutine's ``adefer(fn)`` statements get slots too, awaited inline on its exits
(``one_adefer``); an ``adefer`` in a loop is kept by the C++ core (``one_adefer_core``), as are
the calls of a function with a defer in a comprehension on 3.11.
"""

from godefer import adefer, defer, scope, scoped


def is_prepared(func) -> bool:
    from godefer import _rt

    return _rt.is_prepared(func.__code__)


def one_defer(fn):
    defer(fn)


def one_defer_in_block(fn):
    if fn:
        defer(fn)


def one_defer_expression(fn):
    _ = defer(fn)


def one_defer_scope(fn):
    with scope():
        defer(fn)


def one_defer_star(fn):
    defer(*(fn,))


def one_defer_star_returned(fn):
    return defer(*(fn,))


class Exits:
    """A context manager whose exit calls fn: scoped(Exits(fn)) and `with Exits(fn):` make
    the one deferred call the tables count."""

    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.fn()


def one_scoped(fn):
    scoped(Exits(fn))


async def one_adefer(fn):
    adefer(fn)


async def one_adefer_core(fn):
    for _ in range(1):
        adefer(fn)


def loop_defer(fn, n):
    for _ in range(n):
        defer(fn)


def loop_defer_arg(fn, arg, n, probe):
    for _ in range(n):
        defer(fn, arg)
    probe()


def return_two(fn):
    defer(fn)
    defer(fn)


def return_ten(fn):
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
