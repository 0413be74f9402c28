// Frame exits on CPython 3.12+: sys.monitoring (PEP 669). A local PY_RETURN event on each code
// object that ever had runtime-path deferred calls, and the global PY_UNWIND event while any
// record is armed. The tool id is one of 4, 3, 5: never the debugger's (0), coverage's (1) or the
// profiler's (2).
#include "compat.hpp"

#ifdef GODEFER_USE_MONITORING

#include <cstdint>

#include "code_flags.hpp"
#include "exit_hooks.hpp"
#include "unwind.hpp"

namespace godefer {

namespace {

constexpr int tool_candidates[] = {4, 3, 5};
constexpr unsigned generator_like = CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR;

PyObject* call_monitoring(PyObject* fn, std::initializer_list<PyObject*> args) {
    PyObject* argv[4] = {};
    std::size_t n = 0;
    for (PyObject* a : args) {
        argv[n++] = a;
    }
    return PyObject_Vectorcall(fn, argv, n, nullptr);
}

int acquire_tool(ModuleState* st) {
    if (st->tool_id >= 0) {
        return 0;
    }
    Ref sys = Ref::steal(PyImport_ImportModule("sys"));
    Ref monitoring = sys ? Ref::steal(PyObject_GetAttrString(sys.get(), "monitoring")) : Ref{};
    if (!monitoring) {
        return -1;
    }
    Ref use_tool_id = Ref::steal(PyObject_GetAttrString(monitoring.get(), "use_tool_id"));
    Ref name = Ref::steal(PyUnicode_FromString("godefer"));
    if (!use_tool_id || !name) {
        return -1;
    }
    for (int candidate : tool_candidates) {
        Ref id = Ref::steal(PyLong_FromLong(candidate));
        if (!id) {
            return -1;
        }
        Ref ok = Ref::steal(call_monitoring(use_tool_id.get(), {id.get(), name.get()}));
        if (ok) {
            st->tool_id = candidate;
            break;
        }
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            return -1;
        }
        PyErr_Clear();  // taken by another tool
    }
    if (st->tool_id < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "godefer needs a free sys.monitoring tool id (one of 3, 4, 5) to run "
                        "deferred calls of code it did not prepare, and all are taken; free one, "
                        "or let godefer prepare the code");
        return -1;
    }
    Ref id = Ref::steal(PyLong_FromLong(st->tool_id));
    if (!id) {
        return -1;
    }
    Ref r1 = Ref::steal(
        call_monitoring(st->register_callback, {id.get(), st->event_py_return, st->on_return}));
    Ref r2 = r1 ? Ref::steal(call_monitoring(st->register_callback,
                                             {id.get(), st->event_py_unwind, st->on_unwind}))
                : Ref{};
    return r2 ? 0 : -1;
}

int set_unwind_event(ModuleState* st, bool on) {
    Ref id = Ref::steal(PyLong_FromLong(st->tool_id));
    Ref events = Ref::steal(PyLong_FromLong(0));
    if (!id || !events) {
        return -1;
    }
    Ref r = Ref::steal(
        call_monitoring(st->set_events, {id.get(), on ? st->event_py_unwind : events.get()}));
    if (!r) {
        return -1;
    }
    st->unwind_enabled = on;
    return 0;
}

int watch_code(ModuleState* st, PyCodeObject* code) {
    uintptr_t flags = 0;
    if (code_flags(st, code, &flags) < 0) {
        return -1;
    }
    const uintptr_t before = flags;
    if ((flags & code_return_event) == 0) {
        Ref id = Ref::steal(PyLong_FromLong(st->tool_id));
        if (!id) {
            return -1;
        }
        Ref current = Ref::steal(
            call_monitoring(st->get_local_events, {id.get(), reinterpret_cast<PyObject*>(code)}));
        if (!current) {
            return -1;
        }
        Ref wanted = Ref::steal(PyNumber_Or(current.get(), st->event_py_return));
        Ref r = wanted ? Ref::steal(call_monitoring(
                             st->set_local_events,
                             {id.get(), reinterpret_cast<PyObject*>(code), wanted.get()}))
                       : Ref{};
        if (!r) {
            return -1;
        }
        flags |= code_return_event;
    }
    if ((flags & code_close_patched) == 0 &&
        (static_cast<unsigned>(code->co_flags) & generator_like) != 0 &&
        compat::needs_close_shortcut_patch()) {
        if (compat::disable_close_shortcut(code) < 0) {
            return -1;
        }
        flags |= code_close_patched;
    }
    return flags != before ? set_code_flags(st, code, flags) : 0;
}

// The armed record of the frame the event is about, or null. The interpreter frame pointer finds
// it without materialising a frame object; the frame object held by the record, if any,
// confirms it (a record without one belongs to a frame whose exits are always seen).
Scope* exiting_scope(ModuleState* st) {
    _PyInterpreterFrame* frame = compat::current_iframe(PyThreadState_Get());
    Scope* scope = frame != nullptr ? st->table->find(frame) : nullptr;
    if (scope == nullptr || !scope->armed || scope->unwinding != nullptr ||
        (scope->frame != nullptr && compat::attached_frame_object(frame) != scope->frame)) {
        return nullptr;
    }
    return scope;
}

