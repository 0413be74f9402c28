// Exits that await: adefer(), ascoped() and the AsyncExit stepper.
//
// The core cannot await, so an async function prepared for adefer()/ascoped() drains its scope
// with a loop that preparation writes into the function itself (see _prepare.py, async exits):
//
//     while (aw := exit.step()) is not None:   # plain entries run here, in C
//         try:
//             exit.done(await aw)               # the function's own frame awaits
//         except BaseException as e:
//             exit.failed(e)                    # in flight from now on
//     value = exit.finish()
//
// Awaiting in the function's frame keeps Go's rules intact: the awaited coroutine's caller is the
// scope's frame, so recover() called directly by it finds the scope, and it sees the exception in
// flight as sys.exception() through that frame's handled-exception slot, which step() sets and
// finish() restores.
#include "async_exit.hpp"

#include "api.hpp"
#include "schedule.hpp"
#include "unwind.hpp"

namespace godefer {

namespace {

struct AsyncExitObject {
    PyObject_HEAD
    Scope* scope;        // null once finished
    std::size_t floor;   // entries at or below this index belong to enclosing blocks
    bool frame_exit;     // the function's exit (finish() removes the record), not a block's
    bool exit_cm;        // the awaitable step() gave out is an __aexit__: done() settles it
    PyObject* original;  // the exception the exit started with (null: a normal exit)
    PyObject* saved;     // the frame's handled-exception slot before the exit (may be null)
    PyObject* outer;     // what sys.exception() shows when nothing is in flight
    UnwindState state;
};

AsyncExitObject* as_exit(PyObject* self) { return reinterpret_cast<AsyncExitObject*>(self); }

PyObject*& handled_slot() noexcept { return PyThreadState_Get()->exc_info->exc_value; }

bool finished(AsyncExitObject* x, const char* method) {
    if (x->scope != nullptr) {
        return false;
    }
    PyErr_Format(PyExc_RuntimeError,
                 "godefer: AsyncExit.%s(): this scope exit has already finished", method);
    return true;
}

PyObject* async_exit_step(PyObject* self, PyObject* /*unused*/) {
    AsyncExitObject* x = as_exit(self);
    if (finished(x, "step")) {
        return nullptr;
    }
    ModuleState* st = state_from_type(Py_TYPE(self));
    AwaitingShow show(x->outer);
    x->exit_cm = false;
    PyObject* awaitable = drain_to_await(st, *x->scope, x->floor, x->state, show, &x->exit_cm);
    if (awaitable != nullptr || PyErr_Occurred() != nullptr) {
        return awaitable;
    }
    Py_RETURN_NONE;
}

PyObject* async_exit_done(PyObject* self, PyObject* value) {
    AsyncExitObject* x = as_exit(self);
    if (finished(x, "done")) {
        return nullptr;
    }
    if (x->exit_cm) {
        x->exit_cm = false;
        settle_exit(state_from_type(Py_TYPE(self)), x->state, value);
    }
    Py_RETURN_NONE;
}

// The awaited call raised `exc` through the scope's frame, which is the first entry of its
// traceback; finish() raising it adds that frame again, so the first entry goes.
PyObject* async_exit_failed(PyObject* self, PyObject* exc) {
    AsyncExitObject* x = as_exit(self);
    if (finished(x, "failed")) {
        return nullptr;
    }
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "godefer: failed() takes an exception");
        return nullptr;
    }
    x->exit_cm = false;
    Ref tb = Ref::steal(PyException_GetTraceback(exc));
    auto* first = reinterpret_cast<PyTracebackObject*>(tb.get());
    if (first != nullptr && first->tb_frame != nullptr &&
        compat::iframe_of(first->tb_frame) == x->scope->key) {
        auto* rest = reinterpret_cast<PyObject*>(first->tb_next);
        if (PyException_SetTraceback(exc, rest != nullptr ? rest : Py_None) < 0) {
            return nullptr;
        }
    }
    x->state.exc = Ref::borrow(exc);
    Py_RETURN_NONE;
}

void unregister(ModuleState* st, AsyncExitObject* x) noexcept {
    Scope* scope = x->scope;
    x->scope = nullptr;
    end_drain(*st->table, *scope);
    if (!x->frame_exit) {
        release_if_empty(st, scope);
    } else if (scope->unwinding == nullptr) {
        scope->marks.clear();
        st->table->erase(scope);
    }
}

