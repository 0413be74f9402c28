"""godefer benchmarks: what a deferred call costs, next to try/finally, ExitStack and the PyPI
peers, and what godefer costs code that does not use it.

    python bench/run.py                  # this interpreter (a few minutes)
    python bench/run.py --smoke          # every measurement, tiny budgets (seconds; CI runs it)
    python bench/run.py --callgrind      # add instruction counts under valgrind (slow)
    python bench/run.py --json out.json  # also write the results
    python -m bench ...                  # the same

    # everything, CPython 3.11/3.12/3.13 side by side, per-version venvs in .bench-venvs/:
    python bench/run.py --all-versions --callgrind --plot docs/bench.png --json docs/bench.json

Measured (see bench/README.md for the method of each):

1. a function with one deferred no-op: godefer prepared (a module imported through godefer's
   import hook, bench/_prepared.py: a top-level defer, one inside an ``if``, ``_ = defer(fn)``,
   one in a ``with scope():`` block, ``defer(*args)`` and ``return defer(*args)``, all
   open-coded), godefer's runtime path (a function built by ``exec``), hand-written try/finally
   (the limit), contextlib.ExitStack, python-defer and deferrer; and one awaited no-op at a
   coroutine's exit: ``adefer(fn)`` (open-coded, and in a loop, held by the core) against
   try/finally awaiting ``fn()`` and contextlib.AsyncExitStack;
2. N deferred calls in a loop (N = 1, 10, 1000): time per call, and memory per pending call;
3. the exception path: raising through 1 and 10 deferred calls, against try/finally;
4. global slowdown of an unrelated workload (fib, a Richards-like scheduler) with nothing
   imported, with godefer (or a peer) imported, and under a scope with a pending deferred call:
   times, and instruction counts under callgrind.

Machines are noisy: read ratios measured side by side in one run, and instruction counts where
a ratio must be trusted. Nothing here fails the run on a missed bar: the bars of DESIGN.md
section 4 are printed with the measured figures, met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _global, _instructions, _memory, _micro, _report, _venvs  # noqa: E402

# ---------------------------------------------------------------------------------------------
# one interpreter


def run_here(args) -> dict:
    if args.smoke:
        one = (0.002, 3)
        micro = (0.001, 3)
        work = (0.004, 2)
        k = 1
    else:
        one = (0.1, 15)
        micro = (0.05, 9)
        work = (0.1, 7)
        k = 4
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"[bench {platform.python_version()}] one deferred no-op")
    one_defer = _micro.run_one_defer(*one)
    say(f"[bench {platform.python_version()}] one awaited no-op")
    awaited = _micro.run_awaited(*one)
    say(f"[bench {platform.python_version()}] loops")
    loops = _micro.run_loops(*micro)
    say(f"[bench {platform.python_version()}] exception path")
    exceptions = _micro.run_exceptions(*micro)
    say(f"[bench {platform.python_version()}] memory per pending call")
    memory = _memory.measure()
    say(f"[bench {platform.python_version()}] unrelated workload, time")
    global_time = _global.measure_time(sys.executable, *work)
    callgrind = instructions = None
    if args.callgrind:
        say(f"[bench {platform.python_version()}] unrelated workload, callgrind (slow)")
        callgrind = _global.measure_callgrind(sys.executable, k)
        say(f"[bench {platform.python_version()}] instructions per deferred call, callgrind")
        instructions = (
            _instructions.measure(sys.executable, 100, 1100)
            if args.smoke
            else _instructions.measure(sys.executable)
        )
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "smoke": args.smoke,
        "machine": _report.machine(),
        "one_defer": one_defer,
        "awaited": awaited,
        "loops": loops,
        "exceptions": exceptions,
        "memory": memory,
        "global_time": global_time,
        "callgrind": callgrind,
        "instructions": instructions,
    }


# ---------------------------------------------------------------------------------------------
# --all-versions


def _peer_notes(res: dict, status: dict) -> None:
    """Say in the tables when a peer did not install on this version (not just 'missing')."""
    errors = {
        "python_defer": status.get("peers", {}).get("python-defer", "ok"),
        "deferrer": status.get("peers", {}).get("deferrer", "ok"),
    }
    for key, err in errors.items():
        if err == "ok":
            continue
        tables = [res["one_defer"], res["memory"], *res["loops"].values()]
        for table in tables:
            if key in table and table[key]["status"] != "ok":
                table[key]["note"] = err


def run_all_versions(args) -> int:
    meta = _report.machine()
    meta["command"] = "python bench/run.py " + " ".join(sys.argv[1:])
    results: dict = {}
    setup: dict = {}
    pythons: dict = {}
    # Set up every venv before measuring anything, so all versions measure the same sources.
    for minor in _venvs.VERSIONS:
        if args.dev_venvs:
            py = ROOT / f".venv{minor.replace('.', '')}" / "bin" / "python"
            status: dict = {"godefer": "ok" if py.exists() else f"{py} not present"}
        else:
            try:
                py, status = _venvs.ensure(minor)
            except (OSError, subprocess.CalledProcessError) as exc:
                py, status = None, {"godefer": f"venv set-up failed: {exc}"}
        setup[minor] = status
        pythons[minor] = py
    for minor in _venvs.VERSIONS:
        py, status = pythons[minor], setup[minor]
        if py is None or status.get("godefer") != "ok":
            print(f"\n== CPython {minor}: skipped ({status.get('godefer')})", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "res.json"
            cmd = [str(py), str(THIS), "--json", str(out)]
            cmd += ["--smoke"] if args.smoke else []
            cmd += ["--callgrind"] if args.callgrind else []
            env = dict(os.environ)
            env.pop("PYTHONPATH", None)
            rc = subprocess.call(cmd, cwd=str(ROOT), env=env)
            if rc != 0 or not out.exists():
                print(f"\n== CPython {minor}: bench failed (exit {rc})", flush=True)
                continue
            res = json.loads(out.read_text())
        _peer_notes(res, status)
        results[minor] = res
    combined = {"meta": meta, "setup": setup, "versions": results}
    combined["bars"] = {v: _report.bars(r) for v, r in results.items()}
    print(_report.combined_report(results), flush=True)
    if not args.dev_venvs and _venvs.source_stamp() != setup[next(iter(setup))].get("stamp"):
        print("\nWARNING: godefer's sources changed while the benchmark ran; re-run it.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_paths = [RESULTS / "bench.json", *([Path(args.json)] if args.json else [])]
    for path in json_paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(combined, indent=1) + "\n")
        print(f"results written to {path}")
    if results:
        for path in [RESULTS / "bench.png", *([Path(args.plot)] if args.plot else [])]:
            _render_plot(json_paths[0], path, setup)
    return 0 if results else 1


def _render_plot(json_path: Path, png: Path, setup: dict) -> None:
    """Draw with the newest interpreter that has matplotlib (a bench venv has it)."""
    candidates = [str(_venvs.venv_python(m)) for m in reversed(_venvs.VERSIONS)]
    candidates.append(sys.executable)
    for py in candidates:
        if not Path(py).exists():
            continue
        rc = subprocess.call(
            [py, str(THIS), "--render-plot", str(json_path), "--plot", str(png)], cwd=str(ROOT)
        )
        if rc == 0:
            print(f"plot written to {png}")
            return
    print(f"plot NOT written to {png}: no interpreter with matplotlib (pip install matplotlib)")


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny budgets: the whole run in seconds"
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--all-versions",
        action="store_true",
        help="run under CPython 3.11, 3.12 and 3.13 (venvs in .bench-venvs/, created and kept "
        "up to date with this checkout) and print them side by side",
    )
    parser.add_argument(
        "--dev-venvs",
        action="store_true",
        help="with --all-versions: use the repo's .venv311/.venv312/.venv313 as they are",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="also count instructions of the unrelated workload under valgrind (minutes)",
    )
    parser.add_argument("--plot", metavar="PATH", help="write the main table as a PNG (matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--report", metavar="JSON", help="print the tables of a saved --all-versions JSON again"
    )
    parser.add_argument("--render-plot", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        for res in saved["versions"].values():
            print(_report.version_report(res))
        print(_report.combined_report(saved["versions"]))
        return 0
    if args.render_plot:
        try:
            _report.plot(json.loads(Path(args.render_plot).read_text()), args.plot)
        except ImportError as exc:
            print(f"cannot plot: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.all_versions:
        return run_all_versions(args)
    res = run_here(args)
    print(_report.version_report(res), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"\nresults written to {args.json}")
    if args.plot:
        combined = {"meta": res["machine"], "versions": {res["python"]: res}}
        try:
            _report.plot(combined, args.plot)
            print(f"plot written to {args.plot}")
        except ImportError as exc:
            print(f"plot NOT written: {exc} (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
