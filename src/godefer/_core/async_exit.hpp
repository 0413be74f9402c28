// Exits that await (adefer, ascoped): see async_exit.cpp.
#pragma once

#include <Python.h>

#include <cstddef>

#include "module_state.hpp"
#include "unwind.hpp"

namespace godefer {

// How an AsyncExit starts: all borrowed.
struct AsyncExitStart {
    ExitKind kind = ExitKind::prepared_frame;
    std::size_t floor = 0;       // a block's mark
    PyObject* exc = nullptr;     // the exception leaving the scope (null: a normal exit)
    PyObject* result = nullptr;  // the value a function is returning
    PyObject* outer = nullptr;   // sys.exception() when nothing is in flight (null: none)
};

PyTypeObject* make_async_exit_type(PyObject* module);

// A new AsyncExit draining `scope` above `start.floor`, registered as the scope's drain.
PyObject* make_async_exit(ModuleState* st, Scope* scope, const AsyncExitStart& start);

// The exits of a prepared async function's frame, by return (the value) and by an exception:
// an AsyncExit, or None when the core holds nothing of the frame.
PyObject* prepared_acomplete(PyObject* module, PyObject* value);
PyObject* prepared_aunwind(PyObject* module, PyObject* exc);
// The exit of a `with scope():` block in one, (block, exception or None): AsyncExit or None.
PyObject* prepared_ablock_exit(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
// `await ascoped(cm)` in prepared code: ascoped_push(await aenter(cm), cm).
PyObject* prepared_aenter(PyObject* module, PyObject* cm);
PyObject* prepared_ascoped_push(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

}  // namespace godefer
