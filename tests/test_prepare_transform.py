"""Preparation keeps positions and behaviour (DESIGN.md §3 "Prepared code").

Preparation rewrites a scope that schedules anything into plain try/except around an exit
handler. These tests pin that the rewrite is invisible: tracebacks show the user's lines,
``inspect`` sees the same source, signature, defaults and annotations, no code object gains a line
number the user did not write, and closures, ``nonlocal``, zero-argument ``super()``, nested
functions, lambdas, class bodies, decorators, generators, coroutines and async generators behave
exactly as written.

The code under test lives in module files written to a temporary directory and imported through
godefer's import hook; "the same code without preparation" is the same source compiled with
``compile()``.
"""

from __future__ import annotations

import asyncio
import dis
import importlib
import inspect
import sys
import textwrap
import traceback
import types
import uuid

import pytest

import godefer._rt
from godefer._prepare import prepare_source

# Line numbers are taken from `# L:<name>` markers, so the source can be edited freely.
MODULE_SRC = '''\
import asyncio
import functools

from godefer import defer

LOG = []


def bad():
    raise KeyError("from deferred")  # L:bad-raise


def raises_itself():
    defer(LOG.append, "raises_itself deferred")
    x = 1
    raise ValueError(x)  # L:raise


def deferred_raises_on_return():
    defer(bad)
    y = 2
    return y  # L:return


def deferred_raises_on_falloff():
    defer(bad)
    z = 3
    z += 1  # L:falloff


def deferred_raises_on_exception():
    defer(bad)
    w = 4
    raise ValueError(w)  # L:exc-raise


def calls_raises_itself():
    return raises_itself()  # L:caller


def make_counter():
    count = 0

    def bump():
        nonlocal count
        defer(LOG.append, ("bump deferred", count))
        count += 1
        return count

    def read():
        return count

    def reset():
        nonlocal count
        count = 100

    def peek_and_defer():
        defer(LOG.append, ("peek deferred", count))
        return count

    return bump, read, reset, peek_and_defer


class Base:
    def greet(self, who):
        return f"base:{who}"


class Child(Base):
    def greet(self, who):
        defer(LOG.append, "Child.greet deferred")
        return "child+" + super().greet(who)

    @classmethod
    def make(cls):
        defer(LOG.append, "Child.make deferred")
        return super().__new__(cls)


def outer_fn(log):
    defer(log.append, "outer deferred")

    def inner(tag):
        defer(log.append, f"inner deferred {tag}")
        log.append(f"inner body {tag}")
        return tag

    log.append("outer body")
    inner(1)
    inner(2)
    log.append("outer end")
    return inner


def make_lambda(log):
    return lambda x: (defer(log.append, f"lambda deferred {x}"), log.append(f"lambda {x}"))[1]


def decorate(tag):
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return (tag, fn(*args, **kwargs))

        return wrapper

    return deco


@decorate("outer-tag")
@decorate("inner-tag")
def decorated(x):  # L:decorated
    """Decorated docstring."""
    defer(LOG.append, "decorated deferred")
    return x * 2


def annotated(
    a: int, b: str = "bee", /, c: list[int] | None = None, *args: float,
    d: dict = {"k": 1}, e: bytes = b"", **kw: bool
) -> tuple:
    """Annotated docstring."""
    defer(LOG.append, "annotated deferred")
    return (a, b, c, args, d, e, kw)


def gen(log):
    defer(log.append, "gen deferred")
    log.append("gen start")
    yield 1
    log.append("gen middle")
    yield 2
    log.append("gen end")
    return "gen value"


async def coro(log, x):
    defer(log.append, "coro deferred")
    log.append("coro start")
    await asyncio.sleep(0)
    log.append("coro after await")
    return x + 1

'''


