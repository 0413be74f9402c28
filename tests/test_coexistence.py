"""Coexistence (DESIGN.md section 2): debuggers, coverage and profilers keep working on code that
uses godefer, deferred calls still run while they are active, and nothing global is installed
that slows code which does not use godefer.

Most tests run twice, on the same source (``SRC``):

* ``runtime``: the functions are built by ``exec`` of a string, so godefer can never prepare
  them. This pins the *runtime path* (sys.monitoring on 3.12+, a chained C-level trace function
  on 3.11), the one that shares machinery with the tools.
* ``prepared``: the source is imported from a real module file, which godefer's import hook
  rewrites (open-coded deferred calls); skipped if the hook left it alone.

The tests about godefer's own sys.monitoring tool are about the runtime path only.
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib
import io
import itertools
import json
import linecache
import os
import pdb
import pstats
import re
import subprocess
import sys

import pytest

from godefer import _rt

RUNTIME_FILE = "<godefer-coexistence>"
HAS_MONITORING = sys.version_info >= (3, 12)
needs_monitoring = pytest.mark.skipif(not HAS_MONITORING, reason="sys.monitoring is 3.12+")

# The function under test: `f` defers `deferred`, calls `hook()` (a place for a test to install
# a tool while the deferred call is pending), then returns. Line numbers are fixed by this text.
SRC = """\
from godefer import defer


def deferred(log):
    log.append("deferred")
    log.append("deferred-2")


def f(log, hook=None):
    defer(deferred, log)
    if hook is not None:
        hook()
    log.append("body")
    return 42
"""
DEFERRED_LINES = {5, 6}
F_LINES_NO_HOOK = {10, 11, 13, 14}
F_LINES_AFTER_HOOK = {13, 14}
EXPECTED_LOG = ["body", "deferred", "deferred-2"]

_counter = itertools.count()


class Subject:
    """``SRC``'s functions, either on godefer's runtime path or prepared by its import hook."""

    def __init__(self, kind: str, tmp_path, src: str = SRC, *, with_source: bool = False):
        self.kind = kind
        if kind == "runtime":
            # Built from a string: godefer can never prepare it. ``with_source`` puts the text
            # into linecache (for pdb's listings and breakpoints); the code is already compiled.
            self.filename = RUNTIME_FILE
            if with_source:
                linecache.cache[RUNTIME_FILE] = (len(src), None, src.splitlines(True), RUNTIME_FILE)
            self.ns: dict = {"__name__": "godefer_coexistence_runtime"}
            exec(compile(src, RUNTIME_FILE, "exec"), self.ns)
        else:
            name = f"godefer_coexistence_prepared_{next(_counter)}"
            path = tmp_path / f"{name}.py"
            path.write_text(src)
            self.filename = str(path)
            sys.path.insert(0, str(tmp_path))
            try:
                self.ns = vars(importlib.import_module(name))
            finally:
                sys.path.remove(str(tmp_path))
                sys.modules.pop(name, None)
            # The prepared variant must really be prepared, or it would test the runtime path twice.
            assert _rt.is_prepared(self.ns["f"].__code__), "import hook did not prepare"

    def __getitem__(self, key):
        return self.ns[key]


@pytest.fixture(params=["runtime", "prepared"])
def kind(request):
    return request.param


@pytest.fixture
def subject(kind, tmp_path):
    return Subject(kind, tmp_path)


@pytest.fixture(autouse=True)
def restore_global_hooks():
    """Whatever a test installs, put the interpreter's trace/profile functions back."""
    trace, profile = sys.gettrace(), sys.getprofile()
    try:
        yield
    finally:
        sys.settrace(trace)
        sys.setprofile(profile)
        linecache.cache.pop(RUNTIME_FILE, None)


class Recorder:
    """A sys.settrace / sys.setprofile function recording (name, event, line) of one file."""

    def __init__(self, filename: str):
        self.filename = filename
        self.events: list[tuple[str, str, int]] = []

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename == self.filename:
            self.events.append((frame.f_code.co_name, event, frame.f_lineno))
        return self

    def kinds(self, name: str) -> set[str]:
        return {ev for n, ev, _ in self.events if n == name}

    def lines(self, name: str) -> set[int]:
        return {line for n, ev, line in self.events if n == name and ev == "line"}


