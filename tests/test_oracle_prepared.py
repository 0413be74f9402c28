"""Differential test of prepared code: godefer's import hook against the try/finally oracle.

Random programs from ``oracle_programs`` are written as module files into a fresh directory on
``sys.path`` and imported through the normal import system, so that godefer's import hook
prepares them (``BATCH`` programs to a module, each with functions of its own and its own
``run``; the modules share only the stateless prelude, and a program that schedules nothing gets
a module of its own, see :func:`import_batched`). Three runs of each program must agree on every
recorded event (including ``sys.exception()`` inside deferred calls), on the return value, on
the type, message and whole ``__context__`` chain of the escaping exception, and on
``sys.exception()`` afterwards:

* **prepared**: the imported program (its scheduling functions must really be prepared:
  ``godefer._rt.is_prepared``),
* **runtime**: the same godefer source run from an ``exec`` string (godefer's runtime path),
* **oracle**: the try/finally translation.

Program ``i`` of a run is program ``i`` of the base stream (those of
``test_oracle_differential.py``) for even ``i``, else of the extended stream
(``generate_program(..., extended=True)``: defers in ``if`` blocks and in loops at scope level
and, in some programs, the statement form ``fn(args) in defer``, which exists only in prepared
code: for those programs the runtime run is skipped).

Environment: ``GODEFER_ORACLE_N`` (programs per run, default 1000, in ten chunks) and
``GODEFER_ORACLE_SEED``. Reproduce one program with
``python tests/oracle_programs.py --seed SEED --index I [--extended]``.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from types import ModuleType

import pytest

import module_files
import oracle_programs as op

N = int(os.environ.get("GODEFER_ORACLE_N", "1000"))
_seed_text = os.environ.get("GODEFER_ORACLE_SEED", str(op.DEFAULT_SEED))
SEED: int | str = int(_seed_text) if _seed_text.isdigit() else _seed_text
CHUNKS = 10
STREAMS = ("base", "extended")
SHRINK_REPORTS = 2  # mismatches per chunk that get a minimised reproducer in the report
BATCH = 10  # programs per imported module
SELFCHECK_MIN = 300


def _name(stream: str, i: int) -> str:
    return f"<oracle-{stream}-{i}>"


@functools.cache
def _program(stream: str, i: int) -> op.Program:
    return op.generate_program(SEED, i, extended=stream == "extended")


@functools.cache
def _oracle(stream: str, i: int) -> op.Outcome:
    return op.run_program(_program(stream, i), "tryfinally", _name(stream, i))


def _reproduce(stream: str, i: int) -> str:
    flag = " --extended" if stream == "extended" else ""
    return f"python tests/oracle_programs.py --seed {SEED} --index {i}{flag}"


@pytest.fixture(scope="module")
def godefer():
    # Imported before any program runs; a missing or broken build is an error, not a skip.
    import godefer as mod
    from godefer import _import_hook

    assert any(isinstance(f, _import_hook.GodeferFinder) for f in sys.meta_path), (
        "godefer's import hook is not installed (GODEFER_PREPARE=0?): nothing would be prepared"
    )
    return mod


# --------------------------------------------------------------------------------------------
# Importing programs as module files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _remove_module_dirs():
    yield
    module_files.remove_made_dirs()


def import_sources(sources: list[str]) -> list:
    return module_files.import_sources(sources, "godefer_oracle_prepared")


@dataclass(frozen=True)
class Imported:
    """One program as imported: its namespace (``run``, ``f0``, ...) and module, or the error."""

    namespace: dict
    module: ModuleType | None
    error: BaseException | None = None


def _imported(module: ModuleType | BaseException, k: int | None) -> Imported:
    if isinstance(module, BaseException):
        return Imported({}, None, module)
    ns = vars(module) if k is None else op.batch_namespace(vars(module), k)
    return Imported(ns, module)


def import_programs(progs: list[op.Program]) -> list[Imported]:
    """Import each program as a module of its own."""
    modules = import_sources([op.render_godefer_module(p) for p in progs])
    return [_imported(m, None) for m in modules]


def import_batched(progs: list[op.Program]) -> list[Imported]:
    """Import the programs ``BATCH`` to a module (``op.render_batch_module``: each program has
    functions of its own and shares only the stateless prelude), which spares most of the
    per-module cost of preparation.

    Preparation also decides things per module (whether anything in it schedules at all), so a
    program that schedules nothing anywhere gets a module of its own: batched with others, it
    would be prepared as part of a module that does schedule. A batch that fails to import is
    imported again one program per module, so that an error is pinned on its program."""
    out: list[Imported | None] = [None] * len(progs)
    alone = [k for k, p in enumerate(progs) if not any(scheduling_functions(p))]
    for k, imported in zip(alone, import_programs([progs[k] for k in alone]), strict=True):
        out[k] = imported
    rest = [k for k in range(len(progs)) if out[k] is None]
    batches = [rest[j : j + BATCH] for j in range(0, len(rest), BATCH)]
    modules = import_sources([op.render_batch_module([progs[k] for k in b]) for b in batches])
    for batch, module in zip(batches, modules, strict=True):
        if isinstance(module, BaseException):
            for k, imported in zip(batch, import_programs([progs[k] for k in batch]), strict=True):
                out[k] = imported
        else:
            for j, k in enumerate(batch):
                out[k] = _imported(module, j)
    assert all(imported is not None for imported in out)
    return out  # type: ignore[return-value]


def scheduling_functions(prog: op.Program) -> list[str]:
    """Names of the generated functions that schedule something (they must be prepared)."""
    return [
        f"f{f.index}"
        for f in prog.functions
        if any(isinstance(s, op.Defer) for s, _ in op._walk(f.body))
    ]


def unprepared_functions(prog: op.Program, imported: Imported) -> list[str]:
    """The scheduling functions of ``prog`` that the import did not prepare (should be none)."""
    from godefer import _import_hook, _rt

    if imported.module is None:
        return []  # the import failed: reported as the prepared outcome
    loader = imported.module.__spec__.loader
    if not isinstance(loader, _import_hook.GodeferLoader):
        return [f"<module loaded by {type(loader).__name__}>"]
    return [
        fn
        for fn in scheduling_functions(prog)
        if not _rt.is_prepared(imported.namespace[fn].__code__)
    ]


def run_prepared(prog: op.Program, imported: Imported, name: str) -> op.Outcome:
    """The prepared run: ``run(rec)`` of the imported program, observed. (The self-checks
    replace it.) An import error is the outcome ``("import-error", chain)``."""
    if imported.error is not None:
        return op.Outcome((), ("import-error", op.exc_chain(imported.error)), "None")
    events: list[tuple] = []
    return op.run_namespace(imported.namespace, lambda *values: events.append(values), events)


def _assert_runtime_path(ns: dict) -> None:
    from godefer import _rt

    for key, value in ns.items():
        if key.startswith("f") and key[1:].isdigit():
            assert not _rt.is_prepared(value.__code__), f"{key} from an exec string is prepared"


def run_runtime(prog: op.Program, name: str) -> op.Outcome | None:
    """The runtime-path run (an ``exec`` string), or None when ``prog`` uses the statement form."""
    if op.uses_statement_form(prog):
        return None
    src = op.render_godefer_module(prog)
    return op.run_source(src, name, after_exec=_assert_runtime_path)


def prepared_outcome(prog: op.Program, name: str) -> op.Outcome:
    """Import one program as a module of its own and run it (for the shrinker)."""
    (imported,) = import_programs([prog])
    return run_prepared(prog, imported, name)


# --------------------------------------------------------------------------------------------
# The differential test
# --------------------------------------------------------------------------------------------


def _stream(i: int) -> str:
    """Program ``i`` of a run comes from the base stream for even ``i``, else the extended."""
    return STREAMS[i % 2]


@dataclass(frozen=True)
class Case:
    stream: str
    index: int
    prepared: op.Outcome
    runtime: op.Outcome | None  # None: the program uses the statement form
    oracle: op.Outcome
    unprepared: tuple  # scheduling functions the import hook did not prepare

    def failures(self) -> list[str]:
        out = []
        if self.unprepared:
            out.append("unprepared")
        if self.prepared != self.oracle:
            out.append("prepared")
        if self.runtime is not None and self.runtime != self.oracle:
            out.append("runtime")
        return out


def run_cases(indexes: range) -> list[Case]:
    keys = [(_stream(i), i) for i in indexes]
    progs = [_program(*key) for key in keys]
    cases = []
    for (stream, i), prog, imported in zip(keys, progs, import_batched(progs), strict=True):
        name = _name(stream, i)
        cases.append(
            Case(
                stream,
                i,
                prepared=run_prepared(prog, imported, name),
                runtime=run_runtime(prog, name),
                oracle=_oracle(stream, i),
                unprepared=tuple(unprepared_functions(prog, imported)),
            )
        )
    return cases


def _body(src: str) -> str:
    """A rendering without the shared prelude (classes, obs, boom, chain)."""
    cut = src.find("\ndef f")
    return textwrap.indent(src[cut + 1 :] if cut >= 0 else src, "    ")


def _report(case: Case, *, shrink: bool) -> str:
    prog = _program(case.stream, case.index)
    name = _name(case.stream, case.index)
    kinds = case.failures()
    lines = [
        f"{case.stream} program {case.index} (seed={SEED!r}; reproduce: "
        f"{_reproduce(case.stream, case.index)}): {', '.join(kinds)} differ"
    ]
    if case.unprepared:
        lines.append(f"  not prepared by the import hook: {list(case.unprepared)}")
    if "prepared" in kinds:
        lines.append(op.describe_difference(case.prepared, case.oracle, "prepared"))
    if "runtime" in kinds:
        lines.append(op.describe_difference(case.runtime, case.oracle, "runtime"))
    if not shrink or kinds == ["unprepared"]:
        return "\n".join(lines)
    if "prepared" in kinds:
        got_name = "prepared"

        def got(p: op.Program) -> op.Outcome:
            return prepared_outcome(p, name)

    else:
        got_name = "runtime"

        def got(p: op.Program) -> op.Outcome:
            return op.run_program(p, "godefer", name)

    def want(p: op.Program) -> op.Outcome:
        return op.run_program(p, "tryfinally", name)

    # Shrink towards the same kind of difference, not just any (a smaller program may well
    # trip over another bug on the way).
    kind = _difference_kind(case.prepared if got_name == "prepared" else case.runtime, case.oracle)

    def fails(p: op.Program) -> bool:
        g, w = got(p), want(p)
        return g != w and _difference_kind(g, w) == kind

    if not fails(prog):
        lines.append(
            f"--- not reproduced by a {got_name} run of the program on its own (a module of its "
            "own for the prepared run): the difference depends on its neighbours in the batch"
        )
        return "\n".join(lines)
    small = op.shrink(prog, fails, max_tries=1500)
    sgot, swant = got(small), want(small)
    lines += [
        f"--- minimised against {got_name} ({op.program_size(prog)} -> "
        f"{op.program_size(small)} statements); godefer form:",
        _body(op.render_godefer_module(small)),
        "--- try/finally form:",
        _body(op.render_tryfinally_module(small)),
        "--- minimised outcome:",
        op.describe_difference(sgot, swant, got_name),
        f"  {got_name}: {sgot}",
        f"  oracle:  {swant}",
        "--- original godefer form:",
        _body(op.render_godefer_module(prog)),
    ]
    return "\n".join(lines)


def _difference_kind(got: op.Outcome | None, want: op.Outcome) -> tuple:
    """What differs, coarsely: which parts, how each run ended, and exception types that only
    ``got`` raised."""
    assert got is not None

    def types(o: op.Outcome) -> set:
        return {link[0] for link in o.result[1]} if o.result[0] != "return" else set()

    return (
        got.events == want.events,
        got.result[0],
        want.result[0],
        got.result == want.result,
        got.exception_after == want.exception_after,
        frozenset(types(got) - types(want)),
    )


def compare_range(lo: int, hi: int) -> str | None:
    """Programs lo..hi-1: None if all three runs agree on each, else the failure report."""
    bad = [c for c in run_cases(range(lo, hi)) if c.failures()]
    if not bad:
        return None
    reports = [_report(c, shrink=k < SHRINK_REPORTS) for k, c in enumerate(bad)]
    which = [f"{c.stream}:{c.index}" for c in bad]
    return (
        f"prepared / runtime / try/finally disagree on {len(bad)} of {hi - lo} programs "
        f"(seed={SEED!r}: {which}):\n\n" + "\n\n".join(reports)
    )


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_prepared_matches_runtime_and_tryfinally(chunk, godefer):
    lo, hi = chunk * N // CHUNKS, (chunk + 1) * N // CHUNKS
    print(
        f"godefer prepared oracle: seed={SEED!r}, programs {lo}..{hi - 1} of {N} "
        "(even: base stream, odd: extended stream)"
    )
    failure = compare_range(lo, hi)
    if failure:
        pytest.fail(failure, pytrace=False)


# --------------------------------------------------------------------------------------------
# Focused checks of the prepared path
# --------------------------------------------------------------------------------------------


def test_prepared_cache_round_trip(godefer, monkeypatch):
    """With bytecode writing on, the import hook caches prepared code under its own tag, and a
    second import runs from that cache (no preparation) with the same results."""
    from godefer import _import_hook

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    keys = [(_stream(i), i) for i in range(12)]
    progs = [_program(*key) for key in keys]
    names = module_files.unique_names("godefer_oracle_cached", len(progs))
    with module_files.module_dir() as d:
        for name, prog in zip(names, progs, strict=True):
            (d / f"{name}.py").write_text(op.render_godefer_module(prog), encoding="utf-8")
        importlib.invalidate_caches()
        first = []
        for name in names:
            first.append(Imported(vars(importlib.import_module(name)), sys.modules.pop(name)))
        for name in names:
            cached = _import_hook.cache_path(str(d / f"{name}.py"))
            assert cached.endswith(_import_hook.CACHE_SUFFIX)
            assert os.path.exists(cached), cached

        def no_preparation(*args, **kwargs):
            raise AssertionError("prepared again instead of loading the cache")

        monkeypatch.setattr(_import_hook, "prepare_source", no_preparation)
        for k, name in enumerate(names):
            again = Imported(vars(importlib.import_module(name)), sys.modules.pop(name))
            assert again.module is not first[k].module
            assert not unprepared_functions(progs[k], again)
            # Against the fresh preparation (agreement with the oracle is the main test's job).
            fresh = run_prepared(progs[k], first[k], "<first>")
            assert run_prepared(progs[k], again, "<cached>") == fresh, keys[k]


def test_statement_form_is_not_prepared_from_a_string(godefer):
    """The runtime path refuses ``CALL in defer`` (the call has already happened) -- which is
    why statement-form programs are compared prepared against try/finally only."""
    src = "from godefer import defer\n\ndef f(rec):\n    rec('x') in defer\n    rec('body')\n"
    ns: dict = {}
    exec(compile(src, "<statement-form>", "exec"), ns)
    events: list = []
    with pytest.raises(godefer.NotPreparedError):
        ns["f"](lambda *a: events.append(a))
    assert events == [("x",)]


def test_statement_form_programs_are_prepared(godefer):
    """Prepared, the statement form schedules: its call is made at the scope's exit."""
    indexes = [i for i in _extended_indexes() if op.uses_statement_form(_program("extended", i))]
    indexes = indexes[:10]
    assert len(indexes) == 10
    progs = [_program("extended", i) for i in indexes]
    for i, prog, imported in zip(indexes, progs, import_programs(progs), strict=True):
        assert not unprepared_functions(prog, imported)
        assert run_prepared(prog, imported, _name("extended", i)) == _oracle("extended", i)


