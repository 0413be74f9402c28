"""What prepared code calls: the core's prepared-frame entry points under short names.

Preparation inserts `import godefer._rt as __godefer_rt__` into each module it rewrites, so the
rewritten code works whoever compiled it (godefer's import hook, pytest's assertion rewriter,
in-place preparation, or `@scope`).
"""

from __future__ import annotations

import sys
from types import CodeType

from godefer import _core
from godefer._prepare import RT, imported_globals

defer = _core._prepared_defer
errdefer = _core._prepared_errdefer
okdefer = _core._prepared_okdefer
scoped = _core._prepared_scoped
scoped_slot = _core._prepared_scoped_slot
scope = _core.scope
adefer = _core._prepared_adefer
acomplete = _core._prepared_acomplete
aunwind = _core._prepared_aunwind
ablock_exit = _core._prepared_ablock_exit
aenter = _core._prepared_aenter
ascoped_push = _core._prepared_ascoped_push
complete = _core._prepared_complete
unwind = _core._prepared_unwind
unwind_slots = _core._prepared_unwind_slots
complete_slots = _core._prepared_complete_slots
aunwind_slots = _core._prepared_aunwind_slots
slot_await = _core._prepared_slot_await
bind_slots = _core._prepared_bind_slots
acomplete_slots = _core._prepared_acomplete_slots
block_unwind = _core._prepared_block_unwind
block_complete = _core._prepared_block_complete
list_first = _core._prepared_list_first
list_first_call = _core._prepared_list_first_call
list_scoped = _core._prepared_list_scoped
list_new = _core._prepared_list_new
run_list = _core._prepared_run_list
slot_defer = _core._prepared_slot_defer
slot_errdefer = _core._prepared_slot_errdefer
slot_okdefer = _core._prepared_slot_okdefer
slot_first_defer = _core._prepared_slot_first_defer
slot_first_errdefer = _core._prepared_slot_first_errdefer
slot_first_okdefer = _core._prepared_slot_first_okdefer
slot_check_defer = _core._slot_check_defer
slot_check_errdefer = _core._slot_check_errdefer
slot_check_okdefer = _core._slot_check_okdefer
slot_star_defer = _core._prepared_slot_star_defer
slot_star_errdefer = _core._prepared_slot_star_errdefer
slot_star_okdefer = _core._prepared_slot_star_okdefer
RERAISE = _core.RERAISE

_MARKERS = ("__godefer_st__", "__godefer_exc__")


def is_prepared(code: CodeType) -> bool:
    """Whether preparation gave this code object an exit handler."""
    return "__godefer_st__" in code.co_varnames or "__godefer_exc__" in code.co_names


def install(namespace: dict) -> None:
    """Bind the globals prepared code reads in a module namespace that did not run the import
    statement preparation inserts (in-place preparation, @scope)."""
    namespace.setdefault(RT, sys.modules[__name__])
    for name, attr in imported_globals():
        namespace.setdefault(name, globals()[attr])


def mark_prepared(code: CodeType) -> None:
    """Mark the prepared code objects in `code` (recursively) for the core.

    A frame running marked code drains its own scope, so registrations the core cannot see
    coming (a ScopeBound constructed there) join that scope instead of arming an exit hook.
    """
    stack = [code]
    while stack:
        co = stack.pop()
        if is_prepared(co):
            if "complete_slots" in co.co_names or "acomplete_slots" in co.co_names:
                _core._mark_open_coded(co)  # its defers live in frame locals
            else:
                _core._mark_prepared(co)
        stack.extend(c for c in co.co_consts if isinstance(c, CodeType))


def mark_running_module() -> None:
    """Called by the statement preparation inserts at the top of a prepared module."""
    mark_prepared(sys._getframe(1).f_code)
