"""The import hook (DESIGN.md §3 "Prepared code"): modules that import godefer are prepared when
they are imported, and the prepared code is cached in ``__pycache__`` under its own tag
(``<name>.<cache_tag>.godefer-<version>-<fingerprint>.pyc``), validated by the source's mtime and
size, and written only when bytecode writing is allowed.

Cache behaviour is observed in child interpreters whose environment sets or clears
``PYTHONDONTWRITEBYTECODE`` explicitly (the test environment sets it).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

import godefer
import godefer._core
import godefer._rt
from child_process import child_env
from godefer import NotPreparedError
from godefer._import_hook import (
    CACHE_SUFFIX,
    PREPARATION_TAG,
    PREPARER_SOURCES,
    GodeferFinder,
    GodeferLoader,
    cache_path,
    preparation_fingerprint,
)

USES_GODEFER = """\
from godefer import defer

LOG = []


def f(x):
    LOG.append(x) in defer
    LOG.append("body")
    return x * 2
"""

PLAIN = """\
LOG = []


def f(x):
    LOG.append("body")
    return x * 2
"""

# Reports, as JSON, whether the module's function is prepared, how its import went, and whether
# its preparation ran in this process (prepare_source is wrapped to count calls).
CHILD = """\
import json, sys
import godefer, godefer._rt, godefer._import_hook as hook

calls = []
original = hook.prepare_source


def counting(source, filename):
    calls.append(filename)
    return original(source, filename)


hook.prepare_source = counting
name = sys.argv[1]
result = {}
try:
    module = __import__(name)
    result["prepared"] = godefer._rt.is_prepared(module.f.__code__)
    result["loader"] = type(module.__spec__.loader).__name__
    try:
        result["value"] = module.f(21)
    finally:
        result["log"] = module.LOG
except Exception as exc:
    result["error"] = f"{type(exc).__name__}: {exc}"