# --------------------------------------------------------------------------------------------
# Self-checks: the generator's extended stream, its translation, and that comparisons can fail
# --------------------------------------------------------------------------------------------


def _extended_indexes() -> list[int]:
    """The extended programs of a run (at least SELFCHECK_MIN / 2 of them)."""
    return [i for i in range(max(N, SELFCHECK_MIN)) if _stream(i) == "extended"]


def test_selfcheck_extended_stream_is_deterministic_and_valid():
    for i in range(50):
        prog = op.generate_program(SEED, i, extended=True)
        assert prog == op.generate_program(SEED, i, extended=True)
        assert op.validate(prog)
        assert prog != op.generate_program(SEED, i)
        # The base stream knows nothing of the extended features.
        base = op.static_features(op.generate_program(SEED, i))
        assert not base.keys() & {"if", "deferloop", "statement_form"}
    assert op.generate_program(SEED, 0, extended=True) != op.generate_program(
        f"{SEED}x", 0, extended=True
    )


def test_selfcheck_extended_model_matches_oracle():
    """The pure-Python model (no translation at all) agrees with the try/finally translation of
    the extended programs: the duplication of ``if`` blocks and the unrolling of loops is exact.
    Every translation compiles (no "too many statically nested blocks")."""
    bad = []
    for i in _extended_indexes():
        want = _oracle("extended", i)
        assert want.result[0] != "exec-error", (i, want)
        got = op.run_program(_program("extended", i), "fake", _name("extended", i))
        if got != want:
            bad.append(f"program {i}:\n{op.describe_difference(got, want, 'fake')}")
    assert not bad, f"seed={SEED!r}\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("mutant", op.MUTANTS)
