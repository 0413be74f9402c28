"""The statement form ``CALL in defer|errdefer|okdefer`` (DESIGN.md §1).

In prepared code (this module is prepared by godefer's pytest plugin) the statement schedules the
call: callee and arguments, including ``*a`` and ``**k``, are evaluated at the statement, like the
call form. It is recognised for every name the module bound by importing ``defer``, ``errdefer``
or ``okdefer`` and for the qualified ``godefer.defer`` forms. Any other use of ``in defer`` is a
``SyntaxError`` naming file and line when the code is prepared. Executed unprepared, it raises
``NotPreparedError`` saying the call has already happened.
"""

# The statement form is an expression statement whose value is unused, by design.

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid

import pytest

import godefer
import godefer as g
import godefer._rt
from godefer import NotPreparedError, defer, errdefer, okdefer
from godefer import defer as d
from godefer import errdefer as ed
from godefer import okdefer as od
from godefer._prepare import prepare_source


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, *args, **kwargs) -> str:
        self.calls.append((args, kwargs))
        return "recorded"

    def tag(self, name: str) -> None:
        self.calls.append((name,))


def module_level_user(log: list[str]) -> str:
    log.append("deferred") in defer
    log.append("body")
    return "value"


def test_this_module_is_prepared():
    assert godefer._rt.is_prepared(module_level_user.__code__)
    log: list[str] = []
    assert module_level_user(log) == "value"
    assert log == ["body", "deferred"]


# --- the three forms ---------------------------------------------------------------------------


def test_three_forms_on_success():
    log: list[str] = []

    def f():
        log.append("defer") in defer
        log.append("errdefer") in errdefer
        log.append("okdefer") in okdefer
        log.append("body")
        return "value"

    assert f() == "value"
    assert log == ["body", "okdefer", "defer"]


def test_three_forms_on_exception():
    log: list[str] = []

    def f():
        log.append("defer") in defer
        log.append("errdefer") in errdefer
        log.append("okdefer") in okdefer
        log.append("body")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        f()
    assert log == ["body", "errdefer", "defer"]


def test_statement_returns_nothing_and_calls_nothing_at_the_statement():
    rec = Recorder()

    def f():
        rec("deferred") in defer
        assert rec.calls == []
        return "done"

    assert f() == "done"
    assert rec.calls == [(("deferred",), {})]


def test_aliases():
    log: list[str] = []

    def f():
        log.append("d") in d
        log.append("ed") in ed
        log.append("od") in od
        log.append("body")

    f()
    assert log == ["body", "od", "d"]

    def h():
        log.append("ed-on-error") in ed
        log.append("od-on-error") in od
        raise KeyError

    log.clear()
    with pytest.raises(KeyError):
        h()
    assert log == ["ed-on-error"]


def test_qualified_forms():
    log: list[str] = []

    def f():
        log.append("godefer.defer") in godefer.defer
        log.append("g.defer") in g.defer
        log.append("g.okdefer") in g.okdefer
        log.append("godefer.errdefer") in godefer.errdefer
        log.append("body")

    f()
    assert log == ["body", "g.okdefer", "g.defer", "godefer.defer"]


def test_method_call_and_nested_callee():
    rec = Recorder()
    holder = {"rec": rec}

    def f():
        rec.tag("method") in defer
        holder["rec"]("subscripted callee", key=1) in defer

    f()
    assert rec.calls == [(("subscripted callee",), {"key": 1}), ("method",)]


# --- evaluation at the statement ---------------------------------------------------------------


def test_arguments_are_evaluated_at_the_statement():
    log: list[object] = []

    def f():
        x = 1
        log.append(x) in defer
        x = 2
        items = ["a"]
        log.append(tuple(items)) in defer
        items.append("b")
        log.append(len(items)) in defer
        items.append("c")
        log.append(("end", x, len(items)))

    f()
    assert log == [("end", 2, 3), 2, ("a",), 1]


def test_callee_is_evaluated_at_the_statement():
    log: list[str] = []

    def first(tag):
        log.append(f"first {tag}")

    def second(tag):
        log.append(f"second {tag}")

    class Box:
        def __init__(self, name):
            self.name = name

        def show(self):
            log.append(f"box {self.name}")

    def f():
        fn = first
        fn("x") in defer
        fn = second
        box = Box("one")
        box.show() in defer
        box = Box("two")
        box.name = "changed"

    f()
    assert log == ["box one", "first x"]


def test_argument_expressions_run_once_at_the_statement():
    log: list[str] = []
    counter = iter(range(100))

    def next_value(label):
        value = next(counter)
        log.append(f"evaluated {label}={value}")
        return value

    def f():
        log.append(("deferred", next_value("a"))) in defer
        log.append("body")
        log.append(("deferred", next_value("b"))) in defer

    f()
    assert log == [
        "evaluated a=0",
        "body",
        "evaluated b=1",
        ("deferred", 1),
        ("deferred", 0),
    ]


