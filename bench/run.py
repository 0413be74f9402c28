"""godefer benchmarks: cost of one deferred call, and the cost godefer puts on code that does
not use it.

    python bench/run.py                 # full run, this interpreter (about a minute)
    python bench/run.py --smoke         # every measurement, tiny budgets (a few seconds)
    python bench/run.py --json out.json # also write the results
    python -m bench --all-versions      # re-run under .venv311/.venv312/.venv313, one table

Part 1 times a function whose body schedules one no-op cleanup, written with godefer (runtime
path: built with ``exec`` from a string, so godefer can never prepare it; and, when the import
hook prepares it, the same function from a real module), with hand-written ``try/finally``, with
``contextlib.ExitStack().callback``, and with the PyPI peers ``python-defer`` and ``deferrer``
when they are installed. All candidates are timed in one process, repeats interleaved round
robin, timeit-style (loops scaled so one repeat takes a fixed budget, GC off, min of repeats);
the table gives ns per call and the ratio to try/finally.

Part 2 times an unrelated pure-Python workload (recursive ``fib(20)`` and a small loop) in
worker processes that differ only in what godefer is doing: not imported; imported; the
workload called from inside a function that has a deferred call pending (runtime path, and
prepared path). Workers are driven round robin, so the repeats are interleaved too; the table
gives time ratios against the plain worker.

Machines are noisy: read ratios measured side by side in one run, not absolute times. No
number here is asserted anywhere; DESIGN.md's bars are printed next to the results as a guide.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()

# ---------------------------------------------------------------------------------------------
# timing primitives


def _noop():
    pass


_TIMER_SRC = """
def timer(n, f, fn, _pc):
    t0 = _pc()
    for _ in range(n):
        f(fn)
    return _pc() - t0
