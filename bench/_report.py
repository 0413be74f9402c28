"""Printing the tables, the quality bars, and the plot."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench._memory import CANDIDATES as MEMORY_CANDIDATES
from bench._micro import LOOP_NS
from bench._workload import MODES, WORKLOADS

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# the bars (DESIGN.md section 4 and the benchmark issue)

BAR_TOPLEVEL = 1.1  # prepared, top-level defer, x try/finally
BAR_PREPARED = 1.5  # prepared, any defer, x try/finally
BAR_RUNTIME = 3.0  # runtime path, x try/finally, on 3.12+
BAR_EXITSTACK = 20.0  # ExitStack time / prepared time (DESIGN.md says 10x; the issue 20x)
BAR_SLOWDOWN = 0.02  # instruction-count slowdown of code that does not use godefer
BAR_BYTES = 64.0  # heap bytes per pending call beyond the callable and its arguments
MEMORY_BAR_N = "1000"


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "commit": commit,
    }


def _met(value, limit, *, at_most=True):
    if value is None:
        return None
    return value <= limit if at_most else value >= limit


# Bars read from instruction counts (bench/_instructions.py): (table, key, what).
INSTRUCTION_BARS = (
    ("one_defer", "godefer_prepared", "prepared, top-level defer"),
    ("one_defer", "godefer_prepared_block", "prepared, defer inside an if"),
    ("one_defer", "godefer_prepared_expr", "prepared, defer as an expression"),
    ("one_defer", "godefer_prepared_scope", "prepared, defer in a scope() block"),
    ("one_defer", "godefer_prepared_star", "prepared, defer(*args)"),
    ("one_defer", "godefer_prepared_star_returned", "prepared, return defer(*args)"),
    ("one_defer", "godefer_prepared_scoped", "prepared, scoped(cm)"),
    ("return_two", "godefer_prepared", "prepared, two top-level defers"),
    ("return_ten", "godefer_prepared", "prepared, ten top-level defers"),
    ("raise_one", "godefer_prepared", "prepared, raise through one defer"),
    ("awaited", "godefer_prepared", "prepared, adefer(fn) in a coroutine"),
    ("awaited", "godefer_prepared_core", "prepared, adefer(fn) in a one-pass loop (core-held)"),
)


def bars(res: dict) -> list[dict]:
    """The bars for one version's results: [{bar, measured, met (True/False/None), note}]."""
    out: list[dict] = []
    minor = tuple(int(x) for x in res["python"].split(".")[:2])
    one = res.get("one_defer", {})

    def add(bar, measured, met, note=""):
        out.append({"bar": bar, "measured": measured, "met": met, "note": note})

    def ratio(key):
        row = one.get(key, {})
        return row.get("ratio") if row.get("status") == "ok" else None

    r = ratio("godefer_prepared")
    add(
        f"prepared, top-level defer <= {BAR_TOPLEVEL}x try/finally",
        f"{r:.3f}x" if r else "n/a",
        _met(r, BAR_TOPLEVEL),
    )
    add(
        f"prepared, top-level defer <= {BAR_PREPARED}x try/finally",
        f"{r:.3f}x" if r else "n/a",
        _met(r, BAR_PREPARED),
    )
    # Forms measured against the same code written by hand (bench/_micro.py, MATCHED).
    for key, what in (
        ("godefer_prepared_block", "defer inside an if <= {}x try/finally under the same if"),
        ("godefer_prepared_star", "defer(*args) <= {}x try/finally calling args[0](*args[1:])"),
        (
            "godefer_prepared_star_returned",
            "return defer(*args) <= {}x try/finally calling args[0](*args[1:])",
        ),
        ("godefer_prepared_scoped", "scoped(cm) <= {}x `with cm:`"),
    ):
        row = one.get(key, {})
        r = row.get("ratio_matched") if row.get("status") == "ok" else None
        plain = ratio(key)
        add(
            "prepared, " + what.format(BAR_PREPARED),
            f"{r:.3f}x" if r else "n/a",
            _met(r, BAR_PREPARED),
            f"vs plain try/finally: {plain:.3f}x" if plain else "",
        )
    for key, what in (
        ("godefer_prepared_expr", "defer used as an expression"),
        ("godefer_prepared_scope", "defer in a scope() block"),
    ):
        r = ratio(key)
        add(
            f"prepared, {what} <= {BAR_PREPARED}x try/finally",
            f"{r:.3f}x" if r else "n/a",
            _met(r, BAR_PREPARED),
        )
    r = ratio("godefer_runtime")
    if minor >= (3, 12):
        add(
            f"runtime path <= {BAR_RUNTIME:g}x try/finally", f"{r:.3f}x" if r else "n/a", _met(r, 3)
        )
    else:
        add(
            f"runtime path <= {BAR_RUNTIME:g}x try/finally",
            f"{r:.3f}x" if r else "n/a",
            None,
            "bar applies to 3.12+",
        )
    for key, what, hand_key in (
        ("godefer_prepared", "top-level", "tryfinally"),
        ("godefer_prepared_block", "inside an if", "tryfinally_if"),
        ("godefer_prepared_expr", "expression", "tryfinally"),
        ("godefer_prepared_scope", "scope() block", "tryfinally"),
        ("godefer_prepared_star", "defer(*args)", "tryfinally_star"),
        ("godefer_prepared_star_returned", "return defer(*args)", "tryfinally_star"),
    ):
        row = one.get(key, {})
        ok = row.get("status") == "ok"
        # The starred forms against an ExitStack that unpacks the same tuple (_micro.py).
        matched = row.get("exitstack_matched_over_this") if ok else None
        f = matched or (row.get("exitstack_over_this") if ok else None)
        against = "ExitStack doing the same" if matched else "ExitStack"
        note = f"DESIGN.md's >= 10x: {'met' if f and f >= 10 else 'missed'}" if f else ""
        # The same margin for the hand-written form: the most any defer could reach.
        stack = one.get("exitstack_star" if matched else "exitstack", {}).get("ns")
        hand = one.get(hand_key, {}).get("ns")
        if note and stack and hand:
            note += f"; by hand: {stack / hand:.1f}x"
        add(
            f"prepared ({what}) >= {BAR_EXITSTACK:g}x faster than {against}",
            f"{f:.1f}x" if f else "n/a",
            _met(f, BAR_EXITSTACK, at_most=False),
            note,
        )
    # scoped(cm) against an ExitStack entering the same context manager: not a bar, since the
    # manager's own object and __exit__ dominate both (`with cm:` by hand is no 20x faster).
    row = one.get("godefer_prepared_scoped", {})
    hand = one.get("with_cm", {})
    f = row.get("exitstack_matched_over_this") if row.get("status") == "ok" else None
    if f and hand.get("ns") and one.get("exitstack_cm", {}).get("ns"):
        by_hand = one["exitstack_cm"]["ns"] / hand["ns"]
        add(
            "prepared (scoped(cm)): ExitStack entering the same cm / this (no bar)",
            f"{f:.1f}x",
            None,
            f"`with cm:` by hand: {by_hand:.1f}x",
        )
    awaited = res.get("awaited", {})
    for key, what, ratio_key, against in (
        ("godefer_prepared", "adefer(fn) in a coroutine", "ratio", "try/finally awaiting fn()"),
        (
            "godefer_prepared_core",
            "adefer(fn) in a one-pass loop (core-held)",
            "ratio_matched",
            "the loop by hand (a list awaited in a finally)",
        ),
    ):
        row = awaited.get(key, {})
        ok = row.get("status") == "ok"
        r = row.get(ratio_key) if ok else None
        f = row.get("exitstack_over_this") if ok else None
        notes = [f"AsyncExitStack / this: {f:.1f}x"] if f else [row.get("note", "")]
        if ratio_key != "ratio" and ok and row.get("ratio"):
            notes.append(f"vs try/finally with no loop: {row['ratio']:.3f}x")
        add(
            f"prepared, {what} <= {BAR_PREPARED}x {against}",
            f"{r:.3f}x" if r else "n/a",
            _met(r, BAR_PREPARED),
            "; ".join(n for n in notes if n),
        )
    ins = res.get("instructions") or {}
    if ins.get("status") == "ok":
        for table, key, what in INSTRUCTION_BARS:
            row = ins["tables"].get(table, {}).get(key, {})
            r = row.get("ratio")
            base = row.get("baseline")
            add(
                f"callgrind: {what} <= {BAR_PREPARED}x {base}",
                f"{r:.3f}x" if r else "n/a",
                _met(r, BAR_PREPARED),
                f"{row['instructions']:.0f} instructions per call" if r else row.get("note", ""),
            )
    cg = res.get("callgrind") or {}
    for mode in ("imported", "pending_prepared", "pending_runtime"):
        label = dict(MODES)[mode]
        bar = f"<= 2% instructions, unrelated code: {label}"
        if cg.get("status") != "ok":
            note = cg.get("note") or "not measured (run with --callgrind)"
            tm = res.get("global_time", {}).get(mode, {})
            times = [tm.get(w, {}).get("ratio") for w in WORKLOADS]
            if all(times):
                note += "; time ratio " + " / ".join(f"{t:.3f}" for t in times)
            add(bar, "n/a", None, note)
            continue
        row = cg["modes"].get(mode, {})
        slows = [row.get(w, {}).get("ratio") for w in WORKLOADS]
        if not all(slows):
            add(bar, "n/a", None, row.get("note", ""))
            continue
        worst = max(s - 1 for s in slows)
        detail = ", ".join(f"{w} {s - 1:+.2%}" for w, s in zip(WORKLOADS, slows, strict=True))
        note = "documented 3.11 limit (C trace function)" if minor < (3, 12) else ""
        if mode == "pending_runtime" and note:
            add(bar, detail, worst <= BAR_SLOWDOWN, note)
        else:
            add(bar, detail, worst <= BAR_SLOWDOWN)
    mem = res.get("memory", {})
    for key in ("godefer_prepared", "godefer_runtime"):
        row = mem.get(key, {})
        heap = row.get("heap") if row.get("status") == "ok" else None
        bar = f"<= {BAR_BYTES:g} B per pending call: {dict(MEMORY_CANDIDATES)[key]}"
        if not heap:
            add(bar, "n/a", None, row.get("note", ""))
            continue
        value = heap[MEMORY_BAR_N]
        others = ", ".join(f"N={n}: {heap[n]:.0f} B" for n in heap if n != MEMORY_BAR_N)
        add(
            bar,
            f"{value:.1f} B at N={MEMORY_BAR_N}",
            value <= BAR_BYTES,
            f"{others} (per-scope costs divided by N)",
        )
    return out


