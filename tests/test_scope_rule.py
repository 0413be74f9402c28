"""Which code block a deferred call belongs to, and when it runs (DESIGN.md §1, §2 "Scope").

These tests run on the runtime path (the test module is not prepared).  The most important
cases run again from an ``exec`` string compiled as ``"<string>"``: such code has no source and
stays on the runtime path once preparation exists.
"""

from __future__ import annotations

import functools
import textwrap

import pytest

from godefer import defer, errdefer, okdefer, scope


def run_src(src: str, **names: object) -> dict:
    """Execute ``src`` (dedented) as top-level code compiled from ``"<string>"``."""
    ns: dict = {"__name__": "godefer_exec_src", **names}
    exec(compile(textwrap.dedent(src), "<string>", "exec"), ns)
    return ns


def noop(*args: object, **kwargs: object) -> None:
    pass


# --- the return value of defer / errdefer / okdefer ---------------------------------------


@pytest.mark.parametrize("sched", [defer, errdefer, okdefer], ids=["defer", "errdefer", "okdefer"])
def test_scheduler_returns_its_callable(sched):
    got = []

    def f():
        got.append(sched(noop, 1, k=2))

    f()
    assert got == [noop]
    assert got[0] is noop


def test_decorator_form_schedules_the_decorated_function():
    log = []

    def f():
        @defer
        def cleanup():
            log.append("cleanup")

        log.append(("bound", cleanup.__name__))
        log.append("body")
        return 7

    assert f() == 7
    assert log == [("bound", "cleanup"), "body", "cleanup"]


# --- functions -------------------------------------------------------------------------


def test_function_scope_runs_at_return():
    log = []

    def f():
        defer(log.append, "deferred")
        log.append("body")
        return "value"

    assert f() == "value"
    assert log == ["body", "deferred"]


def test_function_scope_runs_when_falling_off_the_end():
    log = []

    def f():
        defer(log.append, "deferred")
        log.append("body")

    assert f() is None
    assert log == ["body", "deferred"]


def test_function_scope_runs_when_an_exception_leaves():
    log = []

    def f():
        defer(log.append, "deferred")
        log.append("body")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        f()
    assert log == ["body", "deferred"]


def test_early_return_from_a_loop_runs_the_calls_once():
    log = []

    def f():
        for i in range(5):
            defer(log.append, i)
            if i == 2:
                return i
        return None

    assert f() == 2
    assert log == [2, 1, 0]


def test_nothing_runs_before_the_scope_exits():
    log = []
    snapshots = []

    def f():
        defer(log.append, "a")
        snapshots.append(list(log))
        defer(log.append, "b")
        snapshots.append(list(log))

    f()
    assert snapshots == [[], []]
    assert log == ["b", "a"]


def test_callee_scope_is_separate_from_caller_scope():
    log = []

    def inner():
        defer(log.append, "inner deferred")
        log.append("inner body")

    def outer():
        defer(log.append, "outer deferred")
        inner()
        log.append("outer after inner")

    outer()
    assert log == ["inner body", "inner deferred", "outer after inner", "outer deferred"]


def test_nested_function_defined_inside_has_its_own_scope():
    log = []

    def outer():
        def helper(tag):
            defer(log.append, ("helper deferred", tag))
            log.append(("helper", tag))

        defer(log.append, "outer deferred")
        helper(1)
        helper(2)
        log.append("outer end")

    outer()
    assert log == [
        ("helper", 1),
        ("helper deferred", 1),
        ("helper", 2),
        ("helper deferred", 2),
        "outer end",
        "outer deferred",
    ]


def test_method_scope():
    log = []

    class C:
        def m(self, x):
            defer(log.append, ("deferred", x))
            log.append(("body", x))
            return x + 1

        @staticmethod
        def s():
            defer(log.append, "static deferred")

        @classmethod
        def c(cls):
            defer(log.append, ("class deferred", cls.__name__))

    assert C().m(1) == 2
    C.s()
    C.c()
    assert log == [("body", 1), ("deferred", 1), "static deferred", ("class deferred", "C")]


