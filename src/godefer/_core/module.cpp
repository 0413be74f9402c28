// godefer._core: module definition, multi-phase init, module state lifetime.
#include <new>

#include "api.hpp"
#include "exit_hooks.hpp"
#include "module_state.hpp"
#include "unwind.hpp"

namespace godefer {

ModuleState* module_state(PyObject* module) noexcept {
    return static_cast<ModuleState*>(PyModule_GetState(module));
}

ModuleState* state_from_type(PyTypeObject* type) noexcept {
    return static_cast<ModuleState*>(PyType_GetModuleState(type));
}

namespace {

template <typename F>
PyCFunction fastcall(F* fn) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn));
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
    {"_pending_frames", [](PyObject* module, PyObject* /*unused*/) -> PyObject* {
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
    st->str_abstract = PyUnicode_InternFromString("_godefer_abstract");
    st->str_token = PyUnicode_InternFromString("_godefer_token");
    if (st->str_enter == nullptr || st->str_exit == nullptr || st->str_close == nullptr ||
        st->str_abstract == nullptr || st->str_token == nullptr) {
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
    if (add_type(module, "Defer", st->defer_type) < 0 ||
        add_type(module, "BlockScope", st->block_scope_type) < 0 ||
        add_type(module, "ScopeBoundMeta", st->scope_bound_meta) < 0 ||
        add_type(module, "CloseToken", st->close_token_type) < 0) {
        return -1;
    }
    static const char* const names[] = {"defer", "errdefer", "okdefer"};
    for (int kind = 0; kind < 3; ++kind) {
        Ref obj = Ref::steal(make_defer_instance(st->defer_type, kind));
        if (!obj || PyModule_AddObjectRef(module, names[kind], obj.get()) < 0) {
            return -1;
        }
    }
    return exit_hooks_init(module, st);
}

int module_traverse(PyObject* module, visitproc visit, void* arg) {
    ModuleState* st = module_state(module);
    if (st == nullptr || st->module == nullptr) {
        return 0;
    }
    Py_VISIT(st->defer_type);
    Py_VISIT(st->block_scope_type);
    Py_VISIT(st->scope_bound_meta);
    Py_VISIT(st->close_token_type);
    Py_VISIT(st->not_prepared_error);
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
    Py_CLEAR(st->block_scope_type);
    Py_CLEAR(st->scope_bound_meta);
    Py_CLEAR(st->close_token_type);
    Py_CLEAR(st->not_prepared_error);
    Py_CLEAR(st->str_enter);
    Py_CLEAR(st->str_exit);
    Py_CLEAR(st->str_close);
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
