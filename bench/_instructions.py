"""Instructions per deferred call under callgrind: the stable figure for the cost bars.

Each subject is a candidate of ``bench/_micro.py`` (the same functions the timed tables use). It
runs under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``) ``k1`` and ``k2`` times after
one warm-up call; ``(I(k2) - I(k1)) / (k2 - k1)`` is the instruction count of one call, with
process start-up, imports and building the function cancelled out. The call of the subject and
of the deferred no-op are included, as in the timed tables, so ratios to try/finally are
comparable with theirs.

    python bench/_instructions.py once TABLE KEY REPS    runs one subject REPS times
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _micro  # noqa: E402
from bench._global import callgrind_available  # noqa: E402

# (table, key, baseline key): one deferred no-op, two and ten with a normal return,
# raise-and-catch through one, and one awaited no-op at a coroutine's exit (in a one-pass loop:
# against the same loop written by hand, a list awaited in a finally).
SUBJECTS = (
    ("one_defer", "tryfinally", None),
    ("one_defer", "godefer_prepared", "tryfinally"),
    ("one_defer", "tryfinally_if", None),
    ("one_defer", "godefer_prepared_block", "tryfinally_if"),
    ("one_defer", "godefer_prepared_expr", "tryfinally"),
    ("one_defer", "godefer_prepared_scope", "tryfinally"),
    ("one_defer", "tryfinally_star", None),
    ("one_defer", "godefer_prepared_star", "tryfinally_star"),
    ("one_defer", "godefer_prepared_star_returned", "tryfinally_star"),
    ("one_defer", "with_cm", None),
    ("one_defer", "godefer_prepared_scoped", "with_cm"),
    ("one_defer", "godefer_runtime", "tryfinally"),
    ("one_defer", "exitstack", "tryfinally"),
    ("return_two", "tryfinally", None),
    ("return_two", "godefer_prepared", "tryfinally"),
    ("return_ten", "tryfinally", None),
    ("return_ten", "godefer_prepared", "tryfinally"),
    ("raise_one", "tryfinally", None),
    ("raise_one", "godefer_prepared", "tryfinally"),
    ("raise_one", "godefer_runtime", "tryfinally"),
    ("awaited", "tryfinally", None),
    ("awaited", "godefer_prepared", "tryfinally"),
    ("awaited", "listfinally", None),
    ("awaited", "godefer_prepared_core", "listfinally"),
    ("awaited", "exitstack", "tryfinally"),
)
# Deferred calls per call of a subject, checked before it is counted.
CALLS = {"one_defer": 1, "return_two": 2, "return_ten": 10, "awaited": 1}
_COLLECTED = re.compile(r"Collected : (\d+)")


def _candidate(table: str, key: str) -> _micro.Candidate:
    cands = {
        "one_defer": _micro.one_defer_candidates,
        "return_two": lambda: _micro.return_candidates(2),
        "return_ten": lambda: _micro.return_candidates(10),
        "raise_one": lambda: _micro.exception_candidates(1),
        "awaited": _micro.awaited_candidates,
    }[table]()
    return next(c for c in cands if c.key == key)


def run_once(table: str, key: str, reps: int) -> None:
    """The subject's function, called `reps` times after one warm-up call."""
    f = _candidate(table, key).build()
    fn = _micro._noop
    if table in CALLS:  # the subject makes the calls it stands for
        ran: list[int] = []
        if table == "awaited":
            _micro.drive(f(_micro._awaited_probe(ran)))
        else:
            f(lambda: ran.append(1))
        if len(ran) != CALLS[table]:
            sys.exit(f"{table}/{key}: {len(ran)} deferred calls instead of {CALLS[table]}")
    if table == "awaited":
        for _ in range(reps + 1):
            _micro.drive(f(_micro._anoop))
        return
    if not table.startswith("raise_"):
        f(fn)
        for _ in range(reps):
            f(fn)
        return
    for _ in range(reps + 1):
        try:
            f(fn)
        except ValueError:
            pass


def _count(python: str, table: str, key: str, reps: int) -> tuple[int | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out"]
        cmd += [python, str(Path(__file__)), "once", table, key, str(reps)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONHASHSEED"] = "0"
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=str(ROOT), check=False
        )
    m = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or not m:
        lines = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("==")]
        return None, (lines or [f"exit {proc.returncode}"])[-1][:160]
    return int(m.group(1)), ""


def measure(python: str, k1: int = 2000, k2: int = 22000, jobs: int = 2) -> dict:
    """{table: {key: {"instructions", "ratio", "baseline", "note"}}} for SUBJECTS."""
    why = callgrind_available()
    if why:
        return {"status": "unavailable", "note": why}
    tasks = [(t, key, reps) for t, key, _ in SUBJECTS for reps in (k1, k2)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        counts = dict(zip(tasks, pool.map(lambda t: _count(python, *t), tasks), strict=True))
    out: dict = {"status": "ok", "k": [k1, k2], "tables": {}}
    for table, key, base in SUBJECTS:
        (lo, err1), (hi, err2) = counts[(table, key, k1)], counts[(table, key, k2)]
        per = (hi - lo) / (k2 - k1) if lo is not None and hi is not None else None
        row = {"instructions": per, "baseline": base, "ratio": None, "note": err1 or err2}
        out["tables"].setdefault(table, {})[key] = row
    for rows in out["tables"].values():
        for row in rows.values():
            ref = rows.get(row["baseline"] or "", {}).get("instructions")
            if row["instructions"] and ref:
                row["ratio"] = row["instructions"] / ref
    return out


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "once":
        run_once(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