def test_selfcheck_broken_model_is_caught_on_extended(mutant):
    differ = 0
    for i in _extended_indexes():
        prog = _program("extended", i)
        differ += op.run_program(prog, "fake", _name("extended", i), mutant) != _oracle(
            "extended", i
        )
        if differ == 3:
            break
    assert differ >= 3, f"mutant {mutant!r} differs on only {differ} programs (seed={SEED!r})"


def test_selfcheck_fifo_differs_from_prepared(godefer):
    """A deliberately FIFO model disagrees with the prepared results (the outcomes compared
    really discriminate), in both streams."""
    differ: Counter = Counter()
    for c in run_cases(range(50)):
        fifo = op.run_program(_program(c.stream, c.index), "fake", "<fifo>", "fifo")
        differ[c.stream] += fifo != c.prepared
    assert differ["base"] >= 5 and differ["extended"] >= 5, differ


def test_selfcheck_failure_report(godefer, monkeypatch):
    """With a FIFO model standing in for the prepared run, the differential check fails and
    reports minimised programs; likewise when a function comes back unprepared."""
    this = sys.modules[__name__]

    def fifo_prepared(prog, imported, name):
        return op.run_program(prog, "fake", name, "fifo")

    monkeypatch.setattr(this, "run_prepared", fifo_prepared)
    monkeypatch.setattr(this, "prepared_outcome", lambda p, n: fifo_prepared(p, None, n))
    report = compare_range(0, 30)
    assert report is not None
    assert f"seed={SEED!r}" in report
    assert ": prepared differ" in report
    assert "runtime differ" not in report  # the runtime path still agrees with the oracle
    assert report.count("--- minimised against prepared (") == min(
        SHRINK_REPORTS, report.count(" program ")
    )
    assert "try:" in report and "finally:" in report
    assert "--extended" in report or "base program" in report
    monkeypatch.undo()

    monkeypatch.setattr(this, "unprepared_functions", lambda prog, imported: ["f0"])
    report = compare_range(0, 3)
    assert report is not None and "not prepared by the import hook: ['f0']" in report