"""


def _make_timer():
    ns: dict = {}
    exec(compile(_TIMER_SRC, "<godefer-bench-timer>", "exec"), ns)
    return ns["timer"]


_TIMER = _make_timer()


def _time_once(func, loops: int) -> int:
    """Nanoseconds for ``loops`` calls of ``func(_noop)``, GC off (as timeit does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _TIMER(loops, func, _noop, time.perf_counter_ns)
    finally:
        if was_enabled:
            gc.enable()


def _autorange(run_once, budget_s: float) -> int:
    """Smallest loop count in 1, 2, 5, 10, 20, 50, ... whose run takes at least ``budget_s``."""
    loops = 1
    while True:
        for mult in (1, 2, 5):
            n = loops * mult
            if run_once(n) >= budget_s * 1e9:
                return n
        loops *= 10


# ---------------------------------------------------------------------------------------------
# part 1: one deferred no-op


class Unavailable(Exception):
    """A candidate that cannot be measured here; the message says why."""


class Candidate:
    def __init__(self, key, label, build, cleanup=None):
        self.key = key
        self.label = label
        self.build = build  # () -> f, where f(fn) must call fn exactly once, at its exit
        self.cleanup = cleanup or (lambda: None)  # undo global side effects (peer libraries)
        self.func = None
        self.status = "ok"
        self.note = ""
        self.loops = 0
        self.samples: list[float] = []


def _exec_function(src: str, namespace: dict):
    """Define ``f`` from source with no file behind it: godefer keeps it on the runtime path."""
    code = compile(src, "<godefer-bench>", "exec")
    exec(code, namespace)
    return namespace["f"]


def _verify(cand: Candidate) -> None:
    """The deferred call must run exactly once and only when ``f`` exits."""
    ran: list[int] = []

    def probe():
        ran.append(1)

    cand.func(probe)
    cand.cleanup()
    if ran != [1]:
        raise Unavailable(f"deferred call ran {len(ran)} times instead of once")


def _build_plain():
    return _exec_function("def f(fn):\n    fn()\n", {})


def _build_tryfinally():
    return _exec_function("def f(fn):\n    try:\n        pass\n    finally:\n        fn()\n", {})


def _build_exitstack():
    src = "def f(fn):\n    with ExitStack() as stack:\n        stack.callback(fn)\n"
    return _exec_function(src, {"ExitStack": contextlib.ExitStack})


def _build_godefer_runtime():
    try:
        import godefer
    except ImportError as exc:
        raise Unavailable(f"godefer not importable: {exc}") from None
    return _exec_function("def f(fn):\n    defer(fn)\n", {"defer": godefer.defer})


def _is_prepared(func) -> bool:
    # Plain ``defer(fn)`` compiles to a body with no exception table; prepared code has one.
    return bool(getattr(func.__code__, "co_exceptiontable", b""))


def _build_godefer_prepared():
    try:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        import importlib

        mod = importlib.import_module("bench._prepared")
    except ImportError as exc:
        raise Unavailable(f"godefer not importable: {exc}") from None
    func = mod.one_defer
    if not _is_prepared(func):
        raise Unavailable("import hook did not prepare bench/_prepared.py (runtime path)")
    return func


def _build_python_defer():
    # python-defer (yasyf/python-defer): ``from defer.sugarfree import defer; defer(fn, *args)``.
    # It works through sys.settrace: importing it leaves a global trace function installed (its
    # own uninstall() misses it), and every call re-installs one. _cleanup_trace undoes that so
    # the other candidates are timed without a tracer; the python-defer samples include it, as
    # a user would pay it.
    prior = sys.gettrace()
    try:
        from defer.sugarfree import defer as pd_defer
    except ImportError:
        raise Unavailable("not installed (pip install python-defer)") from None
    except Exception as exc:
        raise Unavailable(f"does not run on this version: {type(exc).__name__}: {exc}") from None
    finally:
        sys.settrace(prior)
    return _exec_function("def f(fn):\n    d(fn)\n", {"d": pd_defer})


def _cleanup_trace():
    sys.settrace(None)


def _build_deferrer():
    # deferrer (Azureblade3808/py-deferrer): ``defer(fn)(*args)``; on 3.11 the function must be
    # wrapped in ``defer_scope`` (its README), on 3.12+ it works bare.
    try:
        from deferrer import defer as dr_defer
        from deferrer import defer_scope
    except ImportError:
        raise Unavailable("not installed (pip install deferrer)") from None
    except Exception as exc:
        raise Unavailable(f"does not run on this version: {type(exc).__name__}: {exc}") from None
    func = _exec_function("def f(fn):\n    dr(fn)()\n", {"dr": dr_defer})
    if sys.version_info < (3, 12):
        func = defer_scope(func)
    return func


def _candidates() -> list[Candidate]:
    return [
        Candidate("plain", "plain call fn() (no cleanup guarantee)", _build_plain),
        Candidate("tryfinally", "try/finally (hand-written)", _build_tryfinally),
        Candidate("godefer_runtime", "godefer defer(fn), runtime path", _build_godefer_runtime),
        Candidate("godefer_prepared", "godefer defer(fn), prepared", _build_godefer_prepared),
        Candidate("exitstack", "contextlib.ExitStack().callback(fn)", _build_exitstack),
        Candidate(
            "python_defer", "python-defer  d(fn)", _build_python_defer, cleanup=_cleanup_trace
        ),
        Candidate("deferrer", "deferrer  defer(fn)()", _build_deferrer),
    ]


def measure_defer(budget_s: float, repeats: int) -> list[Candidate]:
    cands = _candidates()
    for cand in cands:
        try:
            cand.func = cand.build()
            _verify(cand)
        except Unavailable as exc:
            cand.status, cand.note = "unavailable", str(exc)
        except Exception as exc:
            cand.status = "unavailable"
            cand.note = f"does not run on this version: {type(exc).__name__}: {exc}"
        finally:
            cand.cleanup()
        if cand.key == "deferrer" and cand.status == "ok" and sys.version_info < (3, 12):
            cand.note = "wrapped in defer_scope (required on 3.11)"
    live = [c for c in cands if c.status == "ok"]
    for cand in live:

        def once(n, cand=cand):
            try:
                return _time_once(cand.func, n)
            finally:
                cand.cleanup()

        cand.loops = _autorange(once, budget_s)
    for rep in range(repeats):
        # round robin, rotating the starting point so no candidate always runs first
        order = live[rep % len(live) :] + live[: rep % len(live)] if live else []
        for cand in order:
            try:
                elapsed = _time_once(cand.func, cand.loops)
            finally:
                cand.cleanup()
            cand.samples.append(elapsed / cand.loops)
    return cands


# ---------------------------------------------------------------------------------------------
# part 2: unrelated workload, with and without godefer around

WORKLOADS = ("fib20", "loop")
MODES = (
    ("plain", "godefer not imported"),
    ("imported", "godefer imported"),
    ("pending_runtime", "inside a frame with a pending defer (runtime path)"),
    ("pending_prepared", "inside a frame with a pending defer (prepared)"),
)


def _fib(n):
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def _loop():
    total = 0
    for i in range(1000):
        total += i * i
    return total


def _run_workload(name: str, loops: int) -> int:
    body = (lambda: _fib(20)) if name == "fib20" else _loop
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            body()
        return time.perf_counter_ns() - t0
    finally:
        if was_enabled:
            gc.enable()


def _worker(mode: str) -> int:
    """Serve timing requests on stdin: ``<workload> <loops>`` -> ``<ns>`` (or ``ERR ...``)."""
    try:
        holder = _worker_setup(mode)
    except Exception as exc:
        print(f"ERR {type(exc).__name__}: {exc}", flush=True)
        return 0
    print("READY", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        name, loops = parts[0], int(parts[1])
        try:
            if holder is None:
                elapsed = _run_workload(name, loops)
            else:
                elapsed = holder(_noop, lambda name=name, loops=loops: _run_workload(name, loops))
            print(elapsed, flush=True)
        except Exception as exc:
            print(f"ERR {type(exc).__name__}: {exc}", flush=True)
    return 0


def _worker_setup(mode: str):
    holder = None
    if mode != "plain":
        import godefer

        if mode == "pending_runtime":
            src = "def f(fn, body):\n    defer(fn)\n    return body()\n"
            holder = _exec_function(src, {"defer": godefer.defer})
        elif mode == "pending_prepared":
            if str(ROOT) not in sys.path:
                sys.path.insert(0, str(ROOT))
            import importlib

            mod = importlib.import_module("bench._prepared")
            if not _is_prepared(mod.run_pending):
                raise RuntimeError("import hook did not prepare bench/_prepared.py")
            holder = mod.run_pending
    elif "godefer" in sys.modules:
        raise RuntimeError("godefer imported in the plain worker")
    return holder


class _Worker:
    def __init__(self, mode: str):
        self.mode = mode
        self.error = ""
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(THIS), "--worker", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        first = self.proc.stdout.readline().strip()
        if first != "READY":
            self.error = first.removeprefix("ERR ").strip() or "worker failed to start"
            self.close()

    def run(self, name: str, loops: int) -> int | None:
        if self.error:
            return None
        self.proc.stdin.write(f"{name} {loops}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer or answer.startswith("ERR"):
            self.error = answer.removeprefix("ERR ").strip() or "worker died"
            return None
        return int(answer)

    def close(self):
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure_workload(budget_s: float, repeats: int) -> dict:
    workers = [_Worker(mode) for mode, _ in MODES]
    try:
        plain = workers[0]
        loops = {}
        for name in WORKLOADS:
            loops[name] = _autorange(lambda n, name=name: plain.run(name, n) or 10**18, budget_s)
        samples = {(w.mode, name): [] for w in workers for name in WORKLOADS}
        for rep in range(repeats):
            order = workers[rep % len(workers) :] + workers[: rep % len(workers)]
            for name in WORKLOADS:
                for w in order:
                    t = w.run(name, loops[name])
                    if t is not None:
                        samples[(w.mode, name)].append(t / loops[name])
        out: dict = {}
        for w in workers:
            row: dict = {"status": "ok" if not w.error else "unavailable", "note": w.error}
            for name in WORKLOADS:
                best = min(samples[(w.mode, name)], default=None)
                base = min(samples[("plain", name)], default=None)
                row[name] = {
                    "ns": best,
                    "ratio": (best / base) if best and base else None,
                    "loops": loops[name],
                }
            out[w.mode] = row
        return out
    finally:
        for w in workers:
            w.close()


# ---------------------------------------------------------------------------------------------
# reporting

BARS = {
    "godefer_prepared": "bar: <= 1.5x try/finally, >= 10x faster than ExitStack",
    "godefer_runtime": "bar: <= 3x try/finally on 3.12+",
}


def _fmt_ns(v):
    return f"{v:10.1f}" if v is not None else f"{'-':>10}"


def _fmt_ratio(v):
    return f"{v:7.2f}x" if v is not None else f"{'-':>8}"


def _collect(cands: list[Candidate], workload: dict, args) -> dict:
    base = next((c for c in cands if c.key == "tryfinally" and c.samples), None)
    base_ns = min(base.samples) if base else None
    exit_stack = next((c for c in cands if c.key == "exitstack" and c.samples), None)
    defer_rows = {}
    for c in cands:
        best = min(c.samples) if c.samples else None
        defer_rows[c.key] = {
            "label": c.label,
            "status": c.status,
            "note": c.note,
            "ns": best,
            "ratio_vs_tryfinally": (best / base_ns) if best and base_ns else None,
            "exitstack_over_this": (min(exit_stack.samples) / best)
            if best and exit_stack
            else None,
            "loops": c.loops,
            "samples": c.samples,
        }
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "smoke": args.smoke,
        "defer": defer_rows,
        "workload": workload,
    }


def print_report(res: dict) -> None:
    print(f"\n== godefer bench: {res['implementation']} {res['python']} ({res['executable']})")
    if res["smoke"]:
        print("   (smoke run: tiny budgets, numbers are only a sanity check)")
    print("\n-- one deferred no-op: ns per call (min of interleaved repeats) --")
    print(f"{'':44} {'ns/call':>10} {'vs try/fin':>10}  notes")
    for key, row in res["defer"].items():
        notes = [row["note"]] if row["note"] else []
        if row["status"] == "ok" and key in BARS:
            notes.append(BARS[key])
        if row["status"] == "ok" and row["exitstack_over_this"] and key.startswith("godefer"):
            notes.append(f"ExitStack/this = {row['exitstack_over_this']:.1f}x")
        if row["status"] != "ok":
            print(f"{row['label']:44} {'-':>10} {'-':>10}  {'; '.join(notes)}")
        else:
            ratio = _fmt_ratio(row["ratio_vs_tryfinally"])
            print(f"{row['label']:44} {_fmt_ns(row['ns'])} {ratio:>10}  {'; '.join(notes)}")
    print("\n-- unrelated workload: time ratio vs a process without godefer --")
    print("   (bar: same speed, within 2% by instruction count; wall-clock here is noisy)")
    print(f"{'':54} " + " ".join(f"{w:>18}" for w in WORKLOADS))
    for mode, label in MODES:
        row = res["workload"].get(mode, {})
        if row.get("status") != "ok":
            print(f"{label:54} unavailable: {row.get('note', '')}")
            continue
        cells = []
        for w in WORKLOADS:
            cell = row[w]
            ns = cell["ns"]
            cells.append(
                f"{_fmt_ratio(cell['ratio'])} ({ns / 1000:7.1f}us)" if ns else f"{'-':>18}"
            )
        print(f"{label:54} " + " ".join(f"{c:>18}" for c in cells))


# ---------------------------------------------------------------------------------------------
# --all-versions


def run_all_versions(args) -> int:
    results = []
    status = 0
    for tag in ("311", "312", "313"):
        venv_py = ROOT / f".venv{tag}" / "bin" / "python"
        if not venv_py.exists():
            print(f"\n== .venv{tag}: not present, skipped")
            results.append((tag, None))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "res.json"
            cmd = [str(venv_py), str(THIS), "--json", str(out)]
            if args.smoke:
                cmd.append("--smoke")
            rc = subprocess.call(cmd, cwd=str(ROOT))
            if rc != 0 or not out.exists():
                print(f"\n== .venv{tag}: bench failed (exit {rc})")
                status = 1
                results.append((tag, None))
                continue
            results.append((tag, json.loads(out.read_text())))
    print("\n\n== combined: ns per call / ratio vs try/finally ==")
    present = [(t, r) for t, r in results if r]
    header = f"{'':44}" + "".join(f"{'py' + r['python']:>22}" for _, r in present)
    print(header)
    keys = list(present[0][1]["defer"]) if present else []
    for key in keys:
        label = present[0][1]["defer"][key]["label"]
        cells = []
        for _, r in present:
            row = r["defer"][key]
            if row["status"] != "ok":
                cells.append(f"{'n/a':>22}")
            else:
                cells.append(f"{row['ns']:9.1f} {_fmt_ratio(row['ratio_vs_tryfinally']):>11}  ")
        print(f"{label:44}" + "".join(cells))
    print("\n== combined: unrelated workload, ratio vs no godefer (fib20 / loop) ==")
    print(f"{'':54}" + "".join(f"{'py' + r['python']:>22}" for _, r in present))
    for mode, label in MODES:
        cells = []
        for _, r in present:
            row = r["workload"].get(mode, {})
            if row.get("status") != "ok":
                cells.append(f"{'n/a':>22}")
            else:
                a, b = row["fib20"]["ratio"], row["loop"]["ratio"]
                cells.append(f"{_fmt_ratio(a):>10} /{_fmt_ratio(b):>9}  ")
        print(f"{label:54}" + "".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps({t: r for t, r in results}, indent=2))
    return status


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: whole run < 10 s")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--all-versions",
        action="store_true",
        help="re-run under .venv311/.venv312/.venv313 in the repo root, print one table",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    if args.all_versions:
        return run_all_versions(args)
    if args.smoke:
        defer_budget, defer_repeats = 0.002, 3
        work_budget, work_repeats = 0.005, 3
    else:
        defer_budget, defer_repeats = 0.1, 9
        work_budget, work_repeats = 0.1, 7
    cands = measure_defer(defer_budget, defer_repeats)
    workload = measure_workload(work_budget, work_repeats)
    res = _collect(cands, workload, args)
    print_report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
