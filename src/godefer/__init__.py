"""godefer: Go's ``defer`` for Python, with a C++ core.

A call scheduled with :func:`defer` runs when the enclosing code block (function,
generator, coroutine, module or class body, or a ``with scope():`` block) exits,
however it exits. See ``docs/semantics.md`` for the exact rules.
"""

from godefer._core import (
    NotPreparedError,
    adefer,
    ascoped,
    defer,
    errdefer,
    okdefer,
    recover,
    result,
    scope,
    scoped,
    set_result,
)
from godefer._scopebound import ScopeBound

__all__ = [
    "NotPreparedError",
    "ScopeBound",
    "adefer",
    "ascoped",
    "defer",
    "errdefer",
    "okdefer",
    "recover",
    "result",
    "scope",
    "scoped",
    "set_result",
]
__version__ = "0.1.0"
