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
