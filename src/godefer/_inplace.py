"""Preparing modules that are already running when godefer is first imported.

`python script.py` runs `__main__` before godefer exists, and a module imported before the hook
was installed is running its `import godefer` line right now. Their remaining `def` and `class`
statements have not run yet: each creates its function or class body from a code object among the
module code's constants, so swapping those constants for prepared ones prepares every function
defined from here on. The module body itself keeps running unprepared (its own deferred calls use
the runtime path).
"""

from __future__ import annotations

from types import CodeType, FrameType

from godefer import _core, _rt
from godefer._import_hook import code_uses_godefer
from godefer._prepare import RT, prepare_source


def _running_modules(frame: FrameType | None) -> list[FrameType]:
    found = []
    while frame is not None:
        code = frame.f_code
        if (
            code.co_name == "<module>"
            and not code.co_filename.startswith("<")
            and frame.f_globals.get(RT) is None
            and not str(frame.f_globals.get("__name__", "")).startswith("godefer")
            and code_uses_godefer(code)
        ):
            found.append(frame)
        frame = frame.f_back
    return found


def _code_consts_by_key(code: CodeType) -> dict[tuple[str, int, int], CodeType]:
    """The code constants of `code` by (name, first line, how many such came before): two
    lambdas on one line differ only by their order, which preparation keeps."""
    seen: dict[tuple[str, int], int] = {}
    keyed = {}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            name_line = (const.co_name, const.co_firstlineno)
            seen[name_line] = seen.get(name_line, -1) + 1
            keyed[(*name_line, seen[name_line])] = const
    return keyed


def _swap_consts(running: CodeType, prepared: CodeType) -> int:
    """Replace code constants of `running` by their prepared counterparts; returns how many."""
    by_key = _code_consts_by_key(prepared)
    index_of = {id(c): i for i, c in enumerate(running.co_consts)}
    swapped = 0
    for key, const in _code_consts_by_key(running).items():
        new = by_key.get(key)
        if new is not None and new.co_freevars == const.co_freevars:
            _core._replace_const(running, index_of[id(const)], new)
            swapped += 1
    return swapped


def prepare_running_modules(start: FrameType | None) -> None:
    for frame in _running_modules(start):
        path = frame.f_code.co_filename
        try:
            with open(path, "rb") as f:
                source = f.read()
            prepared, did = prepare_source(source, path)
        except (OSError, SyntaxError, ValueError):
            continue  # no usable source: the runtime path stays in charge
        if not did:
            continue
        assert isinstance(prepared, CodeType)
        _rt.mark_prepared(prepared)
        frame.f_globals[RT] = _rt
        _rt.install(frame.f_globals)
        _swap_consts(frame.f_code, prepared)