def assert_deferred_traced(rec: Recorder) -> None:
    assert {"call", "line", "return"} <= rec.kinds("deferred"), rec.events
    assert rec.lines("deferred") == DEFERRED_LINES, rec.events


# ---------------------------------------------------------------------------------------------
# (a) sys.settrace installed before the function runs


def test_settrace_before_call_sees_function_and_deferred_call(subject):
    rec, log = Recorder(subject.filename), []
    sys.settrace(rec)
    try:
        result = subject["f"](log)
        still_installed = sys.gettrace()
    finally:
        sys.settrace(None)
    assert result == 42
    assert log == EXPECTED_LOG
    assert {"call", "line", "return"} <= rec.kinds("f"), rec.events
    assert rec.lines("f") >= F_LINES_NO_HOOK, rec.events
    assert_deferred_traced(rec)
    assert still_installed is rec, "the user's trace function was replaced"


def test_settrace_before_call_with_exception_exit(kind, tmp_path):
    subject = Subject(
        kind, tmp_path, SRC.replace("    return 42\n", '    raise KeyError("boom")\n')
    )
    rec, log = Recorder(subject.filename), []
    sys.settrace(rec)
    try:
        with pytest.raises(KeyError):
            subject["f"](log)
        still_installed = sys.gettrace()
    finally:
        sys.settrace(None)
    assert log == EXPECTED_LOG
    assert {"call", "line", "exception", "return"} <= rec.kinds("f"), rec.events
    assert_deferred_traced(rec)
    assert still_installed is rec


# ---------------------------------------------------------------------------------------------
# (b) sys.settrace installed inside the function, after the defer was registered


@pytest.mark.parametrize("trace_current_frame", [True, False], ids=["f_trace", "settrace-only"])
def test_settrace_installed_after_defer(subject, trace_current_frame):
    rec, log = Recorder(subject.filename), []

    def install():
        if trace_current_frame:  # what pdb.set_trace() does: trace the caller's frame too
            sys._getframe(1).f_trace = rec
        sys.settrace(rec)

    try:
        result = subject["f"](log, install)
        still_installed = sys.gettrace()
    finally:
        sys.settrace(None)
    assert result == 42
    assert log == EXPECTED_LOG
    assert_deferred_traced(rec)
    if trace_current_frame:
        assert {"line", "return"} <= rec.kinds("f"), rec.events
        assert rec.lines("f") >= F_LINES_AFTER_HOOK, rec.events
    assert still_installed is rec, "the user's trace function was replaced"


def test_settrace_cleared_after_defer(subject):
    """A tool that removes tracing while a defer is pending (pdb's `continue`) loses nothing."""
    rec, log = Recorder(subject.filename), []
    sys.settrace(rec)
    try:
        result = subject["f"](log, lambda: sys.settrace(None))
    finally:
        sys.settrace(None)
    assert result == 42
    assert log == EXPECTED_LOG
    assert "deferred" not in {n for n, _, _ in rec.events}, "tracing was cleared, yet traced"


def test_settrace_replaced_by_another_tracer_after_defer(subject):
    first, second, log = Recorder(subject.filename), Recorder(subject.filename), []
    sys.settrace(first)
    try:
        result = subject["f"](log, lambda: sys.settrace(second))
    finally:
        sys.settrace(None)
    assert result == 42
    assert log == EXPECTED_LOG
    assert_deferred_traced(second)


# ---------------------------------------------------------------------------------------------
# (c) cProfile


def _profiled_functions(prof: cProfile.Profile) -> set[tuple[str, str]]:
    stats = pstats.Stats(prof)
    return {(filename, name) for filename, _line, name in stats.stats}  # type: ignore[attr-defined]


def test_cprofile_enabled_before_call(subject):
    log = []
    prof = cProfile.Profile()
    prof.enable()
    try:
        result = subject["f"](log)
    finally:
        prof.disable()
    assert result == 42
    assert log == EXPECTED_LOG
    seen = _profiled_functions(prof)
    assert (subject.filename, "f") in seen
    assert (subject.filename, "deferred") in seen, sorted(seen)


