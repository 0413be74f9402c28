// Open-coded defers: prepared functions whose defers are all top-level statements keep them in
// frame locals and call them inline when returning normally (the cost of a hand-written
// try/finally). The core takes over only for what inline code cannot do: an exception in flight
// (recover, errdefer, sys.exception()), or entries the core added to the same frame (a ScopeBound
// constructed there), which are always newer than every filled slot.
#pragma once

#include <Python.h>

#include "module_state.hpp"
#include "scope_table.hpp"

namespace godefer {

// Local variable indices of an open-coded frame's state and result, or -1 when `code` is not
// open-coded.
struct OpenCodedLocals {
    int state = -1;
    int result = -1;
};
OpenCodedLocals open_coded_locals(ModuleState* st, PyCodeObject* code);

// State values of `__godefer_st__` in an open-coded frame (None while the body runs: preparation
// tests it with `is None`, which CPython specialises, unlike an int's truth value).
constexpr long open_state_unwinding = 1;
constexpr long open_state_returning = 10;  // + i: calling slot i inline on return
constexpr long open_state_core = 3;        // the core holds entries too: exit through the core

// A registration the core made in an open-coded frame: from now on the frame exits through the
// core. `frame` is a _PyInterpreterFrame*.
int note_core_entry(ModuleState* st, void* frame);

// result()/set_result() from a slot called inline: the frame's result local, or null.
PyObject** inline_result_slot(ModuleState* st);

// _prepared_unwind_slots(exc, state, *groups) / _prepared_complete_slots(value, *groups): each
// group is False (slot not reached) or (kind, fn, args tuple, kwargs dict or None), oldest first.
PyObject* prepared_unwind_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* prepared_complete_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* mark_open_coded(PyObject* module, PyObject* code);

}  // namespace godefer
