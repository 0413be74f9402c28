// Slot checks: what an open-coded function subscripts to fill a slot after its first one,
// `__godefer_1__ = __godefer_ck_d__[f]` for `defer(f)`. A subscript of a C object is the cheapest
// way for bytecode to reach C: BINARY_SUBSCR calls mp_subscript directly, with no argument array,
// no vectorcall and no global to load (the check lives in a frame local, loaded with `f` in one
// fused instruction). A fill through a module function cost about twice as much.
//
// Each kind has two instances. The open one checks `f` is callable (TypeError at the defer's
// line) and returns it for the slot. Once the core holds entries of the frame, note_core_entry()
// swaps the frame's checks for the core ones, which hand `f` to the core (the order of the exit
// stays the order of the defers) and return None for the slot.
#include <cstdint>

#include "api.hpp"
#include "module_state.hpp"
#include "schedule.hpp"

namespace godefer {

namespace {

struct SlotCheck {
    PyObject_HEAD
    Kind kind;
    bool core;  // the frame's core holds entries: the call goes there
};

// A non-callable, or a check of a frame whose core holds entries.
PyObject* slot_check_rare(PyObject* self, PyObject* fn) {
    const auto* check = reinterpret_cast<SlotCheck*>(self);
    if (require_callable(fn, check->kind) < 0) {
        return nullptr;
    }
    if (!check->core) {
        return Py_NewRef(fn);
    }
    if (schedule(state_from_type(Py_TYPE(self)), check->kind, fn, nullptr, 0, nullptr,
                 kind_name(check->kind), true) < 0) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* slot_check_subscript(PyObject* self, PyObject* fn) {
    // require_callable()'s test, which raises the error naming the check's kind.
    if (Py_TYPE(fn)->tp_call != nullptr && !reinterpret_cast<SlotCheck*>(self)->core) {
        return Py_NewRef(fn);
    }
    return slot_check_rare(self, fn);
}

PyObject* slot_check_repr(PyObject* self) {
    const auto* check = reinterpret_cast<SlotCheck*>(self);
    return PyUnicode_FromFormat("<godefer slot check: %s%s>", kind_name(check->kind),
                                check->core ? ", core" : "");
}

void slot_check_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyType_Slot slot_check_slots[] = {
    {Py_mp_subscript, reinterpret_cast<void*>(slot_check_subscript)},
    {Py_tp_repr, reinterpret_cast<void*>(slot_check_repr)},
    {Py_tp_dealloc, reinterpret_cast<void*>(slot_check_dealloc)},
    {Py_tp_doc, const_cast<char*>("What prepared code subscripts to fill an open-coded slot.")},
    {0, nullptr},
};

PyType_Spec slot_check_spec = {
    "godefer._core.SlotCheck",
    sizeof(SlotCheck),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    slot_check_slots,
};

PyObject* new_slot_check(PyTypeObject* type, int kind, bool core) {
    auto* check = PyObject_New(SlotCheck, type);
    if (check == nullptr) {
        return nullptr;
    }
    check->kind = static_cast<Kind>(kind);
    check->core = core;
    return reinterpret_cast<PyObject*>(check);
}

}  // namespace

int add_slot_checks(PyObject* module, ModuleState* st) {
    st->slot_check_type = reinterpret_cast<PyTypeObject*>(
        PyType_FromModuleAndSpec(module, &slot_check_spec, nullptr));
    if (st->slot_check_type == nullptr) {
        return -1;
    }
    static const char* const names[] = {"_slot_check_defer", "_slot_check_errdefer",
                                        "_slot_check_okdefer"};
    for (int kind = 0; kind < slot_check_kinds; ++kind) {
        for (const bool core : {false, true}) {
            PyObject* check = new_slot_check(st->slot_check_type, kind, core);
            if (check == nullptr) {
                return -1;
            }
            st->slot_checks[core ? 1 : 0][kind] = check;
        }
        if (PyModule_AddObjectRef(module, names[kind], st->slot_checks[0][kind]) < 0) {
            return -1;
        }
    }
    return 0;
}

void divert_slot_checks(ModuleState* st, _PyInterpreterFrame* frame) {
    const int count = compat::iframe_code(frame)->co_nlocalsplus;
    for (int i = 0; i < count; ++i) {
        PyObject*& local = frame->localsplus[i];
        for (int kind = 0; kind < slot_check_kinds; ++kind) {
            if (local == st->slot_checks[0][kind]) {
                Py_SETREF(local, Py_NewRef(st->slot_checks[1][kind]));
                break;
            }
        }
    }
}

}  // namespace godefer