def test_star_args_and_star_star_kwargs_are_unpacked_at_the_statement():
    rec = Recorder()

    def f():
        args = [1, 2]
        kwargs = {"k": 3}
        rec(0, *args, 9, **kwargs, last=True) in defer
        args.append(99)
        kwargs["late"] = 0
        args = [7]
        rec(*args) in defer
        args.append(8)

    f()
    assert rec.calls == [
        ((7,), {}),
        ((0, 1, 2, 9), {"k": 3, "last": True}),
    ]


def test_loop_schedules_every_iteration():
    log: list[int] = []

    def f():
        for i in range(3):
            log.append(i) in defer

    f()
    assert log == [2, 1, 0]


def test_lifo_with_call_forms_and_decorator():
    log: list[str] = []

    def f():
        defer(log.append, "call 1")
        log.append("statement 2") in defer
        okdefer(log.append, "ok call 3")
        log.append("err statement 4") in errdefer

        @defer
        def _():
            log.append("decorator 5")

        log.append("ok statement 6") in okdefer
        errdefer(log.append, "err call 7")
        log.append("body")

    f()
    assert log == ["body", "ok statement 6", "decorator 5", "ok call 3", "statement 2", "call 1"]


def test_lifo_with_call_forms_on_exception():
    log: list[str] = []

    def f():
        defer(log.append, "call 1")
        log.append("err statement 2") in errdefer
        okdefer(log.append, "ok call 3")
        log.append("statement 4") in defer
        errdefer(log.append, "err call 5")
        raise RuntimeError

    with pytest.raises(RuntimeError):
        f()
    assert log == ["err call 5", "statement 4", "err statement 2", "call 1"]


def test_many_statements_in_one_function_keep_lifo():
    log: list[int] = []

    def f():
        log.append(0) in defer
        log.append(1) in defer
        log.append(2) in errdefer
        log.append(3) in okdefer
        log.append(4) in defer
        log.append(5) in defer
        log.append(6) in defer
        log.append(7) in defer
        log.append(8) in defer
        log.append(9) in defer
        log.append(10) in okdefer
        return "value"

    assert f() == "value"
    assert log == [10, 9, 8, 7, 6, 5, 4, 3, 1, 0]


def test_errdefer_statement_sees_an_exception_raised_by_a_later_deferred_call():
    log: list[str] = []

    def raiser():
        raise KeyError("from deferred")

    def f():
        log.append("err") in errdefer
        log.append("ok") in okdefer
        raiser() in defer
        return 1

    with pytest.raises(KeyError, match="from deferred"):
        f()
    assert log == ["err"]


def test_non_callable_callee_is_a_type_error_at_the_statement():
    log: list[str] = []

    def f():
        log.append("scheduled") in defer
        x = 5
        x() in defer  # the callee is evaluated, not called: 5 is rejected here
        log.append("not reached")

    with pytest.raises(TypeError, match="callable") as info:
        f()
    assert log == ["scheduled"]  # the earlier statement still ran; nothing else was scheduled
    frames = [fr for fr in info.traceback if fr.frame.code.name == "f"]
    assert frames and frames[-1].lineno + 1 == f.__code__.co_firstlineno + 3


def test_statement_form_in_generator_and_block_scope():
    log: list[str] = []

    def gen():
        log.append("gen deferred") in defer
        yield 1
        log.append("gen after yield")

    assert list(gen()) == [1]
    assert log == ["gen after yield", "gen deferred"]

    log.clear()

    def blocks():
        for i in range(2):
            with godefer.scope():
                log.append(f"block {i} deferred") in defer
                log.append(f"block {i}")
        log.append("after loop")

    blocks()
    assert log == ["block 0", "block 0 deferred", "block 1", "block 1 deferred", "after loop"]


