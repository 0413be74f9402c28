"""Benchmark subjects that live in a real source file, so godefer can prepare them.

godefer's import hook rewrites modules that import it before their code first runs (the fast
path of DESIGN.md section 3). ``bench/run.py`` imports this module lazily, only in the
measurements that are about godefer, and reports whether the code object was actually rewritten
(a prepared function has an exception table; the runtime path leaves ``defer(fn)`` as a plain
call with none).
"""

from godefer import defer


def one_defer(fn):
    defer(fn)


def run_pending(fn, body):
    """Call ``body()`` while this frame holds a pending deferred call of ``fn``."""
    defer(fn)
    return body()
