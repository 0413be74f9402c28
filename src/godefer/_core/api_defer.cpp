// defer / errdefer / okdefer: callable objects (vectorcall) whose `in` operator explains that the
// statement form needs prepared code.
#include <cstddef>

#include "api.hpp"
#include "module_state.hpp"
#include "pyref.hpp"
#include "schedule.hpp"

namespace godefer {

namespace {

// The first positional argument of defer & co.: present and callable, else TypeError.
int require_function(PyObject* const* args, Py_ssize_t nargs, Kind kind) {
    if (nargs < 1) {
        const char* who = kind_name(kind);
        PyErr_Format(PyExc_TypeError,
                     "%s() needs the function to schedule as its first argument: "
                     "%s(fn, *args, **kwargs)",
                     who, who);
        return -1;
    }
    return require_callable(args[0], kind);
}

struct DeferObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Kind kind;
    bool prepared;  // the instance prepared code calls: its caller drains the scope itself
};

PyObject* defer_vectorcall(PyObject* self, PyObject* const* args, std::size_t nargsf,
                           PyObject* kwnames) {
    const auto* d = reinterpret_cast<DeferObject*>(self);
    const char* who = kind_name(d->kind);
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (require_function(args, nargs, d->kind) < 0) {
        return nullptr;
    }
    PyObject* fn = args[0];
    const std::size_t count =
        static_cast<std::size_t>(nargs - 1) +
        static_cast<std::size_t>(kwnames != nullptr ? PyTuple_GET_SIZE(kwnames) : 0);
    if (schedule(state_from_type(Py_TYPE(self)), d->kind, fn, args + 1, count, kwnames, who,
                 d->prepared) < 0) {
        return nullptr;
    }
    return Py_NewRef(fn);
}

// `f(x) in defer` reaches this only when the statement was not rewritten by preparation: by then
// f(x) has already run.
int defer_contains(PyObject* self, PyObject* value) {
    const auto* d = reinterpret_cast<DeferObject*>(self);
    const char* who = kind_name(d->kind);
    PyErr_Format(state_from_type(Py_TYPE(self))->not_prepared_error,
                 "`CALL in %s` ran in code that godefer did not prepare, so the call on the left "
                 "has already happened (it returned %.200R) and nothing was scheduled. The "
                 "statement form only works in prepared code: import the module normally so "
                 "godefer's import hook prepares it, or decorate the function with @scope; in "
                 "code without source (exec strings) write %s(fn, *args) instead",
                 who, value, who);
    return -1;
}

PyObject* defer_repr(PyObject* self) {
    return PyUnicode_FromFormat("<godefer.%s>",
                                kind_name(reinterpret_cast<DeferObject*>(self)->kind));
}

PyMemberDef defer_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(DeferObject, vectorcall), Py_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

PyType_Slot defer_slots[] = {
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_sq_contains, reinterpret_cast<void*>(defer_contains)},
    {Py_tp_repr, reinterpret_cast<void*>(defer_repr)},
    {Py_tp_members, defer_members},
    {Py_tp_doc, const_cast<char*>(
                    "defer(fn, /, *args, **kwargs): schedule fn(*args, **kwargs) for the exit of "
                    "the calling code block; returns fn.")},
    {0, nullptr},
};

PyType_Spec defer_spec = {
    "godefer._core.Defer",
    sizeof(DeferObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    defer_slots,
};

}  // namespace

PyTypeObject* make_defer_type(PyObject* module) {
    return reinterpret_cast<PyTypeObject*>(PyType_FromModuleAndSpec(module, &defer_spec, nullptr));
}

PyObject* make_defer_instance(PyTypeObject* type, int kind, bool prepared) {
    auto* d = PyObject_New(DeferObject, type);
    if (d == nullptr) {
        return nullptr;
    }
    d->vectorcall = defer_vectorcall;
    d->kind = static_cast<Kind>(kind);
    d->prepared = prepared;
    return reinterpret_cast<PyObject*>(d);
}

template <Kind K>
PyObject* prepared_slot_fill(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_SystemError, "godefer: malformed open-coded slot fill");
        return nullptr;
    }
    PyObject* fn = args[0];
    if (require_callable(fn, K) < 0) {
        return nullptr;
    }
    if (args[1] == Py_None) {
        return Py_NewRef(fn);
    }
    if (schedule(module_state(module), K, fn, nullptr, 0, nullptr, kind_name(K), true) < 0) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

template <Kind K>
PyObject* prepared_slot_first(PyObject* /*module*/, PyObject* fn) {
    if (require_callable(fn, K) < 0) {
        return nullptr;
    }
    return Py_NewRef(fn);
}

template <Kind K>
PyObject* prepared_slot_star(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
    if (require_function(args, nargs, K) < 0) {
        return nullptr;
    }
    const Ref rest = Ref::steal(PyTuple_New(nargs - 1));
    if (!rest) {
        return nullptr;
    }
    for (Py_ssize_t i = 1; i < nargs; ++i) {
        PyTuple_SET_ITEM(rest.get(), i - 1, Py_NewRef(args[i]));
    }
    return PyTuple_Pack(2, args[0], rest.get());
}

template PyObject* prepared_slot_first<Kind::always>(PyObject*, PyObject*);
template PyObject* prepared_slot_first<Kind::on_error>(PyObject*, PyObject*);
template PyObject* prepared_slot_first<Kind::on_success>(PyObject*, PyObject*);

template PyObject* prepared_slot_star<Kind::always>(PyObject*, PyObject* const*, Py_ssize_t);
template PyObject* prepared_slot_star<Kind::on_error>(PyObject*, PyObject* const*, Py_ssize_t);
template PyObject* prepared_slot_star<Kind::on_success>(PyObject*, PyObject* const*, Py_ssize_t);

template PyObject* prepared_slot_fill<Kind::always>(PyObject*, PyObject* const*, Py_ssize_t);
template PyObject* prepared_slot_fill<Kind::on_error>(PyObject*, PyObject* const*, Py_ssize_t);
template PyObject* prepared_slot_fill<Kind::on_success>(PyObject*, PyObject* const*, Py_ssize_t);

}  // namespace godefer