def _verdict(met) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


# ---------------------------------------------------------------------------------------------
# formatting helpers


def _ns(v) -> str:
    return f"{v:.1f}" if v is not None else "-"


def _x(v) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def _table(headers: list[str], rows: list[list[str]], first: int = 46, left=(0,)) -> str:
    """Columns right-aligned, except those in ``left`` (by index; negative from the end)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    widths[0] = max(widths[0], first)
    lefts = {i % len(headers) for i in left}

    def line(cells):
        return "  ".join(
            c.ljust(w) if i in lefts else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _notes(rows: dict) -> list[str]:
    return [f"  {row['label']}: {row['note']}" for row in rows.values() if row.get("note")]


# ---------------------------------------------------------------------------------------------
# one version


def _per_call_table(rows: dict, exitstack_header: str) -> str:
    """A table of ns per call, the ratio to try/finally and the ExitStack's time over each."""
    cells = []
    for row in rows.values():
        ok = row["status"] == "ok"
        es = row.get("exitstack_over_this")
        cells.append(
            [
                row["label"],
                _ns(row["ns"]) if ok else "n/a",
                _x(row["ratio"]) if ok else "n/a",
                f"{es:.1f}x" if ok and es else "-",
            ]
        )
    return _table(["", "ns/call", "vs try/finally", exitstack_header], cells)