# Kept apart so that a failure to prepare it cannot hide the results of the other tests.
AGEN_SRC = """\
import asyncio

from godefer import defer


async def agen(log):
    defer(log.append, "agen deferred")
    log.append("agen start")
    yield 1
    await asyncio.sleep(0)
    log.append("agen middle")
    yield 2
    log.append("agen end")
"""


def line_of(src: str, marker: str) -> int:
    for number, text in enumerate(src.splitlines(), 1):
        if text.rstrip().endswith(f"# L:{marker}"):
            return number
    raise AssertionError(f"no marker {marker!r}")


def all_code(code: types.CodeType) -> list[types.CodeType]:
    out = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out.extend(all_code(const))
    return out


def user_lines(code: types.CodeType) -> set[int]:
    return {line for _, _, line in code.co_lines() if line is not None}


@pytest.fixture
def load(tmp_path, monkeypatch):
    """Write a module file and import it through the import hook (a fresh name each time)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded: list[str] = []

    def _load(src: str, stem: str = "mod"):
        name = f"gd_transform_{stem}_{uuid.uuid4().hex[:10]}"
        path = tmp_path / f"{name}.py"
        path.write_text(src)
        importlib.invalidate_caches()
        loaded.append(name)
        module = importlib.import_module(name)
        module.SOURCE_PATH = str(path)
        return module

    yield _load
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.fixture
def mod(load):
    module = load(MODULE_SRC)
    module.LOG.clear()
    return module


@pytest.fixture
def agen_mod(load):
    return load(AGEN_SRC, "agen")


def test_the_module_under_test_is_prepared(mod):
    for fn in (
        mod.raises_itself,
        mod.deferred_raises_on_return,
        mod.outer_fn,
        mod.annotated,
        mod.gen,
        mod.coro,
        mod.Child.greet,
    ):
        assert godefer._rt.is_prepared(fn.__code__), fn.__qualname__
    assert not godefer._rt.is_prepared(mod.bad.__code__)  # schedules nothing: left alone
    assert not godefer._rt.is_prepared(mod.Base.greet.__code__)


# --- positions ---------------------------------------------------------------------------------


def frames_in(exc: BaseException, path: str) -> list[tuple[str, int | None]]:
    return [
        (fr.name, fr.lineno)
        for fr in traceback.extract_tb(exc.__traceback__)
        if fr.filename == path
    ]


def test_traceback_shows_the_raise_line(mod):
    with pytest.raises(ValueError) as info:
        mod.raises_itself()
    assert frames_in(info.value, mod.SOURCE_PATH) == [
        ("raises_itself", line_of(MODULE_SRC, "raise")),
    ]
    assert mod.LOG == ["raises_itself deferred"]


def test_traceback_through_two_prepared_frames(mod):
    with pytest.raises(ValueError) as info:
        mod.calls_raises_itself()
    assert frames_in(info.value, mod.SOURCE_PATH) == [
        ("calls_raises_itself", line_of(MODULE_SRC, "caller")),
        ("raises_itself", line_of(MODULE_SRC, "raise")),
    ]


def test_deferred_call_raising_at_return_shows_the_return_line(mod):
    with pytest.raises(KeyError) as info:
        mod.deferred_raises_on_return()
    assert frames_in(info.value, mod.SOURCE_PATH) == [
        ("deferred_raises_on_return", line_of(MODULE_SRC, "return")),
        ("bad", line_of(MODULE_SRC, "bad-raise")),
    ]
    formatted = "".join(traceback.format_exception(info.value))
    assert "line -1" not in formatted and "line None" not in formatted


def test_deferred_call_raising_at_fall_off_shows_the_last_line(mod):
    with pytest.raises(KeyError) as info:
        mod.deferred_raises_on_falloff()
    assert frames_in(info.value, mod.SOURCE_PATH) == [
        ("deferred_raises_on_falloff", line_of(MODULE_SRC, "falloff")),
        ("bad", line_of(MODULE_SRC, "bad-raise")),
    ]


def test_deferred_call_raising_during_an_exception_shows_the_function_line(mod):
    with pytest.raises(KeyError) as info:
        mod.deferred_raises_on_exception()
    # Deferred calls run by an exception exit report the function's first line (docs/semantics.md,
    # "Tools"): the exception leaving it was raised at the `raise`, which its own traceback keeps.
    first = mod.deferred_raises_on_exception.__code__.co_firstlineno
    assert frames_in(info.value, mod.SOURCE_PATH) == [
        ("deferred_raises_on_exception", first),
        ("bad", line_of(MODULE_SRC, "bad-raise")),
    ]
    context = info.value.__context__
    assert isinstance(context, ValueError)
    assert frames_in(context, mod.SOURCE_PATH) == [
        ("deferred_raises_on_exception", line_of(MODULE_SRC, "exc-raise")),
    ]
    formatted = "".join(traceback.format_exception(info.value))
    assert "line -1" not in formatted and "line None" not in formatted


def test_getsource_and_first_line_unchanged(mod):
    lines = MODULE_SRC.splitlines(keepends=True)
    first = line_of(MODULE_SRC, "decorated") - 2  # the two decorator lines
    assert mod.decorated.__wrapped__.__wrapped__.__code__.co_firstlineno == first
    source = inspect.getsource(mod.decorated.__wrapped__.__wrapped__)
    assert source.startswith('@decorate("outer-tag")\n@decorate("inner-tag")\ndef decorated(x):')
    assert source == "".join(lines[first - 1 : first + 5])

    plain = compile(MODULE_SRC, mod.SOURCE_PATH, "exec", dont_inherit=True)
    plain_first = {c.co_qualname: c.co_firstlineno for c in all_code(plain)}
    for fn in (
        mod.raises_itself,
        mod.annotated,
        mod.gen,
        mod.coro,
        mod.Child.greet,
        mod.outer_fn,
    ):
        assert fn.__code__.co_firstlineno == plain_first[fn.__code__.co_qualname]
        start = fn.__code__.co_firstlineno
        text = inspect.getsource(fn)
        assert text == "".join(lines[start - 1 : start - 1 + len(text.splitlines())])
    assert inspect.getsource(mod.Child).startswith("class Child(Base):\n")


@pytest.mark.parametrize("src", [MODULE_SRC, AGEN_SRC], ids=["module", "async-generator"])
def test_no_phantom_lines_in_any_code_object(src):
    path = "/nonexistent/gd_phantom.py"
    prepared, did = prepare_source(src, path)
    assert did
    plain = compile(src, path, "exec", dont_inherit=True)
    prepared_codes = {(c.co_qualname, c.co_firstlineno): c for c in all_code(prepared)}
    plain_codes = {(c.co_qualname, c.co_firstlineno): c for c in all_code(plain)}
    assert prepared_codes.keys() == plain_codes.keys()
    checked = 0
    for key, plain_code in plain_codes.items():
        prepared_code = prepared_codes[key]
        assert user_lines(prepared_code) == user_lines(plain_code), key
        checked += godefer._rt.is_prepared(prepared_code)
    assert checked >= (10 if src is MODULE_SRC else 1)


def test_imported_functions_have_no_phantom_lines(mod):
    plain = compile(MODULE_SRC, mod.SOURCE_PATH, "exec", dont_inherit=True)
    plain_codes = {c.co_qualname: c for c in all_code(plain)}
    for fn in (
        mod.raises_itself,
        mod.deferred_raises_on_exception,
        mod.annotated,
        mod.gen,
        mod.coro,
        mod.Child.greet,
        mod.outer_fn,
    ):
        assert user_lines(fn.__code__) == user_lines(plain_codes[fn.__code__.co_qualname])


def test_line_events_are_the_users_lines(mod):
    events: list[tuple[str, int]] = []

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == mod.SOURCE_PATH:
            events.append((event, frame.f_lineno))
        return tracer

    sys.settrace(tracer)
    try:
        with pytest.raises(KeyError):
            mod.deferred_raises_on_return()
    finally:
        sys.settrace(None)
    first = mod.deferred_raises_on_return.__code__.co_firstlineno
    ret = line_of(MODULE_SRC, "return")
    bad_raise = line_of(MODULE_SRC, "bad-raise")
    assert events == [
        ("call", first),
        ("line", first + 1),
        ("line", first + 2),
        ("line", ret),
        ("call", bad_raise - 1),
        ("line", bad_raise),
        ("exception", bad_raise),
        ("return", bad_raise),
        ("exception", ret),
        # An exception exit reports the function's first line once (docs/semantics.md, "Tools").
        ("line", first),
        ("return", first),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "raises_itself",
        "deferred_raises_on_return",
        "deferred_raises_on_falloff",
        "deferred_raises_on_exception",
        "outer_fn",
    ],
)
def test_every_trace_event_has_a_user_line(mod, name):
    """A tracer (pdb, coverage) never sees a frame of a prepared function without a line, or at
    a line the user did not write (bdb compares f_lineno with ints: None crashes pdb)."""
    fn = getattr(mod, name)
    plain = compile(MODULE_SRC, mod.SOURCE_PATH, "exec", dont_inherit=True)
    allowed = {c.co_qualname: user_lines(c) for c in all_code(plain)}
    seen: list[tuple[str, str, int | None]] = []

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == mod.SOURCE_PATH:
            seen.append((frame.f_code.co_qualname, event, frame.f_lineno))
        return tracer

    sys.settrace(tracer)
    try:
        fn(*([[]] if name == "outer_fn" else []))
    except Exception:
        pass
    finally:
        sys.settrace(None)
    assert seen
    bad = [ev for ev in seen if ev[2] is None or ev[2] not in allowed[ev[0]]]
    assert bad == []


def own_line_events(fn, *args) -> list[int]:
    """The `line` events of frames running `fn`'s own code while calling fn(*args)."""
    code = fn.__code__
    lines: list[int] = []

    def tracer(frame, event, arg):
        if frame.f_code is code and event == "line":
            lines.append(frame.f_lineno)
        return tracer

    sys.settrace(tracer)
    try:
        out = fn(*args)
        if inspect.isgenerator(out):
            list(out)
    except Exception:
        pass
    finally:
        sys.settrace(None)
    return lines


