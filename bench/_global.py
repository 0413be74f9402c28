"""Global slowdown: does code that does not use godefer (or a peer) get slower around it?

The workload and the conditions are in ``bench/_workload.py``. Two measurements:

* time: one worker process per condition, driven round robin so repeats are interleaved; min
  of the repeats per workload; ratio against the ``plain`` worker.
* instructions: each condition runs under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``)
  with the workload repeated ``k1`` and ``k2`` times; ``(I(k2) - I(k1)) / (k2 - k1)`` is the
  instruction count of one repetition, with process start-up, imports, set-up and the first
  (warm-up) repetition cancelled out. Callgrind counts are deterministic, so this is the
  figure the 2 % bar is read from.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKLOAD = HERE / "_workload.py"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._workload import MODES, WORKLOADS  # noqa: E402

SLOW_MODES = ("python_defer_imported", "python_defer_pending")  # a tracer on every call


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def _autorange(run_once, budget_s: float) -> int:
    loops = 1
    while True:
        for mult in (1, 2, 5):
            n = loops * mult
            if run_once(n) >= budget_s * 1e9:
                return n
        loops *= 10


class _Worker:
    def __init__(self, python: str, mode: str):
        self.mode = mode
        self.error = ""
        self.proc = subprocess.Popen(
            [python, str(WORKLOAD), "serve", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=str(ROOT),
        )
        first = self.proc.stdout.readline().strip()
        if first != "READY":
            err = first.removeprefix("ERR ").strip()
            if not err:
                err = (self.proc.stderr.read().strip().splitlines() or ["worker died"])[-1]
            self.error = err
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


def measure_time(python: str, budget_s: float, repeats: int) -> dict:
    workers = [_Worker(python, mode) for mode, _ in MODES]
    try:
        loops: dict = {}
        for w in workers:
            for name in WORKLOADS:
                if not w.error:
                    loops[(w.mode, name)] = _autorange(
                        lambda n, w=w, name=name: w.run(name, n) or 10**18, budget_s
                    )
        samples: dict = {(w.mode, name): [] for w in workers for name in WORKLOADS}
        for rep in range(repeats):
            order = workers[rep % len(workers) :] + workers[: rep % len(workers)]
            for name in WORKLOADS:
                for w in order:
                    n = loops.get((w.mode, name))
                    t = w.run(name, n) if n else None
                    if t is not None:
                        samples[(w.mode, name)].append(t / n)
        out: dict = {}
        for (mode, label), w in zip(MODES, workers, strict=True):
            row: dict = {"label": label, "status": "ok", "note": ""}
            if w.error:
                row["status"], row["note"] = "unavailable", w.error
            for name in WORKLOADS:
                best = min(samples[(mode, name)], default=None)
                base = min(samples[("plain", name)], default=None)
                row[name] = {
                    "ns": best,
                    "ratio": best / base if best and base else None,
                    "loops": loops.get((mode, name)),
                }
            out[mode] = row
        return out
    finally:
        for w in workers:
            w.close()


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _callgrind_once(python: str, mode: str, name: str, reps: int) -> tuple[int | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/cg.out",
            python,
            str(WORKLOAD),
            "once",
            mode,
            name,
            str(reps),
        ]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=_env(PYTHONHASHSEED="0"),
            cwd=str(ROOT),
            check=False,
        )
    m = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or not m:
        lines = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("==")]
        return None, (lines or [f"exit {proc.returncode}"])[-1][:160]
    return int(m.group(1)), ""


def callgrind_available() -> str:
    """'' when valgrind is on PATH, else why not."""
    return "" if shutil.which("valgrind") else "valgrind not installed (apt-get install valgrind)"


def measure_callgrind(python: str, k: int, jobs: int = 2) -> dict:
    """Instructions per workload repetition under each condition, and the ratio to plain."""
    why = callgrind_available()
    if why:
        return {"status": "unavailable", "note": why}
    tasks = []
    for mode, _ in MODES:
        extra = 1 if mode in SLOW_MODES else k
        for name in WORKLOADS:
            tasks += [(mode, name, 1), (mode, name, 1 + extra)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda t: _callgrind_once(python, *t), tasks))
    counts = dict(zip(tasks, results, strict=True))
    out: dict = {"status": "ok", "note": "", "k": k, "modes": {}}
    for mode, label in MODES:
        extra = 1 if mode in SLOW_MODES else k
        row: dict = {"label": label, "status": "ok", "note": ""}
        for name in WORKLOADS:
            (lo, err1), (hi, err2) = counts[(mode, name, 1)], counts[(mode, name, 1 + extra)]
            per = (hi - lo) / extra if lo is not None and hi is not None else None
            if per is None:
                row["status"], row["note"] = "unavailable", err1 or err2
            row[name] = {"instructions": per, "reps": [1, 1 + extra]}
        out["modes"][mode] = row
    base = out["modes"]["plain"]
    for row in out["modes"].values():
        for name in WORKLOADS:
            per, ref = row[name]["instructions"], base[name]["instructions"]
            row[name]["ratio"] = per / ref if per and ref else None
    return out
