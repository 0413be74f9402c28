// Scheduling a deferred call in the scope of the calling code block.
#pragma once

#include <Python.h>

#include <cstddef>

#include "module_state.hpp"
#include "scope_table.hpp"

namespace godefer {

// The record of the innermost Python code block calling into the core (3.11's comprehension
// frames count as their enclosing block), created if needed. `prepared` says the caller is
// prepared code; otherwise the code object's mark decides. `who` names the API for the error
// raised when no Python frame is calling. `arming`: the caller arms the frame's exit hook on a
// new record at once (schedule()), so a frame whose exits are always seen needs no frame object.
Scope* calling_scope(ModuleState* st, const char* who, bool prepared, bool arming = false);

// "defer", "errdefer" or "okdefer": the API that schedules entries of `kind`.
const char* kind_name(Kind kind) noexcept;

// -1 with the TypeError a defer statement raises at its line for a non-callable `fn`.
int not_callable(PyObject* fn, Kind kind);

// 0 if `fn` is callable (PyCallable_Check's test, inline: it runs once per defer); else
// not_callable().
inline int require_callable(PyObject* fn, Kind kind) {
    return Py_TYPE(fn)->tp_call != nullptr ? 0 : not_callable(fn, kind);
}

// Adds an entry to the calling block's scope and makes sure its exit will be seen. On failure
// nothing is scheduled and -1 is returned with an exception set.
int schedule(ModuleState* st, Kind kind, PyObject* fn, PyObject* const* args, std::size_t nargs,
             PyObject* kwnames, const char* who, bool prepared);

}  // namespace godefer
