"""What the open-coded tests share: a log the deferred calls write to, and code probes.

The test modules are prepared by godefer's pytest plugin; this helper need not be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from godefer import ScopeBound

LOG: list[object] = []


@pytest.fixture
def slot_log() -> Iterator[list[object]]:
    """LOG, empty before and after the test (modules use it through pytestmark)."""
    LOG.clear()
    yield LOG
    LOG.clear()


def note(tag: object) -> Callable[[], None]:
    return lambda: LOG.append(tag)


def open_coded(fn: Callable) -> bool:
    """Whether preparation kept `fn`'s defers in frame locals (slot 0 exists)."""
    return "__godefer_0__" in fn.__code__.co_varnames


def list_slot(fn: Callable) -> bool:
    """Whether `fn` keeps a loop's defers in a DeferList slot."""
    names = fn.__code__.co_names
    return open_coded(fn) and any(n.startswith(("list_first", "list_scoped")) for n in names)


class Tracked(ScopeBound):
    """Joins the scope of the code that makes it (through the core); logs its tag on close."""

    def __init__(self, tag: object) -> None:
        self.tag = tag

    def close(self) -> None:
        LOG.append(self.tag)
