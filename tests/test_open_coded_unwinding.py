"""Open-coded functions leaving by an exception: the slots are called inline by the handler.

This module is prepared by godefer's pytest plugin. Every subject below keeps its defers in frame
locals (checked by ``open_coded``), so these tests pin the inline exception path: recover() from
a slot, set_result()/result() while unwinding, a slot raising (the core takes over the rest),
errdefer/okdefer around a recovery, and frames whose core holds entries too.
"""

from __future__ import annotations

import sys

import pytest

from godefer import defer, errdefer, okdefer, recover, result, scoped, set_result
from godefer._prepare import MAX_OPEN_CODED
from slot_log import (
    LOG,
    Tracked,
    note,
    open_coded,
    slot_log,  # noqa: F401  (the fixture pytestmark names)
)

pytestmark = pytest.mark.usefixtures("slot_log")


# --- recover() -----------------------------------------------------------------------------------


def recover_in_own_handler():
    # The slot's own `except` makes its exception the handled one; recover() still finds the
    # frame's exception (the slot's carries it as __context__).
    try:
        raise KeyError("slot's own")
    except KeyError:
        LOG.append(recover())


def recovers_inside_its_own_except():
    defer(recover_in_own_handler)
    raise ValueError("body")


def test_recover_inside_the_deferred_calls_own_except_finds_the_frames_exception():
    assert open_coded(recovers_inside_its_own_except)
    assert recovers_inside_its_own_except() is None
    (got,) = LOG
    assert isinstance(got, ValueError) and got.args == ("body",)


def recover_and_log():
    LOG.append(recover())


def raise_key_error():
    raise KeyError("from slot")


def slot_raises_then_earlier_slot_recovers():
    defer(recover_and_log)
    defer(note("second"))
    defer(raise_key_error)
    raise ValueError("body")


def test_a_slot_raising_while_unwinding_replaces_the_exception_and_the_rest_still_run():
    assert open_coded(slot_raises_then_earlier_slot_recovers)
    assert slot_raises_then_earlier_slot_recovers() is None
    assert LOG[0] == "second"
    recovered = LOG[1]
    assert isinstance(recovered, KeyError)
    assert isinstance(recovered.__context__, ValueError)


def recover_twice():
    LOG.append(recover())
    LOG.append(recover())


def recovers_twice_in_one_slot():
    defer(recover_twice)
    raise ValueError


def test_second_recover_in_the_same_slot_returns_none():
    assert recovers_twice_in_one_slot() is None
    assert isinstance(LOG[0], ValueError) and LOG[1] is None


def unmatched_recover():
    LOG.append(recover(KeyError))


def recover_of_another_type():
    defer(unmatched_recover)
    raise ValueError


def test_recover_of_another_type_lets_the_exception_go_on():
    with pytest.raises(ValueError):
        recover_of_another_type()
    assert LOG == [None]


def defers_recover_itself():
    defer(recover)
    raise ValueError


def test_deferring_recover_directly_does_nothing_inline():
    assert open_coded(defers_recover_itself)
    with pytest.raises(ValueError):
        defers_recover_itself()


# --- errdefer / okdefer around a recovery --------------------------------------------------------


def kinds_around_a_recovery():
    okdefer(note("ok below"))
    errdefer(note("err below"))
    defer(recover_and_log)
    okdefer(note("ok above"))
    errdefer(note("err above"))
    raise ValueError


def test_calls_below_a_recovery_run_as_for_a_return():
    assert open_coded(kinds_around_a_recovery)
    assert kinds_around_a_recovery() is None
    assert LOG[0] == "err above"  # in flight: errdefer runs, okdefer does not
    assert isinstance(LOG[1], ValueError)
    assert LOG[2:] == ["ok below"]  # recovered: okdefer runs, errdefer does not


# --- result() / set_result() while unwinding ---------------------------------------------------


def read_result():
    try:
        result()
    except LookupError as exc:
        LOG.append(type(exc))


def set_result_then_recover():
    defer(recover_and_log)
    defer(set_result, 42)
    defer(read_result)
    raise ValueError


def test_set_result_while_unwinding_becomes_the_value_after_a_recovery():
    assert open_coded(set_result_then_recover)
    assert set_result_then_recover() == 42
    assert LOG[0] is LookupError  # exiting by an exception: no result to read
    assert isinstance(LOG[1], ValueError)


def result_after_recovery():
    defer(lambda: LOG.append(result()))
    defer(recover_and_log)
    return_value = 7
    if return_value:
        raise ValueError
    return return_value


def test_result_after_an_inline_recovery_is_none():
    assert result_after_recovery() is None
    assert isinstance(LOG[0], ValueError) and LOG[1] is None


# --- sys.exception() ---------------------------------------------------------------------------


def shows_exceptions():
    defer(lambda: LOG.append(sys.exception()))
    defer(recover_and_log)
    defer(lambda: LOG.append(sys.exception()))
    raise ValueError("body")