def test_cprofile_enabled_after_defer(subject):
    log = []
    prof = cProfile.Profile()
    try:
        result = subject["f"](log, prof.enable)
    finally:
        prof.disable()
    assert result == 42
    assert log == EXPECTED_LOG
    seen = _profiled_functions(prof)
    assert (subject.filename, "deferred") in seen, sorted(seen)


def test_cprofile_runcall(subject):
    log = []
    prof = cProfile.Profile()
    assert prof.runcall(subject["f"], log) == 42
    assert log == EXPECTED_LOG
    assert (subject.filename, "deferred") in _profiled_functions(prof)


# ---------------------------------------------------------------------------------------------
# (d) another sys.monitoring tool, and godefer's own tool id


def _godefer_tool_ids() -> set[int]:
    mon = sys.monitoring
    return {i for i in range(6) if (name := mon.get_tool(i)) and "godefer" in name.lower()}


@contextlib.contextmanager
def _monitoring_tool(tool: int, name: str):
    mon = sys.monitoring
    if mon.get_tool(tool) is not None:
        pytest.skip(f"sys.monitoring tool {tool} is already used by {mon.get_tool(tool)!r}")
    mon.use_tool_id(tool, name)
    try:
        yield
    finally:
        mon.set_events(tool, 0)
        for ev in (mon.events.PY_START, mon.events.PY_RETURN, mon.events.LINE):
            mon.register_callback(tool, ev, None)
        mon.free_tool_id(tool)


class MonitoringRecorder:
    def __init__(self, filename: str):
        self.filename = filename
        self.events: list[tuple[str, str, int | None]] = []

    def start(self, code, offset):
        if code.co_filename == self.filename:
            self.events.append((code.co_name, "start", None))

    def ret(self, code, offset, retval):
        if code.co_filename == self.filename:
            self.events.append((code.co_name, "return", None))

    def line(self, code, line):
        if code.co_filename == self.filename:
            self.events.append((code.co_name, "line", line))

    def register(self, tool: int) -> int:
        mon = sys.monitoring
        mon.register_callback(tool, mon.events.PY_START, self.start)
        mon.register_callback(tool, mon.events.PY_RETURN, self.ret)
        mon.register_callback(tool, mon.events.LINE, self.line)
        return mon.events.PY_START | mon.events.PY_RETURN | mon.events.LINE

    def kinds(self, name):
        return {ev for n, ev, _ in self.events if n == name}

    def lines(self, name):
        return {line for n, ev, line in self.events if n == name and ev == "line"}


@needs_monitoring
@pytest.mark.parametrize("tool_attr", ["DEBUGGER_ID", "PROFILER_ID"])
def test_other_monitoring_tool_global_events(subject, tool_attr):
    mon = sys.monitoring
    tool = getattr(mon, tool_attr)
    rec, log, tools_pending = MonitoringRecorder(subject.filename), [], {}

    def snapshot():
        tools_pending.update({i: mon.get_tool(i) for i in range(6)})

    with _monitoring_tool(tool, "coexistence-test"):
        mon.set_events(tool, rec.register(tool))
        result = subject["f"](log, snapshot)
        mon.set_events(tool, 0)
    assert result == 42
    assert log == EXPECTED_LOG
    assert {"start", "line", "return"} <= rec.kinds("f"), rec.events
    assert {"start", "line", "return"} <= rec.kinds("deferred"), rec.events
    assert rec.lines("deferred") == DEFERRED_LINES, rec.events
    assert tools_pending[tool] == "coexistence-test"


@needs_monitoring
def test_other_monitoring_tool_local_events_on_same_code(subject):
    """Another tool's local events on the deferring code object, turned on and off, do not
    disturb godefer's own (on the runtime path: local PY_RETURN on that code object)."""
    mon = sys.monitoring
    tool = mon.DEBUGGER_ID
    f, deferred = subject["f"], subject["deferred"]
    rec, log = MonitoringRecorder(subject.filename), []
    with _monitoring_tool(tool, "coexistence-test"):
        events = rec.register(tool)
        mon.set_local_events(tool, f.__code__, events)
        mon.set_local_events(tool, deferred.__code__, events)
        assert f(log) == 42
        assert log == EXPECTED_LOG
        assert {"start", "line", "return"} <= rec.kinds("f"), rec.events
        assert {"start", "line", "return"} <= rec.kinds("deferred"), rec.events

        # the other tool turns its local events off while a defer is pending
        log2 = []

        def off():
            mon.set_local_events(tool, f.__code__, 0)
            mon.set_local_events(tool, deferred.__code__, 0)

        assert f(log2, off) == 42
        assert log2 == EXPECTED_LOG
    log3 = []
    assert f(log3) == 42
    assert log3 == EXPECTED_LOG


