"""Programs as module files: written to a fresh directory on ``sys.path`` and imported the
normal way, so that godefer's import hook prepares them (the differential tests)."""

from __future__ import annotations

import contextlib
import importlib
import itertools
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

_module_names = itertools.count()
_made_dirs: list[str] = []


def unique_names(prefix: str, n: int) -> list[str]:
    """``n`` module names, unique for the session."""
    return [f"{prefix}_{next(_module_names)}" for _ in range(n)]


def remove_made_dirs() -> None:
    """Remove the directories made so far (a test module's teardown)."""
    while _made_dirs:
        shutil.rmtree(_made_dirs.pop(), ignore_errors=True)


@contextlib.contextmanager
def module_dir() -> Iterator[Path]:
    """A fresh directory, on ``sys.path`` while the block runs. The files stay until
    :func:`remove_made_dirs` (the imported programs run later, with their source in place)."""
    d = tempfile.mkdtemp(prefix="godefer-oracle-prepared-")
    _made_dirs.append(d)
    sys.path.insert(0, d)
    try:
        yield Path(d)
    finally:
        sys.path.remove(d)
        sys.path_importer_cache.pop(d, None)


def import_sources(sources: list[str], prefix: str) -> list:
    """Write each source as a module file and import it the normal way (the import hook).

    Returns the modules, or for a module whose import raised, the exception. Files are written
    before the directory goes on ``sys.path`` (the path finder then lists it once, fresh);
    module names are unique for the session, and each module leaves ``sys.modules`` again once
    imported (its functions keep their globals).
    """
    names = unique_names(prefix, len(sources))
    with module_dir() as d:
        for name, src in zip(names, sources, strict=True):
            (d / f"{name}.py").write_text(src, encoding="utf-8")
        importlib.invalidate_caches()
        modules: list = []
        for name in names:
            try:
                modules.append(importlib.import_module(name))
            except Exception as e:  # e.g. a SyntaxError from preparation: a finding
                modules.append(e)
            finally:
                sys.modules.pop(name, None)
    return modules
