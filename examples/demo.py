"""A short tour of godefer: run it and read the output next to the code."""

import asyncio
import sys

from godefer import (
    ScopeBound,
    adefer,
    ascoped,
    defer,
    errdefer,
    okdefer,
    recover,
    result,
    scope,
    scoped,
    set_result,
)


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


def safe_ratio(a: float, b: float) -> float | None:
    @defer
    def _() -> None:
        if (e := recover()) is not None:
            print(f"  safe_ratio recovered {e!r}; it returns None")

    return a / b


def forty_two() -> int:
    # Go's spec example: defer func() { result *= 7 }(); return 6
    defer(lambda: set_result(result() * 7))
    return 6


def statement_form() -> None:
    print("  3: the call's arguments were evaluated at the statement") in defer
    print("  2: deferred calls run last first") in defer
    print("  1: body")


class Tag:
    def __enter__(self) -> str:
        print("  enter tag")
        return "tag"

    def __exit__(self, *exc: object) -> None:
        print("  exit tag")


def entered() -> None:
    print(f"  got {scoped(Tag())}")


class Pool:
    async def __aenter__(self) -> str:
        await asyncio.sleep(0)
        print("  acquired a connection")
        return "conn"

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)
        print("  released the connection")


async def flush(name: str) -> None:
    await asyncio.sleep(0)
    print(f"  awaited flush({name!r})")


async def handler() -> str:
    conn = await ascoped(Pool())  # entered now, its __aexit__ awaited at the exit
    adefer(flush, conn)  # awaited at the exit, before the release (last in, first out)
    print(f"  handling with {conn}")
    return "done"


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
    print("recover() in a function:")
    print("  ->", safe_ratio(1, 0))
    print("result() and set_result():")
    print("  forty_two() ->", forty_two())
    print("statement form:")
    statement_form()
    print("async exits (adefer, ascoped):")
    print("  ->", asyncio.run(handler()))