@needs_monitoring
def test_godefer_tool_id_is_not_debugger_coverage_or_profiler(tmp_path):
    mon = sys.monitoring
    subject = Subject("runtime", tmp_path)
    pending: set[int] = set()
    log = []
    assert subject["f"](log, lambda: pending.update(_godefer_tool_ids())) == 42
    assert log == EXPECTED_LOG
    after = _godefer_tool_ids()
    names = {i: mon.get_tool(i) for i in range(6)}
    assert pending, f"no sys.monitoring tool named godefer while a defer was pending: {names}"
    assert pending <= {3, 4, 5}, names
    assert after <= {3, 4, 5}, names
    for reserved in (mon.DEBUGGER_ID, mon.COVERAGE_ID, mon.PROFILER_ID):
        assert "godefer" not in (mon.get_tool(reserved) or "").lower(), names


def _unrelated_exception_unwinds_a_frame():
    def raiser():
        raise ValueError("unrelated")

    with contextlib.suppress(ValueError):
        raiser()


@needs_monitoring
def test_global_events_off_when_nothing_pending(tmp_path):
    """DESIGN: the global PY_UNWIND event is on only while something is pending.

    godefer switches it off lazily, at the first unwind it sees with nothing pending (turning
    global events on and off makes CPython re-instrument every code object it next runs, so
    toggling on every defer would cost more than one idle callback). What must hold: once
    nothing is pending and an unrelated exception has unwound a frame, no global event of
    godefer's is left on."""
    mon = sys.monitoring
    subject = Subject("runtime", tmp_path)
    during: dict[int, int] = {}

    def look():
        during.update({i: mon.get_events(i) for i in _godefer_tool_ids()})

    assert subject["f"]([], look) == 42
    assert during, "no godefer sys.monitoring tool while a defer was pending"
    assert all(ev & mon.events.PY_UNWIND for ev in during.values()), during
    _unrelated_exception_unwinds_a_frame()
    ids = _godefer_tool_ids()
    assert ids
    assert {i: mon.get_events(i) for i in ids} == dict.fromkeys(ids, 0)


# ---------------------------------------------------------------------------------------------
# (e) pdb


def _pdb(stdin) -> tuple[pdb.Pdb, io.StringIO]:
    out = io.StringIO()
    dbg = pdb.Pdb(stdin=stdin, stdout=out, nosigint=True, readrc=False)
    dbg.use_rawinput = False
    return dbg, out


@pytest.fixture
def pdb_subject(kind, tmp_path):
    return Subject(kind, tmp_path, with_source=True)


def test_pdb_step_next_continue(pdb_subject):
    commands = ["step", "next", "next", "next", "next", "continue"] + ["continue"] * 5
    dbg, out = _pdb(io.StringIO("\n".join(commands) + "\n"))
    log = []
    result = dbg.runcall(pdb_subject["f"], log)
    text = out.getvalue()
    assert result == 42, text
    assert log == EXPECTED_LOG, text
    assert "(10)f()" in text and "(13)f()" in text, text


def test_pdb_breakpoint_in_deferred_function(pdb_subject):
    commands = ["break deferred", "continue", "p log", "where", "continue"] + ["continue"] * 3
    dbg, out = _pdb(io.StringIO("\n".join(commands) + "\n"))
    log = []
    result = dbg.runcall(pdb_subject["f"], log)
    text = out.getvalue()
    assert result == 42, text
    assert log == EXPECTED_LOG, text
    assert re.search(r"Breakpoint \d+ at ", text), text
    assert "(5)deferred()" in text, text  # stopped at the deferred call's first line
    assert "['body']" in text, text  # `p log`: the body ran, the deferred call had not yet


