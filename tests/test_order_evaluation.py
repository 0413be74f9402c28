"""Order (LIFO, one stack per scope) and evaluation time of callee and arguments (DESIGN.md §2).

Runtime path; the key cases run again from an ``exec`` string (``"<string>"``, no source).
"""

from __future__ import annotations

import pytest

from godefer import ScopeBound, defer, errdefer, okdefer, scoped
from runtime_path import run_src


class CM:
    def __init__(self, log, name):
        self.log = log
        self.name = name

    def __enter__(self):
        self.log.append(("enter", self.name))
        return self

    def __exit__(self, typ, val, tb):
        self.log.append(("exit", self.name, typ))
        return False


class Res(ScopeBound):
    def __init__(self, log, name):
        self.log = log
        self.name = name

    def close(self):
        self.log.append(("close", self.name))


# --- LIFO --------------------------------------------------------------------------------


def test_lifo():
    log = []

    def f():
        for name in "abcde":
            defer(log.append, name)

    f()
    assert log == ["e", "d", "c", "b", "a"]


def test_lifo_many():
    log = []

    def f():
        for i in range(2000):
            defer(log.append, i)

    f()
    assert log == list(range(1999, -1, -1))


def test_same_callable_scheduled_twice_runs_twice():
    log = []

    def f():
        cb = log.append
        defer(cb, 1)
        defer(cb, 1)

    f()
    assert log == [1, 1]


def test_one_stack_shared_by_every_kind_normal_exit():
    log = []

    def f():
        defer(log.append, "defer-1")
        got = scoped(CM(log, "cm"))
        errdefer(log.append, "errdefer")
        okdefer(log.append, "okdefer")
        r = Res(log, "res")
        defer(log.append, "defer-2")
        log.append("body")
        return got.name, r.name

    assert f() == ("cm", "res")
    assert log == [
        ("enter", "cm"),
        "body",
        "defer-2",
        ("close", "res"),
        "okdefer",
        ("exit", "cm", None),
        "defer-1",
    ]


def test_one_stack_shared_by_every_kind_exception_exit():
    log = []

    def f():
        defer(log.append, "defer-1")
        scoped(CM(log, "cm"))
        errdefer(log.append, "errdefer")
        okdefer(log.append, "okdefer")
        Res(log, "res")
        defer(log.append, "defer-2")
        raise KeyError("k")

    with pytest.raises(KeyError):
        f()
    assert log == [
        ("enter", "cm"),
        "defer-2",
        ("close", "res"),
        "errdefer",
        ("exit", "cm", KeyError),
        "defer-1",
    ]


def test_lifo_in_exec_source():
    ns = run_src(
        """
        from godefer import defer, errdefer, okdefer
        log = []

        def f(fail):
            defer(log.append, 1)
            errdefer(log.append, "err")
            okdefer(log.append, "ok")
            defer(log.append, 2)
            if fail:
                raise ValueError
            return "done"

        r = f(False)
        try:
            f(True)
        except ValueError:
            log.append("caught")
        """
    )
    assert ns["r"] == "done"
    assert ns["log"] == [2, "ok", 1, 2, "err", 1, "caught"]


# --- evaluation time ---------------------------------------------------------------------


def test_arguments_are_evaluated_when_scheduled():
    log = []

    def f():
        x = 1
        defer(log.append, x)
        x = 2
        defer(log.append, x)
        x = 3

    f()
    assert log == [2, 1]


def test_callee_is_evaluated_when_scheduled():
    log = []

    def f():
        fn = lambda: log.append("first")
        defer(fn)
        fn = lambda: log.append("second")
        log.append(("rebound", fn is not None))

    f()
    assert log == [("rebound", True), "first"]


def test_bound_method_receiver_is_evaluated_when_scheduled():
    log = []

    class Box:
        def __init__(self, name):
            self.name = name

        def show(self):
            log.append(self.name)

    def f():
        obj = Box("original")
        defer(obj.show)
        obj = Box("replacement")
        obj.show()

    f()
    assert log == ["replacement", "original"]