result["prepare_calls"] = len(calls)
result["dont_write_bytecode"] = sys.dont_write_bytecode
print(json.dumps(result))
"""


def run_child(tmp_path, name: str, write_bytecode: bool, *flags: str, **extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, *flags, "-c", CHILD, name],
        check=False,
        cwd=tmp_path,
        env=child_env(write_bytecode=write_bytecode, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_module(tmp_path, src: str) -> tuple[str, str]:
    name = f"gd_hook_{uuid.uuid4().hex[:10]}"
    path = tmp_path / f"{name}.py"
    path.write_text(src)
    return name, str(path)


def godefer_caches(tmp_path) -> list[str]:
    pycache = tmp_path / "__pycache__"
    if not pycache.is_dir():
        return []
    return sorted(p.name for p in pycache.iterdir() if "godefer" in p.name)


def test_cache_name_has_the_godefer_tag():
    suffix = CACHE_SUFFIX
    assert suffix == f".godefer-{PREPARATION_TAG}.pyc"
    assert PREPARATION_TAG.startswith(f"{godefer.__version__}-")
    path = cache_path(os.path.join("pkg", "mod.py"))
    assert path == os.path.join(
        "pkg", "__pycache__", f"mod.{sys.implementation.cache_tag}.godefer-{PREPARATION_TAG}.pyc"
    )


def test_the_cache_tag_changes_with_the_preparer(tmp_path):
    # A development build that prepares differently under the same version number must not
    # load code another build cached.
    preparer = tmp_path / "_prepare.py"
    preparer.write_text("A = 1\n")
    before = preparation_fingerprint([preparer])
    assert before == preparation_fingerprint([preparer])
    preparer.write_text("A = 2\n")
    assert preparation_fingerprint([preparer]) != before
    assert all(path.is_file() for path in PREPARER_SOURCES)


def test_hook_sits_before_the_path_finder():
    finders = [type(f) for f in sys.meta_path]
    assert GodeferFinder in finders
    assert finders.index(GodeferFinder) < sys.meta_path.index(importlib.machinery.PathFinder)


# --- in-process import -------------------------------------------------------------------------


@pytest.fixture
def importer(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def do_import(src: str):
        name, _ = write_module(tmp_path, textwrap.dedent(src))
        importlib.invalidate_caches()
        names.append(name)
        return importlib.import_module(name)

    yield do_import
    for name in names:
        sys.modules.pop(name, None)


def test_module_that_imports_godefer_is_prepared_at_import(importer):
    mod = importer(USES_GODEFER)
    assert isinstance(mod.__spec__.loader, GodeferLoader)
    assert godefer._rt.is_prepared(mod.f.__code__)
    assert mod.f(5) == 10
    assert mod.LOG == ["body", 5]


def test_qualified_import_is_prepared_too(importer):
    mod = importer(
        """
        import godefer as g

        LOG = []


        def f():
            g.defer(LOG.append, "call form")
            LOG.append("statement form") in g.okdefer
            LOG.append("body")
        """
    )
    assert godefer._rt.is_prepared(mod.f.__code__)
    mod.f()
    assert mod.LOG == ["body", "statement form", "call form"]


def test_import_inside_a_function_is_enough(importer):
    mod = importer(
        """
        LOG = []


        def f():
            from godefer import defer
            LOG.append("deferred") in defer
            LOG.append("body")
        """
    )
    assert godefer._rt.is_prepared(mod.f.__code__)
    mod.f()
    assert mod.LOG == ["body", "deferred"]


def test_module_without_godefer_is_not_prepared(importer, tmp_path):
    mod = importer(PLAIN)
    assert not godefer._rt.is_prepared(mod.f.__code__)
    assert "__godefer_rt__" not in vars(mod)
    assert mod.f(1) == 2
    assert godefer_caches(tmp_path) == []


def test_no_cache_written_in_this_process(importer, tmp_path):
    # The test environment forbids bytecode writing.
    assert sys.dont_write_bytecode
    importer(USES_GODEFER)
    assert godefer_caches(tmp_path) == []


# --- the cache, in child interpreters ----------------------------------------------------------


def test_cache_written_when_bytecode_writing_is_allowed(tmp_path):
    name, path = write_module(tmp_path, USES_GODEFER)
    res = run_child(tmp_path, name, write_bytecode=True)
    assert res == {
        "prepared": True,
        "loader": "GodeferLoader",
        "value": 42,
        "log": ["body", 21],
        "prepare_calls": 1,
        "dont_write_bytecode": False,
    }
    expected = f"{name}.{sys.implementation.cache_tag}.godefer-{PREPARATION_TAG}.pyc"
    assert godefer_caches(tmp_path) == [expected]
    assert os.path.exists(cache_path(path))
    assert not [p for p in os.listdir(tmp_path / "__pycache__") if p.endswith(".tmp")]


@pytest.mark.parametrize("how", ["env", "-B"])
def test_no_cache_when_bytecode_writing_is_forbidden(tmp_path, how):
    name, _ = write_module(tmp_path, USES_GODEFER)
    if how == "env":
        res = run_child(tmp_path, name, write_bytecode=False)
    else:
        res = run_child(tmp_path, name, True, "-B")
    assert res["prepared"] is True
    assert res["value"] == 42 and res["log"] == ["body", 21]
    assert res["dont_write_bytecode"] is True
    assert godefer_caches(tmp_path) == []


def test_cache_is_reused_by_a_new_interpreter(tmp_path):
    name, path = write_module(tmp_path, USES_GODEFER)
    first = run_child(tmp_path, name, write_bytecode=True)
    assert first["prepare_calls"] == 1
    cached = cache_path(path)
    before = os.stat(cached)
    with open(cached, "rb") as f:
        content = f.read()

    second = run_child(tmp_path, name, write_bytecode=True)
    assert second["prepared"] is True
    assert second["value"] == 42 and second["log"] == ["body", 21]
    assert second["prepare_calls"] == 0  # loaded from the cache, not prepared again
    after = os.stat(cached)
    assert after.st_mtime_ns == before.st_mtime_ns
    assert after.st_ino == before.st_ino  # not replaced either
    with open(cached, "rb") as f:
        assert f.read() == content


def test_cache_is_reused_even_when_writing_is_then_forbidden(tmp_path):
    name, _ = write_module(tmp_path, USES_GODEFER)
    run_child(tmp_path, name, write_bytecode=True)
    res = run_child(tmp_path, name, write_bytecode=False)
    assert res["prepared"] is True and res["prepare_calls"] == 0


def test_cache_is_invalidated_when_the_source_changes(tmp_path):
    name, path = write_module(tmp_path, USES_GODEFER)
    run_child(tmp_path, name, write_bytecode=True)
    cached = cache_path(path)
    before = os.stat(cached)

    # Only the size changes: the source keeps its mtime.
    source_st = os.stat(path)
    changed = USES_GODEFER.replace("return x * 2", "return x * 3  # changed")
    with open(path, "w") as f:
        f.write(changed)
    os.utime(path, ns=(source_st.st_atime_ns, source_st.st_mtime_ns))

    res = run_child(tmp_path, name, write_bytecode=True)
    assert res["value"] == 63
    assert res["prepared"] is True and res["prepare_calls"] == 1
    after = os.stat(cached)
    assert after.st_mtime_ns != before.st_mtime_ns

    again = run_child(tmp_path, name, write_bytecode=True)
    assert again["value"] == 63 and again["prepare_calls"] == 0


def test_cache_is_invalidated_by_a_same_size_edit_with_a_new_mtime(tmp_path):
    name, path = write_module(tmp_path, USES_GODEFER)
    run_child(tmp_path, name, write_bytecode=True)
    changed = USES_GODEFER.replace("return x * 2", "return x * 5")
    assert len(changed) == len(USES_GODEFER)
    st = os.stat(path)
    with open(path, "w") as f:
        f.write(changed)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    res = run_child(tmp_path, name, write_bytecode=True)
    assert res["value"] == 105 and res["prepare_calls"] == 1


def test_corrupt_cache_is_ignored_and_rewritten(tmp_path):
    name, path = write_module(tmp_path, USES_GODEFER)
    run_child(tmp_path, name, write_bytecode=True)
    cached = cache_path(path)
    with open(cached, "r+b") as f:
        header = f.read(16)
        f.seek(0)
        f.truncate()
        f.write(header + b"\x00garbage")
    res = run_child(tmp_path, name, write_bytecode=True)
    assert res["prepared"] is True and res["value"] == 42 and res["prepare_calls"] == 1


def test_plain_module_gets_no_godefer_cache(tmp_path):
    name, _ = write_module(tmp_path, PLAIN)
    res = run_child(tmp_path, name, write_bytecode=True)
    assert res["prepared"] is False
    assert res["value"] == 42 and res["log"] == ["body"]
    assert res["prepare_calls"] == 0
    assert godefer_caches(tmp_path) == []
    # The standard bytecode cache is still written as usual.
    pycache = tmp_path / "__pycache__"
    assert [p.name for p in pycache.iterdir()] == [f"{name}.{sys.implementation.cache_tag}.pyc"]


def test_godefer_prepare_0_prepares_nothing(tmp_path):
    name, _ = write_module(tmp_path, USES_GODEFER)
    res = run_child(tmp_path, name, write_bytecode=True, GODEFER_PREPARE="0")
    assert res["prepare_calls"] == 0
    assert res["prepared"] is False
    assert res["loader"] == "SourceFileLoader"
    # Unprepared, the statement form has already made its call once, then raises.
    assert res["error"].startswith("NotPreparedError:")
    assert "already happened" in res["error"]
    assert res["log"] == [21]
    assert "value" not in res
    assert godefer_caches(tmp_path) == []


def test_godefer_prepare_0_call_form_still_works_on_the_runtime_path(tmp_path):
    src = """\
from godefer import defer

LOG = []


def f(x):
    defer(LOG.append, x)
    LOG.append("body")
    return x * 2
"""
    name, _ = write_module(tmp_path, src)
    res = run_child(tmp_path, name, write_bytecode=True, GODEFER_PREPARE="0")
    assert res == {
        "prepared": False,
        "loader": "SourceFileLoader",
        "value": 42,
        "log": ["body", 21],
        "prepare_calls": 0,
        "dont_write_bytecode": False,
    }
    assert godefer_caches(tmp_path) == []


def test_not_prepared_error_is_what_unprepared_statement_form_raises():
    # Sanity check of the premise used above, in this process.
    ns: dict = {}
    with pytest.raises(NotPreparedError):
        exec(compile("from godefer import defer\nprint('') in defer\n", "<string>", "exec"), ns)