class _StepIntoDeferred:
    """pdb stdin that answers `step` until pdb stands in `deferred`, then `continue`."""

    def __init__(self):
        self.dbg: pdb.Pdb | None = None
        self.frames: list[str] = []
        self.steps = 0

    def readline(self):
        frame = self.dbg.curframe
        name = frame.f_code.co_name if frame is not None else "?"
        self.frames.append(name)
        if name == "deferred" or self.steps >= 30:
            return "continue\n"
        self.steps += 1
        return "step\n"


def test_pdb_steps_from_function_into_deferred_call(pdb_subject):
    driver = _StepIntoDeferred()
    dbg, out = _pdb(driver)
    driver.dbg = dbg
    log = []
    result = dbg.runcall(pdb_subject["f"], log)
    text = out.getvalue()
    assert result == 42, text
    assert log == EXPECTED_LOG, text
    assert "deferred" in driver.frames, f"stepping never entered the deferred call: {text}"
    # `step` goes from f straight into the deferred call: no library frame in between
    first = driver.frames.index("deferred")
    assert set(driver.frames[:first]) == {"f"}, driver.frames


# ---------------------------------------------------------------------------------------------
# (f) coverage.py, tracer core and sys.monitoring core

COV_MODULE = """\
from godefer import defer


def deferred(log):
    log.append("deferred")
    log.append("deferred-2")


def f(log):
    defer(deferred, log)
    log.append("body")
    return len(log)
"""
COV_DEFERRED_LINES = {5, 6}
COV_F_LINES = {10, 11, 12}

COV_DRIVER = """\
import importlib, json, sys
import coverage
import godefer

path, how = sys.argv[1], sys.argv[2]
cov = coverage.Coverage(data_file=None, include=[path], config_file=False)
cov.start()
try:
    if how == "runtime":
        ns = {"__name__": "cov_target"}
        with open(path) as fh:
            exec(compile(fh.read(), path, "exec"), ns)
        f = ns["f"]
    else:
        sys.path.insert(0, sys.argv[3])
        f = importlib.import_module("cov_target").f
    log = []
    f(log)
finally:
    cov.stop()
_, statements, _, missing, _ = cov.analysis2(path)
print(json.dumps({"log": log, "missing": missing, "statements": statements,
                  "core": cov._collector.tracer_name(),
                  "prepared": bool(f.__code__.co_exceptiontable)}))
"""