// Ends the exit: restores the frame's handled exception and returns what the frame does next:
// RERAISE (the exception it started with goes on), the value to return (a function's exit; None
// for a block, which goes on after the block), or raises the exception that replaced it.
PyObject* async_exit_finish(PyObject* self, PyObject* /*unused*/) {
    AsyncExitObject* x = as_exit(self);
    if (finished(x, "finish")) {
        return nullptr;
    }
    ModuleState* st = state_from_type(Py_TYPE(self));
    Py_XSETREF(handled_slot(), x->saved);
    x->saved = nullptr;
    unregister(st, x);
    Ref exc = std::move(x->state.exc);
    Ref result = std::move(x->state.result);
    Ref original = Ref::steal(x->original);
    x->original = nullptr;
    Py_CLEAR(x->outer);
    if (!exc) {
        return Py_NewRef(result && x->frame_exit ? result.get() : Py_None);
    }
    if (exc.get() == original.get()) {
        return Py_NewRef(st->reraise);
    }
    compat::restore_exception(std::move(exc));
    return nullptr;
}

int async_exit_traverse(PyObject* self, visitproc visit, void* arg) {
    AsyncExitObject* x = as_exit(self);
    Py_VISIT(x->original);
    Py_VISIT(x->saved);
    Py_VISIT(x->outer);
    Py_VISIT(x->state.exc.get());
    Py_VISIT(x->state.result.get());
    Py_VISIT(Py_TYPE(self));
    return 0;
}

int async_exit_clear(PyObject* self) {
    AsyncExitObject* x = as_exit(self);
    Py_CLEAR(x->original);
    Py_CLEAR(x->saved);
    Py_CLEAR(x->outer);
    x->state.exc.reset();
    x->state.result.reset();
    return 0;
}