@pytest.mark.parametrize(
    "name",
    [
        "raises_itself",
        "deferred_raises_on_return",
        "deferred_raises_on_falloff",
        "deferred_raises_on_exception",
        "outer_fn",
        "gen",
        "annotated",
    ],
)
def test_line_events_match_the_unprepared_function(mod, name):
    ns: dict = {"__name__": "gd_plain_line_events"}
    exec(compile(MODULE_SRC, mod.SOURCE_PATH, "exec", dont_inherit=True), ns)
    args = {"outer_fn": ([],), "gen": ([],), "annotated": (1,)}.get(name, ())
    prepared, plain = getattr(mod, name), ns[name]
    assert godefer._rt.is_prepared(prepared.__code__)
    assert not godefer._rt.is_prepared(plain.__code__)
    expected = own_line_events(plain, *args)
    if name in EXITS_BY_EXCEPTION:
        # An exception exit reports the function's first line once (docs/semantics.md, "Tools"),
        # and once more when a deferred call raises while the body's exception is leaving.
        expected.append(prepared.__code__.co_firstlineno)
        if name == "deferred_raises_on_exception":
            expected.append(prepared.__code__.co_firstlineno)
    assert own_line_events(prepared, *args) == expected


EXITS_BY_EXCEPTION = {
    "raises_itself",
    "deferred_raises_on_return",
    "deferred_raises_on_falloff",
    "deferred_raises_on_exception",
}


