#include "unwind.hpp"

#include <algorithm>

#include "exit_hooks.hpp"
#include "open_coded.hpp"
#include "schedule.hpp"

namespace godefer {

namespace {

// Inside a `finally:` sys.exception() is the exception in flight, or else the one enclosing the
// block. The current value is saved the first time a call needs a different one, and restored at
// the end.
class HandledExceptionGuard {
   public:
    explicit HandledExceptionGuard(PyObject* outer) noexcept : outer_(outer) {}
    HandledExceptionGuard(const HandledExceptionGuard&) = delete;
    HandledExceptionGuard& operator=(const HandledExceptionGuard&) = delete;
    HandledExceptionGuard(HandledExceptionGuard&&) = delete;
    HandledExceptionGuard& operator=(HandledExceptionGuard&&) = delete;
    ~HandledExceptionGuard() {
        if (active_) {
            PyErr_SetHandledException(saved_.get());
        }
    }

    void show(PyObject* in_flight) noexcept {
        if (!active_) {
            if (in_flight == nullptr && outer_ == nullptr) {
                return;
            }
            saved_ = Ref::steal(PyErr_GetHandledException());
            active_ = true;
            if (outer_ == nullptr) {
                outer_ = saved_.get();
            }
        }
        PyErr_SetHandledException(in_flight != nullptr ? in_flight : outer_);
    }

   private:
    PyObject* outer_;  // borrowed; Py_None means "no exception"
    bool active_ = false;
    Ref saved_;
};

// Marks `scope` as being drained for recover()/result() for the lifetime of the object.
class DrainRegistration {
   public:
    DrainRegistration(ScopeTable& table, Scope& scope, UnwindState& state)
        : table_(table), scope_(scope) {
        begin_drain(table, scope, state);
    }
    DrainRegistration(const DrainRegistration&) = delete;
    DrainRegistration& operator=(const DrainRegistration&) = delete;
    DrainRegistration(DrainRegistration&&) = delete;
    DrainRegistration& operator=(DrainRegistration&&) = delete;
    ~DrainRegistration() { end_drain(table_, scope_); }