def test_statement_form_at_module_level_of_an_imported_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"gd_stmt_mod_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from godefer import defer as later

            LOG = []
            LOG.append("module deferred") in later
            LOG.append("module body")
            """
        )
    )
    importlib.invalidate_caches()
    try:
        mod = importlib.import_module(name)
        assert mod.LOG == ["module body", "module deferred"]
    finally:
        sys.modules.pop(name, None)


# --- misuse is a SyntaxError at preparation time ------------------------------------------------

MISUSES = [
    ("y = f() in defer", "call"),
    ("x in defer", "left"),
    ("print(f() in defer)", "call"),
    ("if f() in defer:\n        pass", "call"),
    ("return f() in defer", "call"),
    ("f() not in defer", "call"),
    ("(f() in defer) or g()", "call"),
    ("f() in defer in z", "call"),
    ("assert f() in errdefer", "call"),
    ("y = f() in okdefer", "call"),
    ("f in defer", "left"),
    ("f().x in defer", "left"),
    ("[f() in defer]", "call"),
]


@pytest.mark.parametrize(("stmt", "kind"), MISUSES)
def test_misuse_in_a_function_that_never_runs(stmt, kind):
    src = "from godefer import defer, errdefer, okdefer\n\n\ndef never_called():\n"
    src += f"    {stmt}\n"
    with pytest.raises(SyntaxError) as info:
        prepare_source(src, "/some/dir/misuse.py")
    err = info.value
    assert err.filename == "/some/dir/misuse.py"
    assert err.lineno == 5
    assert "in " in err.msg and "defer" in err.msg
    assert err.text is not None and err.text.strip().startswith(stmt.split("\n")[0].strip())


def test_misuse_message_says_what_is_wrong():
    src = "from godefer import defer\ny = open('x') in defer\n"
    with pytest.raises(SyntaxError) as info:
        prepare_source(src, "m.py")
    assert "in defer" in info.value.msg
    assert "statement" in info.value.msg
    src = "from godefer import defer\nx = 1\nx in defer\n"
    with pytest.raises(SyntaxError) as info:
        prepare_source(src, "m.py")
    assert info.value.lineno == 3
    assert "call" in info.value.msg


def test_misuse_with_alias_and_qualified_names():
    cases = [
        "from godefer import defer as later\n\n\ny = f() in later\n",
        "import godefer\n\n\ny = f() in godefer.defer\n",
        "import godefer as gg\n\n\ny = f() in gg.errdefer\n",
        "from godefer import okdefer as ok\n\n\nclass C:\n    y = f() in ok\n",
    ]
    for src in cases:
        with pytest.raises(SyntaxError) as info:
            prepare_source(src, "alias.py")
        assert info.value.filename == "alias.py"
        assert info.value.lineno == src.count("\n", 0, src.index("f()")) + 1


def test_misuse_in_a_lambda_is_reported():
    src = "from godefer import defer\n\nfn = lambda: f() in defer\n"
    with pytest.raises(SyntaxError) as info:
        prepare_source(src, "lam.py")
    assert info.value.lineno == 3


def test_misuse_is_reported_when_importing_a_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"gd_stmt_bad_{uuid.uuid4().hex[:10]}"
    path = tmp_path / f"{name}.py"
    path.write_text(
        "from godefer import defer\n"
        "\n"
        "\n"
        "def never_called():\n"
        "    result = open('x') in defer\n"
        "    return result\n"
    )
    importlib.invalidate_caches()
    try:
        with pytest.raises(SyntaxError) as info:
            importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)
    assert info.value.filename == str(path)
    assert info.value.lineno == 5
    assert info.value.text.strip() == "result = open('x') in defer"


def test_ordinary_membership_tests_are_left_alone():
    # `defer` below is not a name bound by importing godefer's API, or it is shadowed.
    srcs = [
        "import godefer\ndefer = [1]\nok = 1 in defer\n",
        "from godefer import defer\n\n\ndef f(defer):\n    return 1 in defer\n",
        "from godefer import defer\n\n\ndef f():\n    defer = [1]\n    return 1 in defer\n",
        "from godefer import errdefer\nok = 1 in [errdefer]\n",
    ]
    for src in srcs:
        code, _ = prepare_source(src, "fine.py")
        assert code is not None
    ns: dict = {}
    exec(prepare_source(srcs[1], "fine.py")[0], ns)
    assert ns["f"]([1]) is True
    assert ns["f"]([2]) is False


# --- unprepared execution ----------------------------------------------------------------------


def test_unprepared_statement_form_raises_after_the_call_happened():
    rec = Recorder()
    ns: dict = {"rec": rec}
    src = "from godefer import defer\nrec('once') in defer\n"
    with pytest.raises(NotPreparedError) as info:
        exec(compile(src, "<string>", "exec"), ns)
    assert rec.calls == [(("once",), {})]  # the call on the left happened, exactly once
    message = str(info.value)
    assert "already happened" in message
    assert "'recorded'" in message  # what the call returned
    assert "nothing was scheduled" in message
    assert "defer(fn, *args)" in message  # how to write it without preparation


@pytest.mark.parametrize("form", ["defer", "errdefer", "okdefer"])
def test_unprepared_statement_form_in_a_function(form):
    rec = Recorder()
    ns: dict = {"rec": rec}
    src = textwrap.dedent(
        f"""
        from godefer import {form}

        def f():
            rec("inside") in {form}
            return "unreachable"
        """
    )
    exec(compile(src, "<string>", "exec"), ns)
    assert not godefer._rt.is_prepared(ns["f"].__code__)
    with pytest.raises(NotPreparedError, match="already happened") as info:
        ns["f"]()
    assert f"in {form}" in str(info.value)
    assert rec.calls == [(("inside",), {})]
    # Nothing was scheduled: no further call at the function's exit.
    assert rec.calls == [(("inside",), {})]
    assert isinstance(info.value, RuntimeError)