# --- behaviour ---------------------------------------------------------------------------------


def test_closure_shares_cells_with_enclosing_and_sibling(mod):
    bump, read, reset, peek = mod.make_counter()
    assert godefer._rt.is_prepared(bump.__code__)
    assert godefer._rt.is_prepared(peek.__code__)
    assert not godefer._rt.is_prepared(read.__code__)
    # One cell for `count`, shared by all three closures.
    cell = bump.__closure__[bump.__code__.co_freevars.index("count")]
    assert read.__closure__[read.__code__.co_freevars.index("count")] is cell
    assert reset.__closure__[reset.__code__.co_freevars.index("count")] is cell
    assert bump() == 1
    assert bump() == 2
    assert read() == 2  # the prepared closure's nonlocal write is seen by its sibling
    reset()
    assert peek() == 100  # and the sibling's write is seen by the prepared closures
    assert bump() == 101
    assert read() == 101
    # Deferred arguments are evaluated when scheduled.
    assert mod.LOG == [
        ("bump deferred", 0),
        ("bump deferred", 1),
        ("peek deferred", 100),
        ("bump deferred", 100),
    ]


def test_zero_argument_super_in_prepared_methods(mod):
    assert mod.Child().greet("x") == "child+base:x"
    made = mod.Child.make()
    assert type(made) is mod.Child
    assert mod.LOG == ["Child.greet deferred", "Child.make deferred"]
    assert mod.Child.greet.__code__.co_freevars == ("__class__",)