def test_arguments_are_references_not_copies():
    log = []

    def f():
        items = []
        defer(log.append, items)
        items.append("added later")

    f()
    assert log == [["added later"]]


def test_star_args_and_kwargs_are_evaluated_when_scheduled():
    calls = []

    def rec(*args, **kwargs):
        calls.append((args, kwargs))

    def f():
        args = [1, 2]
        kwargs = {"a": 1}
        defer(rec, *args, 0, **kwargs, b=2)
        args.append(3)
        kwargs["a"] = 99
        kwargs["c"] = 3

    f()
    assert calls == [((1, 2, 0), {"a": 1, "b": 2})]


@pytest.mark.parametrize(
    ("sched", "runs"),
    [(defer, 2), (errdefer, 1), (okdefer, 1)],
    ids=["defer", "errdefer", "okdefer"],
)
def test_first_parameter_is_positional_only(sched, runs):
    calls = []

    def rec(*args, **kwargs):
        calls.append((args, kwargs))

    def f(fail):
        sched(rec, 1, fn=2, args=3, kwargs=4)
        if fail:
            raise ValueError

    f(False)
    with pytest.raises(ValueError):
        f(True)
    assert calls == [((1,), {"fn": 2, "args": 3, "kwargs": 4})] * runs


def test_loop_closes_every_file(tmp_path):
    files = []
    for i in range(3):
        p = tmp_path / f"f{i}.txt"
        p.write_text(str(i))
        files.append(p)
    opened = []
    closed_during = []

    def f():
        for path in files:
            fh = open(path)  # noqa: SIM115
            opened.append(fh)
            defer(fh.close)
        closed_during.extend(fh.closed for fh in opened)
        return [fh.read() for fh in opened]

    assert f() == ["0", "1", "2"]
    assert closed_during == [False, False, False]
    assert [fh.closed for fh in opened] == [True, True, True]


def test_loop_closes_every_object_in_reverse_order():
    log = []

    class Closer:
        def __init__(self, name):
            self.name = name

        def close(self):
            log.append(self.name)

    def f(objs):
        for o in objs:
            defer(o.close)

    f([Closer(n) for n in "xyz"])
    assert log == ["z", "y", "x"]


def test_loop_arguments_vs_late_binding_closures():
    log = []

    def f():
        for i in range(3):
            defer(log.append, ("arg", i))
            defer(lambda: log.append(("closure", i)))

    f()
    # arguments are evaluated at the defer; a lambda body reads i when it runs (Python rules)
    assert log == [
        ("closure", 2),
        ("arg", 2),
        ("closure", 2),
        ("arg", 1),
        ("closure", 2),
        ("arg", 0),
    ]


def test_errdefer_and_okdefer_arguments_are_evaluated_when_scheduled():
    evaluated = []

    def arg(x):
        evaluated.append(x)
        return x

    def f(fail):
        errdefer(evaluated.append, arg("errarg"))
        okdefer(evaluated.append, arg("okarg"))
        evaluated.append("body")
        if fail:
            raise ValueError

    f(False)
    assert evaluated == ["errarg", "okarg", "body", "okarg"]
    evaluated.clear()
    with pytest.raises(ValueError):
        f(True)
    assert evaluated == ["errarg", "okarg", "body", "errarg"]


def test_evaluation_in_exec_source():
    ns = run_src(
        """
        from godefer import defer
        log = []

        class Closer:
            def __init__(self, name):
                self.name = name

            def close(self):
                log.append(self.name)

        def f():
            x = "first"
            defer(log.append, x)
            x = "second"
            for o in [Closer("a"), Closer("b")]:
                defer(o.close)
            log.append(x)

        f()
        """
    )
    assert ns["log"] == ["second", "b", "a", "first"]
