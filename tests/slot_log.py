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


def prepared_namespace(src: str, filename: str) -> dict:
    """Run `src` as a module that godefer prepared (`filename` names it in tracebacks)."""
    from godefer._prepare import prepare_source

    code, did = prepare_source(src, filename)
    assert did
    ns: dict = {"__name__": "gd_" + filename.rsplit("/", 1)[-1].removesuffix(".py")}
    exec(code, ns)
    return ns


def drive(coro):
    """Runs a coroutine to its end without an event loop; returns its value."""
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


def log_outcome(f: Callable[[list, bool], object], fail: bool) -> tuple[list, object]:
    """What `f(log, fail)` left in its log, and what it returned or raised."""
    log: list = []
    try:
        result: object = ("returned", f(log, fail))
    except Exception as exc:  # the outcome is what is compared
        result = ("raised", type(exc).__name__, str(exc))
    return log, result