def test_selfcheck_shrinker_handles_extended_programs():
    """Minimising an extended program against the FIFO model keeps it valid and failing."""
    for i in _extended_indexes():
        prog = _program("extended", i)
        feats = op.static_features(prog)
        if not {"deferloop_schedules", "if_schedules"} <= feats.keys():
            continue
        if op.run_program(prog, "fake", "<s>", "fifo") != _oracle("extended", i):
            break
    else:  # pragma: no cover
        pytest.fail("no extended program with both features distinguishes FIFO from LIFO")

    def fails(p: op.Program) -> bool:
        return op.run_program(p, "fake", "<s>", "fifo") != op.run_program(p, "tryfinally", "<s>")

    small = op.shrink(prog, fails)
    assert fails(small)
    assert op.validate(small)
    assert op.program_size(small) <= 5, op.render_godefer_module(small)


def _extended_dynamic(prog: op.Program, outcome: op.Outcome) -> set[str]:
    """Observed behaviour of the extended features in one run."""
    in_loop, in_if, stmt_form = set(), set(), set()

    def visit(stmts: tuple, loop: bool, branch: bool) -> None:
        for s in stmts:
            if isinstance(s, op.Defer) and not isinstance(s.target, op.FnT):
                (in_loop if loop else in_if if branch else set()).add(s.target.tag)
                if s.form == "stmt":
                    stmt_form.add(s.target.tag)
            elif isinstance(s, op.If):
                visit(s.body, loop, True)
                visit(s.orelse, loop, True)
            elif isinstance(s, op.For) and s.defers:
                visit(s.body, True, branch)
            elif isinstance(s, (op.Scope, op.For)):
                visit(s.body, False, False)
            elif isinstance(s, op.Try):
                visit(s.body, False, False)
                visit(s.handler, False, False)

    for f in prog.functions:
        visit(f.body, False, False)
    ran = Counter(ev[0] for ev in outcome.events if ev and isinstance(ev[0], str))
    feats = set()
    if any(ran[t] >= 2 for t in in_loop):
        feats.add("loop_defer_ran_repeatedly")
    if in_if & ran.keys():
        feats.add("if_defer_ran")
    if stmt_form & ran.keys():
        feats.add("statement_form_ran")
    return feats