def _run_coverage(tmp_path, how: str, core: str | None) -> dict:
    target = tmp_path / "cov_target.py"
    target.write_text(COV_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    if core:
        env["COVERAGE_CORE"] = core
    proc = subprocess.run(
        [sys.executable, "-c", COV_DRIVER, str(target), how, str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_covered(res: dict) -> None:
    assert res["log"] == EXPECTED_LOG, res
    missing = set(res["missing"])
    assert not (COV_DEFERRED_LINES & missing), f"deferred lines reported unexecuted: {res}"
    assert not (COV_F_LINES & missing), f"function lines reported unexecuted: {res}"
    assert set(res["statements"]) >= COV_DEFERRED_LINES, res


@pytest.mark.parametrize("how", ["runtime", "imported"])
def test_coverage_default_core_subprocess(tmp_path, how):
    res = _run_coverage(tmp_path, how, None)
    assert res["core"] in {"CTracer", "PyTracer", "SysMonitor"}, res
    _assert_covered(res)


@needs_monitoring
@pytest.mark.parametrize("how", ["runtime", "imported"])
def test_coverage_sysmon_core_subprocess(tmp_path, how):
    res = _run_coverage(tmp_path, how, "sysmon")
    assert res["core"] == "SysMonitor", f"coverage did not use its sys.monitoring core: {res}"
    _assert_covered(res)


def test_coverage_default_core_in_process(tmp_path):
    coverage = pytest.importorskip("coverage")
    target = tmp_path / "cov_inproc_target.py"
    target.write_text(COV_MODULE)
    cov = coverage.Coverage(data_file=None, include=[str(target)], config_file=False)
    cov.start()
    try:
        ns: dict = {"__name__": "cov_inproc_target"}
        exec(compile(target.read_text(), str(target), "exec"), ns)
        log = []
        ns["f"](log)
    finally:
        cov.stop()
    _, statements, _, missing, _ = cov.analysis2(str(target))
    _assert_covered({"log": log, "missing": missing, "statements": statements})


# ---------------------------------------------------------------------------------------------
# (g) sys.setprofile


def test_setprofile_installed_after_defer(subject):
    prof, log = Recorder(subject.filename), []
    try:
        result = subject["f"](log, lambda: sys.setprofile(prof))
        still_installed = sys.getprofile()
    finally:
        sys.setprofile(None)
    assert result == 42
    assert log == EXPECTED_LOG
    assert {"call", "return"} <= prof.kinds("deferred"), prof.events
    assert still_installed is prof


def test_setprofile_installed_before_call(subject):
    prof, log = Recorder(subject.filename), []
    sys.setprofile(prof)
    try:
        result = subject["f"](log)
        still_installed = sys.getprofile()
    finally:
        sys.setprofile(None)
    assert result == 42
    assert log == EXPECTED_LOG
    assert {"call", "return"} <= prof.kinds("f"), prof.events
    assert {"call", "return"} <= prof.kinds("deferred"), prof.events
    assert still_installed is prof


def test_setprofile_cleared_after_defer(subject):
    prof, log = Recorder(subject.filename), []
    sys.setprofile(prof)
    try:
        result = subject["f"](log, lambda: sys.setprofile(None))
    finally:
        sys.setprofile(None)
    assert result == 42
    assert log == EXPECTED_LOG


def test_settrace_and_setprofile_both_installed_after_defer(subject):
    tracer, prof, log = Recorder(subject.filename), Recorder(subject.filename), []

    def install():
        sys.setprofile(prof)
        sys.settrace(tracer)

    try:
        result = subject["f"](log, install)
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    assert result == 42
    assert log == EXPECTED_LOG
    assert_deferred_traced(tracer)
    assert {"call", "return"} <= prof.kinds("deferred"), prof.events


# ---------------------------------------------------------------------------------------------
# (h) importing godefer installs nothing global; a finished defer leaves nothing behind

GLOBAL_STATE_PROBE = """\
import json, sys, threading

def snap():
    d = {
        "trace": repr(sys.gettrace()),
        "profile": repr(sys.getprofile()),
        "threading_trace": repr(getattr(threading, "gettrace", lambda: None)()),
        "threading_profile": repr(getattr(threading, "getprofile", lambda: None)()),
    }
    if hasattr(sys, "monitoring"):
        d["tools"] = [sys.monitoring.get_tool(i) for i in range(6)]
        d["events"] = [sys.monitoring.get_events(i) for i in range(6)]
    return d

out = {"before": snap()}
import godefer
out["imported"] = snap()
ns = {"defer": godefer.defer}
exec("def f(log):\\n    defer(log.append, 1)\\n    return 7\\n", ns)
log = []
out["result"] = ns["f"](log)
out["log"] = log
def raiser():
    raise ValueError("unrelated")
try:
    raiser()
except ValueError:
    pass
out["after_defer"] = snap()
print(json.dumps(out))
"""


def test_import_installs_nothing_global():
    proc = subprocess.run(
        [sys.executable, "-c", GLOBAL_STATE_PROBE],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    before, imported, after = out["before"], out["imported"], out["after_defer"]
    assert before["trace"] == before["profile"] == "None"
    assert imported == before, "importing godefer changed global tracing/profiling/monitoring"
    if HAS_MONITORING:
        assert not any(t and "godefer" in t.lower() for t in imported["tools"]), imported
    # a runtime-path defer that has finished leaves no trace/profile function, and no global
    # sys.monitoring event on once an unrelated exception has unwound a frame (godefer turns
    # its PY_UNWIND off lazily; a registered tool id with no events costs nothing)
    assert out["result"] == 7 and out["log"] == [1]
    assert after["trace"] == "None" and after["profile"] == "None", after
    assert after["threading_trace"] == before["threading_trace"], after
    if HAS_MONITORING:
        assert after["events"] == [0] * 6, after
