"""godefer: Go's ``defer`` for Python, with a C++ core.

A call scheduled with :func:`defer` runs when the enclosing code block (function,
generator, coroutine, module or class body, or a ``with scope():`` block) exits,
however it exits. See ``docs/semantics.md`` for the exact rules.
"""

import sys as _sys

from godefer import _core
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

from godefer import _decorator, _import_hook, _inplace


def _start_preparation() -> None:
    # GODEFER_PREPARE=0 leaves every scope on the runtime path (no import hook, no @scope).
    if not _decorator.preparation_enabled():
        _core._set_function_preparer(None)
        return
    _import_hook.install()
    # The modules running now (the importer of godefer, __main__): skip this function's frame
    # and the module body of godefer itself.
    _inplace.prepare_running_modules(_sys._getframe(2))


_start_preparation()
