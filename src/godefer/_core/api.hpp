// The public entry points of the core and the types behind them.
#pragma once

#include <Python.h>

namespace godefer {

// Types created at module exec (heap types bound to the module).
PyTypeObject* make_defer_type(PyObject* module);
PyObject* make_defer_instance(PyTypeObject* type, int kind, bool prepared);
PyTypeObject* make_block_scope_type(PyObject* module);
PyTypeObject* make_scope_bound_meta(PyObject* module);
PyTypeObject* make_close_token_type(PyObject* module);

// Module functions.
PyObject* scoped(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* prepared_scoped(PyObject* module, PyObject* obj);
PyObject* scope(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* adefer(PyObject* module, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames);
PyObject* ascoped(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

extern PyModuleDef module_def;

}  // namespace godefer