def test_selfcheck_extended_coverage():
    """The extended stream really exercises its features (no vacuous pass)."""
    static: Counter = Counter()
    dynamic: Counter = Counter()
    programs = _extended_indexes()
    for i in programs:
        prog = _program("extended", i)
        static += op.static_features(prog)
        dynamic += op.dynamic_features(prog, _oracle("extended", i))
        dynamic.update(_extended_dynamic(prog, _oracle("extended", i)))
    need_static = {
        "if": 0.6,
        "if_schedules": 0.4,
        "deferloop": 0.4,
        "deferloop_schedules": 0.3,
        "deferloop_jump": 0.15,
        "statement_form": 0.2,
        "defer": 0.6,
        "errdefer": 0.5,
        "okdefer": 0.5,
        "scope": 0.5,
        "try": 0.4,
        "target_boom": 0.4,
    }
    need_dynamic = {
        "loop_defer_ran_repeatedly": 0.08,
        "if_defer_ran": 0.1,
        "statement_form_ran": 0.1,
        "errdefer_ran": 0.08,
        "okdefer_ran": 0.15,
        "deferred_saw_exception": 0.15,
        "deferred_call_raised": 0.1,
        "raised_with_context": 0.08,
        "returned_value": 0.08,
    }
    op.require_feature_coverage(
        static,
        dynamic,
        need_static,
        need_dynamic,
        total=len(programs),
        what=f"extended generator (seed={SEED!r})",
    )