   private:
    ScopeTable& table_;
    Scope& scope_;
};

bool should_run(Kind kind, bool exception_in_flight) noexcept {
    switch (kind) {
        case Kind::on_error:
            return exception_in_flight;
        case Kind::on_success:
            return !exception_in_flight;
        case Kind::always:
        case Kind::exit_cm:
        case Kind::await_call:
        case Kind::await_exit_cm:
            return true;
    }
    return true;
}

// Calls the bound cm.__exit__(type, value, tb) (or __aexit__, whose result is an awaitable) with
// the exception in flight.
PyObject* call_exit(PoppedEntry& entry, PyObject* exc) {
    Ref tb = exc != nullptr ? Ref::steal(PyException_GetTraceback(exc)) : Ref{};
    PyObject* args[3] = {exc != nullptr ? reinterpret_cast<PyObject*>(Py_TYPE(exc)) : Py_None,
                         exc != nullptr ? exc : Py_None, tb ? tb.get() : Py_None};
    return PyObject_Vectorcall(entry.fn, args, 3, nullptr);
}

// Whether `obj` can be awaited (the await that follows still has the last word on generators).
bool awaitable(PyObject* obj) noexcept {
    const PyAsyncMethods* am = Py_TYPE(obj)->tp_as_async;
    return (am != nullptr && am->am_await != nullptr) || PyGen_Check(obj);
}

// Raises the TypeError of an awaited call `fn` of `kind` whose result `res` cannot be awaited.
void not_awaitable(Kind kind, PyObject* fn, PyObject* res) {
    PyErr_Format(PyExc_TypeError,
                 "%s(): the deferred call %.200R returned %.100s object, which cannot be "
                 "awaited; adefer() takes an async function (use defer() for a plain one)",
                 kind_name(kind), fn, Py_TYPE(res)->tp_name);
}

// Runs the entries above `floor`, last first, until one must be awaited: returns its awaitable
// (a new reference), with `*exit_cm` telling whether it is an __aexit__ whose result may stop the
// exception in flight; or null, with no error set, once the scope is down to `floor`. `show` makes
// the exception in flight sys.exception() for each call. Without `can_await`, an awaited entry is
// not called: it raises in its place (nothing is dropped silently).
template <typename Show>
PyObject* run_entries(ModuleState* st, Scope& scope, std::size_t floor, UnwindState& state,
                      Show& show, bool can_await, bool* exit_cm) {
    while (scope.size() > floor) {
        PoppedEntry entry;
        scope.pop(entry);
        if (!should_run(entry.kind, static_cast<bool>(state.exc))) {
            continue;
        }
        show.show(state.exc.get());
        if (awaited(entry.kind) && !can_await) {
            PyErr_Format(PyExc_RuntimeError,
                         "godefer: the %s() call %.200R was reached by an exit that cannot await "
                         "it, so it was not made; schedule awaited calls only in the body of a "
                         "prepared async function",
                         kind_name(entry.kind), entry.fn);
            state.exc = compat::fetch_exception();
            continue;
        }
        PyObject* res = nullptr;
        if (entry.kind == Kind::exit_cm || entry.kind == Kind::await_exit_cm) {
            res = call_exit(entry, state.exc.get());
        } else {
            const std::size_t positional =
                entry.nargs - (entry.kwnames != nullptr ? PyTuple_GET_SIZE(entry.kwnames) : 0);
            res = PyObject_Vectorcall(entry.fn, entry.args(), positional, entry.kwnames);
        }
        if (res == nullptr) {
            state.exc = compat::fetch_exception();
            continue;
        }
        if (entry.kind == Kind::exit_cm) {
            settle_exit(st, state, res);
            Py_DECREF(res);
            continue;
        }
        if (!awaited(entry.kind)) {
            Py_DECREF(res);
            continue;
        }
        if (!awaitable(res)) {
            not_awaitable(entry.kind, entry.fn, res);
            Py_DECREF(res);
            state.exc = compat::fetch_exception();
            continue;
        }
        *exit_cm = entry.kind == Kind::await_exit_cm;
        return res;
    }
    return nullptr;
}

}  // namespace

PyObject* prepared_slot_await(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs,
                              PyObject* kwnames) {
    const Py_ssize_t positional = PyVectorcall_NARGS(nargs);
    if (positional < 1) {
        PyErr_SetString(PyExc_SystemError, "godefer: malformed awaited slot");
        return nullptr;
    }
    PyObject* res = PyObject_Vectorcall(args[0], args + 1, positional - 1, kwnames);
    if (res != nullptr && !awaitable(res)) {
        not_awaitable(Kind::await_call, args[0], res);
        Py_CLEAR(res);
    }
    return res;
}

void settle_exit(ModuleState* st, UnwindState& state, PyObject* res) {
    if (!state.exc) {
        return;
    }
    const int suppress = PyObject_IsTrue(res);
    if (suppress < 0) {
        state.exc = compat::fetch_exception();
    } else if (suppress == 1) {
        if (state.kind != ExitKind::runtime_frame) {
            state.exc.reset();
        } else {
            // sys.exception() is still the exception in flight, so it becomes the __context__.
            PyErr_SetString(st->not_prepared_error,
                            "a context manager entered with scoped() suppressed an exception, "
                            "but this function is not prepared code, so godefer cannot stop the "
                            "exception leaving it; use `with scope():` around the code, or let "
                            "godefer prepare the module (import it normally, or use @scope)");
            state.exc = compat::fetch_exception();
        }
    }
}

void begin_drain(ScopeTable& table, Scope& scope, UnwindState& state) {
    state.outer = scope.unwinding;
    scope.unwinding = &state;
    table.draining.push_back(&scope);
}

void end_drain(ScopeTable& table, Scope& scope) noexcept {
    scope.unwinding = scope.unwinding->outer;
    if (table.draining.back() == &scope) {
        table.draining.pop_back();
        return;
    }
    auto it = std::find(table.draining.rbegin(), table.draining.rend(), &scope);
    if (it != table.draining.rend()) {
        table.draining.erase(std::next(it).base());
    }
}

void AwaitingShow::show(PyObject* in_flight) noexcept {
    PyErr_SetHandledException(in_flight != nullptr ? in_flight : outer_);
}

PyObject* drain_to_await(ModuleState* st, Scope& scope, std::size_t floor, UnwindState& state,
                         AwaitingShow& show, bool* exit_cm) {
    return run_entries(st, scope, floor, state, show, true, exit_cm);
}

void drain(ModuleState* st, Scope& scope, std::size_t floor, UnwindState& state, PyObject* outer) {
    DrainRegistration registration(*st->table, scope, state);
    HandledExceptionGuard handled(outer);
    bool exit_cm = false;
    // Always null: this drain refuses awaited entries rather than returning one.
    (void)run_entries(st, scope, floor, state, handled, false, &exit_cm);
}

void release_if_empty(ModuleState* st, Scope* scope) noexcept {
    if (scope->idle() && !scope->armed && scope->unwinding == nullptr) {
        st->table->erase(scope);
    }
}

void finish_frame(ModuleState* st, Scope* scope, UnwindState& state, PyObject* outer) {
    drain(st, *scope, 0, state, outer);
    if (scope->unwinding == nullptr) {
        scope->marks.clear();
        if (scope->armed) {
            disarm_frame_exit(st, scope);
        }
        st->table->erase(scope);
    }
}

namespace {

// The scope whose deferred callable is the caller of the running C function, or null. "Directly"
// as Go means it: the caller's own frame must have been called by the drain (C wrappers such as
// functools.partial in between are fine), so a helper deeper down, or recover deferred by itself,
// finds nothing.
bool called_by_drain(ModuleState* st, _PyInterpreterFrame* caller) {
    const auto& draining = st->table->draining;
    return std::any_of(draining.begin(), draining.end(),
                       [caller](const Scope* scope) { return scope->key == caller; });
}

Scope* scope_asking(ModuleState* st) {
    auto& draining = st->table->draining;
    if (draining.empty()) {
        return nullptr;
    }
    _PyInterpreterFrame* caller =
        compat::complete_frame(compat::current_iframe(PyThreadState_Get()));
    if (caller == nullptr) {
        return nullptr;
    }
    if (called_by_drain(st, caller)) {
        return nullptr;  // called by the drain itself, e.g. defer(recover)
    }
    compat::FrameKey back = compat::caller_frame(caller);
    for (auto it = draining.rbegin(); it != draining.rend(); ++it) {
        if ((*it)->key == back) {
            return *it;
        }
    }
    return nullptr;
}

}  // namespace

namespace {

// 1 when `exc` is an instance of one of `types` (Exception when there are none), 0 when not, -1
// on error.
int recoverable(PyObject* exc, PyObject* const* types, Py_ssize_t ntypes) {
    if (ntypes == 0) {
        const int is_exception =
            PyObject_TypeCheck(exc, reinterpret_cast<PyTypeObject*>(PyExc_Exception));
        return is_exception != 0 ? 1 : 0;
    }
    for (Py_ssize_t i = 0; i < ntypes; ++i) {
        const int r = PyObject_IsInstance(exc, types[i]);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

bool traceback_passes(PyObject* exc, _PyInterpreterFrame* frame) {
    Ref tb = Ref::steal(PyException_GetTraceback(exc));
    for (auto* t = reinterpret_cast<PyTracebackObject*>(tb.get()); t != nullptr; t = t->tb_next) {
        if (t->tb_frame != nullptr && compat::iframe_of(t->tb_frame) == frame) {
            return true;
        }
    }
    return false;
}

// The exception an open-coded frame is unwinding with, seen from its slot: the handled exception,
// unless the slot is inside a handler of its own, whose exception then carries it as __context__.
// Only the frame's exception has passed through the frame.
Ref unwinding_exception(_PyInterpreterFrame* frame) {
    Ref exc = Ref::steal(PyErr_GetHandledException());
    for (int hops = 0; exc && exc.get() != Py_None && hops < 64; ++hops) {
        if (traceback_passes(exc.get(), frame)) {
            return exc;
        }
        exc = Ref::steal(PyException_GetContext(exc.get()));
    }
    return {};
}

// recover() in a slot that an open-coded frame calls inline while unwinding: the frame learns of
// the recovery from its state, ends its inline calls and lets the core run the rest as a return.
PyObject* recover_inline(ModuleState* st, _PyInterpreterFrame* caller, PyObject* const* types,
                         Py_ssize_t ntypes) {
    _PyInterpreterFrame* back = compat::caller_frame(caller);
    const InlineExit exit = inline_exit(st, back);
    if (exit.phase != InlinePhase::unwinding) {
        Py_RETURN_NONE;
    }
    Ref exc = unwinding_exception(back);
    if (!exc) {
        Py_RETURN_NONE;
    }
    const int matches = recoverable(exc.get(), types, ntypes);
    if (matches <= 0) {
        return matches < 0 ? nullptr : Py_NewRef(Py_None);
    }
    PyObject* recovered = PyLong_FromLong(open_state_recovered + exit.slot);
    if (recovered == nullptr) {
        return nullptr;
    }
    Py_XSETREF(*exit.state, recovered);
    return exc.release();
}

}  // namespace

PyObject* recover(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    Scope* scope = scope_asking(st);
    if (scope == nullptr) {
        _PyInterpreterFrame* caller =
            compat::complete_frame(compat::current_iframe(PyThreadState_Get()));
        if (caller == nullptr || called_by_drain(st, caller) ||
            inline_exit(st, caller).phase != InlinePhase::none) {
            Py_RETURN_NONE;  // deferred directly (defer(recover)): Go's rule makes it a no-op
        }
        return recover_inline(st, caller, args, nargs);
    }
    if (!scope->unwinding->exc) {
        Py_RETURN_NONE;
    }
    UnwindState& state = *scope->unwinding;
    PyObject* exc = state.exc.get();
    const int matches = recoverable(exc, args, nargs);
    if (matches <= 0) {
        return matches < 0 ? nullptr : Py_NewRef(Py_None);
    }
    if (state.kind == ExitKind::runtime_frame) {
        PyErr_SetString(st->not_prepared_error,
                        "recover() cannot stop this exception: the function it is leaving is not "
                        "prepared code, and on that path godefer only sees the exit after the "
                        "exception has left; prepare the code (import its module normally so the "
                        "import hook prepares it, or decorate the function with @scope), or put "
                        "the code in a `with scope():` block");
        return nullptr;
    }
    // After a recovery the function returns (None unless a deferred call sets its result).
    state.returning = state.kind == ExitKind::prepared_frame;
    return state.exc.release();
}

namespace {

// Whose result result()/set_result() reach: the nearest frame up the stack whose exit is being
// drained by the core, or that calls its slots inline (the deferred callable's caller, or the
// calling frame itself for `defer(set_result, 42)`). Unlike recover(), helpers deeper down are
// fine.
struct ResultOwner {
    Scope* scope = nullptr;
    InlineExit inline_exit;
    bool block = false;  // an open-coded block calling its slots inline
};

ResultOwner result_owner(ModuleState* st) {
    auto& draining = st->table->draining;
    for (_PyInterpreterFrame* frame =
             compat::complete_frame(compat::current_iframe(PyThreadState_Get()));
         frame != nullptr; frame = compat::caller_frame(frame)) {
        for (auto it = draining.rbegin(); it != draining.rend(); ++it) {
            if ((*it)->key == frame) {
                return {*it, {}};
            }
        }
        InlineExit exit = inline_exit(st, frame);
        if (exit.phase != InlinePhase::none) {
            return {nullptr, exit};
        }
        if (calling_block_slot(st, frame)) {
            return {nullptr, {}, true};
        }
    }
    return {};
}

constexpr const char* block_has_no_result =
    "%s(): a `with scope():` block has no return value; only a deferred call of a function "
    "scope can read or replace its result";

// The drain whose function result a deferred call may read or replace; sets an error otherwise.
UnwindState* result_state(ModuleState* st, Scope* scope, const char* who) {
    if (scope == nullptr) {
        PyErr_Format(PyExc_LookupError,
                     "%s() is only available inside a deferred call of a function that is exiting",
                     who);
        return nullptr;
    }
    UnwindState* state = scope->unwinding;
    switch (state->kind) {
        case ExitKind::runtime_frame:
            PyErr_Format(st->not_prepared_error,
                         "%s() needs prepared code: this deferred call runs for a function that "
                         "godefer did not prepare, so its return value cannot be read or "
                         "replaced; import its module normally (the import hook prepares it) or "
                         "decorate the function with @scope",
                         who);
            return nullptr;
        case ExitKind::block:
            PyErr_Format(PyExc_LookupError, block_has_no_result, who);
            return nullptr;
        case ExitKind::prepared_frame:
            break;
    }
    return state;
}

constexpr const char* no_result_while_unwinding =
    "result(): the function is exiting by an exception, so it has no result; recover() the "
    "exception first, or use set_result()";

}  // namespace

PyObject* result(PyObject* module, PyObject* const* /*args*/, Py_ssize_t nargs) {
    if (nargs != 0) {
        PyErr_Format(PyExc_TypeError, "result() takes no arguments (%zd given)", nargs);
        return nullptr;
    }
    ModuleState* st = module_state(module);
    const ResultOwner owner = result_owner(st);
    if (owner.block) {
        PyErr_Format(PyExc_LookupError, block_has_no_result, "result");
        return nullptr;
    }
    if (owner.inline_exit.phase != InlinePhase::none) {
        if (owner.inline_exit.phase == InlinePhase::unwinding) {
            PyErr_SetString(PyExc_LookupError, no_result_while_unwinding);
            return nullptr;
        }
        PyObject* value = *owner.inline_exit.result;
        return Py_NewRef(value != nullptr ? value : Py_None);
    }
    UnwindState* state = result_state(st, owner.scope, "result");
    if (state == nullptr) {
        return nullptr;
    }
    if (!state->returning || state->exc) {
        PyErr_SetString(PyExc_LookupError, no_result_while_unwinding);
        return nullptr;
    }
    return Py_NewRef(state->result ? state->result.get() : Py_None);
}

PyObject* set_result(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "set_result() takes exactly one argument (%zd given)", nargs);
        return nullptr;
    }
    ModuleState* st = module_state(module);
    const ResultOwner owner = result_owner(st);
    if (owner.block) {
        PyErr_Format(PyExc_LookupError, block_has_no_result, "set_result");
        return nullptr;
    }
    if (owner.inline_exit.phase != InlinePhase::none) {
        Py_XSETREF(*owner.inline_exit.result, Py_NewRef(args[0]));
        Py_RETURN_NONE;
    }
    UnwindState* state = result_state(st, owner.scope, "set_result");
    if (state == nullptr) {
        return nullptr;
    }
    state->result = Ref::borrow(args[0]);
    Py_RETURN_NONE;
}

namespace {

Scope* exiting_prepared_scope(ModuleState* st) {
    _PyInterpreterFrame* frame = compat::block_frame(PyThreadState_Get());
    return frame != nullptr ? st->table->find(frame) : nullptr;
}

}  // namespace

PyObject* complete_scope(ModuleState* st, Scope* scope, PyObject* value, PyObject* outer) {
    UnwindState state;
    state.kind = ExitKind::prepared_frame;
    state.result = Ref::borrow(value);
    state.returning = true;
    finish_frame(st, scope, state, outer);
    if (state.exc) {
        compat::restore_exception(std::move(state.exc));
        return nullptr;
    }
    return state.result.release();
}

PyObject* unwind_scope(ModuleState* st, Scope* scope, PyObject* exc, PyObject* outer,
                       PyObject* result) {
    UnwindState state;
    state.kind = ExitKind::prepared_frame;
    state.exc = Ref::borrow(exc);
    if (result != nullptr && result != Py_None) {
        state.result = Ref::borrow(result);
    }
    finish_frame(st, scope, state, outer);
    if (!state.exc) {
        return Py_NewRef(state.result ? state.result.get() : Py_None);  // recovered
    }
    if (state.exc.get() == exc) {
        return Py_NewRef(st->reraise);
    }
    compat::restore_exception(std::move(state.exc));
    return nullptr;
}

PyObject* prepared_complete(PyObject* module, PyObject* value) {
    ModuleState* st = module_state(module);
    Scope* scope = exiting_prepared_scope(st);
    if (scope == nullptr) {
        return Py_NewRef(value);  // nothing was deferred: no allocation, no drain
    }
    return complete_scope(st, scope, value);
}

PyObject* prepared_unwind(PyObject* module, PyObject* exc) {
    ModuleState* st = module_state(module);
    Scope* scope = exiting_prepared_scope(st);
    if (scope == nullptr) {
        return Py_NewRef(st->reraise);
    }
    // Called from the prepared handler only (the record is a prepared one), where the first stack
    // slot holds the exception that enclosed the scope.
    PyObject* outer = scope->prepared
                          ? compat::enclosing_handled_exception(
                                static_cast<_PyInterpreterFrame*>(const_cast<void*>(scope->key)))
                          : nullptr;
    return unwind_scope(st, scope, exc, outer);
}

}  // namespace godefer
