"""godefer's pytest plugin (``pytest11`` entry point): test modules get both pytest's assertion
rewriting and godefer's preparation.

pytest runs in a child interpreter on a temporary test module that uses the ``in defer``
statement (which only works prepared) next to a failing assertion (whose message only has
detail when pytest rewrote it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from child_process import child_env
from godefer._import_hook import PREPARATION_TAG

# The child pytest must load its plugins (godefer's included) as a user's would.
PYTEST_VARIABLES = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")

TEST_MODULE = """\
from godefer import defer, recover

LOG = []


def cleanup_twice(log):
    log.append("deferred") in defer
    log.append("body")


def safe():
    @defer
    def _():
        LOG.append(type(recover()).__name__)

    raise ValueError


def test_statement_form_passes():
    log = []
    cleanup_twice(log)
    assert log == ["body", "deferred"]
    assert safe() is None
    assert LOG == ["ValueError"]


def test_rewritten_assertion_fails():
    log = []
    log.append("deferred in failing test") in defer
    assert [1, 2] == [1, 3]
"""


def run_pytest(tmp_path, *args: str, write_bytecode: bool = False, **extra: str):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        check=False,
        cwd=tmp_path,
        env=child_env(write_bytecode=write_bytecode, drop=PYTEST_VARIABLES, **extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def test_file(tmp_path):
    path = tmp_path / "test_gd_integration_sample.py"
    path.write_text(TEST_MODULE)
    # An empty ini file pins the rootdir to tmp_path, away from this project's configuration.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return path


def check_output(proc: subprocess.CompletedProcess[str]) -> None:
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert re.search(r"\b1 failed, 1 passed\b", out), out
    # pytest rewrote the assertion: the message explains the comparison.
    assert "assert [1, 2] == [1, 3]" in out
    assert "At index 1 diff: 2 != 3" in out
    assert "test_rewritten_assertion_fails" in out
    assert "NotPreparedError" not in out
    assert "SyntaxError" not in out


def test_rewritten_assertions_and_prepared_statement_form(test_file, tmp_path):
    proc = run_pytest(tmp_path, str(test_file))
    check_output(proc)


def test_failing_test_line_is_the_assert_line(test_file, tmp_path):
    proc = run_pytest(tmp_path, str(test_file))
    lines = TEST_MODULE.splitlines()
    assert_line = lines.index("    assert [1, 2] == [1, 3]") + 1
    assert f"test_gd_integration_sample.py:{assert_line}: AssertionError" in proc.stdout


def test_pytest_cache_of_a_prepared_test_module_carries_godefer_tag(test_file, tmp_path):
    first = run_pytest(tmp_path, str(test_file), write_bytecode=True)
    check_output(first)
    pycache = tmp_path / "__pycache__"
    cached = [p.name for p in pycache.iterdir() if p.name.startswith("test_gd_integration_sample")]
    assert len(cached) == 1, cached
    assert f"-godefer-{PREPARATION_TAG}" in cached[0]
    assert "pytest" in cached[0]
    # The second run loads the cached, prepared and rewritten module.
    second = run_pytest(tmp_path, str(test_file), write_bytecode=True)
    check_output(second)


def test_godefer_prepare_0_keeps_assertion_rewriting(test_file, tmp_path):
    other = tmp_path / "test_gd_integration_call_form.py"
    other.write_text(
        textwrap.dedent(
            """
            from godefer import defer


            def test_call_form_assertion():
                log = []
                defer(log.append, "deferred")
                assert [1, 2] == [1, 4]
            """
        )
    )
    proc = run_pytest(tmp_path, str(test_file), str(other), GODEFER_PREPARE="0")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    # Unprepared, the statement form raises NotPreparedError in both tests of the first file; the
    # assertion of the second file is still rewritten by pytest.
    assert re.search(r"\b3 failed\b", out), out
    assert "NotPreparedError" in out
    assert "assert [1, 2] == [1, 4]" in out
    assert "At index 1 diff: 2 != 4" in out


def test_plugin_is_registered(tmp_path):
    probe = tmp_path / "test_gd_probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            def test_probe(pytestconfig):
                assert pytestconfig.pluginmanager.has_plugin("godefer")
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = run_pytest(tmp_path, str(probe))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