// Runs the deferred calls of an exiting frame from inside a monitoring callback. CPython delivers
// no events while a callback runs, so the calls would be invisible to debuggers, profilers and
// coverage, and calls they defer would never be seen to exit: tracing is re-enabled around them.
Ref finish_in_callback(ModuleState* st, Scope* scope, PyObject* exc) {
    PyThreadState* tstate = PyThreadState_Get();
    const bool in_callback = tstate->tracing > 0;
    if (in_callback) {
        PyThreadState_LeaveTracing(tstate);
    }
    UnwindState state;
    state.kind = ExitKind::runtime_frame;
    state.exc = Ref::borrow(exc);
    finish_frame(st, scope, state);
    if (in_callback) {
        PyThreadState_EnterTracing(tstate);
    }
    return std::move(state.exc);
}

PyObject* on_return(PyObject* module, PyObject* const* /*args*/, Py_ssize_t /*nargs*/) {
    ModuleState* st = module_state(module);
    Scope* scope = exiting_scope(st);
    if (scope == nullptr) {
        Py_RETURN_NONE;
    }
    Ref final = finish_in_callback(st, scope, nullptr);
    if (final) {
        compat::restore_exception(std::move(final));
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* on_unwind(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    Scope* scope = exiting_scope(st);
    if (scope == nullptr) {
        // Turned off lazily, at the first unwind after nothing is pending, so that a function
        // deferring in a loop does not re-instrument the interpreter twice per call.
        if (st->armed == 0 && st->unwind_enabled && set_unwind_event(st, false) < 0) {
            return nullptr;
        }
        Py_RETURN_NONE;
    }
    PyObject* exc = nargs >= 3 ? args[2] : nullptr;
    Ref final = finish_in_callback(st, scope, exc);
    if (final.get() == exc || !final) {
        Py_RETURN_NONE;
    }
    compat::restore_exception(std::move(final));
    return nullptr;
}

PyMethodDef on_return_def = {"_on_return",
                             reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(on_return)),
                             METH_FASTCALL, nullptr};
PyMethodDef on_unwind_def = {"_on_unwind",
                             reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(on_unwind)),
                             METH_FASTCALL, nullptr};

}  // namespace

int arm_frame_exit(ModuleState* st, Scope* scope) {
    if (acquire_tool(st) < 0) {
        return -1;
    }
    if (!st->unwind_enabled && set_unwind_event(st, true) < 0) {
        return -1;
    }
    if (watch_code(st, compat::iframe_code(
                           static_cast<_PyInterpreterFrame*>(const_cast<void*>(scope->key)))) < 0) {
        return -1;
    }
    scope->armed = true;
    ++st->armed;
    return 0;
}

void disarm_frame_exit(ModuleState* st, Scope* scope) noexcept {
    scope->armed = false;
    --st->armed;
}

int exit_hooks_init(PyObject* module, ModuleState* st) {
    Ref sys = Ref::steal(PyImport_ImportModule("sys"));
    Ref monitoring = sys ? Ref::steal(PyObject_GetAttrString(sys.get(), "monitoring")) : Ref{};
    Ref events =
        monitoring ? Ref::steal(PyObject_GetAttrString(monitoring.get(), "events")) : Ref{};
    if (!events) {
        return -1;
    }
    st->set_events = PyObject_GetAttrString(monitoring.get(), "set_events");
    st->set_local_events = PyObject_GetAttrString(monitoring.get(), "set_local_events");
    st->get_local_events = PyObject_GetAttrString(monitoring.get(), "get_local_events");
    st->free_tool_id = PyObject_GetAttrString(monitoring.get(), "free_tool_id");
    st->register_callback = PyObject_GetAttrString(monitoring.get(), "register_callback");
    st->event_py_return = PyObject_GetAttrString(events.get(), "PY_RETURN");
    st->event_py_unwind = PyObject_GetAttrString(events.get(), "PY_UNWIND");
    st->on_return = PyCFunction_NewEx(&on_return_def, module, nullptr);
    st->on_unwind = PyCFunction_NewEx(&on_unwind_def, module, nullptr);
    const bool ok = st->set_events && st->set_local_events && st->get_local_events &&
                    st->free_tool_id && st->register_callback && st->event_py_return &&
                    st->event_py_unwind && st->on_return && st->on_unwind;
    return ok ? 0 : -1;
}

int exit_hooks_traverse(ModuleState* st, visitproc visit, void* arg) {
    Py_VISIT(st->on_return);
    Py_VISIT(st->on_unwind);
    return 0;
}

void exit_hooks_free(ModuleState* st) noexcept {
    if (st->tool_id >= 0 && st->set_events != nullptr) {
        // Best effort at teardown: stop our events and give the tool id back.
        Ref id = Ref::steal(PyLong_FromLong(st->tool_id));
        Ref zero = Ref::steal(PyLong_FromLong(0));
        if (id && zero) {
            Ref a = Ref::steal(call_monitoring(st->set_events, {id.get(), zero.get()}));
            Ref b = Ref::steal(
                call_monitoring(st->register_callback, {id.get(), st->event_py_return, Py_None}));
            Ref c = Ref::steal(
                call_monitoring(st->register_callback, {id.get(), st->event_py_unwind, Py_None}));
            Ref d = Ref::steal(call_monitoring(st->free_tool_id, {id.get()}));
        }
        PyErr_Clear();
        st->tool_id = -1;
    }
    Py_CLEAR(st->set_events);
    Py_CLEAR(st->set_local_events);
    Py_CLEAR(st->get_local_events);
    Py_CLEAR(st->free_tool_id);
    Py_CLEAR(st->register_callback);
    Py_CLEAR(st->event_py_return);
    Py_CLEAR(st->event_py_unwind);
    Py_CLEAR(st->on_return);
    Py_CLEAR(st->on_unwind);
}

}  // namespace godefer

#endif  // GODEFER_USE_MONITORING
