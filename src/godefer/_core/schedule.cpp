#include "schedule.hpp"

#include "code_flags.hpp"
#include "exit_hooks.hpp"
#include "open_coded.hpp"
#include "unwind.hpp"

namespace godefer {

const char* kind_name(Kind kind) noexcept {
    switch (kind) {
        case Kind::on_error:
            return "errdefer";
        case Kind::on_success:
            return "okdefer";
        case Kind::await_call:
            return "adefer";
        case Kind::await_exit_cm:
            return "ascoped";
        case Kind::always:
        case Kind::exit_cm:
            break;
    }
    return "defer";
}

int not_callable(PyObject* fn, Kind kind) {
    const char* who = kind_name(kind);
    PyErr_Format(PyExc_TypeError,
                 "%s() needs a callable as its first argument, got %.100s object %.200R; "
                 "pass the function itself, e.g. %s(f.close), not the result of calling it",
                 who, Py_TYPE(fn)->tp_name, fn, who);
    return -1;
}

namespace {

// A record whose frame exited unseen (e.g. a block scope entered by hand and never exited) while
// another frame now lives at the same address. It must never fire for the new frame; whatever it
// still holds runs now, with a warning, rather than being dropped.
int salvage_stale(ModuleState* st, Scope* stale) {
    if (stale->has_entries() &&
        PyErr_WarnEx(PyExc_RuntimeWarning,
                     "godefer: a frame exited without its deferred calls being run; running them "
                     "now",
                     1) < 0) {
        return -1;
    }
    UnwindState state;
    finish_frame(st, stale, state);
    if (state.exc) {
        compat::restore_exception(std::move(state.exc));
        return -1;
    }
    return 0;
}

}  // namespace

namespace {

bool is_prepared_code(ModuleState* st, PyCodeObject* code) {
    uintptr_t flags = 0;
    return code_flags(st, code, &flags) == 0 && (flags & code_prepared) != 0;
}

// The frame object of `frame`, made if needed. PyEval_GetFrame materialises the current frame;
// a 3.11 comprehension's enclosing frame is reached through f_back. Borrowed.
PyObject* frame_object(PyThreadState* tstate, _PyInterpreterFrame* frame) {
    PyObject* attached = compat::attached_frame_object(frame);
    if (attached != nullptr) {
        return attached;
    }
    PyFrameObject* f = PyEval_GetFrame();
    while (f != nullptr && compat::iframe_of(f) != frame) {
        PyFrameObject* back = PyFrame_GetBack(f);  // kept alive by the frame it encloses
        Py_XDECREF(back);
        f = back;
    }
    (void)tstate;
    return reinterpret_cast<PyObject*>(f);
}

}  // namespace

Scope* calling_scope(ModuleState* st, const char* who, bool prepared, bool arming) {
    PyThreadState* tstate = PyThreadState_Get();
    _PyInterpreterFrame* frame = compat::block_frame(tstate);
    if (frame == nullptr) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s() was called with no Python frame to attach to (called directly from C "
                     "or as a thread's target); call it from the Python function whose exit "
                     "should run the call",
                     who);
        return nullptr;
    }
    Scope* scope = st->table->find(frame);
    if (scope != nullptr) {
        if (scope->frame == nullptr || scope->frame == compat::attached_frame_object(frame)) {
            return scope;
        }
        if (salvage_stale(st, scope) < 0) {
            return nullptr;
        }
    }
    if (!prepared) {
        prepared = is_prepared_code(st, compat::iframe_code(frame));
    }
    PyObject* frame_obj = nullptr;
    if (!prepared && !(arming && compat::exits_always_seen(frame))) {
        frame_obj = frame_object(tstate, frame);
        if (frame_obj == nullptr) {
            if (PyErr_Occurred() == nullptr) {
                PyErr_Format(PyExc_RuntimeError, "%s(): the calling frame cannot be identified",
                             who);
            }
            return nullptr;
        }
    }
    scope = st->table->find_or_create(frame, frame_obj, prepared);
    scope->open_coded = prepared && open_coded_locals(st, compat::iframe_code(frame)).state >= 0;
    return scope;
}

int schedule(ModuleState* st, Kind kind, PyObject* fn, PyObject* const* args, std::size_t nargs,
             PyObject* kwnames, const char* who, bool prepared) {
    Scope* scope = calling_scope(st, who, prepared, true);
    if (scope == nullptr) {
        return -1;
    }
    // In an open-coded frame an entry may belong to the open-coded block running there.
    if (scope->open_coded && scope->unwinding == nullptr &&
        join_open_block(const_cast<void*>(scope->key), scope) < 0) {
        release_if_empty(st, scope);
        return -1;
    }
    scope->push(kind, fn, args, nargs, kwnames);
    // Entries inside an open block run at the block's exit; entries of a prepared frame, or added
    // while the frame's own exit is being drained, need no further watching.
    if (scope->armed || scope->prepared || !scope->marks.empty() || scope->unwinding != nullptr) {
        // An open-coded frame must now exit through the core, which sees this entry.
        if (scope->open_coded && scope->marks.empty() && scope->unwinding == nullptr &&
            note_core_entry(st, const_cast<void*>(scope->key)) < 0) {
            PoppedEntry dropped;
            scope->pop(dropped);
            release_if_empty(st, scope);
            return -1;
        }
        return 0;
    }
    if (PyThreadState_Get()->tracing > 0) {
        // Inside a trace, profile or sys.monitoring callback (a debugger evaluating an expression,
        // say) CPython reports no frame exits, so this call would silently never run.
        PyErr_Format(PyExc_RuntimeError,
                     "%s() was called inside a trace, profile or sys.monitoring callback, where "
                     "CPython reports no frame exits, so the call could never run; schedule it "
                     "outside the callback, or use `with scope():` around it",
                     who);
        PoppedEntry dropped;
        scope->pop(dropped);
        release_if_empty(st, scope);
        return -1;
    }
    if (arm_frame_exit(st, scope) < 0) {
        PoppedEntry dropped;
        scope->pop(dropped);
        release_if_empty(st, scope);
        return -1;
    }
    return 0;
}

}  // namespace godefer
