// DeferList: the list an open-coded function keeps a loop's deferred calls in. push() checks the
// callable (the TypeError a defer statement owes at its line) and appends in one C call, which is
// what makes a defer in a loop cost about a list.append(). The loop's first defer makes the list
// with _prepared_list_first[_call](), so a loop that defers nothing allocates nothing.
#include <array>

#include "defer_list.hpp"

#include "api.hpp"
#include "compat.hpp"
#include "module_state.hpp"
#include "schedule.hpp"

namespace godefer {

namespace {

// defer(f) in a loop: the entry is `f` itself. Returns f, what defer(f) returns, so that a
// defer used as an expression is this one call.
PyObject* defer_list_push(PyObject* self, PyObject* fn) {
    if (require_callable(fn, Kind::always) < 0 || PyList_Append(self, fn) < 0) {
        return nullptr;
    }
    return Py_NewRef(fn);
}

constexpr unsigned header_kind_mask = 3U;
constexpr unsigned header_kwargs_bit = 4U;
constexpr unsigned header_count_shift = 3U;

// push_call(kind, f, *args, **kwargs): the items of one entry (defer_list.hpp). Returns f.
PyObject* defer_list_push_call(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                               PyObject* kwnames) {
    if (nargs < 1 || !PyLong_CheckExact(args[0])) {
        PyErr_SetString(PyExc_SystemError, "godefer: push_call(kind, fn, *args, **kwargs)");
        return nullptr;
    }
    const long kind = PyLong_AsLong(args[0]);
    if (kind < 0 || kind > static_cast<long>(Kind::on_success)) {
        PyErr_SetString(PyExc_ValueError, "push_call(): unknown kind");
        return nullptr;
    }
    if (nargs < 2) {  // defer(*()): no callable at all
        const char* name = kind_name(static_cast<Kind>(kind));
        PyErr_Format(PyExc_TypeError,
                     "%s() needs the function to schedule as its first argument: "
                     "%s(fn, *args, **kwargs)",
                     name, name);
        return nullptr;
    }
    if (require_callable(args[1], static_cast<Kind>(kind)) < 0) {
        return nullptr;
    }
    Ref kwargs;
    if (kwnames != nullptr && PyTuple_GET_SIZE(kwnames) > 0) {
        kwargs = Ref::steal(PyDict_New());
        if (!kwargs) {
            return nullptr;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); ++i) {
            if (PyDict_SetItem(kwargs.get(), PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                return nullptr;
            }
        }
    }
    const auto count = static_cast<unsigned long>(nargs - 2);
    Ref header = Ref::steal(PyLong_FromUnsignedLong(static_cast<unsigned long>(kind) |
                                                    (kwargs ? header_kwargs_bit : 0U) |
                                                    (count << header_count_shift)));
    if (!header) {
        return nullptr;
    }
    const Py_ssize_t size = PyList_GET_SIZE(self);
    for (Py_ssize_t i = 1; i < nargs; ++i) {
        if (PyList_Append(self, args[i]) < 0) {
            static_cast<void>(PyList_SetSlice(self, size, PyList_GET_SIZE(self), nullptr));
            return nullptr;
        }
    }
    if ((kwargs && PyList_Append(self, kwargs.get()) < 0) ||
        PyList_Append(self, header.get()) < 0) {
        static_cast<void>(PyList_SetSlice(self, size, PyList_GET_SIZE(self), nullptr));
        return nullptr;
    }
    return Py_NewRef(args[1]);
}

// scoped(obj) into `list`: enters obj and appends its exit as an entry with no arguments,
// returning the value. If the entry cannot be appended, obj is exited at once, not never.
PyObject* append_scoped(PyObject* module, PyObject* list, PyObject* obj) {
    Ref entered = Ref::steal(prepared_scoped_slot(module, obj));
    if (!entered) {
        return nullptr;
    }
    PyObject* exit = PyTuple_GET_ITEM(entered.get(), 0);
    // The kind (Kind::exit_cm or Kind::always for close()) is the whole header of an entry with
    // no arguments.
    PyObject* header = PyTuple_GET_ITEM(entered.get(), 1);
    const Py_ssize_t size = PyList_GET_SIZE(list);
    if (PyList_Append(list, exit) < 0 || PyList_Append(list, header) < 0) {
        static_cast<void>(PyList_SetSlice(list, size, PyList_GET_SIZE(list), nullptr));
        Ref exc = compat::fetch_exception();
        const bool cm = PyLong_AsLong(header) == static_cast<long>(Kind::exit_cm);
        Ref ignored =
            Ref::steal(cm ? PyObject_CallFunctionObjArgs(exit, Py_None, Py_None, Py_None, nullptr)
                          : PyObject_CallNoArgs(exit));
        compat::restore_exception(std::move(exc));
        return nullptr;
    }
    return Py_NewRef(PyTuple_GET_ITEM(entered.get(), 2));
}

// push_scoped(obj): scoped(obj) used as an expression; returns the value.
PyObject* defer_list_push_scoped(PyObject* self, PyObject* obj) {
    PyObject* module = PyType_GetModule(Py_TYPE(self));
    return module != nullptr ? append_scoped(module, self, obj) : nullptr;
}

// The DeferList's drain(): an iterator that takes the entries off the list, last first, as a
// normal return runs them. It hands a plain entry's callable (a call with no arguments, not an
// errdefer) to the frame, whose bytecode calls it (cheaper than a call from C into Python), and
// makes any other call itself; errdefer entries are dropped (nothing is in flight). Each entry
// leaves the list before its call, so if a call raises, the list holds exactly the entries still
// pending, for the core.
struct DrainObject {
    PyObject_HEAD
    PyObject* list;
};

// The entry that ends the list, taken off it: `owned` holds its callable and kwargs, `args` its
// arguments when it is called with any (not for exit_cm, which gets three Nones).
bool take_last_entry(PyObject* list, ListEntry& entry, std::array<Ref, 2>& owned, Ref& args) {
    const Py_ssize_t end = PyList_GET_SIZE(list);
    if (!list_entry_before(list, end, entry)) {
        return false;
    }
    PyObject** items = reinterpret_cast<PyListObject*>(list)->ob_item;
    const bool plain = entry.nargs == 0 && entry.kwargs == nullptr;
    if (entry.kind != Kind::exit_cm && !plain) {
        args = Ref::steal(PyTuple_New(entry.nargs));
        if (!args) {
            return false;
        }
        for (Py_ssize_t i = 0; i < entry.nargs; ++i) {
            PyTuple_SET_ITEM(args.get(), i, Py_NewRef(entry.args[i]));
        }
    }
    owned[0] = Ref::borrow(entry.fn);
    owned[1] = entry.kwargs != nullptr ? Ref::borrow(entry.kwargs) : Ref{};
    // The list lets go of the entry's items before anything is called.
    Py_SET_SIZE(reinterpret_cast<PyVarObject*>(list), entry.start);
    for (Py_ssize_t i = entry.start; i < end; ++i) {
        Py_DECREF(items[i]);
        items[i] = nullptr;
    }
    return true;
}

// Takes entries off `list`, last first, making the calls of those that are not plain, up to the
// next plain entry: its callable (a new reference), or null when the list is empty (no exception
// set) or a call raised.
PyObject* next_plain_call(PyObject* list) {
    while (PyList_GET_SIZE(list) > 0) {
        // A plain entry is its callable alone, the last item when it is not a header: the list's
        // reference passes to the caller (take_last_entry costs about 90 instructions more).
        const Py_ssize_t end = PyList_GET_SIZE(list);
        PyObject** items = reinterpret_cast<PyListObject*>(list)->ob_item;
        if (!PyLong_CheckExact(items[end - 1])) {
            PyObject* fn = items[end - 1];
            items[end - 1] = nullptr;
            Py_SET_SIZE(reinterpret_cast<PyVarObject*>(list), end - 1);
            return fn;
        }
        ListEntry entry;
        std::array<Ref, 2> owned;  // fn, kwargs
        Ref args;
        if (!take_last_entry(list, entry, owned, args)) {
            return nullptr;
        }
        if (entry.kind == Kind::on_error) {
            continue;  // returning: nothing in flight
        }
        if (entry.kind != Kind::exit_cm && !args) {
            return owned[0].release();  // the frame calls it
        }
        Ref res;
        if (entry.kind == Kind::exit_cm) {  // scoped(cm): __exit__ with no exception
            res = Ref::steal(
                PyObject_CallFunctionObjArgs(owned[0].get(), Py_None, Py_None, Py_None, nullptr));
        } else {
            res = Ref::steal(PyObject_Call(owned[0].get(), args.get(), owned[1].get()));
        }
        if (!res) {
            return nullptr;
        }
    }
    return nullptr;
}

PyObject* drain_next(PyObject* self) {
    // null with no exception set: exhausted (StopIteration)
    return next_plain_call(reinterpret_cast<DrainObject*>(self)->list);
}

void drain_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    Py_XDECREF(reinterpret_cast<DrainObject*>(self)->list);
    type->tp_free(self);
    Py_DECREF(type);
}

std::array<PyType_Slot, 5> drain_slots = {{
    {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
    {Py_tp_iternext, reinterpret_cast<void*>(drain_next)},
    {Py_tp_dealloc, reinterpret_cast<void*>(drain_dealloc)},
    {Py_tp_doc, const_cast<char*>("The calls of a DeferList on a normal return, last first.")},
    {0, nullptr},
}};

PyType_Spec drain_spec = {
    "godefer._core.DeferListDrain",
    sizeof(DrainObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    drain_slots.data(),
};

// drain(): see DrainObject.
PyObject* defer_list_drain(PyObject* self, PyObject* /*unused*/) {
    PyObject* module = PyType_GetModule(Py_TYPE(self));
    if (module == nullptr) {
        return nullptr;
    }
    auto* it = PyObject_New(DrainObject, module_state(module)->drain_type);
    if (it == nullptr) {
        return nullptr;
    }
    it->list = Py_NewRef(self);
    return reinterpret_cast<PyObject*>(it);
}

std::array<PyMethodDef, 5> defer_list_methods = {{
    {"drain", defer_list_drain, METH_NOARGS,
     "An iterator over a normal return's calls, last first: yields the plain callables for the "
     "caller to call, makes the other calls itself."},
    {"push", defer_list_push, METH_O,
     "Append a deferred call of fn() (fn must be callable); return fn."},
    {"push_call", fastcall(defer_list_push_call), METH_FASTCALL | METH_KEYWORDS,
     "Append a deferred call of kind (0 defer, 1 errdefer, 2 okdefer): push_call(kind, fn, "
     "*args, **kwargs); return fn."},
    {"push_scoped", defer_list_push_scoped, METH_O,
     "Enter obj as scoped(obj) does and append its exit; return the value."},
    {nullptr, nullptr, 0, nullptr},
}};

std::array<PyType_Slot, 3> defer_list_slots = {{
    {Py_tp_methods, defer_list_methods.data()},
    {Py_tp_doc, const_cast<char*>("The deferred calls of one loop of an open-coded function.")},
    {0, nullptr},
}};

PyType_Spec defer_list_spec = {
    "godefer._core.DeferList",
    0,  // a list: no fields of its own
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    defer_list_slots.data(),
};

PyObject* new_defer_list(PyObject* module) {
    // An empty list, without list.__init__'s argument parsing: a loop's first defer pays this.
    return PyType_GenericAlloc(module_state(module)->defer_list_type, 0);
}

}  // namespace

PyObject* prepared_run_list(PyObject* /*module*/, PyObject* list) {
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "_prepared_run_list() takes a list");
        return nullptr;
    }
    for (;;) {
        Ref fn = Ref::steal(next_plain_call(list));
        if (!fn) {
            break;
        }
        Ref res = Ref::steal(PyObject_CallNoArgs(fn.get()));
        if (!res) {
            return nullptr;
        }
    }
    if (PyErr_Occurred() != nullptr) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* prepared_list_new(PyObject* module, PyObject* /*unused*/) {
    return new_defer_list(module);
}

PyObject* prepared_list_first(PyObject* module, PyObject* fn) {
    Ref list = Ref::steal(new_defer_list(module));
    if (!list) {
        return nullptr;
    }
    Ref pushed = Ref::steal(defer_list_push(list.get(), fn));
    if (!pushed) {
        return nullptr;
    }
    return list.release();
}

PyObject* prepared_list_first_call(PyObject* module, PyObject* const* args, Py_ssize_t nargs,
                                   PyObject* kwnames) {
    Ref list = Ref::steal(new_defer_list(module));
    if (!list) {
        return nullptr;
    }
    Ref pushed = Ref::steal(defer_list_push_call(list.get(), args, nargs, kwnames));
    if (!pushed) {
        return nullptr;
    }
    return list.release();
}

PyObject* prepared_list_scoped(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2 || (args[0] != Py_None && !PyList_Check(args[0]))) {
        PyErr_SetString(PyExc_SystemError, "godefer: _prepared_list_scoped(list or None, obj)");
        return nullptr;
    }
    Ref list = args[0] != Py_None ? Ref::borrow(args[0]) : Ref::steal(new_defer_list(module));
    if (!list) {
        return nullptr;
    }
    Ref value = Ref::steal(append_scoped(module, list.get(), args[1]));
    if (!value) {
        return nullptr;
    }
    return PyTuple_Pack(2, list.get(), value.get());
}

