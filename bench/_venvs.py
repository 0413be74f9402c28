"""Per-version benchmark environments: ``.bench-venvs/py3.X`` (gitignored).

Each holds godefer installed from this checkout (re-installed when the sources change: a hash
of ``src/``, ``pyproject.toml`` and ``CMakeLists.txt`` is kept in the venv), the PyPI peers
``python-defer`` and ``deferrer``, and ``matplotlib`` for the plot. A peer that does not install
on a version is recorded with pip's last error line, and the tables say so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".bench-venvs"
VERSIONS = ("3.11", "3.12", "3.13")
PEERS = ("python-defer", "deferrer")
EXTRAS = ("matplotlib",)
STATUS_FILE = "godefer-bench.json"


def find_python(minor: str) -> str | None:
    """The newest installed CPython ``minor`` (pyenv first, then ``python3.X`` on PATH)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    best: tuple[tuple[int, ...], Path] | None = None
    if root.is_dir():
        for entry in root.iterdir():
            m = re.fullmatch(re.escape(minor) + r"\.(\d+)", entry.name)
            py = entry / "bin" / f"python{minor}"
            if m and py.exists():
                key = (int(m.group(1)),)
                if best is None or key > best[0]:
                    best = (key, py)
    if best is not None:
        return str(best[1])
    return shutil.which(f"python{minor}")


def source_stamp() -> str:
    h = hashlib.sha256()
    files = sorted(
        p for p in (ROOT / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    files += [ROOT / "pyproject.toml", ROOT / "CMakeLists.txt"]
    for p in files:
        if p.exists():
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def venv_python(minor: str) -> Path:
    return VENVS / f"py{minor}" / "bin" / "python"


def _pip(py: Path, *args: str, log: Path) -> tuple[bool, str]:
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, check=False)
    with log.open("a") as f:
        f.write(f"$ pip install {' '.join(args)}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode == 0:
        return True, ""
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:]
    return False, (errors[0] if errors else f"pip exited {proc.returncode}")[:200]


def ensure(minor: str, log=print) -> tuple[Path | None, dict]:
    """Create or refresh the bench venv for ``minor``; returns (python, status).

    status: {"godefer": "ok" | error, "peers": {name: "ok" | error}, "extras": {...}}.
    """
    base = find_python(minor)
    status: dict = {"interpreter": base, "godefer": "", "peers": {}, "extras": {}}
    if base is None:
        status["godefer"] = f"CPython {minor} not installed"
        return None, status
    venv = VENVS / f"py{minor}"
    py = venv / "bin" / "python"
    status_path = venv / STATUS_FILE
    old: dict = {}
    if py.exists() and status_path.exists():
        try:
            old = json.loads(status_path.read_text())
        except ValueError:
            old = {}
    if not py.exists() or old.get("interpreter") != base:
        log(f"[bench venv] creating {venv} from {base}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        old = {}
    pip_log = venv / "pip.log"
    stamp = source_stamp()
    if old.get("stamp") == stamp and old.get("godefer") == "ok":
        status["godefer"] = "ok"
    else:
        log(f"[bench venv] py{minor}: installing godefer from {ROOT} (builds the C++ core)")
        ok, err = _pip(py, "--force-reinstall", "--no-deps", str(ROOT), log=pip_log)
        status["godefer"] = "ok" if ok else err
    for name in (*PEERS, *EXTRAS):
        group = "peers" if name in PEERS else "extras"
        prev = old.get(group, {}).get(name)
        if prev == "ok":
            status[group][name] = "ok"
            continue
        log(f"[bench venv] py{minor}: pip install {name}")
        ok, err = _pip(py, name, log=pip_log)
        status[group][name] = "ok" if ok else f"does not install: {err}"
    status["stamp"] = stamp if status["godefer"] == "ok" else ""
    status_path.write_text(json.dumps(status, indent=2))
    return py, status


if __name__ == "__main__":
    for v in sys.argv[1:] or VERSIONS:
        print(ensure(v))
