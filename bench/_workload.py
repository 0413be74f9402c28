"""An unrelated pure-Python workload, and the process that runs it under each condition.

``fib``: recursive ``fib(20)`` (calls). ``richards``: a small Richards-like task scheduler
(objects, attribute access, method calls, a packet queue). Neither uses godefer.

Run as a script this is the worker of the global-slowdown measurement. The conditions (modes)
differ only in what is loaded or pending around the workload:

    plain                  nothing imported
    imported               ``import godefer`` (installs its import hook)
    pending_prepared       the workload runs inside a prepared function with a pending defer
    pending_runtime        ... inside a runtime-path function (built by exec) with a pending defer
    python_defer_imported  ``import defer.sugarfree`` (it leaves a global sys.settrace installed)
    python_defer_pending   ... inside a function with a pending python-defer ``d(fn)``
    deferrer_imported      ``import deferrer``
    deferrer_pending       ... inside a function with a pending deferrer ``defer(fn)()``

    python bench/_workload.py serve MODE            timing requests on stdin: "<workload> <n>"
    python bench/_workload.py once MODE WORKLOAD N  run the workload N times and exit (callgrind)

This file must not import godefer (or anything else) unless the mode asks for it.
"""

from __future__ import annotations

import gc
import sys
import time

MODES = (
    ("plain", "nothing imported"),
    ("imported", "godefer imported"),
    ("pending_prepared", "godefer defer pending (prepared)"),
    ("pending_runtime", "godefer defer pending (runtime path)"),
    ("python_defer_imported", "python-defer imported (global settrace)"),
    ("python_defer_pending", "python-defer d(fn) pending"),
    ("deferrer_imported", "deferrer imported"),
    ("deferrer_pending", "deferrer defer(fn)() pending"),
)
WORKLOADS = ("fib", "richards")

# ---------------------------------------------------------------------------------------------
# the workload


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Packet:
    __slots__ = ("datum", "kind", "link", "target")

    def __init__(self, link, target, kind):
        self.link = link
        self.target = target
        self.kind = kind
        self.datum = 0


class Task:
    def __init__(self, sched, ident, priority, queue):
        self.sched = sched
        self.ident = ident
        self.priority = priority
        self.queue = queue
        self.held = False
        self.count = 0

    def runnable(self):
        return not self.held and self.queue is not None

    def take(self):
        pkt = self.queue
        self.queue = pkt.link
        pkt.link = None
        return pkt


class Worker(Task):
    def run(self):
        pkt = self.take()
        self.count += 1
        pkt.datum = (pkt.datum * 7 + self.count) & 0xFFFF
        pkt.target = 2 + (self.count & 1)
        return self.sched.send(pkt)


class Handler(Task):
    def run(self):
        pkt = self.take()
        self.count += pkt.datum & 3
        if self.count % 5 == 0:
            self.held = True
            self.sched.release_later(self.ident)
        pkt.target = 1 if pkt.kind == 0 else 4
        return self.sched.send(pkt)


class Device(Task):
    def run(self):
        pkt = self.take()
        self.count += 1
        pkt.kind ^= 1
        pkt.target = 1
        self.sched.wake_held()
        return self.sched.send(pkt)


class Scheduler:
    def __init__(self):
        self.tasks = {}
        self.held_ids = []
        self.sent = 0

    def send(self, pkt):
        task = self.tasks[pkt.target]
        pkt.link = None
        if task.queue is None:
            task.queue = pkt
        else:
            tail = task.queue
            while tail.link is not None:
                tail = tail.link
            tail.link = pkt
        self.sent += 1
        return task

    def release_later(self, ident):
        self.held_ids.append(ident)

    def wake_held(self):
        while self.held_ids:
            self.tasks[self.held_ids.pop()].held = False

    def schedule(self, steps):
        order = sorted(self.tasks.values(), key=lambda t: -t.priority)
        for _ in range(steps):
            for task in order:
                if task.runnable():
                    task.run()
                    break
            else:
                self.wake_held()
        return self.sent


def richards(steps=2000):
    sched = Scheduler()
    queue = None
    for i in range(6):
        queue = Packet(queue, 1, i & 1)
    for ident, cls, prio in ((1, Worker, 10), (2, Handler, 20), (3, Handler, 30), (4, Device, 40)):
        sched.tasks[ident] = cls(sched, ident, prio, queue if ident == 1 else None)
    return sched.schedule(steps) + sum(t.count for t in sched.tasks.values())


def run_workload(name: str, loops: int):
    body = (lambda: fib(20)) if name == "fib" else richards
    for _ in range(loops):
        body()


# ---------------------------------------------------------------------------------------------
# conditions


def _noop():
    pass


def _exec_function(src: str, namespace: dict):
    exec(compile(src, "<godefer-bench>", "exec"), namespace)
    return namespace["f"]


def setup(mode: str):
    """Prepare the condition; returns ``holder(fn, body)`` (calls ``body()`` with ``fn``
    pending) or None."""
    pending_src = "def f(fn, body):\n    DEFER\n    return body()\n"
    if mode == "plain":
        return None
    if mode in ("imported", "pending_runtime", "pending_prepared"):
        import godefer

        if mode == "pending_runtime":
            src = pending_src.replace("DEFER", "defer(fn)")
            return _exec_function(src, {"defer": godefer.defer})
        if mode == "pending_prepared":
            from pathlib import Path

            root = str(Path(__file__).resolve().parent.parent)
            if root not in sys.path:
                sys.path.insert(0, root)
            from bench import _prepared

            if not _prepared.is_prepared(_prepared.run_pending):
                raise RuntimeError("import hook did not prepare bench/_prepared.py")
            return _prepared.run_pending
        return None
    if mode.startswith("python_defer"):
        from defer.sugarfree import defer as pd_defer

        if mode == "python_defer_pending":
            return _exec_function(pending_src.replace("DEFER", "d(fn)"), {"d": pd_defer})
        return None
    if mode.startswith("deferrer"):
        import deferrer

        if mode == "deferrer_pending":
            f = _exec_function(pending_src.replace("DEFER", "d(fn)()"), {"d": deferrer.defer})
            return deferrer.defer_scope(f) if sys.version_info < (3, 12) else f
        return None
    raise ValueError(f"unknown mode {mode!r}")


def _timed(name: str, loops: int) -> int:
    t0 = time.perf_counter_ns()
    run_workload(name, loops)
    return time.perf_counter_ns() - t0


def serve(mode: str) -> int:
    try:
        holder = setup(mode)
    except Exception as exc:
        print(f"ERR {type(exc).__name__}: {exc}", flush=True)
        return 0
    gc.disable()
    print("READY", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        name, loops = parts[0], int(parts[1])
        try:
            if holder is None:
                elapsed = _timed(name, loops)
            else:
                elapsed = holder(_noop, lambda name=name, loops=loops: _timed(name, loops))
            print(elapsed, flush=True)
        except Exception as exc:
            print(f"ERR {type(exc).__name__}: {exc}", flush=True)
    return 0


def once(mode: str, name: str, loops: int) -> int:
    holder = setup(mode)
    gc.disable()
    if holder is None:
        run_workload(name, loops)
    else:
        holder(_noop, lambda: run_workload(name, loops))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2]))
    sys.exit(once(sys.argv[2], sys.argv[3], int(sys.argv[4])))