def test_defer_called_from_c_code_schedules_in_the_innermost_python_frame():
    log = []

    def f():
        list(map(defer, [lambda: log.append(1), lambda: log.append(2)]))
        functools.partial(defer, log.append, 3)()
        log.append("body")

    f()
    assert log == ["body", 3, 2, 1]


# --- lambdas ---------------------------------------------------------------------------


def test_lambda_is_its_own_scope():
    log = []
    g = lambda: (defer(log.append, "lambda deferred"), log.append("lambda body"))[1]

    def f():
        defer(log.append, "f deferred")
        g()
        log.append("f after lambda")

    f()
    assert log == ["lambda body", "lambda deferred", "f after lambda", "f deferred"]


def test_lambda_called_from_c_code_is_its_own_scope():
    log = []

    def f():
        key = lambda x: (defer(log.append, ("key deferred", x)), x)[1]
        out = sorted([2, 1], key=key)
        log.append(("sorted", out))

    f()
    assert log == [("key deferred", 2), ("key deferred", 1), ("sorted", [1, 2])]


# --- comprehensions belong to the enclosing block --------------------------------------


def test_list_comprehension_belongs_to_enclosing_function():
    log = []

    def f():
        made = [defer(log.append, i) for i in range(3)]
        log.append(("after comprehension", len(made)))

    f()
    assert log == [("after comprehension", 3), 2, 1, 0]


def test_set_comprehension_belongs_to_enclosing_function():
    log = []

    def rec(x):
        log.append(x)

    def f():
        made = {defer(rec, i) for i in range(3)}
        log.append(("after comprehension", made == {rec}))

    f()
    assert log == [("after comprehension", True), 2, 1, 0]


def test_dict_comprehension_belongs_to_enclosing_function():
    log = []

    def f():
        made = {i: defer(log.append, ("v", i)) for i in range(3)}
        log.append(("after comprehension", sorted(made)))

    f()
    assert log == [("after comprehension", [0, 1, 2]), ("v", 2), ("v", 1), ("v", 0)]


def test_nested_comprehensions_belong_to_enclosing_function():
    log = []

    def f():
        [[defer(log.append, (i, j)) for j in range(2)] for i in range(2)]
        log.append("after")

    f()
    assert log == ["after", (1, 1), (1, 0), (0, 1), (0, 0)]


def test_comprehension_in_a_lambda_belongs_to_the_lambda():
    log = []

    def f():
        (lambda: [defer(log.append, i) for i in range(2)])()  # noqa: PLC3002
        log.append("after lambda")

    f()
    assert log == [1, 0, "after lambda"]


def test_comprehension_deferring_when_the_function_raises():
    log = []

    def f():
        [defer(log.append, i) for i in range(2)]
        raise KeyError("k")

    with pytest.raises(KeyError):
        f()
    assert log == [1, 0]


def test_comprehension_raising_after_deferring_keeps_the_calls_for_the_function():
    log = []

    def g():
        [defer(log.append, i) if i < 2 else 1 / 0 for i in range(3)]
        log.append("not reached")

    with pytest.raises(ZeroDivisionError):
        g()
    assert log == [1, 0]


def test_function_called_from_a_comprehension_has_its_own_scope():
    log = []

    def helper(i):
        return defer(log.append, ("helper", i))

    def f():
        [helper(i) for i in range(2)]
        log.append("after comprehension")

    f()
    assert log == [("helper", 0), ("helper", 1), "after comprehension"]


# --- generator expressions are their own scope ----------------------------------------


def test_generator_expression_is_its_own_scope():
    log = []

    def f():
        defer(log.append, "f deferred")
        made = list(defer(log.append, i) for i in range(3))
        log.append(("after genexp", len(made)))

    f()
    assert log == [2, 1, 0, ("after genexp", 3), "f deferred"]


