// ScopeBound's metaclass: after an instance is constructed, its close() is scheduled in the scope
// of the code block that called the class. The close runs through a token so that release() can
// take the instance out of its scope (the token lets go of it) without searching any scope.
#include "api.hpp"
#include "module_state.hpp"
#include "schedule.hpp"

namespace godefer {

namespace {

struct CloseTokenObject {
    PyObject_HEAD
    PyObject* obj;  // the instance to close; null once run or released
    PyObject* weakreflist;
};

PyObject* token_call(PyObject* self, PyObject* args, PyObject* kwargs) {
    if (PyTuple_GET_SIZE(args) != 0 || kwargs != nullptr) {
        PyErr_SetString(PyExc_TypeError, "a ScopeBound close token takes no arguments");
        return nullptr;
    }
    auto* t = reinterpret_cast<CloseTokenObject*>(self);
    Ref obj = Ref::steal(t->obj);
    t->obj = nullptr;
    if (!obj) {
        Py_RETURN_NONE;  // released, or already run
    }
    ModuleState* st = state_from_type(Py_TYPE(self));
    return PyObject_CallMethodNoArgs(obj.get(), st->str_close);
}

PyObject* token_discard(PyObject* self, PyObject* /*unused*/) {
    Py_CLEAR(reinterpret_cast<CloseTokenObject*>(self)->obj);
    Py_RETURN_NONE;
}

int token_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(reinterpret_cast<CloseTokenObject*>(self)->obj);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

int token_clear(PyObject* self) {
    Py_CLEAR(reinterpret_cast<CloseTokenObject*>(self)->obj);
    return 0;
}

void token_dealloc(PyObject* self) {
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (reinterpret_cast<CloseTokenObject*>(self)->weakreflist != nullptr) {
        PyObject_ClearWeakRefs(self);
    }
    token_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyObject* token_holds(PyObject* self, PyObject* obj) {
    return PyBool_FromLong(
        static_cast<long>(reinterpret_cast<CloseTokenObject*>(self)->obj == obj));
}

PyMethodDef token_methods[] = {
    {"discard", token_discard, METH_NOARGS, "Let go of the instance: the scope will not close it."},
    {"holds", token_holds, METH_O, "Whether this token will close exactly this object."},
    {nullptr, nullptr, 0, nullptr},
};

PyMemberDef token_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(CloseTokenObject, weakreflist), Py_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

PyType_Slot token_slots[] = {
    {Py_tp_call, reinterpret_cast<void*>(token_call)},
    {Py_tp_methods, token_methods},
    {Py_tp_members, token_members},
    {Py_tp_traverse, reinterpret_cast<void*>(token_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(token_clear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(token_dealloc)},
    {0, nullptr},
};

PyType_Spec token_spec = {
    "godefer._core.CloseToken",
    sizeof(CloseTokenObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    token_slots,
};

PyObject* meta_call(PyObject* cls, PyObject* args, PyObject* kwargs) {
    PyObject* module = PyType_GetModuleByDef(Py_TYPE(cls), &module_def);
    if (module == nullptr) {
        return nullptr;
    }
    ModuleState* st = module_state(module);
    Ref abstract = Ref::steal(PyObject_GetAttr(cls, st->str_abstract));
    if (!abstract) {
        return nullptr;
    }
    const int is_abstract = PyObject_IsTrue(abstract.get());
    if (is_abstract != 0) {
        if (is_abstract > 0) {
            PyErr_Format(PyExc_TypeError,
                         "cannot instantiate %.200s: a ScopeBound subclass must implement "
                         "close(), which its scope calls when it exits",
                         reinterpret_cast<PyTypeObject*>(cls)->tp_name);
        }
        return nullptr;
    }
    Ref obj = Ref::steal(PyType_Type.tp_call(cls, args, kwargs));
    if (!obj || PyObject_TypeCheck(obj.get(), reinterpret_cast<PyTypeObject*>(cls)) == 0) {
        return obj
            .release();  // __init__ raised (nothing scheduled), or __new__ returned another type
    }
    auto* token = PyObject_GC_New(CloseTokenObject, st->close_token_type);
    if (token == nullptr) {
        return nullptr;
    }
    token->obj = Py_NewRef(obj.get());
    token->weakreflist = nullptr;
    PyObject_GC_Track(token);
    Ref token_ref = Ref::steal(reinterpret_cast<PyObject*>(token));
    Ref weak = Ref::steal(PyWeakref_NewRef(token_ref.get(), nullptr));
    if (!weak || PyObject_SetAttr(obj.get(), st->str_token, weak.get()) < 0) {
        return nullptr;
    }
    if (schedule(st, Kind::always, token_ref.get(), nullptr, 0, nullptr, "ScopeBound", false) < 0) {
        return nullptr;
    }
    return obj.release();
}

PyType_Slot meta_slots[] = {
    {Py_tp_call, reinterpret_cast<void*>(meta_call)},
    {Py_tp_doc, const_cast<char*>("Metaclass of godefer.ScopeBound: schedules each new "
                                  "instance's close() in the scope that constructed it.")},
    {0, nullptr},
};

PyType_Spec meta_spec = {
    "godefer._core.ScopeBoundMeta", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, meta_slots,
};

}  // namespace

PyTypeObject* make_close_token_type(PyObject* module) {
    return reinterpret_cast<PyTypeObject*>(PyType_FromModuleAndSpec(module, &token_spec, nullptr));
}

PyTypeObject* make_scope_bound_meta(PyObject* module) {
    return reinterpret_cast<PyTypeObject*>(
        PyType_FromModuleAndSpec(module, &meta_spec, reinterpret_cast<PyObject*>(&PyType_Type)));
}

}  // namespace godefer