def test_nested_prepared_functions_run_their_own_deferred_calls(mod):
    log: list[str] = []
    inner = mod.outer_fn(log)
    assert log == [
        "outer body",
        "inner body 1",
        "inner deferred 1",
        "inner body 2",
        "inner deferred 2",
        "outer end",
        "outer deferred",
    ]
    assert godefer._rt.is_prepared(inner.__code__)
    assert inner(3) == 3
    assert log[-2:] == ["inner body 3", "inner deferred 3"]


def test_lambda_stays_on_the_runtime_path_and_works(mod):
    log: list[str] = []
    fn = mod.make_lambda(log)
    assert not godefer._rt.is_prepared(fn.__code__)
    assert godefer._rt.is_prepared(mod.make_lambda.__code__) is False  # schedules nothing itself
    assert fn(1) is None
    assert log == ["lambda 1", "lambda deferred 1"]
    fn(2)
    assert log == ["lambda 1", "lambda deferred 1", "lambda 2", "lambda deferred 2"]


def test_class_body_with_defer(load):
    src = textwrap.dedent(
        """\
        import sys

        from godefer import defer

        LOG = []


        class K:
            # The deferred call runs while the class body's frame is still the current one.
            defer(lambda: LOG.append(("K deferred", "K" in globals(),
                                      sorted(sys._getframe(1).f_locals))))
            LOG.append("K body")
            a = 1

            def method(self):
                return self.a

            b = a + 1


        LOG.append(("after", K.a, K.b, K().method()))
        """
    )
    m = load(src, "classbody")
    assert m.LOG[0] == "K body"
    tag, class_exists, names = m.LOG[1]
    assert tag == "K deferred" and class_exists is False  # before the class object exists
    assert {"a", "b", "method"} <= set(names)
    assert m.LOG[2] == ("after", 1, 2, 1)
    assert not any(name.startswith("__godefer") for name in vars(m.K))


def test_decorators_apply_to_the_prepared_function(mod):
    assert mod.decorated(4) == ("outer-tag", ("inner-tag", 8))
    assert mod.LOG == ["decorated deferred"]
    assert mod.decorated.__name__ == "decorated"
    assert mod.decorated.__doc__ == "Decorated docstring."
    assert godefer._rt.is_prepared(mod.decorated.__wrapped__.__wrapped__.__code__)


