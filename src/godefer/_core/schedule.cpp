#include "schedule.hpp"

#include "exit_hooks.hpp"
#include "unwind.hpp"

namespace godefer {

namespace {

// A record whose frame exited unseen (e.g. a block scope entered by hand and never exited) while
// another frame now lives at the same address. It must never fire for the new frame; whatever it
// still holds runs now, with a warning, rather than being dropped.
int salvage_stale(ModuleState* st, Scope* stale) {
    if (stale->size() > 0 &&
        PyErr_WarnEx(PyExc_RuntimeWarning,
                     "godefer: a frame exited without its deferred calls being run; running them "
                     "now",
                     1) < 0) {
        return -1;
    }
    Ref exc = drain(st, *stale, 0, Ref{}, false);
    stale->marks.clear();
    if (stale->armed) {
        disarm_frame_exit(st, stale);
    }
    st->table->erase(stale);
    if (exc) {
        compat::restore_exception(std::move(exc));
        return -1;
    }
    return 0;
}

}  // namespace

Scope* calling_scope(ModuleState* st, const char* who) {
    PyFrameObject* frame = PyEval_GetFrame();
    if (frame == nullptr) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s() was called with no Python frame to attach to (called directly from C "
                     "or as a thread's target); call it from the Python function whose exit "
                     "should run the call",
                     who);
        return nullptr;
    }
#ifdef GODEFER_USE_TRACING
    // Borrowed all the way: each enclosing frame is kept alive by the frame it encloses.
    for (;;) {
        PyCodeObject* code = PyFrame_GetCode(frame);
        const bool comprehension = compat::is_comprehension_code(code);
        Py_DECREF(code);
        if (!comprehension) {
            break;
        }
        PyFrameObject* back = PyFrame_GetBack(frame);
        if (back == nullptr) {
            break;
        }
        Py_DECREF(back);
        frame = back;
    }
    compat::FrameKey key = frame;
#else
    compat::FrameKey key = compat::current_frame_key(PyThreadState_Get());
#endif
    auto* frame_obj = reinterpret_cast<PyObject*>(frame);
    Scope* scope = st->table->find_or_create(key, frame_obj);
    if (scope->frame != frame_obj) {
        if (salvage_stale(st, scope) < 0) {
            return nullptr;
        }
        scope = st->table->find_or_create(key, frame_obj);
    }
    return scope;
}

int schedule(ModuleState* st, Kind kind, PyObject* fn, PyObject* const* args, std::size_t nargs,
             PyObject* kwnames, const char* who) {
    Scope* scope = calling_scope(st, who);
    if (scope == nullptr) {
        return -1;
    }
    scope->push(kind, fn, args, nargs, kwnames);
    // Entries inside an open block run at the block's exit; entries outside any block, or any entry
    // added while the frame's own exit is being drained, need no further watching.
    if (scope->armed || !scope->marks.empty() || scope->unwinding != nullptr) {
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