def version_report(res: dict) -> str:
    out = [f"\n== godefer bench: {res['implementation']} {res['python']} ({res['executable']})"]
    if res.get("smoke"):
        out.append("   (smoke run: tiny budgets, numbers are only a sanity check)")

    one = res["one_defer"]
    out.append("\n-- one deferred no-op: ns per call (min of interleaved repeats) --")
    out.append(_per_call_table(one, "ExitStack/this"))
    out += _notes(one)

    loops = res["loops"]
    out.append(
        "\n-- N deferred calls in a loop: ns per deferred call (ExitStack time / this time) --"
    )
    keys = list(loops[str(LOOP_NS[0])])
    rows = []
    for key in keys:
        cells = [loops[str(LOOP_NS[0])][key]["label"]]
        for n in LOOP_NS:
            row = loops[str(n)][key]
            es = row.get("exitstack_over_this")
            cells.append(f"{_ns(row['ns'])} ({es:.1f}x)" if row["status"] == "ok" and es else "n/a")
        rows.append(cells)
    out.append(_table(["", *(f"N={n}" for n in LOOP_NS)], rows))
    out += _notes(loops[str(LOOP_NS[-1])])

    awaited = res["awaited"]
    out.append("\n-- one awaited no-op (adefer) at a coroutine's exit: ns per call --")
    out.append(_per_call_table(awaited, "AsyncExitStack/this"))
    out += _notes(awaited)

    exc = res["exceptions"]
    out.append("\n-- exception path: raise through 1 / 10 deferred calls (ns, vs try/finally) --")
    rows = []
    for key in exc["1"]:
        cells = [exc["1"][key]["label"]]
        for count in ("1", "10"):
            row = exc[count][key]
            cells.append(
                f"{_ns(row['ns'])} ({_x(row['ratio'])})" if row["status"] == "ok" else "n/a"
            )
        rows.append(cells)
    out.append(_table(["", "1 deferred call", "10 deferred calls"], rows))
    out.append("  (both open-coded: the body's handler calls the slots inline)")

    mem = res["memory"]
    out.append(
        "\n-- memory per pending call, beyond the callable and its arguments (bytes) --"
        "\n   heap: whole process heap (PYTHONMALLOC=malloc, glibc mallinfo2);"
        " tracemalloc: Python allocators only"
    )
    rows = []
    for row in mem.values():
        cells = [row["label"]]
        for view in ("heap", "tracemalloc"):
            vals = row.get(view)
            for n in LOOP_NS:
                cells.append(f"{vals[str(n)]:.1f}" if vals else "n/a")
        rows.append(cells)
    headers = [""] + [f"{v} N={n}" for v in ("heap", "tmalloc") for n in LOOP_NS]
    out.append(_table(headers, rows))
    out += _notes(mem)

    gt = res["global_time"]
    cg = res.get("callgrind") or {}
    out.append(
        "\n-- unrelated workload (fib(20), richards-like): slowdown vs nothing imported --"
        "\n   instructions: callgrind, per repetition; time: min of interleaved repeats"
    )
    rows = []
    for mode, label in MODES:
        t = gt.get(mode, {})
        c = cg.get("modes", {}).get(mode, {}) if cg.get("status") == "ok" else {}
        cells = [label]
        for w in WORKLOADS:
            r = c.get(w, {}).get("ratio")
            cells.append(f"{r - 1:+.2%}" if r else "-")
        for w in WORKLOADS:
            r = t.get(w, {}).get("ratio") if t.get("status") == "ok" else None
            cells.append(_x(r) if r else "n/a")
        rows.append(cells)
    headers = [""] + [f"instr {w}" for w in WORKLOADS] + [f"time {w}" for w in WORKLOADS]
    out.append(_table(headers, rows))
    if cg.get("status") != "ok":
        out.append(f"  instructions: {cg.get('note') or 'not measured (run with --callgrind)'}")
    out += _notes(gt)

    out += instructions_report(res)
    out.append(f"\n-- quality bars, CPython {res['python']} --")
    out.append(bars_report({res["python"]: res}))
    return "\n".join(out)


