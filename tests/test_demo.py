"""The README's third command, `python examples/demo.py`, runs and shows what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from child_process import child_env

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_runs_and_shows_each_feature():
    proc = subprocess.run(
        [sys.executable, str(DEMO)],
        check=False,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert "  -> result" in out
    assert "  -> raised ValueError('boom')" in out
    assert "  safe_ratio recovered ZeroDivisionError('division by zero'); it returns None" in out
    assert "  forty_two() -> 42" in out
    tail = out[out.index("async exits (adefer, ascoped):") :]
    assert tail == [
        "async exits (adefer, ascoped):",
        "  acquired a connection",
        "  handling with conn",
        "  awaited flush('conn')",
        "  released the connection",
        "  -> done",
    ]