def test_defaults_annotations_and_signature_unchanged(mod):
    ns: dict = {"__name__": "gd_plain_annotated"}
    exec(compile(MODULE_SRC, mod.SOURCE_PATH, "exec", dont_inherit=True), ns)
    plain = ns["annotated"]
    prepared = mod.annotated
    assert godefer._rt.is_prepared(prepared.__code__)
    assert not godefer._rt.is_prepared(plain.__code__)
    assert prepared.__defaults__ == plain.__defaults__ == ("bee", None)
    assert prepared.__kwdefaults__ == plain.__kwdefaults__ == {"d": {"k": 1}, "e": b""}
    assert prepared.__annotations__ == plain.__annotations__
    assert prepared.__annotations__ == {
        "a": int,
        "b": str,
        "c": list[int] | None,
        "args": float,
        "d": dict,
        "e": bytes,
        "kw": bool,
        "return": tuple,
    }
    assert str(inspect.signature(prepared)) == str(inspect.signature(plain))
    assert inspect.signature(prepared) == inspect.signature(plain)
    assert prepared.__doc__ == plain.__doc__ == "Annotated docstring."
    assert prepared.__code__.co_argcount == plain.__code__.co_argcount
    assert prepared.__code__.co_posonlyargcount == plain.__code__.co_posonlyargcount
    assert prepared.__code__.co_kwonlyargcount == plain.__code__.co_kwonlyargcount
    assert prepared.__code__.co_flags == plain.__code__.co_flags
    assert prepared(1, "b", [2], 3.0, e=b"x", z=True) == (
        1,
        "b",
        [2],
        (3.0,),
        {"k": 1},
        b"x",
        {"z": True},
    )
    assert mod.LOG == ["annotated deferred"]


def test_generator_defers_to_its_end_not_its_yields(mod):
    log: list[str] = []
    g = mod.gen(log)
    assert inspect.isgenerator(g)
    assert log == []
    assert next(g) == 1
    assert log == ["gen start"]
    assert next(g) == 2
    assert log == ["gen start", "gen middle"]
    with pytest.raises(StopIteration) as info:
        next(g)
    assert info.value.value == "gen value"
    assert log == ["gen start", "gen middle", "gen end", "gen deferred"]


def test_generator_return_value_kept_by_yield_from(mod):
    log: list[str] = []
    got = []

    def delegate():
        got.append((yield from mod.gen(log)))

    assert list(delegate()) == [1, 2]
    assert got == ["gen value"]
    assert log[-1] == "gen deferred"


def test_generator_close_runs_the_deferred_call(mod):
    log: list[str] = []
    g = mod.gen(log)
    next(g)
    assert log == ["gen start"]
    g.close()
    assert log == ["gen start", "gen deferred"]
    g2 = mod.gen(log)
    next(g2)
    with pytest.raises(ZeroDivisionError):
        g2.throw(ZeroDivisionError())
    assert log[-1] == "gen deferred"


def test_coroutine_defers_to_its_return(mod):
    log: list[str] = []
    assert inspect.iscoroutinefunction(mod.coro)
    assert asyncio.run(mod.coro(log, 41)) == 42
    assert log == ["coro start", "coro after await", "coro deferred"]


def test_coroutine_cancelled_runs_the_deferred_call(mod):
    log: list[str] = []

    async def main():
        task = asyncio.ensure_future(mod.coro(log, 1))
        await asyncio.sleep(0)  # the task starts and suspends in its await
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert log == ["coro start", "coro deferred"]


def test_async_generator_defers_to_its_end(agen_mod):
    log: list[str] = []
    assert inspect.isasyncgenfunction(agen_mod.agen)
    assert godefer._rt.is_prepared(agen_mod.agen.__code__)

    async def main():
        got = []
        async for item in agen_mod.agen(log):
            got.append(item)
            log.append(f"got {item}")
        return got

    assert asyncio.run(main()) == [1, 2]
    assert log == ["agen start", "got 1", "agen middle", "got 2", "agen end", "agen deferred"]


