// godefer._core: module definition, multi-phase init, module state lifetime.
#include <new>
#include <string>

#include "api.hpp"
#include "async_exit.hpp"
#include "code_flags.hpp"
#include "exit_hooks.hpp"
#include "module_state.hpp"
#include "open_coded.hpp"
#include "unwind.hpp"

namespace godefer {

ModuleState* module_state(PyObject* module) noexcept {
    return static_cast<ModuleState*>(PyModule_GetState(module));
}

ModuleState* state_from_type(PyTypeObject* type) noexcept {
    return static_cast<ModuleState*>(PyType_GetModuleState(type));
}

namespace {

PyObject* mark_prepared(PyObject* module, PyObject* code) {
    if (!PyCode_Check(code)) {
        PyErr_SetString(PyExc_TypeError, "_mark_prepared() takes a code object");
        return nullptr;
    }
    ModuleState* st = module_state(module);
    auto* co = reinterpret_cast<PyCodeObject*>(code);
    uintptr_t flags = 0;
    if (code_flags(st, co, &flags) < 0 || set_code_flags(st, co, flags | code_prepared) < 0) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* replace_const(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyCode_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_replace_const(code, index, value)");
        return nullptr;
    }
    PyObject* consts = reinterpret_cast<PyCodeObject*>(args[0])->co_consts;
    const Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index < 0 || index >= PyTuple_GET_SIZE(consts)) {
        PyErr_SetString(PyExc_IndexError, "_replace_const(): index out of range");
        return nullptr;
    }
    PyObject* old = PyTuple_GET_ITEM(consts, index);
    if (Py_TYPE(old) != Py_TYPE(args[2])) {
        PyErr_SetString(PyExc_TypeError, "_replace_const(): the new constant has another type");
        return nullptr;
    }
    PyTuple_SET_ITEM(consts, index, Py_NewRef(args[2]));
    Py_DECREF(old);
    Py_RETURN_NONE;
}

// `defer(*args)` into an open-coded slot, one per kind. Named after the scheduler, since
// CPython names the callee in its own errors (`defer() argument after * must be an iterable`).
// module_exec binds them as _prepared_slot_star_<name>.
PyMethodDef star_split_methods[] = {
    {"defer", fastcall(prepared_slot_star<Kind::always>), METH_FASTCALL,
     "defer(*args) into an open-coded slot: (fn, *rest) -> (fn, rest), fn checked."},
    {"errdefer", fastcall(prepared_slot_star<Kind::on_error>), METH_FASTCALL,
     "errdefer(*args) into an open-coded slot: (fn, *rest) -> (fn, rest), fn checked."},
    {"okdefer", fastcall(prepared_slot_star<Kind::on_success>), METH_FASTCALL,
     "okdefer(*args) into an open-coded slot: (fn, *rest) -> (fn, rest), fn checked."},
};

int add_star_splits(PyObject* module) {
    Ref module_name = Ref::steal(PyModule_GetNameObject(module));
    if (!module_name) {
        return -1;
    }
    for (PyMethodDef& def : star_split_methods) {
        const Ref fn = Ref::steal(PyCFunction_NewEx(&def, module, module_name.get()));
        const std::string name = std::string("_prepared_slot_star_") + def.ml_name;
        if (!fn || PyModule_AddObjectRef(module, name.c_str(), fn.get()) < 0) {
            return -1;
        }
    }
    return 0;
}

PyMethodDef module_methods[] = {
    {"scoped", fastcall(scoped), METH_FASTCALL,
     "scoped(obj): enter a context manager now and exit it when the calling scope exits, or "
     "schedule obj.close(); returns the value of __enter__ (or obj)."},
    {"scope", fastcall(scope), METH_FASTCALL,
     "scope(): a block scope for `with scope():`; @scope on a function is accepted too."},
    {"recover", fastcall(recover), METH_FASTCALL,
     "recover(*types): inside a deferred call, stop the exception in flight and return it."},
    {"result", fastcall(result), METH_FASTCALL,
     "result(): inside a deferred call, the value the function is returning."},
    {"set_result", fastcall(set_result), METH_FASTCALL,
     "set_result(value): inside a deferred call, replace the value the function returns."},
    {"adefer", fastcall(adefer), METH_FASTCALL | METH_KEYWORDS,
     "adefer(coro_fn, *args, **kwargs): schedule an awaited call for an async function's exit."},
    {"ascoped", fastcall(ascoped), METH_FASTCALL,
     "ascoped(async_cm): awaitable; enter an async context manager, exit it at scope exit."},
    {"_prepared_scoped", prepared_scoped, METH_O, "scoped() as prepared code calls it."},
    {"_prepared_acomplete", prepared_acomplete, METH_O,
     "Return from a prepared async function: an AsyncExit to step, or None if nothing is held."},
    {"_prepared_aunwind", prepared_aunwind, METH_O,
     "An exception leaving a prepared async function: an AsyncExit to step, or None."},
    {"_prepared_ablock_exit", fastcall(prepared_ablock_exit), METH_FASTCALL,
     "Exit of a `with scope():` block in a prepared async function, (block, exception or None): "
     "an AsyncExit to step, or None."},
    {"_prepared_aenter", prepared_aenter, METH_O,
     "`await ascoped(cm)`: checks cm and returns the awaitable of cm.__aenter__()."},
    {"_prepared_ascoped_push", fastcall(prepared_ascoped_push), METH_FASTCALL,
     "`await ascoped(cm)`, after the await, (value, cm): schedules cm.__aexit__, returns value."},
    {"_prepared_complete", prepared_complete, METH_O,
     "Exit of a prepared frame by return: run its deferred calls; returns the value to return."},
    {"_prepared_unwind", prepared_unwind, METH_O,
     "Exit of a prepared frame by an exception: run its deferred calls; returns RERAISE, or the "
     "value to return after a recovery, or raises the exception that replaced it."},
    {"_mark_prepared", mark_prepared, METH_O,
     "Mark a code object as prepared: the frames running it drain their own scope."},
    {"_replace_const", fastcall(replace_const), METH_FASTCALL,
     "_replace_const(code, index, value): swap a constant of a code object that is running (used "
     "to prepare a module in place before its def and class statements run)."},
    {"_set_function_preparer",
     [](PyObject* module, PyObject* fn) -> PyObject* {
         ModuleState* st = module_state(module);
         Py_XSETREF(st->function_preparer, fn == Py_None ? nullptr : Py_NewRef(fn));
         Py_RETURN_NONE;
     },
     METH_O, "Register what @scope calls to prepare a function (None: nothing)."},
    {"_prepared_unwind_slots", fastcall(prepared_unwind_slots), METH_FASTCALL,
     "The exception being handled leaves an open-coded frame: (result, state, *slot groups)."},
    {"_prepared_complete_slots", fastcall(prepared_complete_slots), METH_FASTCALL,
     "A return from an open-coded frame that the core finishes: (value, state, *slot groups)."},
    {"_prepared_bind_slots", prepared_bind_slots, METH_O,
     "In an open-coded handler: bind the named slot locals the body did not reach to None."},
    {"_prepared_slot_await", fastcall(prepared_slot_await), METH_FASTCALL | METH_KEYWORDS,
     "An awaited slot's call on an open-coded coroutine's exit: (fn, *args, **kwargs)."},
    {"_prepared_aunwind_slots", fastcall(prepared_aunwind_slots), METH_FASTCALL,
     "_prepared_unwind_slots of a coroutine with awaited slots: an AsyncExit to step."},
    {"_prepared_acomplete_slots", fastcall(prepared_acomplete_slots), METH_FASTCALL,
     "_prepared_complete_slots of a coroutine with awaited slots: an AsyncExit to step."},
    {"_prepared_scoped_slot", prepared_scoped_slot, METH_O,
     "scoped(obj) in an open-coded frame: (exit callable, kind, value) for its slot."},
    {"_prepared_run_list", prepared_run_list, METH_O,
     "Run a list slot of an open-coded frame on return, last entry first (3.11, 3.12)."},
    {"_prepared_list_new", prepared_list_new, METH_NOARGS,
     "An empty DeferList, for a list slot that defers used as expressions fill."},
    {"_prepared_list_first", prepared_list_first, METH_O,
     "A loop's first defer(fn) in an open-coded frame: a new DeferList holding fn."},
    {"_prepared_list_first_call", fastcall(prepared_list_first_call), METH_FASTCALL | METH_KEYWORDS,
     "A loop's first deferred call of another shape: a new DeferList holding "
     "(kind, fn, args, kwargs)."},
    {"_prepared_list_scoped", fastcall(prepared_list_scoped), METH_FASTCALL,
     "scoped(obj) in a loop of an open-coded function: (list or None, obj) -> (list, value)."},
    {"_prepared_slot_defer", fastcall(prepared_slot_fill<Kind::always>), METH_FASTCALL,
     "defer(fn) into an open-coded slot: (fn, state) -> fn, or None if the core took it."},
    {"_prepared_slot_errdefer", fastcall(prepared_slot_fill<Kind::on_error>), METH_FASTCALL,
     "errdefer(fn) into an open-coded slot: (fn, state) -> fn, or None if the core took it."},
    {"_prepared_slot_okdefer", fastcall(prepared_slot_fill<Kind::on_success>), METH_FASTCALL,
     "okdefer(fn) into an open-coded slot: (fn, state) -> fn, or None if the core took it."},
    {"_prepared_slot_first_defer", prepared_slot_first<Kind::always>, METH_O,
     "defer(fn) into a scope's first slot, with nothing scheduled before: fn, checked."},
    {"_prepared_slot_first_errdefer", prepared_slot_first<Kind::on_error>, METH_O,
     "errdefer(fn) into a scope's first slot, with nothing scheduled before: fn, checked."},
    {"_prepared_slot_first_okdefer", prepared_slot_first<Kind::on_success>, METH_O,
     "okdefer(fn) into a scope's first slot, with nothing scheduled before: fn, checked."},
    {"_prepared_block_unwind", fastcall(prepared_block_unwind), METH_FASTCALL,
     "An open-coded scope() block's handler: (state, K, *groups) -> RERAISE, or None to go on."},
    {"_prepared_block_complete", fastcall(prepared_block_complete), METH_FASTCALL,
     "A normal exit of open-coded scope() block K whose entries the core holds too: (K, *groups)."},
    {"_mark_open_coded", mark_open_coded, METH_O,
     "Mark a code object as prepared and open-coded (top-level defers kept in locals)."},
    {"_pending_frames",
     [](PyObject* module, PyObject* /*unused*/) -> PyObject* {
         return PyLong_FromSize_t(module_state(module)->table->size());
     },
     METH_NOARGS, "Number of frames with records in the core's table (for tests)."},
    {nullptr, nullptr, 0, nullptr},
};

int add_type(PyObject* module, const char* name, PyTypeObject* type) {
    if (type == nullptr) {
        return -1;
    }
    return PyModule_AddObjectRef(module, name, reinterpret_cast<PyObject*>(type));
}

int module_exec(PyObject* module) {
    auto* st = new (module_state(module)) ModuleState();
    st->module = module;
    st->table = new (std::nothrow) ScopeTable();
    if (st->table == nullptr) {
        PyErr_NoMemory();
        return -1;
    }
    st->str_enter = PyUnicode_InternFromString("__enter__");
    st->str_exit = PyUnicode_InternFromString("__exit__");
    st->str_close = PyUnicode_InternFromString("close");
    st->str_aenter = PyUnicode_InternFromString("__aenter__");
    st->str_aexit = PyUnicode_InternFromString("__aexit__");
    st->str_abstract = PyUnicode_InternFromString("_godefer_abstract");
    st->str_token = PyUnicode_InternFromString("_godefer_token");
    if (st->str_enter == nullptr || st->str_exit == nullptr || st->str_close == nullptr ||
        st->str_aenter == nullptr || st->str_aexit == nullptr || st->str_abstract == nullptr ||
        st->str_token == nullptr) {
        return -1;
    }
    st->not_prepared_error = PyErr_NewExceptionWithDoc(
        "godefer.NotPreparedError",
        "Raised when a godefer feature needs prepared code: recover() or a suppressing scoped() "
        "stopping an exception that leaves an unprepared function, result()/set_result(), "
        "adefer()/ascoped(), and the `CALL in defer` statement executed unprepared.",
        PyExc_RuntimeError, nullptr);
    if (PyModule_AddObjectRef(module, "NotPreparedError", st->not_prepared_error) < 0) {
        return -1;
    }
    st->defer_type = make_defer_type(module);
    st->block_scope_type = make_block_scope_type(module);
    st->scope_bound_meta = make_scope_bound_meta(module);
    st->close_token_type = make_close_token_type(module);
    st->defer_list_type = make_defer_list_type(module);
    st->drain_type = make_drain_type(module);
    st->async_exit_type = make_async_exit_type(module);
    if (add_type(module, "Defer", st->defer_type) < 0 ||
        add_type(module, "DeferList", st->defer_list_type) < 0 ||
        add_type(module, "DeferListDrain", st->drain_type) < 0 ||
        add_type(module, "AsyncExit", st->async_exit_type) < 0 ||
        add_type(module, "BlockScope", st->block_scope_type) < 0 ||
        add_type(module, "ScopeBoundMeta", st->scope_bound_meta) < 0 ||
        add_type(module, "CloseToken", st->close_token_type) < 0) {
        return -1;
    }
    static const char* const names[] = {"defer", "errdefer", "okdefer"};
    static const char* const prepared_names[] = {"_prepared_defer", "_prepared_errdefer",
                                                 "_prepared_okdefer"};
    for (int kind = 0; kind < 3; ++kind) {
        Ref obj = Ref::steal(make_defer_instance(st->defer_type, kind, false));
        Ref prepared = Ref::steal(make_defer_instance(st->defer_type, kind, true));
        if (!obj || !prepared || PyModule_AddObjectRef(module, names[kind], obj.get()) < 0 ||
            PyModule_AddObjectRef(module, prepared_names[kind], prepared.get()) < 0) {
            return -1;
        }
    }
    // adefer() in prepared async code: a Defer whose entries are awaited.
    Ref prepared_adefer =
        Ref::steal(make_defer_instance(st->defer_type, static_cast<int>(Kind::await_call), true));
    if (!prepared_adefer ||
        PyModule_AddObjectRef(module, "_prepared_adefer", prepared_adefer.get()) < 0) {
        return -1;
    }
    if (add_star_splits(module) < 0 || add_slot_checks(module, st) < 0) {
        return -1;
    }
    st->reraise = PyObject_CallNoArgs(reinterpret_cast<PyObject*>(&PyBaseObject_Type));
    if (st->reraise == nullptr || PyModule_AddObjectRef(module, "RERAISE", st->reraise) < 0) {
        return -1;
    }
#if PY_VERSION_HEX >= 0x030C0000
    st->code_extra_index = PyUnstable_Eval_RequestCodeExtraIndex(nullptr);
#else
    st->code_extra_index = _PyEval_RequestCodeExtraIndex(nullptr);
#endif
    if (st->code_extra_index < 0) {
        return -1;
    }
    return exit_hooks_init(module, st);
}

int module_traverse(PyObject* module, visitproc visit, void* arg) {
    ModuleState* st = module_state(module);
    if (st == nullptr || st->module == nullptr) {
        return 0;
    }
    Py_VISIT(st->defer_type);
    Py_VISIT(st->defer_list_type);
    Py_VISIT(st->drain_type);
    Py_VISIT(st->async_exit_type);
    Py_VISIT(st->slot_check_type);
    for (auto& checks : st->slot_checks) {
        for (PyObject* check : checks) {
            Py_VISIT(check);
        }
    }
    Py_VISIT(st->block_scope_type);
    Py_VISIT(st->scope_bound_meta);
    Py_VISIT(st->close_token_type);
    Py_VISIT(st->not_prepared_error);
    Py_VISIT(st->reraise);
    Py_VISIT(st->function_preparer);
    return exit_hooks_traverse(st, visit, arg);
}

int module_clear(PyObject* module) {
    ModuleState* st = module_state(module);
    if (st == nullptr || st->module == nullptr) {
        return 0;
    }
    exit_hooks_free(st);
    if (st->table != nullptr) {
        st->table->clear();
    }
    Py_CLEAR(st->defer_type);
    Py_CLEAR(st->defer_list_type);
    Py_CLEAR(st->drain_type);
    Py_CLEAR(st->async_exit_type);
    for (auto& checks : st->slot_checks) {
        for (PyObject*& check : checks) {
            Py_CLEAR(check);
        }
    }
    Py_CLEAR(st->slot_check_type);
    Py_CLEAR(st->block_scope_type);
    Py_CLEAR(st->scope_bound_meta);
    Py_CLEAR(st->close_token_type);
    Py_CLEAR(st->not_prepared_error);
    Py_CLEAR(st->reraise);
    Py_CLEAR(st->function_preparer);
    Py_CLEAR(st->str_enter);
    Py_CLEAR(st->str_exit);
    Py_CLEAR(st->str_close);
    Py_CLEAR(st->str_aenter);
    Py_CLEAR(st->str_aexit);
    Py_CLEAR(st->str_abstract);
    Py_CLEAR(st->str_token);
    return 0;
}

void module_free(void* module) {
    auto* m = static_cast<PyObject*>(module);
    ModuleState* st = module_state(m);
    if (st == nullptr || st->module == nullptr) {
        return;
    }
    module_clear(m);
    delete st->table;
    st->~ModuleState();
}

PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, reinterpret_cast<void*>(module_exec)},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, nullptr},
};

}  // namespace

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "godefer._core",
    "C++ core of godefer: scopes, frame exits and the deferred-call runner.",
    sizeof(ModuleState),
    module_methods,
    module_slots,
    module_traverse,
    module_clear,
    module_free,
};

}  // namespace godefer

PyMODINIT_FUNC PyInit__core() { return PyModuleDef_Init(&godefer::module_def); }
