"""In-place preparation (DESIGN.md §3): modules already executing when godefer is first imported
(``__main__`` of ``python script.py``) get their remaining functions and classes prepared before
their ``def``/``class`` statements run; the module body itself stays on the runtime path.

Every case runs a script in a child interpreter. The statement form ``CALL in defer`` only works
in prepared code, so a script whose functions use it and work proves they were prepared.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from child_process import child_env


def run_script(tmp_path, src: str, **extra: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "gd_inplace_script.py"
    script.write_text(textwrap.dedent(src))
    return subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=tmp_path,
        env=child_env(**extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout.splitlines()


def test_statement_form_works_in_functions_of_main(tmp_path):
    proc = run_script(
        tmp_path,
        """
        from godefer import defer, errdefer, okdefer
        import godefer._rt


        def work(x):
            print(f"deferred {x}") in defer
            print("ok-deferred") in okdefer
            print("err-deferred") in errdefer
            print("body")
            return x * 2


        def failing():
            print("failing deferred") in defer
            print("failing err-deferred") in errdefer
            raise ValueError("boom")


        print("prepared", godefer._rt.is_prepared(work.__code__),
              godefer._rt.is_prepared(failing.__code__))
        print("returned", work(21))
        try:
            failing()
        except ValueError as exc:
            print("caught", exc)
        """,
    )
    assert lines(proc) == [
        "prepared True True",
        "body",
        "ok-deferred",
        "deferred 21",
        "returned 42",
        "failing err-deferred",
        "failing deferred",
        "caught boom",
    ]


def test_recover_and_result_work_in_functions_of_main(tmp_path):
    # Both need prepared code: on the runtime path they raise NotPreparedError.
    proc = run_script(
        tmp_path,
        """
        from godefer import defer, recover, result, set_result


        def safe_ratio(a, b):
            @defer
            def _():
                if (e := recover()) is not None:
                    print("recovered", type(e).__name__)
            return a / b


        def times_seven():
            defer(lambda: set_result(result() * 7))
            return 6


        print(safe_ratio(1, 0), safe_ratio(6, 3), times_seven())
        """,
    )
    assert lines(proc) == ["recovered ZeroDivisionError", "None 2.0 42"]


def test_classes_and_nested_functions_of_main_are_prepared(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import godefer
        import godefer._rt


        class K:
            print("class body deferred") in godefer.defer
            print("class body")

            def method(self):
                def inner():
                    print("inner deferred") in godefer.defer
                    print("inner body")

                print("method deferred") in godefer.defer
                inner()
                print("method body")


        K().method()
        print("prepared", godefer._rt.is_prepared(K.method.__code__))
        """,
    )
    assert lines(proc) == [
        "class body",
        "class body deferred",
        "inner body",
        "inner deferred",
        "method body",
        "method deferred",
        "prepared True",
    ]


def test_module_level_defer_in_main_runs_before_atexit(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import atexit

        atexit.register(print, "atexit handler")

        from godefer import defer


        def work():
            print("work deferred") in defer
            print("work body")


        defer(print, "module deferred 1")
        defer(print, "module deferred 2")
        work()
        print("module end")
        """,
    )
    assert lines(proc) == [
        "work body",
        "work deferred",
        "module end",
        "module deferred 2",
        "module deferred 1",
        "atexit handler",
    ]


def test_module_body_of_main_stays_on_the_runtime_path(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import sys
        import godefer
        import godefer._rt

        print("module prepared", godefer._rt.is_prepared(sys._getframe().f_code))
        try:
            print("module statement form") in godefer.defer
        except godefer.NotPreparedError as exc:
            print("NotPreparedError", "already happened" in str(exc))
        """,
    )
    assert lines(proc) == [
        "module prepared False",
        "module statement form",
        "NotPreparedError True",
    ]


