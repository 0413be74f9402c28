"""The environment for a child Python process in tests: the venv's godefer, preparation on."""

from __future__ import annotations

import os
from collections.abc import Iterable

import godefer
import godefer._core

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(godefer.__file__)))


def child_env(
    *, write_bytecode: bool | None = None, drop: Iterable[str] = (), **extra: str
) -> dict[str, str]:
    """os.environ without GODEFER_PREPARE and the names in `drop`, plus `extra`.

    write_bytecode=None leaves PYTHONDONTWRITEBYTECODE as it is; True/False sets it.
    """
    env = dict(os.environ)
    for name in ("GODEFER_PREPARE", *drop):
        env.pop(name, None)
    if write_bytecode is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if not write_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
    core_file = os.path.abspath(getattr(godefer._core, "__file__", "") or "")
    if core_file.startswith(SRC_ROOT + os.sep):  # built in place: make the tree importable
        env["PYTHONPATH"] = SRC_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env