def instructions_report(res: dict) -> list[str]:
    ins = res.get("instructions") or {}
    out = ["\n-- instructions per call under callgrind (ratio to its hand-written baseline) --"]
    if ins.get("status") != "ok":
        return [*out, f"  {ins.get('note') or 'not measured (run with --callgrind)'}"]
    rows = []
    for table, rows_ in ins["tables"].items():
        for key, row in rows_.items():
            per, r = row.get("instructions"), row.get("ratio")
            label = f"{table}: {key}" + (f" (vs {row['baseline']})" if row.get("baseline") else "")
            rows.append([label, f"{per:.0f}" if per else "n/a", _x(r) if r else "-"])
    out.append(_table(["", "instructions", "ratio"], rows))
    return out


def bars_report(results: dict) -> str:
    rows = []
    for version, res in results.items():
        for b in bars(res):
            rows.append([b["bar"], version, b["measured"], _verdict(b["met"]), b["note"]])
    return _table(["bar", "python", "measured", "", "note"], rows, left=(0, -1))


# ---------------------------------------------------------------------------------------------
# all versions side by side


def combined_report(results: dict) -> str:
    """``results``: {python version: result dict} (versions that ran)."""
    versions = list(results)
    out = ["\n\n== all versions, side by side =="]
    if not versions:
        return "\n".join([*out, "(no version ran)"])
    first = results[versions[0]]

    out.append("\n-- one deferred no-op: time vs try/finally (ns per call) --")
    rows = []
    for key, row0 in first["one_defer"].items():
        cells = [row0["label"]]
        for v in versions:
            row = results[v]["one_defer"].get(key, {})
            if row.get("status") == "ok":
                cells.append(f"{_x(row['ratio'])} ({row['ns']:.0f})")
            else:
                cells.append("n/a")
        rows.append(cells)
    out.append(_table(["", *versions], rows))
    for v in versions:
        for row in results[v]["one_defer"].values():
            if row.get("note"):
                out.append(f"  {v} {row['label']}: {row['note']}")

    out.append(f"\n-- N deferred calls in a loop, N={LOOP_NS[-1]}: ns per call (ExitStack/this) --")
    rows = []
    last = str(LOOP_NS[-1])
    for key, row0 in first["loops"][last].items():
        cells = [row0["label"]]
        for v in versions:
            row = results[v]["loops"][last].get(key, {})
            es = row.get("exitstack_over_this")
            cells.append(f"{row['ns']:.1f} ({es:.1f}x)" if row.get("status") == "ok" else "n/a")
        rows.append(cells)
    out.append(_table(["", *versions], rows))

    out.append(
        "\n-- one awaited no-op (adefer): time vs try/finally awaiting fn() (ns per call) --"
    )
    rows = []
    for key, row0 in first["awaited"].items():
        cells = [row0["label"]]
        for v in versions:
            row = results[v]["awaited"].get(key, {})
            ok = row.get("status") == "ok"
            cells.append(f"{_x(row['ratio'])} ({row['ns']:.0f})" if ok else "n/a")
        rows.append(cells)
    out.append(_table(["", *versions], rows))

    out.append("\n-- exception path: vs try/finally (1 deferred call / 10) --")
    rows = []
    for key, row0 in first["exceptions"]["1"].items():
        cells = [row0["label"]]
        for v in versions:
            a = results[v]["exceptions"]["1"].get(key, {})
            b = results[v]["exceptions"]["10"].get(key, {})
            ok = a.get("status") == "ok" and b.get("status") == "ok"
            cells.append(f"{_x(a['ratio'])} / {_x(b['ratio'])}" if ok else "n/a")
        rows.append(cells)
    out.append(_table(["", *versions], rows))

    out.append(f"\n-- heap bytes per pending call at N={MEMORY_BAR_N} (N=1 / N=10) --")
    rows = []
    for key, row0 in first["memory"].items():
        cells = [row0["label"]]
        for v in versions:
            heap = results[v]["memory"].get(key, {}).get("heap")
            cells.append(
                f"{heap[MEMORY_BAR_N]:.1f} ({heap['1']:.0f} / {heap['10']:.0f})" if heap else "n/a"
            )
        rows.append(cells)
    out.append(_table(["", *versions], rows))

    out.append("\n-- unrelated workload: instruction-count slowdown, fib / richards (time) --")
    rows = []
    for mode, label in MODES:
        cells = [label]
        for v in versions:
            cg = results[v].get("callgrind") or {}
            t = results[v]["global_time"].get(mode, {})
            c = cg.get("modes", {}).get(mode, {}) if cg.get("status") == "ok" else {}
            ci = [c.get(w, {}).get("ratio") for w in WORKLOADS]
            ti = [t.get(w, {}).get("ratio") for w in WORKLOADS]
            instr = " / ".join(f"{r - 1:+.1%}" for r in ci) if all(ci) else "-"
            time_ = " / ".join(f"{r:.2f}" for r in ti) if all(ti) else "n/a"
            cells.append(f"{instr} ({time_})")
        rows.append(cells)
    out.append(_table(["", *versions], rows))

    if any((results[v].get("instructions") or {}).get("status") == "ok" for v in versions):
        out.append("\n-- instructions per call under callgrind: count (ratio to its baseline) --")
        rows = []
        seen = next(
            results[v]["instructions"]["tables"]
            for v in versions
            if (results[v].get("instructions") or {}).get("status") == "ok"
        )
        for table, rows_ in seen.items():
            for key in rows_:
                cells = [f"{table}: {key}"]
                for v in versions:
                    ins = results[v].get("instructions") or {}
                    row = ins.get("tables", {}).get(table, {}).get(key, {})
                    per, r = row.get("instructions"), row.get("ratio")
                    cells.append(f"{per:.0f}" + (f" ({_x(r)})" if r else "") if per else "n/a")
                rows.append(cells)
        out.append(_table(["", *versions], rows))

    out.append("\n== quality bars (report only; nothing here fails the run) ==")
    out.append(bars_report(results))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# plot