def test_function_defined_before_the_import_stays_unprepared_and_works(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import sys

        LOG = []


        def early(x):
            godefer.defer(LOG.append, f"early deferred {x}")
            LOG.append(f"early body {x}")
            return x + 1


        def early_statement():
            LOG.append("early statement call") in godefer.defer


        import godefer
        import godefer._rt
        from godefer import defer


        def late(x):
            LOG.append(f"late deferred {x}") in defer
            LOG.append(f"late body {x}")
            return x + 2


        print("prepared", godefer._rt.is_prepared(early.__code__),
              godefer._rt.is_prepared(early_statement.__code__),
              godefer._rt.is_prepared(late.__code__))
        print(early(1), late(1), LOG)
        LOG.clear()
        try:
            early_statement()
        except godefer.NotPreparedError:
            print("early statement form not prepared", LOG)
        """,
    )
    assert lines(proc) == [
        "prepared False False True",
        "2 3 ['early body 1', 'early deferred 1', 'late body 1', 'late deferred 1']",
        "early statement form not prepared ['early statement call']",
    ]


def test_godefer_prepare_0_leaves_main_unprepared(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import godefer
        import godefer._rt
        from godefer import defer

        LOG = []


        def call_form():
            defer(LOG.append, "deferred")
            LOG.append("body")


        def statement_form():
            LOG.append("statement") in defer


        call_form()
        print("prepared", godefer._rt.is_prepared(call_form.__code__), LOG)
        try:
            statement_form()
        except godefer.NotPreparedError:
            print("NotPreparedError")
        """,
        GODEFER_PREPARE="0",
    )
    assert lines(proc) == ["prepared False ['body', 'deferred']", "NotPreparedError"]


def test_module_imported_before_godefer_is_prepared_in_place(tmp_path):
    # A helper module imported first (before godefer exists) is running its `from godefer import`
    # line when godefer is first imported: its later functions are prepared in place.
    (tmp_path / "gd_inplace_helper.py").write_text(
        textwrap.dedent(
            """
            from godefer import defer


            def helper():
                print("helper deferred") in defer
                print("helper body")
            """
        )
    )
    proc = run_script(
        tmp_path,
        """
        import sys
        assert "godefer" not in sys.modules
        import gd_inplace_helper
        import godefer._rt

        gd_inplace_helper.helper()
        print("prepared", godefer._rt.is_prepared(gd_inplace_helper.helper.__code__))
        """,
    )
    assert lines(proc) == ["helper body", "helper deferred", "prepared True"]


def test_lambdas_sharing_a_line_keep_their_own_code(tmp_path):
    # In-place preparation swaps the module's code constants for prepared ones, matched by name
    # and first line: two lambdas on one line are told apart by their order.
    proc = run_script(
        tmp_path,
        """
        from godefer import defer

        def first():
            return "first"

        def second(fn):
            fn(3) in defer
            return "second"

        calls = [lambda: first(), lambda: second(print), lambda: [x for x in "ab"]]
        print([c() for c in calls])
        """,
    )
    assert lines(proc) == ["3", "['first', 'second', ['a', 'b']]"]


def test_async_functions_of_main_await_their_exits(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import asyncio
        from godefer import adefer, ascoped
        import godefer._rt


        async def close(name):
            await asyncio.sleep(0)
            print("awaited", name)


        class Conn:
            async def __aenter__(self):
                print("enter")
                return "conn"

            async def __aexit__(self, *exc):
                print("exit", exc[0].__name__ if exc[0] else None)


        async def main():
            adefer(close, "first")
            conn = await ascoped(Conn())
            print("using", conn)
            raise KeyError("k")


        print("prepared", godefer._rt.is_prepared(main.__code__))
        try:
            asyncio.run(main())
        except KeyError:
            print("caught")
        """,
    )
    assert lines(proc) == [
        "prepared True",
        "enter",
        "using conn",
        "exit KeyError",
        "awaited first",
        "caught",
    ]
