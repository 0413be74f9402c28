"""A short tour of godefer: run it and read the output next to the code."""

import sys

from godefer import ScopeBound, defer, errdefer, okdefer, recover, scope, scoped


class Resource(ScopeBound):
    def __init__(self, name: str) -> None:
        self.name = name
        print(f"  open {name}")

    def close(self) -> None:
        print(f"  close {self.name}")


def work(fail: bool) -> str:
    defer(print, "  deferred 1 (runs last)")
    Resource("db")
    errdefer(print, "  errdefer: only on failure")
    okdefer(print, "  okdefer: only on success")
    defer(lambda: print(f"  deferred 2 sees sys.exception() = {sys.exception()!r}"))
    if fail:
        raise ValueError("boom")
    return "result"


def blocks() -> None:
    for i in range(2):
        with scope():
            defer(print, f"  end of iteration {i}")
            print(f"  body {i}")


def recovering() -> str:
    with scope():

        @defer
        def _() -> None:
            print(f"  recovered {recover()!r}")

        raise KeyError("missing")
    return "  execution continues after the block"


class Tag:
    def __enter__(self) -> str:
        print("  enter tag")
        return "tag"

    def __exit__(self, *exc: object) -> None:
        print("  exit tag")


def entered() -> None:
    print(f"  got {scoped(Tag())}")


if __name__ == "__main__":
    print("success:")
    print("  ->", work(False))
    print("failure:")
    try:
        work(True)
    except ValueError as e:
        print("  -> raised", repr(e))
    print("block scopes:")
    blocks()
    print("recover in a block:")
    print(recovering())
    print("scoped context manager:")
    entered()