def test_selfcheck_programs_reach_every_kind_of_slot(godefer):
    """The prepared programs hold functions with slots (starred callees among them, as
    statements, as assigned values and inside larger expressions), loop
    lists, lists their statements' pushes fill (a defer in a conditional expression), and
    statements holding two defers, so the comparisons cover each."""
    indexes = _extended_indexes()[:60]
    progs = [_program("extended", i) for i in indexes]
    kinds: Counter = Counter()
    for prog, imported in zip(progs, import_programs(progs), strict=True):
        assert imported.error is None, imported.error
        rendered = op.render_godefer_module(prog)
        kinds["paired"] += len(re.findall(r"_p\d+ = \(", rendered))
        kinds["assigned_star"] += len(
            re.findall(r"_d\d+ = (?:defer|errdefer|okdefer)\(\*", rendered)
        )
        kinds["star_in_expression"] += len(
            re.findall(r"_d\d+ = \((?:defer|errdefer|okdefer)\(\*", rendered)
        )
        for f in prog.functions:
            code = imported.namespace[f"f{f.index}"].__code__
            names = code.co_names
            if "complete_slots" not in names:
                continue
            kinds["open_coded"] += 1
            states = [n for n in code.co_varnames if re.fullmatch(r"__godefer_b\d+_st__", n)]
            kinds["open_blocks"] += len(states)
            kinds["several_open_blocks"] += len(states) >= 2
            scopes = [s for s, _ in op._walk(f.body) if isinstance(s, op.Scope)]
            if len(states) == len(scopes):  # every block of the function is open-coded
                kinds["block_loop_list"] += sum(_loop_defers(sc.body) for sc in scopes)
            kinds["pushed"] += "list_new" in names
            kinds["star"] += any(n.startswith("slot_star_") for n in names)
            kinds["loop_list"] += "list_first" in names or "list_first_call" in names
    assert kinds["open_coded"] >= 30, kinds
    assert kinds["pushed"] >= 5, kinds
    assert kinds["loop_list"] >= 5, kinds
    assert kinds["paired"] >= 5, kinds
    assert kinds["open_blocks"] >= 30, kinds
    assert kinds["several_open_blocks"] >= 3, kinds
    assert kinds["block_loop_list"] >= 3, kinds
    assert kinds["star"] >= 10, kinds
    assert kinds["assigned_star"] >= 5, kinds
    assert kinds["star_in_expression"] >= 5, kinds


def _loop_defers(stmts: tuple) -> bool:
    """Whether a loop directly in ``stmts`` (or in an ``if`` there) schedules in their scope."""
    for s in stmts:
        if isinstance(s, op.For) and s.defers and op._schedules(s.body):
            return True
        if isinstance(s, op.If) and (_loop_defers(s.body) or _loop_defers(s.orelse)):
            return True
    return False