def test_partially_consumed_generator_expression_runs_at_close():
    log = []

    def f():
        g = (defer(log.append, i) for i in range(5))
        next(g)
        next(g)
        log.append("suspended")
        g.close()
        log.append("closed")

    f()
    assert log == ["suspended", 1, 0, "closed"]


# --- exec / eval top-level code is a module body -----------------------------------------


def test_exec_top_level_runs_when_exec_finishes():
    log = []

    def f():
        defer(log.append, "f deferred")
        exec(
            "from godefer import defer\n"
            "defer(log.append, 'exec deferred')\n"
            "log.append('exec body')\n",
            {"log": log},
        )
        log.append("after exec")

    f()
    assert log == ["exec body", "exec deferred", "after exec", "f deferred"]


def test_exec_top_level_runs_when_exec_raises():
    log = []
    src = "from godefer import defer\ndefer(log.append, 'exec deferred')\nraise KeyError('x')\n"
    with pytest.raises(KeyError):
        exec(src, {"log": log})
    assert log == ["exec deferred"]


def test_exec_with_separate_locals_is_a_module_body():
    log = []
    exec(
        "from godefer import defer\ndefer(log.append, 'deferred')\nlog.append('body')\n",
        {"log": log},
        {},
    )
    log.append("after exec")
    assert log == ["body", "deferred", "after exec"]


def test_a_deferred_callable_that_defers_has_its_own_scope():
    log = []

    def cleanup():
        defer(log.append, "scheduled by the cleanup")
        log.append("cleanup body")

    def f():
        defer(log.append, "f first scheduled")
        defer(cleanup)
        log.append("f body")

    f()
    assert log == ["f body", "cleanup body", "scheduled by the cleanup", "f first scheduled"]


def test_eval_code_is_its_own_block():
    log = []

    def rec(x):
        log.append(x)

    def f():
        got = eval("defer(rec, 'eval deferred')", {"defer": defer, "rec": rec})
        log.append(("after eval", got is rec))

    f()
    assert log == ["eval deferred", ("after eval", True)]


def test_exec_functions_lambdas_and_comprehensions():
    ns = run_src(
        """
        from godefer import defer
        log = []

        def f():
            defer(log.append, "f deferred")
            [defer(log.append, i) for i in range(2)]
            list(defer(log.append, ("gen", i)) for i in range(2))
            (lambda: defer(log.append, "lambda deferred"))()
            log.append("f body")
            return "r"

        result = f()
        """
    )
    assert ns["result"] == "r"
    assert ns["log"] == [
        ("gen", 1),
        ("gen", 0),
        "lambda deferred",
        "f body",
        1,
        0,
        "f deferred",
    ]


def test_exec_top_level_comprehension_belongs_to_the_exec_body():
    log = []
    run_src(
        """
        from godefer import defer
        [defer(log.append, i) for i in range(3)]
        log.append("exec body end")
        """,
        log=log,
    )
    assert log == ["exec body end", 2, 1, 0]


# --- @scope / @scope() as decorators ----------------------------------------------------


@pytest.mark.parametrize("deco", [scope, scope()], ids=["scope", "scope()"])
def test_scope_decorator_keeps_behaviour(deco):
    log = []

    @deco
    def double(x):
        """Doc."""
        defer(log.append, ("deferred", x))
        log.append(("body", x))
        if x < 0:
            raise ValueError(x)
        return x * 2

    assert callable(double)
    assert double.__name__ == "double"
    assert double(3) == 6
    with pytest.raises(ValueError):
        double(-1)
    assert log == [("body", 3), ("deferred", 3), ("body", -1), ("deferred", -1)]


def test_scope_decorator_on_a_generator_function():
    log = []

    @scope
    def gen():
        defer(log.append, "deferred")
        yield 1
        log.append("after yield")
        yield 2

    assert list(gen()) == [1, 2]
    assert log == ["after yield", "deferred"]


def test_scope_decorator_on_a_method():
    log = []

    class C:
        @scope
        def m(self, x):
            defer(log.append, ("deferred", x))
            return x

    assert C().m(5) == 5
    assert log == [("deferred", 5)]