def test_sys_exception_in_slots_before_and_after_an_inline_recovery():
    try:
        raise KeyError("enclosing")
    except KeyError as enclosing:
        assert shows_exceptions() is None
        assert isinstance(LOG[0], ValueError)  # in flight
        assert LOG[1] is LOG[0]  # recovered
        assert LOG[2] is enclosing  # afterwards: what encloses the call


# --- the core holds entries of the frame too ---------------------------------------------------


def mixed_with_core_entries():
    defer(note("slot 0"))
    Tracked("core")  # a ScopeBound joins the frame's scope through the core
    defer(note("slot 1"))
    raise ValueError


def test_core_entries_and_slots_unwind_in_reverse_order():
    assert open_coded(mixed_with_core_entries)
    with pytest.raises(ValueError):
        mixed_with_core_entries()
    assert LOG == ["slot 1", "core", "slot 0"]


# --- generators ----------------------------------------------------------------------------------


def generator_recovering():
    defer(recover_and_log)
    yield 1
    yield 2


def test_exception_thrown_into_an_open_coded_generator_is_recovered_inline():
    assert open_coded(generator_recovering)
    gen = generator_recovering()
    assert next(gen) == 1
    with pytest.raises(StopIteration):
        gen.throw(ValueError("thrown"))
    assert isinstance(LOG[0], ValueError)


# --- how many defers are open-coded -------------------------------------------------------------


def source_with(count: int) -> str:
    lines = "\n".join(f"    defer(log.append, {i})" for i in range(count))
    return (
        f"from godefer import defer\ndef f(log, ok=False):\n{lines}\n"
        "    if ok:\n        return\n    raise ValueError\n"
    )


@pytest.mark.parametrize("count", [MAX_OPEN_CODED, MAX_OPEN_CODED + 1, 3 * MAX_OPEN_CODED])
@pytest.mark.parametrize("fails", [False, True])
def test_beyond_the_limit_the_last_slots_share_one_list(count, fails, tmp_path):
    from godefer._prepare import prepare_source

    code, _ = prepare_source(source_with(count), str(tmp_path / "m.py"))
    ns: dict = {"__name__": "gd_open_limit"}
    exec(code, ns)
    f = ns["f"]
    assert open_coded(f)
    # Up to the limit each defer has a slot of its own; beyond it, from the last slot on, the
    # defers share one list (the last slot).
    assert (count > MAX_OPEN_CODED) == ("list_first_call" in f.__code__.co_names)
    log: list[int] = []
    if fails:
        with pytest.raises(ValueError):
            f(log)
    else:
        f(log, ok=True)
    assert log == list(reversed(range(count)))


# --- a slot raising on a normal return -----------------------------------------------------------
# The calls of a return run with no store between them; a slot that raises marks its index in a
# handler of its own, and the core runs the slots below it with its exception in flight.


class LoggingCM:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        LOG.append(("cm exit", exc_info[0]))
        return False


def raise_on_exit(tag):
    def call():
        LOG.append(tag)
        raise KeyError(tag)

    return call


def raises_on_return_among_plain_slots():
    defer(note("slot 0"))
    errdefer(lambda: LOG.append(("errdefer", type(sys.exception()))))
    defer(raise_on_exit("slot 2"))
    defer(note("slot 3"))
    okdefer(note("okdefer: not with an exception"))
    return "value"


def test_a_plain_slot_raising_on_return_runs_each_lower_slot_once():
    assert open_coded(raises_on_return_among_plain_slots)
    with pytest.raises(KeyError, match="slot 2"):
        raises_on_return_among_plain_slots()
    ran = ["okdefer: not with an exception", "slot 3", "slot 2"]
    log = list(LOG)
    assert log == [*ran, ("errdefer", KeyError), "slot 0"]


def slot_zero_raises_after_a_scoped_exit():
    defer(raise_on_exit("slot 0"))
    scoped(LoggingCM())  # its exit is announced by a store before it: slot 0 marks its own
    defer(note("slot 2"))


def test_slot_zero_raising_after_a_scoped_exit_is_not_run_twice():
    assert open_coded(slot_zero_raises_after_a_scoped_exit)
    with pytest.raises(KeyError, match="slot 0"):
        slot_zero_raises_after_a_scoped_exit()
    assert LOG == ["slot 2", ("cm exit", None), "slot 0"]


def slot_one_raises_after_a_scoped_exit():
    defer(note("slot 0"))
    defer(raise_on_exit("slot 1"))
    scoped(LoggingCM())
    return set_result


def test_a_slot_raising_after_a_scoped_exit_runs_the_rest_once():
    with pytest.raises(KeyError, match="slot 1"):
        slot_one_raises_after_a_scoped_exit()
    assert LOG == [("cm exit", None), "slot 1", "slot 0"]


def returns_result_through_marked_slots():
    defer(lambda: set_result(result() + 1))
    defer(lambda: set_result(result() * 7))
    defer(lambda: LOG.append(("sees", result())))
    return 5


def test_result_and_set_result_in_slots_of_a_normal_return():
    assert returns_result_through_marked_slots() == 36
    assert LOG == [("sees", 5)]