// An exit dropped before its finish: its coroutine was freed while suspended in an awaited call
// that ignored the GeneratorExit of the coroutine's close() (CPython reports that RuntimeError as
// unraisable). The scope must not keep pointing at its state; the entries it still holds go with
// the record, as the remaining `finally:` blocks of such a coroutine written by hand never run.
void async_exit_dealloc(PyObject* self) {
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    AsyncExitObject* x = as_exit(self);
    ModuleState* st = state_from_type(tp);
    if (x->scope != nullptr && st != nullptr && st->table != nullptr) {
        unregister(st, x);
    }
    async_exit_clear(self);
    x->state.~UnwindState();
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyMethodDef async_exit_methods[] = {
    {"step", async_exit_step, METH_NOARGS,
     "Run entries up to the next one to await: its awaitable, or None when none is left."},
    {"done", async_exit_done, METH_O, "The awaitable step() gave out returned this value."},
    {"failed", async_exit_failed, METH_O, "The awaitable step() gave out raised this exception."},
    {"finish", async_exit_finish, METH_NOARGS,
     "End the exit: RERAISE, the value to return (None for a block), or raise."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot async_exit_slots[] = {
    {Py_tp_methods, async_exit_methods},
    {Py_tp_traverse, reinterpret_cast<void*>(async_exit_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(async_exit_clear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(async_exit_dealloc)},
    {Py_tp_doc, const_cast<char*>("The exit of a scope whose deferred calls include awaited ones: "
                                  "stepped by the loop preparation writes into the function.")},
    {0, nullptr},
};

PyType_Spec async_exit_spec = {
    "godefer._core.AsyncExit",
    sizeof(AsyncExitObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    async_exit_slots,
};

Scope* exiting_scope(ModuleState* st) {
    _PyInterpreterFrame* frame = compat::block_frame(PyThreadState_Get());
    return frame != nullptr ? st->table->find(frame) : nullptr;
}

}  // namespace

PyTypeObject* make_async_exit_type(PyObject* module) {
    return reinterpret_cast<PyTypeObject*>(
        PyType_FromModuleAndSpec(module, &async_exit_spec, nullptr));
}

PyObject* make_async_exit(ModuleState* st, Scope* scope, const AsyncExitStart& start) {
    auto* x = PyObject_GC_New(AsyncExitObject, st->async_exit_type);
    if (x == nullptr) {
        return nullptr;
    }
    new (&x->state) UnwindState();
    x->scope = scope;
    x->floor = start.floor;
    x->frame_exit = start.kind == ExitKind::prepared_frame;
    x->exit_cm = false;
    x->original = Py_XNewRef(start.exc);
    x->saved = Py_XNewRef(handled_slot());
    x->outer = Py_NewRef(start.outer != nullptr ? start.outer : Py_None);
    x->state.kind = start.kind;
    x->state.exc = Ref::borrow(start.exc);
    x->state.returning = x->frame_exit && start.exc == nullptr;
    // An exception exit keeps a value set_result() gave before it (open-coded slots that ran
    // inline); None is no value.
    x->state.result =
        Ref::borrow(start.exc == nullptr || start.result != Py_None ? start.result : nullptr);
    begin_drain(*st->table, *scope, x->state);
    PyObject_GC_Track(x);
    return reinterpret_cast<PyObject*>(x);
}

PyObject* prepared_acomplete(PyObject* module, PyObject* value) {
    ModuleState* st = module_state(module);
    Scope* scope = exiting_scope(st);
    if (scope == nullptr) {
        Py_RETURN_NONE;  // nothing was deferred: the function returns its value as it is
    }
    // A return has left any handler first: the slot shows what enclosed the function.
    AsyncExitStart start;
    start.kind = ExitKind::prepared_frame;
    start.result = value;
    start.outer = handled_slot();
    return make_async_exit(st, scope, start);
}

PyObject* prepared_aunwind(PyObject* module, PyObject* exc) {
    ModuleState* st = module_state(module);
    Scope* scope = exiting_scope(st);
    if (scope == nullptr) {
        Py_RETURN_NONE;  // nothing was deferred: the exception goes on
    }
    AsyncExitStart start;
    start.kind = ExitKind::prepared_frame;
    start.exc = exc;
    // Called from the prepared handler, where the first stack slot holds what enclosed the scope.
    start.outer = compat::enclosing_handled_exception(
        static_cast<_PyInterpreterFrame*>(const_cast<void*>(scope->key)));
    return make_async_exit(st, scope, start);
}

PyObject* adefer(PyObject* module, PyObject* const* /*args*/, Py_ssize_t /*nargs*/,
                 PyObject* /*kwnames*/) {
    PyErr_SetString(module_state(module)->not_prepared_error,
                    "adefer() needs prepared code: awaiting a deferred coroutine when an async "
                    "function exits requires godefer to prepare that function (import its module "
                    "normally so the import hook prepares it, or decorate it with @scope); "
                    "nothing was scheduled");
    return nullptr;
}

PyObject* ascoped(PyObject* module, PyObject* const* /*args*/, Py_ssize_t /*nargs*/) {
    PyErr_SetString(module_state(module)->not_prepared_error,
                    "ascoped() needs prepared code: entering and exiting an asynchronous context "
                    "manager without `async with` requires godefer to prepare the async function "
                    "(import its module normally so the import hook prepares it, or decorate it "
                    "with @scope); nothing was entered or scheduled");
    return nullptr;
}

// `await ascoped(cm)` in prepared code is `ascoped_push(await aenter(cm), cm)`: checks cm as
// `async with` does and returns the awaitable of cm.__aenter__().
PyObject* prepared_aenter(PyObject* module, PyObject* cm) {
    ModuleState* st = module_state(module);
    Ref aexit = lookup_special(cm, st->str_aexit);
    Ref aenter = aexit ? lookup_special(cm, st->str_aenter) : Ref{};
    if (PyErr_Occurred() != nullptr) {
        return nullptr;
    }
    if (!aenter || !aexit) {
        const bool sync_cm = PyObject_HasAttrString(cm, "__enter__") != 0;
        PyErr_Format(PyExc_TypeError,
                     "ascoped() needs an asynchronous context manager (__aenter__ and "
                     "__aexit__); got %.100s object%s",
                     Py_TYPE(cm)->tp_name, sync_cm ? ", a context manager: use scoped(cm)" : "");
        return nullptr;
    }
    return PyObject_CallNoArgs(aenter.get());
}

// ... and after the await: schedules cm.__aexit__ and returns the entered value.
PyObject* prepared_ascoped_push(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_SystemError, "godefer: malformed ascoped()");
        return nullptr;
    }
    ModuleState* st = module_state(module);
    Ref aexit = lookup_special(args[1], st->str_aexit);
    if (!aexit) {
        if (PyErr_Occurred() == nullptr) {
            PyErr_Format(PyExc_TypeError, "ascoped(): %.100s object lost its __aexit__",
                         Py_TYPE(args[1])->tp_name);
        }
        return nullptr;
    }
    if (schedule(st, Kind::await_exit_cm, aexit.get(), nullptr, 0, nullptr, "ascoped", true) < 0) {
        return nullptr;
    }
    return Py_NewRef(args[0]);
}

}  // namespace godefer
