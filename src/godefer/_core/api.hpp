// The public entry points of the core and the types behind them.
#pragma once

#include <Python.h>

#include "module_state.hpp"
#include "pyref.hpp"
#include "scope_table.hpp"

namespace godefer {

// Types created at module exec (heap types bound to the module).
PyTypeObject* make_defer_type(PyObject* module);
PyObject* make_defer_instance(PyTypeObject* type, int kind, bool prepared);
PyTypeObject* make_block_scope_type(PyObject* module);
PyTypeObject* make_scope_bound_meta(PyObject* module);
PyTypeObject* make_close_token_type(PyObject* module);
PyTypeObject* make_defer_list_type(PyObject* module);
PyTypeObject* make_drain_type(PyObject* module);

// The slot checks of open-coded frames (module state and `_core._slot_check_<kind>`), and their
// swap for the ones that hand calls to the core, in a frame whose core now holds entries.
int add_slot_checks(PyObject* module, ModuleState* st);
void divert_slot_checks(ModuleState* st, _PyInterpreterFrame* frame);

// A special method found on the type, bound to `obj`, as `with` looks it up; null if absent (an
// error is set only if the lookup itself failed).
Ref lookup_special(PyObject* obj, PyObject* name);

// Casts a METH_FASTCALL (| METH_KEYWORDS) function for a PyMethodDef.
template <typename F>
PyCFunction fastcall(F* fn) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn));
}

// Module functions.
PyObject* scoped(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* prepared_scoped(PyObject* module, PyObject* obj);
// scoped(obj) in an open-coded frame: enters obj and returns (exit callable, kind, value) for a
// slot, scheduling nothing.
PyObject* prepared_scoped_slot(PyObject* module, PyObject* obj);
PyObject* scope(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* adefer(PyObject* module, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames);
PyObject* ascoped(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
// An awaited slot's call on an open-coded coroutine's exit, (fn, *args, **kwargs): fn's result,
// which the frame awaits; TypeError, as the core's drain raises it, when it cannot be awaited.
PyObject* prepared_slot_await(PyObject* module, PyObject* const* args, Py_ssize_t nargs,
                              PyObject* kwnames);
// A list slot on a normal return, last entry first, every call made from C (where the frame's
// own loop over drain() would cost a line event of its own: CPython 3.11 and 3.12).
PyObject* prepared_run_list(PyObject* module, PyObject* list);
// An empty DeferList, for a list slot filled by defers used as expressions.
PyObject* prepared_list_new(PyObject* module, PyObject* unused);
// A loop's first defer in an open-coded frame: a new DeferList holding the entry.
PyObject* prepared_list_first(PyObject* module, PyObject* fn);
PyObject* prepared_list_first_call(PyObject* module, PyObject* const* args, Py_ssize_t nargs,
                                   PyObject* kwnames);
// scoped(obj) in a loop of an open-coded function, (list or None, obj): enters obj, appends its
// exit to the loop's DeferList (made if None) and returns (list, value).
PyObject* prepared_list_scoped(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

// A slot's fill in an open-coded frame, (fn, state): fn, checked callable, when the slot may keep
// it (state None); else the call goes to the core and None comes back. The state comes last, so
// it is read after fn is evaluated (which may have made the core hold entries of the frame).
template <Kind K>
PyObject* prepared_slot_fill(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

// The fill of a scope's first slot when nothing before it can have scheduled anything (so the
// core holds no entries of the scope): fn, checked callable.
template <Kind K>
PyObject* prepared_slot_first(PyObject* module, PyObject* fn);

// `defer(*args)` into an open-coded slot: (fn, *rest) -> (fn, rest tuple), fn checked callable
// (TypeError naming the scheduler if it is missing or not callable).
template <Kind K>
PyObject* prepared_slot_star(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

extern PyModuleDef module_def;

}  // namespace godefer