bool list_entry_before(PyObject* list, Py_ssize_t end, ListEntry& out) {
    PyObject** items = reinterpret_cast<PyListObject*>(list)->ob_item;
    PyObject* last = end > 0 ? items[end - 1] : nullptr;
    out = ListEntry{};
    if (last != nullptr && !PyLong_CheckExact(last)) {
        out.start = end - 1;
        out.fn = last;
        return true;
    }
    const unsigned long header = last != nullptr ? PyLong_AsUnsignedLong(last) : 0;
    const auto count = static_cast<Py_ssize_t>(header >> header_count_shift);
    const bool has_kwargs = (header & header_kwargs_bit) != 0;
    const Py_ssize_t start = end - 2 - count - (has_kwargs ? 1 : 0);
    if (last == nullptr || PyErr_Occurred() != nullptr || start < 0 ||
        (header & header_kind_mask) > static_cast<unsigned long>(Kind::exit_cm)) {
        PyErr_SetString(PyExc_SystemError, "godefer: malformed DeferList");
        return false;
    }
    out.start = start;
    out.kind = static_cast<Kind>(header & header_kind_mask);
    out.fn = items[start];
    out.args = items + start + 1;
    out.nargs = count;
    out.kwargs = has_kwargs ? items[end - 2] : nullptr;
    return true;
}

PyTypeObject* make_drain_type(PyObject* module) {
    return reinterpret_cast<PyTypeObject*>(PyType_FromModuleAndSpec(module, &drain_spec, nullptr));
}

PyTypeObject* make_defer_list_type(PyObject* module) {
    Ref base = Ref::borrow(reinterpret_cast<PyObject*>(&PyList_Type));
    return reinterpret_cast<PyTypeObject*>(
        PyType_FromModuleAndSpec(module, &defer_list_spec, base.get()));
}

}  // namespace godefer