def test_async_generator_aclose_runs_the_deferred_call(agen_mod):
    log: list[str] = []

    async def main():
        ag = agen_mod.agen(log)
        assert await ag.__anext__() == 1
        assert log == ["agen start"]
        await ag.aclose()

    asyncio.run(main())
    assert log == ["agen start", "agen deferred"]


def test_future_import_and_docstring_stay_valid(load):
    src = textwrap.dedent(
        '''\
        """Module docstring."""

        from __future__ import annotations

        from godefer import defer

        LOG = []
        defer(LOG.append, "module deferred")


        def f(x: int, y: NotDefinedAnywhere = 1) -> list[str]:
            """f's docstring."""
            defer(LOG.append, "f deferred")
            return [str(x)]


        LOG.append("module end")
        '''
    )
    m = load(src, "future")
    assert m.__doc__ == "Module docstring."
    assert m.LOG == ["module end", "module deferred"]
    assert m.f.__annotations__ == {"x": "int", "y": "NotDefinedAnywhere", "return": "list[str]"}
    assert m.f.__doc__ == "f's docstring."
    assert godefer._rt.is_prepared(m.f.__code__)
    assert m.f(3) == ["3"]
    assert m.LOG[-1] == "f deferred"
    assert str(inspect.signature(m.f)) == "(x: 'int', y: 'NotDefinedAnywhere' = 1) -> 'list[str]'"


def test_functions_that_schedule_nothing_keep_their_own_bytecode(load):
    # A prepared module's other functions pay nothing (DESIGN.md: zero cost for code that does
    # not use godefer): no store of the result local at their returns, which only a function
    # whose exit the core finishes reads.
    src = textwrap.dedent(
        """\
        from godefer import defer


        def plain(x):
            if x:
                return
            return x + 1


        def gen():
            yield 1
            return


        async def coro(x):
            return x


        def uses(fn):
            defer(fn)
            return 1
        """
    )
    m = load(src, "untouched")
    plain_ns: dict = {}
    exec(compile(src.replace("from godefer import defer", ""), m.SOURCE_PATH, "exec"), plain_ns)
    for name in ("plain", "gen", "coro"):
        assert not godefer._rt.is_prepared(getattr(m, name).__code__)
        assert getattr(m, name).__code__.co_code == plain_ns[name].__code__.co_code, name
        assert "__godefer_rv__" not in getattr(m, name).__code__.co_varnames
    assert godefer._rt.is_prepared(m.uses.__code__)


@pytest.mark.skipif(sys.version_info < (3, 13), reason="STORE_FAST_STORE_FAST is 3.13's")
def test_inits_store_their_names_apart_on_313(load):
    # On 3.13 a fused pair of stores made the one-defer function ~40% slower than try/finally in
    # most processes of the project machine (bench/README.md): the inits keep their stores apart.
    src = textwrap.dedent(
        """\
        from godefer import defer, scope


        def top(fn):
            defer(fn)


        def guarded(fn):
            if fn:
                defer(fn)


        def block(fn):
            with scope():
                defer(fn)
                defer(fn)


        def many(fn):
            for _ in range(2):
                defer(fn)
            if fn:
                defer(fn)
                defer(fn)
                defer(fn)
                defer(fn)
        """
    )
    m = load(src, "apart")
    for name in ("top", "guarded", "block", "many"):
        code = getattr(m, name).__code__
        assert godefer._rt.is_prepared(code), name
        fused = [
            ins.argrepr
            for ins in dis.get_instructions(code)
            if ins.opname == "STORE_FAST_STORE_FAST"
            and all(part.strip().startswith("__godefer_") for part in ins.argrepr.split(","))
            and ins.offset < _first_handler(code)
        ]
        assert fused == [], (name, fused)
        calls: list[int] = []
        getattr(m, name)(lambda: calls.append(1))
        assert calls, name


def _first_handler(code) -> int:
    """The offset where the first exception handler starts: the code before it is the body's."""
    entries = dis.Bytecode(code).exception_entries
    return min((e.target for e in entries), default=len(code.co_code))
