"""Library memory per pending deferred call.

One fresh process per candidate and view (godefer keeps released scope records and their
buffers for reuse, so candidates must not share a process). In it, ``f(fn, arg, n, probe)``
defers ``fn(arg)`` ``n`` times, always with the same pre-built ``fn`` and ``arg`` (so the
callable and its arguments are never counted), then calls ``probe()`` while the ``n`` calls are
pending; the probe reads the process's memory. The same loop without deferring is measured the
same way and subtracted, and the difference divided by ``n`` is the figure: bytes per pending
call beyond the callable and its arguments. Each function is called once with ``n = 1`` first
(one-time costs: the library's hooks, code instrumentation, specialisation), then ``n`` = 1, 10,
1000 are measured in that order.

Two views:

``tracemalloc``  what Python's allocators hand out (``tracemalloc.get_traced_memory``),
                 ``PyMem_RawMalloc`` included. It does not see memory an extension takes with
                 plain malloc/new.
``heap``         the whole process heap: the worker runs with ``PYTHONMALLOC=malloc`` (so Python
                 objects come from malloc too) and glibc's per-thread cache off
                 (``GLIBC_TUNABLES=glibc.malloc.tcache_count=0``, so a freed block counts as
                 free at once), and reads glibc's ``mallinfo2()`` (in-use bytes, malloc's own
                 block headers included). This is the figure the 64-byte bar is read from.

    python bench/_memory.py VIEW CANDIDATE    prints {"1": bytes, "10": bytes, "1000": bytes}
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

THIS = Path(__file__).resolve()
ROOT = THIS.parent.parent
NS = (1, 10, 1000)
VIEWS = ("tracemalloc", "heap")
CANDIDATES = (
    ("listfinally", "list of (fn, arg) + try/finally (hand-written)"),
    ("godefer_prepared", "godefer prepared (open-coded list)"),
    ("godefer_runtime", "godefer runtime path"),
    ("exitstack", "contextlib.ExitStack"),
    ("python_defer", "python-defer"),
    ("deferrer", "deferrer"),
)

_REF = """
def f(fn, arg, n, probe):
    for _ in range(n):
        pass
    probe()
"""
_LOOP = """
def f(fn, arg, n, probe):
    for _ in range(n):
        DEFER
    probe()
"""
_LIST = """
def f(fn, arg, n, probe):
    pending = []
    try:
        for _ in range(n):
            pending.append((fn, arg))
        probe()
    finally:
        for g, a in reversed(pending):
            g(a)
"""
_EXITSTACK = """
def f(fn, arg, n, probe):
    with ExitStack() as st:
        for _ in range(n):
            st.callback(fn, arg)
        probe()
"""


def _exec(src: str, ns: dict):
    exec(compile(src, "<godefer-bench>", "exec"), ns)
    return ns["f"]


def _build(key: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import _micro

    if key == "listfinally":
        return _exec(_LIST, {})
    if key == "exitstack":
        return _exec(_EXITSTACK, {"ExitStack": contextlib.ExitStack})
    if key == "godefer_prepared":
        return _micro.prepared("loop_defer_arg")
    if key == "godefer_runtime":
        return _exec(_LOOP.replace("DEFER", "defer(fn, arg)"), {"defer": _micro.godefer_defer()})
    if key == "python_defer":
        return _exec(_LOOP.replace("DEFER", "d(fn, arg)"), {"d": _micro.python_defer()})
    if key == "deferrer":
        return _micro.deferrer_function(_LOOP.replace("DEFER", "d(fn)(arg)"))
    raise ValueError(key)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _reader(view: str):
    if view == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        return lambda: tracemalloc.get_traced_memory()[0]
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        raise RuntimeError("glibc mallinfo2() not available") from None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []

    def read():
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return read


def _worker(view: str, key: str) -> dict:
    read = _reader(view)
    f = _build(key)
    ref = _exec(_REF, {})

    def fn(_arg):
        pass

    arg = object()
    state = {"base": 0, "delta": 0}

    def probe():
        state["delta"] = read() - state["base"]

    def once(g, n):
        gc.collect()
        state["base"] = read()
        g(fn, arg, n, probe)
        return state["delta"]

    once(ref, 1)
    once(f, 1)
    out = {}
    for n in NS:
        base = once(ref, n)
        with_defers = once(f, n)
        out[str(n)] = (with_defers - base) / n
    with contextlib.suppress(Exception):
        sys.settrace(None)
    return out


def measure(python: str | None = None) -> dict:
    """{candidate: {"label", "status", "note", "tracemalloc": {n: B}, "heap": {n: B}}}."""
    python = python or sys.executable
    out: dict = {}
    for key, label in CANDIDATES:
        row: dict = {"label": label, "status": "ok", "note": ""}
        for view in VIEWS:
            env = dict(os.environ)
            env.pop("PYTHONPATH", None)
            if view == "heap":
                env["PYTHONMALLOC"] = "malloc"
                env["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=0"
            proc = subprocess.run(
                [python, str(THIS), view, key],
                capture_output=True,
                text=True,
                env=env,
                cwd=str(ROOT),
                check=False,
            )
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                err = (proc.stderr.strip().splitlines() or ["worker failed"])[-1]
                row[view] = None
                row["status"] = "unavailable"
                row["note"] = err[:160]
                continue
            answer = json.loads(lines[-1])
            if "error" in answer:
                row[view] = None
                row["status"] = "unavailable"
                row["note"] = answer["error"]
            else:
                row[view] = answer
        if key == "deferrer" and row["status"] == "ok" and sys.version_info < (3, 12):
            row["note"] = "wrapped in defer_scope (required on 3.11)"
        out[key] = row
    return out


if __name__ == "__main__":
    try:
        result = _worker(sys.argv[1], sys.argv[2])
    except Exception as exc:
        # _micro.Unavailable and friends: say why, as the timing tables do
        result = {"error": f"{type(exc).__name__}: {exc}"}
        if type(exc).__name__ == "Unavailable":
            result = {"error": str(exc)}
    print(json.dumps(result))