def plot(combined: dict, path: str) -> None:
    """Grouped bars: one-defer time / try/finally, per candidate and version, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = combined["versions"]
    meta = combined["meta"]
    versions = [v for v, r in results.items() if r]
    first = results[versions[0]]["one_defer"]
    keys = [k for k in first if k != "tryfinally"]
    labels = [first[k]["label"] for k in keys]
    width = 0.8 / max(1, len(versions))
    fig, ax = plt.subplots(figsize=(12, 6.5), dpi=120)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
    ymin = 0.3
    for i, v in enumerate(versions):
        rows = results[v]["one_defer"]
        xs, ys = [], []
        for j, k in enumerate(keys):
            row = rows.get(k, {})
            x = j + (i - (len(versions) - 1) / 2) * width
            if row.get("status") == "ok" and row.get("ratio"):
                xs.append(x)
                ys.append(row["ratio"])
                ax.text(
                    x,
                    row["ratio"] * 1.06,
                    f"{row['ratio']:.2f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
            else:
                ax.text(x, ymin * 1.15, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.bar(xs, ys, width=width, label=f"CPython {v}", color=colors[i % len(colors)])
    ax.set_yscale("log")
    top = max(
        (r.get("ratio") or 1.0 for v in versions for r in results[v]["one_defer"].values()),
        default=10.0,
    )
    ax.set_ylim(ymin, top * 4)
    right = ax.get_yaxis_transform()  # x in axes coordinates, y in data
    ax.axhline(1.0, color="black", linewidth=1)
    ax.text(1.005, 1.0, "try/finally", transform=right, fontsize=8, va="top")
    for y, txt in ((BAR_TOPLEVEL, "1.1x"), (BAR_PREPARED, "1.5x"), (BAR_RUNTIME, "3x")):
        ax.axhline(y, color="grey", linewidth=0.6, linestyle=":")
        ax.text(1.005, y, f"bar {txt}", transform=right, fontsize=7, color="grey", va="bottom")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(
        [lbl.replace(": ", ":\n").replace("  ", "\n") for lbl in labels],
        fontsize=8,
        rotation=20,
        ha="right",
    )
    ax.set_ylabel("time / time of hand-written try/finally (log scale, lower is better)")
    ax.set_title("godefer: a function with one deferred no-op, vs try/finally", fontsize=12)
    ax.legend(loc="upper left", fontsize=9)
    pys = ", ".join(results[v]["python"] for v in versions)
    smoke = " - SMOKE RUN (tiny budgets)" if any(results[v].get("smoke") for v in versions) else ""
    caption = (
        f"{meta['date']} - {meta['cpu']}, {meta['cores']} cores - CPython {pys} - "
        f"godefer {meta.get('commit', '')}{smoke}\n"
        "min of interleaved repeats, all candidates timed side by side in one process per version"
    )
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, color="#333333")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
