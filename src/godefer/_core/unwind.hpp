// Running a scope's deferred calls with try/finally semantics, and what can be asked while they
// run (recover, result).
#pragma once

#include <Python.h>

#include <cstddef>

#include "module_state.hpp"
#include "pyref.hpp"
#include "scope_table.hpp"

namespace godefer {

enum class ExitKind : uint8_t {
    block,           // a `with scope():` block: can stop exceptions, has no result
    prepared_frame,  // a prepared function/module/class body: can stop exceptions, has a result
    runtime_frame,   // seen by an exit hook after the fact: can do neither
};

// State of one drain: the exception in flight between deferred calls, and the frame's result.
struct UnwindState {
    ExitKind kind = ExitKind::runtime_frame;
    Ref exc;                       // exception in flight (null: none)
    Ref result;                    // value the function returns (prepared frames)
    bool returning = false;        // the frame exits by return, so result() has a value
    UnwindState* outer = nullptr;  // a drain of the same scope that this one interrupted
};

// Runs the entries of `scope` above index `floor`, last first, as nested try/finally blocks would:
// each call sees the exception in flight as sys.exception(), an exception it raises replaces the
// one in flight (carrying it as __context__), and errdefer/okdefer entries decide by the exception
// in flight when they are reached. `outer` is what sys.exception() shows when nothing is in
// flight (the handled exception enclosing the scope); null means the current one. On return
// `state.exc` is the exception in flight at the end (null: none).
void drain(ModuleState* st, Scope& scope, std::size_t floor, UnwindState& state,
           PyObject* outer = nullptr);

// Marks `scope` as being drained with `state` (what recover() and result() look for) until
// end_drain(); drains of one scope nest.
void begin_drain(ScopeTable& table, Scope& scope, UnwindState& state);
void end_drain(ScopeTable& table, Scope& scope) noexcept;

// After cm.__exit__/__aexit__ returned `res` for the exception in flight (if any): a true result
// stops it where the exit kind can (else raises NotPreparedError in its place).
void settle_exit(ModuleState* st, UnwindState& state, PyObject* res);

// sys.exception() for the calls of an exit that awaits: set in the frame's own handled-exception
// slot, where it stays while the frame awaits (the awaited coroutine sees it through its caller),
// and restored by the exit's finish. `outer` (borrowed) shows when nothing is in flight.
class AwaitingShow {
   public:
    explicit AwaitingShow(PyObject* outer) noexcept : outer_(outer) {}
    void show(PyObject* in_flight) noexcept;

   private:
    PyObject* outer_;
};

// drain() up to the first entry that must be awaited: returns its awaitable (new reference), with
// `*exit_cm` set when it is an __aexit__ whose result settle_exit() must see; null with no error
// once the scope is down to `floor`. The caller registers the drain (begin_drain).
PyObject* drain_to_await(ModuleState* st, Scope& scope, std::size_t floor, UnwindState& state,
                         AwaitingShow& show, bool* exit_cm);

// The frame of `scope` is exiting: drains it with `state` and removes it from the table.
void finish_frame(ModuleState* st, Scope* scope, UnwindState& state, PyObject* outer = nullptr);

// Drops the table's record when it holds nothing and nothing watches it.
void release_if_empty(ModuleState* st, Scope* scope) noexcept;

// Module functions recover(*types), result(), set_result(value).
PyObject* recover(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* result(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* set_result(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

// Exit of a prepared frame, called by the code preparation inserts: complete(value) on return
// (returns the value to return, or raises), unwind(exc) on an exception (returns RERAISE when the
// exception goes on, the value to return when it was recovered, or raises its replacement).
PyObject* prepared_complete(PyObject* module, PyObject* value);
// The same for a given record: complete_scope returns the value to return (or null, raising);
// unwind_scope returns RERAISE, the value to return after a recovery, or null (raising). `outer`
// is the handled exception enclosing the scope (null: the current one).
// `result` (null or None: none) is a value set_result() gave before the core took over.
PyObject* complete_scope(ModuleState* st, Scope* scope, PyObject* value, PyObject* outer = nullptr);
PyObject* unwind_scope(ModuleState* st, Scope* scope, PyObject* exc, PyObject* outer,
                       PyObject* result = nullptr);
PyObject* prepared_unwind(PyObject* module, PyObject* exc);

}  // namespace godefer
