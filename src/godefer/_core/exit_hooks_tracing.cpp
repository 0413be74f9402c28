// Frame exits on CPython 3.11: C-level profile and trace functions, installed on a thread only
// while that thread has armed records, each chaining to whatever it displaced.
//
// The profile function sees every frame's PyTrace_RETURN (also on exceptions, with no value) and
// runs the deferred calls; the trace function sees PyTrace_EXCEPTION, which is how the exception
// leaving a frame is known. Each also watches the other's slot: a tracer or profiler installed
// later (sys.settrace, pdb, coverage, cProfile) displaces one of them, and the other wraps the
// newcomer on its next event, chaining to it, so pending calls never silently disappear and the
// newcomer still gets all its events. Both are installed with the displaced function's object,
// so sys.gettrace() and sys.getprofile() keep returning what the user installed.
#include "compat.hpp"

#ifdef GODEFER_USE_TRACING

#include "exit_hooks.hpp"
#include "unwind.hpp"

namespace godefer {

namespace {

// Per-thread hook bookkeeping mirrors CPython's per-thread tstate->c_tracefunc/c_profilefunc, and
// a bare C trace function has no other place to find it: the object argument belongs to the tool
// we chain to.
struct ThreadHooks {
    bool installed = false;
    ModuleState* st = nullptr;
    PyObject* module = nullptr;  // strong while installed
    Py_tracefunc prev_trace = nullptr;
    Py_tracefunc prev_profile = nullptr;
    Py_ssize_t armed = 0;
};

thread_local ThreadHooks t_hooks;

int trace_hook(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg);
int profile_hook(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg);

void wrap_displaced(ThreadHooks& h, PyThreadState* tstate) {
    if (tstate->c_tracefunc != trace_hook) {
        h.prev_trace = tstate->c_tracefunc;
        PyEval_SetTrace(trace_hook, tstate->c_traceobj);
    }
    if (tstate->c_profilefunc != profile_hook) {
        h.prev_profile = tstate->c_profilefunc;
        PyEval_SetProfile(profile_hook, tstate->c_profileobj);
    }
}

void uninstall_if_idle(ThreadHooks& h, PyThreadState* tstate) {
    if (!h.installed || h.armed > 0) {
        return;
    }
    h.installed = false;
    if (tstate->c_profilefunc == profile_hook) {
        PyEval_SetProfile(h.prev_profile, tstate->c_profileobj);
    }
    if (tstate->c_tracefunc == trace_hook) {
        PyEval_SetTrace(h.prev_trace, tstate->c_traceobj);
    }
    h.prev_trace = nullptr;
    h.prev_profile = nullptr;
    h.st = nullptr;
    Py_CLEAR(h.module);
}

int trace_hook(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg) {
    ThreadHooks& h = t_hooks;
    if (!h.installed) {
        return 0;
    }
    PyThreadState* tstate = PyThreadState_Get();
    wrap_displaced(h, tstate);
    if (what == PyTrace_EXCEPTION) {
        Scope* scope = h.st->table->find(compat::iframe_of(frame));
        if (scope != nullptr && scope->armed &&
            scope->frame == reinterpret_cast<PyObject*>(frame)) {
            // 3.11 attaches the traceback to the exception only where it is caught; deferred
            // calls (and scoped() __exit__) must see it as a finally block would.
            PyObject* value = PyTuple_GET_ITEM(arg, 1);
            PyObject* tb = PyTuple_GET_ITEM(arg, 2);
            if (PyExceptionInstance_Check(value) && PyTraceBack_Check(tb) &&
                PyException_SetTraceback(value, tb) < 0) {
                return -1;
            }
            scope->pending_exception = Ref::borrow(value);
        }
    }
    return h.prev_trace != nullptr ? h.prev_trace(obj, frame, what, arg) : 0;
}

// Runs the exiting frame's deferred calls; returns -1 with the exception to propagate set when
// it differs from the one in flight.
int finish(ThreadHooks& h, PyThreadState* tstate, Scope* scope, PyObject* arg) {
    Ref in_flight = arg == nullptr ? std::move(scope->pending_exception) : Ref{};
    scope->pending_exception.reset();
    // CPython delivers no trace events while a trace function runs; the deferred calls are
    // ordinary code that debuggers and profilers must see, so tracing is re-enabled around them.
    PyThreadState_LeaveTracing(tstate);
    UnwindState state;
    state.kind = ExitKind::runtime_frame;
    state.exc = Ref::borrow(in_flight.get());
    finish_frame(h.st, scope, state);
    PyThreadState_EnterTracing(tstate);
    if (!state.exc || state.exc.get() == in_flight.get()) {
        return 0;
    }
    compat::restore_exception(std::move(state.exc));
    return -1;
}

int profile_hook(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg) {
    ThreadHooks& h = t_hooks;
    if (!h.installed) {
        return 0;
    }
    PyThreadState* tstate = PyThreadState_Get();
    wrap_displaced(h, tstate);
    int rc = 0;
    if (what == PyTrace_RETURN) {
        Scope* scope = h.st->table->find(compat::iframe_of(frame));
        if (scope != nullptr && scope->armed && scope->unwinding == nullptr &&
            scope->frame == reinterpret_cast<PyObject*>(frame)) {
            if (compat::is_suspending(frame)) {
                scope->pending_exception.reset();  // a yield: not an exit
            } else {
                rc = finish(h, tstate, scope, arg);
            }
        }
    }
    if (h.prev_profile != nullptr) {
        // The displaced profiler sees the frame return after its deferred calls, as it would see
        // a finally block; an error we are propagating is kept aside while it runs.
        Ref pending = rc < 0 ? compat::fetch_exception() : Ref{};
        const int prc = h.prev_profile(obj, frame, what, arg);
        if (rc < 0) {
            if (prc < 0) {
                PyErr_Clear();
            }
            compat::restore_exception(std::move(pending));
        } else {
            rc = prc;
        }
    }
    uninstall_if_idle(h, tstate);
    return rc;
}

}  // namespace

int arm_frame_exit(ModuleState* st, Scope* scope) {
    ThreadHooks& h = t_hooks;
    if (!h.installed) {
        PyThreadState* tstate = PyThreadState_Get();
        h.installed = true;
        h.st = st;
        h.module = Py_NewRef(st->module);
        h.prev_trace = nullptr;
        h.prev_profile = nullptr;
        h.armed = 0;
        wrap_displaced(h, tstate);
        if (PyErr_Occurred() != nullptr) {
            return -1;
        }
    }
    scope->armed = true;
    ++h.armed;
    ++st->armed;
    return 0;
}

void disarm_frame_exit(ModuleState* st, Scope* scope) noexcept {
    scope->armed = false;
    --st->armed;
    ThreadHooks& h = t_hooks;
    if (h.armed > 0) {
        --h.armed;
    }
    // Uninstalling is left to the hooks themselves (they run right after a frame exit), so a hook
    // is never removed while CPython is about to call it for the same event.
    if (h.armed == 0 && h.installed && PyEval_GetFrame() == nullptr) {
        uninstall_if_idle(h, PyThreadState_Get());
    }
}

int exit_hooks_init(PyObject* /*module*/, ModuleState* /*st*/) { return 0; }

int exit_hooks_traverse(ModuleState* /*st*/, visitproc /*visit*/, void* /*arg*/) { return 0; }

void exit_hooks_free(ModuleState* /*st*/) noexcept {}

}  // namespace godefer

#endif  // GODEFER_USE_TRACING
