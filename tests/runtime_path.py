"""Running test code on godefer's runtime path.

Test modules are prepared by godefer's pytest plugin; code compiled from a string has no source
to prepare, so it stays on the runtime path. Tests that pin runtime-path behaviour use this.
"""

from __future__ import annotations

import sys
import textwrap


def run_src(src: str, **names: object) -> dict:
    """exec `src` (dedented) as a module body with `names` as globals; returns the namespace."""
    ns: dict = {"__name__": "godefer_exec_src", **names}
    exec(compile(textwrap.dedent(src), "<string>", "exec"), ns)
    return ns


def here() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


def raiser(exc: BaseException) -> None:
    raise exc
