"""pytest plugin (registered under the `pytest11` entry point): test modules get both pytest's
assertion rewriting and godefer's preparation.

pytest compiles the test modules it rewrites itself, so godefer's import hook never sees them.
The plugin extends pytest's `rewrite_asserts` step to also prepare a module that uses godefer, and
adds godefer's version and preparer fingerprint to pytest's bytecode cache tag, so a cached test
module is re-prepared when godefer changes.
"""

from __future__ import annotations

import ast
from typing import Any

from _pytest.assertion import rewrite

from godefer._decorator import preparation_enabled
from godefer._import_hook import PREPARATION_TAG
from godefer._prepare import prepare_tree


def _install() -> None:
    if getattr(rewrite.rewrite_asserts, "_godefer", False) or not preparation_enabled():
        return
    original = rewrite.rewrite_asserts

    def rewrite_asserts(mod: ast.Module, source: bytes, *args: Any, **kwargs: Any) -> None:
        original(mod, source, *args, **kwargs)
        filename = str(args[0]) if args else str(kwargs.get("module_path") or "<unknown>")
        prepare_tree(mod, filename, source.decode("utf-8", "replace"))

    rewrite_asserts._godefer = True  # type: ignore[attr-defined]
    rewrite.rewrite_asserts = rewrite_asserts
    tag = f"-godefer-{PREPARATION_TAG}"
    if tag not in rewrite.PYTEST_TAG:
        rewrite.PYTEST_TAG += tag
        rewrite.PYC_TAIL = "." + rewrite.PYTEST_TAG + rewrite.PYC_EXT


_install()
