// Per-module state: everything the core keeps lives here (multi-phase init, no globals).
#pragma once

#include <Python.h>

#include "compat.hpp"
#include "scope_table.hpp"

namespace godefer {

inline constexpr int slot_check_kinds = 3;

struct ModuleState {
    PyTypeObject* defer_type = nullptr;        // type of defer / errdefer / okdefer
    PyTypeObject* block_scope_type = nullptr;  // what scope() returns
    PyTypeObject* scope_bound_meta = nullptr;  // metaclass of ScopeBound
    PyTypeObject* close_token_type = nullptr;  // ScopeBound's scheduled close
    PyTypeObject* defer_list_type = nullptr;   // a loop's slot in an open-coded frame
    PyTypeObject* drain_type = nullptr;        // DeferList.drain()
    PyTypeObject* async_exit_type = nullptr;   // the exit of a scope that awaits
    PyTypeObject* slot_check_type = nullptr;   // what open-coded slots are filled through
    // Per kind (defer, errdefer, okdefer): the open check ([0]) and the one that hands the call
    // to the core ([1]) (slot_check.cpp).
    PyObject* slot_checks[2][slot_check_kinds] = {};
    PyObject* not_prepared_error = nullptr;
    PyObject* str_enter = nullptr;
    PyObject* str_exit = nullptr;
    PyObject* str_close = nullptr;
    PyObject* str_aenter = nullptr;
    PyObject* str_aexit = nullptr;
    PyObject* str_abstract = nullptr;       // "_godefer_abstract"
    PyObject* str_token = nullptr;          // "_godefer_token"
    PyObject* module = nullptr;             // borrowed: the state lives inside it
    PyObject* reraise = nullptr;            // what unwind() returns when the exception goes on
    PyObject* function_preparer = nullptr;  // @scope on a function: godefer._decorator
    Py_ssize_t code_extra_index = -1;
    ScopeTable* table = nullptr;
    Py_ssize_t armed = 0;  // records whose frame-exit hook is armed, all threads

#ifdef GODEFER_USE_MONITORING
    int tool_id = -1;  // sys.monitoring tool, acquired at the first armed record
    bool unwind_enabled = false;
    PyObject* set_events = nullptr;
    PyObject* set_local_events = nullptr;
    PyObject* get_local_events = nullptr;
    PyObject* free_tool_id = nullptr;
    PyObject* register_callback = nullptr;
    PyObject* event_py_return = nullptr;  // ints from sys.monitoring.events
    PyObject* event_py_unwind = nullptr;
    PyObject* on_return = nullptr;  // the C callbacks, as function objects bound to the module
    PyObject* on_unwind = nullptr;
#endif
};

ModuleState* module_state(PyObject* module) noexcept;
ModuleState* state_from_type(PyTypeObject* type) noexcept;

}  // namespace godefer
