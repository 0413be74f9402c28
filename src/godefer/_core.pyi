"""Type stubs for godefer's C++ core (godefer._core)."""

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, final, overload

_P = ParamSpec("_P")
_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

class NotPreparedError(RuntimeError):
    """A godefer feature that needs prepared code was used in code godefer did not prepare."""

@final
class Defer:
    def __call__(
        self, fn: Callable[_P, Any], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Callable[_P, Any]: ...
    def __contains__(self, value: object) -> bool: ...

defer: Defer
errdefer: Defer
okdefer: Defer

@final
class BlockScope:
    def __enter__(self) -> BlockScope: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...
    def __call__(self, fn: _F, /) -> _F: ...

@overload
def scope() -> BlockScope: ...
@overload
def scope(fn: _F, /) -> _F: ...
@overload
def scoped(obj: AbstractContextManager[_T], /) -> _T: ...
@overload
def scoped(obj: _T, /) -> _T: ...
def recover(*types: type[BaseException]) -> BaseException | None: ...
def result() -> Any: ...
def set_result(value: object, /) -> None: ...
def adefer(
    fn: Callable[_P, Awaitable[Any]], /, *args: _P.args, **kwargs: _P.kwargs
) -> Callable[_P, Awaitable[Any]]: ...
def ascoped(obj: Any, /) -> Awaitable[Any]: ...
def _pending_frames() -> int: ...

class ScopeBoundMeta(type): ...

@final
class CloseToken:
    def __call__(self) -> None: ...
    def discard(self) -> None: ...

@final
class DeferList(list[Any]):
    """The deferred calls of one loop of an open-coded function (prepared code only)."""

    def push(self, fn: Callable[[], object], /) -> None: ...
    def push_call(
        self, kind: int, fn: Callable[..., object], /, *args: Any, **kwargs: Any
    ) -> None: ...
