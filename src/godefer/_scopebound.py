"""ScopeBound: objects whose close() runs when the scope that created them exits."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Self

from godefer._core import ScopeBoundMeta

_CLOSED = "_godefer_closed_"
_TOKEN = "_godefer_token"


def _closed_key(obj: object) -> str:
    # Keyed by identity so that a copy (copy.copy copies __dict__) is not born closed.
    return f"{_CLOSED}{id(obj):x}"


def _guarded(cls: type, close: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap cls's close so that the outermost call runs once per instance.

    A call that reaches this wrapper through super() from a subclass's close is part of a
    cooperative chain already running, so it goes straight through; only the close that the
    instance's type dispatches to first counts as "the" close.
    """

    @functools.wraps(close)
    def guarded_close(self: Any, *args: Any, **kwargs: Any) -> Any:
        if type(self).close is not guarded_close:
            return close(self, *args, **kwargs)
        # dict.setdefault is one atomic step under the GIL: of two racing threads, one wins.
        marker = object()
        if vars(self).setdefault(_closed_key(self), marker) is not marker:
            return None
        return close(self, *args, **kwargs)

    guarded_close._godefer_guard = True  # type: ignore[attr-defined]
    return guarded_close


def _delegate(cls: type) -> Callable[..., Any]:
    """A close for a subclass that inherits one from a non-ScopeBound base (a mixin)."""

    def close(self: Any, *args: Any, **kwargs: Any) -> Any:
        return super(cls, self).close(*args, **kwargs)

    close._godefer_delegate = True  # type: ignore[attr-defined]
    return close


def _has_real_close(cls: type) -> bool:
    for klass in cls.__mro__:
        close = vars(klass).get("close")
        if close is None or klass is ScopeBound:
            continue
        wrapped = getattr(close, "__wrapped__", close)
        if not getattr(wrapped, "_godefer_delegate", False):
            return True
    return False


class ScopeBound(metaclass=ScopeBoundMeta):
    """Base class for objects cleaned up by the scope that created them.

    After an instance is constructed, its ``close()`` is scheduled in the scope of the code block
    that called the class, exactly like ``defer(obj.close)`` written on that line. ``close()``
    runs once per instance however often it is called; ``release()`` takes the instance out of
    its scope.
    """

    __slots__ = ()
    _godefer_abstract = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dictoffset__ == 0:
            raise TypeError(
                f"{cls.__qualname__}: ScopeBound subclasses need a per-instance __dict__ to "
                "record that close() ran; add '__dict__' to __slots__"
            )
        if "close" in vars(cls):
            cls.close = _guarded(cls, vars(cls)["close"])  # type: ignore[attr-defined]
        else:
            inherited = getattr(cls, "close", None)
            if inherited is not None and not getattr(inherited, "_godefer_guard", False):
                # close comes from a mixin base: guard it at this level.
                cls.close = _guarded(cls, _delegate(cls))  # type: ignore[attr-defined]
        cls._godefer_abstract = not _has_real_close(cls)

    def release(self) -> Self:
        """Take this instance out of the scope that created it and return it.

        The scope will not close it; nothing adopts it automatically (the new owner may
        ``scoped()`` it).
        """
        token_ref = vars(self).get(_TOKEN)
        token = token_ref() if token_ref is not None else None
        if token is not None and token.holds(self):  # not a copy's inherited reference
            del vars(self)[_TOKEN]
            token.discard()
        return self
