// Running a scope's deferred calls with try/finally semantics, and what can be asked while they
// run (recover, result).
#pragma once

#include <Python.h>

#include <cstddef>

#include "module_state.hpp"
#include "pyref.hpp"
#include "scope_table.hpp"

namespace godefer {

// State of one drain: which exception is in flight between deferred calls.
struct UnwindState {
    Ref exc;                     // exception in flight (null: none)
    bool block = false;          // a `with scope():` block, whose __exit__ can stop exceptions
    UnwindState* outer = nullptr;  // a drain of the same scope that this one interrupted
};

// Runs the entries of `scope` above index `floor`, last first, as nested try/finally blocks would:
// each call sees the exception in flight as sys.exception(), an exception it raises replaces the
// one in flight (carrying it as __context__), and errdefer/okdefer entries decide by the exception
// in flight when they are reached. `outer` is what sys.exception() shows when nothing is in flight
// (the handled exception enclosing the scope); null means the current one. Returns the exception
// in flight at the end (null: none).
Ref drain(ModuleState* st, Scope& scope, std::size_t floor, Ref exc, bool block,
          PyObject* outer = nullptr);

// The frame of `scope` is exiting with `exc` in flight (borrowed, may be null): drains it, removes
// it from the table and returns the exception that must leave the frame.
Ref finish_frame(ModuleState* st, Scope* scope, PyObject* exc);

// Drops the table's record when it holds nothing and nothing watches it.
void release_if_empty(ModuleState* st, Scope* scope) noexcept;

// Module functions recover(*types), result(), set_result(value).
PyObject* recover(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* result(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* set_result(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

}  // namespace godefer
