"""Differential test: godefer against its try/finally oracle (DESIGN.md section 2).

Random programs from ``oracle_programs`` are rendered twice, once with ``defer`` / ``errdefer`` /
``okdefer`` / ``with scope():`` and once hand-translated into nested ``try`` statements, and
both are run from source strings (``exec(compile(src, "<oracle-i>", "exec"), ns)``, godefer's
runtime path). They must agree on every recorded event (including ``sys.exception()`` as seen
inside each deferred call), on the return value, and on the type, message and ``__context__``
chain of the escaping exception.

Environment: ``GODEFER_ORACLE_N`` (programs per run, default 1000) and ``GODEFER_ORACLE_SEED``.
Reproduce one program with ``python tests/oracle_programs.py --seed SEED --index I``.

The ``selfcheck`` tests need no godefer: they check the generator and renderers against a
pure-Python model (``FakeGodefer``), check that broken models are caught, and check coverage.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass

import pytest

import oracle_programs as op

N = int(os.environ.get("GODEFER_ORACLE_N", "1000"))
_seed_text = os.environ.get("GODEFER_ORACLE_SEED", str(op.DEFAULT_SEED))
SEED: int | str = int(_seed_text) if _seed_text.isdigit() else _seed_text
CHUNKS = 10
SHRINK_REPORTS = 3  # mismatches per chunk that get a minimised reproducer in the report
SELFCHECK_MIN = 300  # self-checks and coverage look at least at this many programs


def _name(i: int) -> str:
    return f"<oracle-{i}>"


@functools.cache
def _program(i: int) -> op.Program:
    return op.generate_program(SEED, i)


@functools.cache
def _oracle(i: int) -> op.Outcome:
    return op.run_program(_program(i), "tryfinally", _name(i))


@pytest.fixture(scope="module")
def godefer():
    # Imported here, before any program runs, so that the first ``from godefer import`` does
    # not happen inside an exec'd module body. A missing or broken build is an error, not a skip.
    import godefer as mod

    return mod


def _godefer_vs_oracle(prog: op.Program, name: str) -> tuple[op.Outcome, op.Outcome]:
    got = op.run_program(prog, "godefer", name)
    want = op.run_program(prog, "tryfinally", name)
    return got, want


def _differs(got: op.Outcome, want: op.Outcome) -> bool:
    return got != want


def _report(i: int, got: op.Outcome, want: op.Outcome, *, shrink: bool) -> str:
    prog = _program(i)
    head = (
        f"program {i} (seed={SEED!r}; reproduce: python tests/oracle_programs.py "
        f"--seed {SEED} --index {i})\n{op.describe_difference(got, want)}"
    )
    if not shrink:
        return head
    small = op.shrink(prog, lambda p: _differs(*_godefer_vs_oracle(p, _name(i))))
    sgot, swant = _godefer_vs_oracle(small, _name(i))
    return (
        f"{head}\n"
        f"--- minimised ({op.program_size(prog)} -> {op.program_size(small)} statements); "
        f"godefer form:\n{_body(op.render_godefer_module(small))}\n"
        f"--- try/finally form:\n{_body(op.render_tryfinally_module(small))}\n"
        f"--- minimised outcome:\n{op.describe_difference(sgot, swant)}\n"
        f"  godefer: {sgot}\n  oracle:  {swant}\n"
        f"--- original godefer form:\n{_body(op.render_godefer_module(prog))}"
    )


def _body(src: str) -> str:
    """A rendering without the shared prelude (classes, obs, boom, chain)."""
    cut = src.find("\ndef f")
    return textwrap.indent(src[cut + 1 :] if cut >= 0 else src, "    ")


# --------------------------------------------------------------------------------------------
# The differential test
# --------------------------------------------------------------------------------------------


def _compare_range(lo: int, hi: int) -> str | None:
    """Compare godefer with the oracle on programs lo..hi-1: None, or the failure report."""
    mismatches = []
    for i in range(lo, hi):
        got = op.run_program(_program(i), "godefer", _name(i))
        want = _oracle(i)
        if got != want:
            mismatches.append((i, got, want))
    if not mismatches:
        return None
    reports = [
        _report(i, got, want, shrink=k < SHRINK_REPORTS)
        for k, (i, got, want) in enumerate(mismatches)
    ]
    return (
        f"godefer differs from the try/finally oracle on {len(mismatches)} of {hi - lo} "
        f"programs (seed={SEED!r}, indexes {[i for i, _, _ in mismatches]}):\n\n"
        + "\n\n".join(reports)
    )


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_godefer_matches_tryfinally_oracle(chunk, godefer):
    lo, hi = chunk * N // CHUNKS, (chunk + 1) * N // CHUNKS
    print(f"godefer oracle: seed={SEED!r}, programs {lo}..{hi - 1} of {N}")
    failure = _compare_range(lo, hi)
    if failure:
        pytest.fail(failure, pytrace=False)


# --------------------------------------------------------------------------------------------
# Fixed programs with literal expectations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixed:
    name: str
    godefer_src: str  # functions using godefer (the prelude is prepended)
    tryfinally_src: str  # the same by hand with try/finally
    events: tuple
    result: tuple

    def source(self, style: str) -> str:
        src = self.godefer_src if style in ("godefer", "fake") else self.tryfinally_src
        return op.prelude(style) + "\n\n" + textwrap.dedent(src)


def _exc(*links: tuple[str, str]) -> tuple:
    return ("raise", tuple((t, m, False, False) for t, m in links))


FIXED = [
    Fixed(
        "lifo_on_error",
        """
        def run(rec):
            defer(obs, rec, "a")
            errdefer(obs, rec, "b")
            okdefer(obs, rec, "c")
            rec("body")
            raise E1("boom")
        """,
        """
        def run(rec):
            try:
                try:
                    ok = True
                    try:
                        rec("body")
                        raise E1("boom")
                    except BaseException:
                        ok = False
                        raise
                    finally:
                        if ok:
                            obs(rec, "c")
                except BaseException:
                    obs(rec, "b")
                    raise
            finally:
                obs(rec, "a")
        """,
        (("body",), ("b", "E1('boom')", None), ("a", "E1('boom')", None)),
        _exc(("E1", "boom")),
    ),
    Fixed(
        "success_keeps_return_value",
        """
        def run(rec):
            defer(obs, rec, "a")
            errdefer(obs, rec, "b")
            okdefer(obs, rec, "c")
            return "rv"
        """,
        """
        def run(rec):
            try:
                try:
                    ok = True
                    try:
                        return "rv"
                    except BaseException:
                        ok = False
                        raise
                    finally:
                        if ok:
                            obs(rec, "c")
                except BaseException:
                    obs(rec, "b")
                    raise
            finally:
                obs(rec, "a")
        """,
        (("c", "None", None), ("a", "None", None)),
        ("return", "rv"),
    ),
    Fixed(
        # CPython #102201: ExitStack drops "second-scheduled" from the chain; try/finally keeps it.
        "two_raising_deferred_calls_chain",
        """
        def run(rec):
            defer(boom, rec, "a", E1, "first-scheduled")
            defer(boom, rec, "b", E2, "second-scheduled")
            return "lost"
        """,
        """
        def run(rec):
            try:
                try:
                    return "lost"
                finally:
                    boom(rec, "b", E2, "second-scheduled")
            finally:
                boom(rec, "a", E1, "first-scheduled")
        """,
        (("b", "None"), ("a", "E2('second-scheduled')")),
        _exc(("E1", "first-scheduled"), ("E2", "second-scheduled")),
    ),
    Fixed(
        "errdefer_and_okdefer_decide_when_reached",
        """
        def run(rec):
            errdefer(obs, rec, "e")
            okdefer(obs, rec, "o")
            defer(boom, rec, "b", E2, "late")
            return 1
        """,
        """
        def run(rec):
            try:
                ok = True
                try:
                    try:
                        return 1
                    finally:
                        boom(rec, "b", E2, "late")
                except BaseException:
                    ok = False
                    raise
                finally:
                    if ok:
                        obs(rec, "o")
            except BaseException:
                obs(rec, "e")
                raise
        """,
        (("b", "None"), ("e", "E2('late')", None)),
        _exc(("E2", "late")),
    ),
    Fixed(
        "deferred_raise_replaces_body_exception",
        """
        def run(rec):
            defer(obs, rec, "last")
            defer(boom, rec, "b", E3, "cleanup")
            raise E1("body")
        """,
        """
        def run(rec):
            try:
                try:
                    raise E1("body")
                finally:
                    boom(rec, "b", E3, "cleanup")
            finally:
                obs(rec, "last")
        """,
        (("b", "E1('body')"), ("last", "E3('cleanup')", None)),
        _exc(("E3", "cleanup"), ("E1", "body")),
    ),
    Fixed(
        "loop_scope_break_continue",
        """
        def run(rec):
            for i in range(4):
                with scope():
                    defer(rec, "end", i)
                    errdefer(rec, "err", i)
                    if i == 1:
                        continue
                    if i == 2:
                        break
                    rec("body", i)
            rec("after")
            return "done"
        """,
        """
        def run(rec):
            for i in range(4):
                a = i
                try:
                    b = i
                    try:
                        if i == 1:
                            continue
                        if i == 2:
                            break
                        rec("body", i)
                    except BaseException:
                        rec("err", b)
                        raise
                finally:
                    rec("end", a)
            rec("after")
            return "done"
        """,
        (("body", 0), ("end", 0), ("end", 1), ("end", 2), ("after",)),
        ("return", "done"),
    ),
    Fixed(
        "caught_inside_block_is_not_an_exit",
        """
        def run(rec):
            with scope():
                errdefer(rec, "err")
                okdefer(rec, "ok")
                try:
                    raise E1("x")
                except E1:
                    rec("caught")
            rec("after")
        """,
        """
        def run(rec):
            try:
                ok = True
                try:
                    try:
                        raise E1("x")
                    except E1:
                        rec("caught")
                except BaseException:
                    ok = False
                    raise
                finally:
                    if ok:
                        rec("ok")
            except BaseException:
                rec("err")
                raise
            rec("after")
        """,
        (("caught",), ("ok",), ("after",)),
        ("return", None),
    ),
    Fixed(
        # The handled exception is sys.exception() here, but it is not in flight through the
        # block: errdefer must not run, okdefer must.
        "scope_inside_except_handler",
        """
        def run(rec):
            try:
                raise E1("handled")
            except E1:
                with scope():
                    errdefer(rec, "err")
                    defer(obs, rec, "d")
                    okdefer(obs, rec, "ok")
                rec("after", repr(sys.exception()))
            return "x"
        """,
        """
        def run(rec):
            try:
                raise E1("handled")
            except E1:
                try:
                    try:
                        ok = True
                        try:
                            pass
                        except BaseException:
                            ok = False
                            raise
                        finally:
                            if ok:
                                obs(rec, "ok")
                    finally:
                        obs(rec, "d")
                except BaseException:
                    rec("err")
                    raise
                rec("after", repr(sys.exception()))
            return "x"
        """,
        (("ok", "E1('handled')", None), ("d", "E1('handled')", None), ("after", "E1('handled')")),
        ("return", "x"),
    ),
    Fixed(
        "arguments_evaluated_when_scheduled",
        """
        def run(rec):
            n = 0
            defer(rec, "n", n)
            n += 1
            defer(obs, rec, "kw", val=n)
            n += 1
            return n
        """,
        """
        def run(rec):
            n = 0
            a = n
            try:
                n += 1
                b = n
                try:
                    n += 1
                    return n
                finally:
                    obs(rec, "kw", val=b)
            finally:
                rec("n", a)
        """,
        (("kw", "None", 1), ("n", 0)),
        ("return", 2),
    ),
    Fixed(
        "deferred_function_with_its_own_defers",
        """
        def helper(rec, x):
            defer(obs, rec, "helper-d")
            errdefer(obs, rec, "helper-e")
            raise E2("helper")


        def run(rec):
            defer(helper, rec, 1)
            rec("body")
            raise E1("body")
        """,
        """
        def helper(rec, x):
            try:
                try:
                    raise E2("helper")
                except BaseException:
                    obs(rec, "helper-e")
                    raise
            finally:
                obs(rec, "helper-d")


        def run(rec):
            try:
                rec("body")
                raise E1("body")
            finally:
                helper(rec, 1)
        """,
        (("body",), ("helper-e", "E2('helper')", None), ("helper-d", "E2('helper')", None)),
        _exc(("E2", "helper"), ("E1", "body")),
    ),
    Fixed(
        "block_exits_by_exception_and_by_return",
        """
        def run(rec):
            try:
                with scope():
                    defer(obs, rec, "inner")
                    raise E3("in-block")
            except LookupError as e:
                rec("caught", chain(e))
            with scope():
                okdefer(obs, rec, "ok")
                return "from-block"
        """,
        """
        def run(rec):
            try:
                try:
                    raise E3("in-block")
                finally:
                    obs(rec, "inner")
            except LookupError as e:
                rec("caught", chain(e))
            ok = True
            try:
                return "from-block"
            except BaseException:
                ok = False
                raise
            finally:
                if ok:
                    obs(rec, "ok")
        """,
        (("inner", "E3('in-block')", None), ("caught", ("E3('in-block')",)), ("ok", "None", None)),
        ("return", "from-block"),
    ),
]


def _check_fixed(case: Fixed, style: str) -> None:
    fake = style == "fake"
    got = op.run_source(
        case.source(style),
        f"<oracle-fixed-{case.name}>",
        op.FakeGodefer().namespace() if fake else None,
        after_exec=_wrap_functions_in_fake_scopes if fake else None,
    )
    assert got.events == case.events, f"{case.name} [{style}]"
    assert got.result == case.result, f"{case.name} [{style}]"
    assert got.exception_after == "None"


@pytest.mark.parametrize("case", FIXED, ids=lambda c: c.name)
def test_fixed_program_godefer(case, godefer):
    _check_fixed(case, "godefer")


@pytest.mark.parametrize("case", FIXED, ids=lambda c: c.name)
def test_selfcheck_fixed_program_expectations(case):
    # The literal expectations hold for the hand translation and for the pure-Python model.
    _check_fixed(case, "tryfinally")
    _check_fixed(case, "fake")


def _wrap_functions_in_fake_scopes(ns: dict) -> None:
    """Give each function of a hand-written fixed program a fake scope (the fake has no hooks)."""
    scope = ns["scope"]
    for key, fn in list(ns.items()):
        if getattr(getattr(fn, "__code__", None), "co_filename", "").startswith("<oracle-fixed"):

            def wrapper(*args, _fn=fn, **kwargs):
                with scope():
                    return _fn(*args, **kwargs)

            ns[key] = wrapper


# --------------------------------------------------------------------------------------------
# Self-checks of the generator and renderers (no godefer needed)
# --------------------------------------------------------------------------------------------


def _selfcheck_range() -> range:
    return range(max(N, SELFCHECK_MIN))


def test_selfcheck_generator_is_deterministic_and_valid():
    for i in range(50):
        assert op.generate_program(SEED, i) == op.generate_program(SEED, i)
        assert op.validate(op.generate_program(SEED, i))
    assert op.generate_program(SEED, 0) != op.generate_program(SEED, 1)
    assert op.generate_program(SEED, 0) != op.generate_program(f"{SEED}x", 0)


def test_selfcheck_model_matches_oracle():
    """The fake (a LIFO stack per scope) agrees with the try/finally translation everywhere."""
    bad = []
    for i in _selfcheck_range():
        got = op.run_program(_program(i), "fake", _name(i))
        if got != _oracle(i):
            bad.append(f"program {i}:\n{op.describe_difference(got, _oracle(i), 'fake')}")
    assert not bad, f"seed={SEED!r}\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("mutant", op.MUTANTS)
def test_selfcheck_broken_model_is_caught(mutant):
    """The comparison can fail: each deliberately wrong model differs from the oracle."""
    differ = 0
    for i in _selfcheck_range():
        differ += op.run_program(_program(i), "fake", _name(i), mutant) != _oracle(i)
        if differ == 3:
            break
    assert differ >= 3, f"mutant {mutant!r} differs on only {differ} programs (seed={SEED!r})"


def test_selfcheck_failure_report(monkeypatch):
    """With a FIFO "godefer" the differential check fails and reports minimised programs."""
    real = op.run_program

    def fifo_godefer(prog, style, filename, mutant=None):
        if style == "godefer":
            return real(prog, "fake", filename, "fifo")
        return real(prog, style, filename, mutant)

    monkeypatch.setattr(op, "run_program", fifo_godefer)
    report = _compare_range(0, 40)
    assert report is not None
    assert f"seed={SEED!r}" in report
    assert report.count("--- minimised (") == min(SHRINK_REPORTS, report.count("\nprogram "))
    assert "with scope():" in report or "defer(" in report
    assert "try:" in report and "finally:" in report


def test_selfcheck_shrinker_minimises():
    # Minimise against the FIFO mutant: the result must still differ and be small.
    for i in _selfcheck_range():
        if op.run_program(_program(i), "fake", _name(i), "fifo") != _oracle(i):
            break
    else:  # pragma: no cover
        pytest.fail("no program distinguishes FIFO from LIFO")

    def fails(p: op.Program) -> bool:
        got = op.run_program(p, "fake", "<s>", "fifo")
        return _differs(got, op.run_program(p, "tryfinally", "<s>"))

    small = op.shrink(_program(i), fails)
    assert fails(small)
    assert op.validate(small)
    assert op.program_size(small) <= 4, op.render_godefer_module(small)


def test_selfcheck_generator_coverage():
    """The generated programs really exercise what the oracle is about (no vacuous pass)."""
    static: Counter = Counter()
    dynamic: Counter = Counter()
    programs = _selfcheck_range()
    for i in programs:
        static += op.static_features(_program(i))
        dynamic += op.dynamic_features(_program(i), _oracle(i))
    need_static = {
        "defer": 0.5,
        "errdefer": 0.4,
        "okdefer": 0.4,
        "scope": 0.4,
        "for_scope": 0.3,
        "break": 0.1,
        "continue": 0.1,
        "try": 0.3,
        "scope_in_handler": 0.1,
        "call": 0.2,
        "target_boom": 0.3,
        "target_fn": 0.2,
        "target_obs": 0.5,
        "target_rec": 0.5,
        "captured_arg": 0.3,
        "kwarg": 0.2,
        "inc": 0.3,
        "multi_function": 0.5,
        "outer_handled": 0.1,
    }
    need_dynamic = {
        "defer_ran": 0.3,
        "errdefer_ran": 0.08,
        "errdefer_skipped": 0.3,
        "okdefer_ran": 0.15,
        "okdefer_skipped": 0.3,
        "deferred_saw_exception": 0.15,
        "deferred_call_raised": 0.1,
        "raised": 0.3,
        "raised_with_context": 0.08,
        "raised_context_depth3": 0.015,
        "returned_value": 0.08,
        "caught": 0.08,
        "caught_with_context": 0.01,
    }
    op.require_feature_coverage(
        static,
        dynamic,
        need_static,
        need_dynamic,
        total=len(programs),
        what=f"generator (seed={SEED!r})",
    )


def test_selfcheck_rendered_module_is_importable(tmp_path, monkeypatch):
    """``render_*_module`` output works as a module file defining ``run(rec)``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for i in range(5):
        path = tmp_path / f"oracle_mod_{i}.py"
        path.write_text(op.render_tryfinally_module(_program(i)))
        spec = importlib.util.spec_from_file_location(f"oracle_mod_{i}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        events: list = []
        got = op.run_namespace(vars(mod), lambda *a, ev=events: ev.append(a), events)
        assert got == _oracle(i)
        sys.modules.pop(f"oracle_mod_{i}", None)
    assert "from godefer import" in op.render_godefer_module(_program(0))
    assert "godefer" not in op.render_tryfinally_module(_program(0))
