#include "open_coded.hpp"

#include <string_view>
#include <vector>

#include "api.hpp"
#include "async_exit.hpp"
#include "code_flags.hpp"
#include "compat.hpp"
#include "defer_list.hpp"
#include "unwind.hpp"

namespace godefer {

namespace {

int local_index(PyCodeObject* code, const char* name) {
    PyObject* names = code->co_localsplusnames;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); ++i) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(names, i), name) == 0) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

long state_value(PyObject* state) {
    if (state == nullptr || !PyLong_CheckExact(state)) {
        return -1;
    }
    return PyLong_AsLong(state);
}

// Appends the call kind fn(*pos, **kwargs) to `out` (kwargs: a dict or null).
int encode_call(Kind kind, PyObject* fn, PyObject* const* pos, Py_ssize_t npos, PyObject* kwargs,
                PyVector<uintptr_t>& out) {
    std::vector<PyObject*> args(pos, pos + npos);
    Ref kwnames;
    if (kwargs != nullptr && PyDict_GET_SIZE(kwargs) > 0) {
        kwnames = Ref::steal(PyTuple_New(PyDict_GET_SIZE(kwargs)));
        if (!kwnames) {
            return -1;
        }
        Py_ssize_t at = 0;
        Py_ssize_t k = 0;
        PyObject* key = nullptr;
        PyObject* value = nullptr;
        while (PyDict_Next(kwargs, &at, &key, &value) != 0) {
            PyTuple_SET_ITEM(kwnames.get(), k++, Py_NewRef(key));
            args.push_back(value);
        }
    }
    Scope::encode(out, kind, fn, args.data(), args.size(), kwnames.get());
    return 0;
}

// Appends one (kind, fn, args tuple, kwargs dict or None) group to `out`.
int encode_group(PyObject* group, PyVector<uintptr_t>& out) {
    if (PyTuple_GET_SIZE(group) != 4 || !PyTuple_Check(PyTuple_GET_ITEM(group, 2))) {
        PyErr_SetString(PyExc_SystemError, "godefer: malformed open-coded slot");
        return -1;
    }
    const auto kind = static_cast<Kind>(PyLong_AsLong(PyTuple_GET_ITEM(group, 0)));
    PyObject* pos = PyTuple_GET_ITEM(group, 2);
    PyObject* kw = PyTuple_GET_ITEM(group, 3);
    return encode_call(kind, PyTuple_GET_ITEM(group, 1),
                       reinterpret_cast<PyTupleObject*>(pos)->ob_item, PyTuple_GET_SIZE(pos),
                       kw != Py_None ? kw : nullptr, out);
}

// A loop's DeferList, oldest entry first (entries already called are None).
int encode_list(PyObject* list, PyVector<uintptr_t>& out) {
    std::vector<ListEntry> entries;
    for (Py_ssize_t end = PyList_GET_SIZE(list); end > 0;) {
        if (PyList_GET_ITEM(list, end - 1) == Py_None) {
            --end;
            continue;
        }
        ListEntry entry;
        if (!list_entry_before(list, end, entry)) {
            return -1;
        }
        entries.push_back(entry);
        end = entry.start;
    }
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
        if (encode_call(it->kind, it->fn, it->args, it->nargs, it->kwargs, out) < 0) {
            return -1;
        }
    }
    return 0;
}

// Decodes the slot groups preparation passes (oldest first) into scope entries, leaving out
// slots at and above `ran_from` (those a normal exit already called or passed), except that the
// list of slot `ran_from` still holds the entries its run had not reached.
int encode_groups(PyObject* const* groups, Py_ssize_t count, PyVector<uintptr_t>& out,
                  Py_ssize_t ran_from) {
    for (Py_ssize_t i = 0; i < count && i <= ran_from; ++i) {
        PyObject* group = groups[i];
        if (PyList_Check(group)) {
            if (encode_list(group, out) < 0) {
                return -1;
            }
        } else if (i < ran_from && PyTuple_Check(group) && encode_group(group, out) < 0) {
            return -1;
        }  // else False/None: the slot's statement was not reached
    }
    return 0;
}

// The record of the calling prepared frame with the slots put under its own entries.
Scope* scope_with_slots(ModuleState* st, _PyInterpreterFrame* frame, PyObject* const* groups,
                        Py_ssize_t count, Py_ssize_t ran_from) {
    PyVector<uintptr_t> encoded;
    if (encode_groups(groups, count, encoded, ran_from) < 0) {
        return nullptr;
    }
    Scope* scope = st->table->find_or_create(frame, nullptr, true);
    scope->push_bottom(encoded);
    return scope;
}

}  // namespace

OpenCodedLocals open_coded_locals(ModuleState* st, PyCodeObject* code) {
    uintptr_t flags = 0;
    if (code_flags(st, code, &flags) < 0 || (flags & code_open_coded) == 0) {
        PyErr_Clear();
        return {};
    }
    return {static_cast<int>((flags >> code_state_shift) & code_index_mask),
            static_cast<int>((flags >> code_result_shift) & code_index_mask)};
}

InlineExit inline_exit(ModuleState* st, _PyInterpreterFrame* frame) {
    InlineExit out;
    if (frame == nullptr) {
        return out;
    }
    const OpenCodedLocals locals = open_coded_locals(st, compat::iframe_code(frame));
    if (locals.state < 0) {
        return out;
    }
    const long value = state_value(frame->localsplus[locals.state]);
    if (value < open_state_returning || value >= open_state_recovered + open_state_span) {
        return out;
    }
    static constexpr InlinePhase phases[] = {InlinePhase::returning, InlinePhase::unwinding,
                                             InlinePhase::recovered};
    const long band = (value - open_state_returning) / open_state_span;
    out.phase = phases[band];
    out.slot = (value - open_state_returning) % open_state_span;
    out.state = &frame->localsplus[locals.state];
    out.result = &frame->localsplus[locals.result];
    return out;
}

int note_core_entry(ModuleState* st, void* frame_ptr) {
    auto* frame = static_cast<_PyInterpreterFrame*>(frame_ptr);
    const OpenCodedLocals locals = open_coded_locals(st, compat::iframe_code(frame));
    if (locals.state < 0) {
        return 0;
    }
    PyObject** state = &frame->localsplus[locals.state];
    if (*state == Py_None) {  // running: the state starts as None
        Py_XSETREF(*state, PyLong_FromLong(open_state_core));
        if (*state == nullptr) {
            return -1;
        }
        divert_slot_checks(st, frame);  // later fills go to the core too
    }
    return 0;
}

namespace {

// Slots at and above `ran_from` already ran (or were passed) inline.
Py_ssize_t ran_from(long state, long band) {
    return state >= band && state < band + open_state_span ? state - band : PY_SSIZE_T_MAX;
}

// What an entry point called from a prepared exception handler needs: the calling frame and the
// exception being handled. False (SystemError set) when called anywhere else, or with fewer
// than `min_args` arguments.
bool in_handler(const char* who, Py_ssize_t nargs, Py_ssize_t min_args, _PyInterpreterFrame*& frame,
                Ref& exc) {
    frame = compat::block_frame(PyThreadState_Get());
    exc = Ref::steal(PyErr_GetHandledException());
    if (frame == nullptr || nargs < min_args || !exc || exc.get() == Py_None) {
        PyErr_Format(PyExc_SystemError, "godefer: %s() outside its handler", who);
        return false;
    }
    return true;
}

}  // namespace

namespace {

// An open-coded frame leaving by the exception being handled (`exc`): its record with the slots
// the state (args[1]) says are pending under the core's entries, and in `outer` what enclosed
// the scope. Null with an exception set when called anywhere but the frame's handler.
Scope* unwinding_slots(ModuleState* st, const char* who, PyObject* const* args, Py_ssize_t nargs,
                       Ref& exc, PyObject*& outer) {
    _PyInterpreterFrame* frame = nullptr;
    if (!in_handler(who, nargs, 2, frame, exc)) {
        return nullptr;
    }
    const long state = state_value(args[1]);
    const Py_ssize_t pending = state >= open_state_unwinding
                                   ? ran_from(state, open_state_unwinding)
                                   : ran_from(state, open_state_returning);
    // The located handler is at the frame's stack depth 0, where PUSH_EXC_INFO saved the
    // exception that enclosed the scope.
    outer = compat::enclosing_handled_exception(frame);
    return scope_with_slots(st, frame, args + 2, nargs - 2, pending);
}

// A normal exit of an open-coded frame that the core finishes: as above, with `outer` set only
// after a recovery (the state in the recovered band): the handler of the body is still running,
// and what sys.exception() shows from now on is the exception that enclosed the scope, saved in
// the first stack slot. Null `outer` otherwise.
Scope* completing_slots(ModuleState* st, const char* who, PyObject* const* args, Py_ssize_t nargs,
                        PyObject*& outer) {
    _PyInterpreterFrame* frame = compat::block_frame(PyThreadState_Get());
    if (frame == nullptr || nargs < 2) {
        PyErr_Format(PyExc_SystemError, "godefer: %s() misused", who);
        return nullptr;
    }
    const Py_ssize_t pending = ran_from(state_value(args[1]), open_state_recovered);
    outer = pending != PY_SSIZE_T_MAX ? compat::enclosing_handled_exception(frame) : nullptr;
    return scope_with_slots(st, frame, args + 2, nargs - 2, pending);
}

}  // namespace

PyObject* prepared_bind_slots(PyObject* /*module*/, PyObject* names) {
    _PyInterpreterFrame* frame =
        compat::complete_frame(compat::current_iframe(PyThreadState_Get()));
    if (frame == nullptr || !PyTuple_Check(names)) {
        PyErr_SetString(PyExc_SystemError, "godefer: _prepared_bind_slots() outside its handler");
        return nullptr;
    }
    PyCodeObject* code = compat::iframe_code(frame);
    PyObject* locals = code->co_localsplusnames;
    for (Py_ssize_t n = 0; n < PyTuple_GET_SIZE(names); ++n) {
        PyObject* name = PyTuple_GET_ITEM(names, n);
        // Both are interned identifiers of the same code object: identity finds them.
        int index = -1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(locals) && index < 0; ++i) {
            index = PyTuple_GET_ITEM(locals, i) == name ? static_cast<int>(i) : -1;
        }
        if (index < 0 && PyUnicode_Check(name)) {
            const char* utf8 = PyUnicode_AsUTF8(name);
            if (utf8 != nullptr) {
                index = local_index(code, utf8);
            } else {
                PyErr_Clear();  // reported as missing below
            }
        }
        if (index < 0) {
            PyErr_Format(PyExc_SystemError, "godefer: no slot local %R in %R", name, code);
            return nullptr;
        }
        // A plain local (nothing closes over a slot): null until its statement fills it.
        if (frame->localsplus[index] == nullptr) {
            frame->localsplus[index] = Py_NewRef(Py_None);
        }
    }
    Py_RETURN_NONE;
}

PyObject* prepared_unwind_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    Ref exc;
    PyObject* outer = nullptr;
    Scope* scope = unwinding_slots(st, "_prepared_unwind_slots", args, nargs, exc, outer);
    if (scope == nullptr) {
        return nullptr;
    }
    return unwind_scope(st, scope, exc.get(), outer, args[0]);
}

PyObject* prepared_complete_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    PyObject* outer = nullptr;
    Scope* scope = completing_slots(st, "_prepared_complete_slots", args, nargs, outer);
    if (scope == nullptr) {
        return nullptr;
    }
    return complete_scope(st, scope, args[0], outer);
}

PyObject* prepared_aunwind_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    Ref exc;
    AsyncExitStart start;
    Scope* scope = unwinding_slots(st, "_prepared_aunwind_slots", args, nargs, exc, start.outer);
    if (scope == nullptr) {
        return nullptr;
    }
    start.kind = ExitKind::prepared_frame;
    start.exc = exc.get();
    start.result = args[0];
    return make_async_exit(st, scope, start);
}

PyObject* prepared_acomplete_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    AsyncExitStart start;
    Scope* scope = completing_slots(st, "_prepared_acomplete_slots", args, nargs, start.outer);
    if (scope == nullptr) {
        return nullptr;
    }
    if (start.outer == nullptr) {  // a return has left any handler: what enclosed the function
        start.outer = PyThreadState_Get()->exc_info->exc_value;
    }
    start.kind = ExitKind::prepared_frame;
    start.result = args[0];
    return make_async_exit(st, scope, start);
}

// ---- open-coded `with scope():` blocks ------------------------------------------------------

namespace {

// The number K of an open-coded block's local (`__godefer_b<K>_...`, after the prefix), or -1.
long block_number(std::string_view rest) {
    long k = -1;
    for (const char c : rest) {
        if (c < '0' || c > '9') {
            return c == '_' ? k : -1;
        }
        k = (k < 0 ? 0 : k * 10) + (c - '0');
    }
    return -1;
}

// Calls f(index, is_state, K) for each local of an open-coded block in `frame`'s code: block K's
// state (`__godefer_b<K>_st__`) or one of its slots (`__godefer_b<K>_...`). Returns early when f
// returns true.
template <typename F>
void each_block_local(_PyInterpreterFrame* frame, const F& f) {
    PyObject* names = compat::iframe_code(frame)->co_localsplusnames;
    const std::string_view prefix = block_state_prefix;
    const std::string_view suffix = block_state_suffix;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); ++i) {
        Py_ssize_t size = 0;
        const char* utf8 = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(names, i), &size);
        if (utf8 == nullptr) {
            PyErr_Clear();
            continue;
        }
        // The shortest is a slot of one digit in a block of one digit, `__godefer_b0_0__`: as
        // long as the prefix and the state's suffix together.
        const std::string_view name(utf8, static_cast<std::size_t>(size));
        if (name.size() < prefix.size() + suffix.size() ||
            name.substr(0, prefix.size()) != prefix) {
            continue;
        }
        const long k = block_number(name.substr(prefix.size()));
        if (k >= 0 &&
            f(static_cast<int>(i), name.substr(name.size() - suffix.size()) == suffix, k)) {
            return;
        }
    }
}

// The state local of the innermost open-coded block now running in `frame` (value None or 3), or
// -1. Every exit of a block leaves another value in its state, so the running blocks are one
// nest, and preparation numbers a nested block after the block around it: the highest number is
// the innermost.
int running_open_block(_PyInterpreterFrame* frame) {
    int found = -1;
    long innermost = -1;
    each_block_local(frame, [&](int i, bool is_state, long k) {
        PyObject* value = frame->localsplus[i];
        if (is_state && k > innermost &&
            (value == Py_None || state_value(value) == open_state_core)) {
            found = i;
            innermost = k;
        }
        return false;
    });
    return found;
}

// After open-coded block K's exit: the locals holding its calls (and the fallback temporary)
// let go of them, as a finished `with scope():` keeps nothing. States stay.
void release_block_locals(_PyInterpreterFrame* frame, long block) {
    each_block_local(frame, [&](int i, bool is_state, long k) {
        if (k == block && !is_state && frame->localsplus[i] != nullptr) {
            Py_SETREF(frame->localsplus[i], Py_NewRef(Py_None));
        }
        return false;
    });
    const int fallback = local_index(compat::iframe_code(frame), "__godefer_f__");
    if (fallback >= 0 && frame->localsplus[fallback] != nullptr) {
        Py_SETREF(frame->localsplus[fallback], Py_NewRef(Py_None));
    }
}

// Ends an open-coded block through the core: its slots (groups, oldest first, those at and
// above `pending` already called) go under the entries the core holds for it, which start at
// `floor`, and all of them run as the block's exit with `exc` in flight (null: none).
PyObject* drain_block(ModuleState* st, _PyInterpreterFrame* frame, long block, Scope* scope,
                      std::size_t floor, PyObject* const* groups, Py_ssize_t count,
                      Py_ssize_t pending, PyObject* exc, PyObject* outer) {
    PyVector<uintptr_t> encoded;
    if (encode_groups(groups, count, encoded, pending) < 0) {
        release_if_empty(st, scope);
        return nullptr;
    }
    scope->insert_at(floor, encoded);
    release_block_locals(frame, block);
    UnwindState state;
    state.kind = ExitKind::block;
    state.exc = Ref::borrow(exc);
    drain(st, *scope, floor, state, outer);
    release_if_empty(st, scope);
    if (exc != nullptr && state.exc.get() == exc) {
        return Py_NewRef(st->reraise);  // the exception goes on
    }
    if (state.exc) {
        compat::restore_exception(std::move(state.exc));
        return nullptr;
    }
    Py_RETURN_NONE;  // completed, or the exception was recovered: go on after the block
}

}  // namespace

bool calling_block_slot(ModuleState* st, _PyInterpreterFrame* frame) {
    if (open_coded_locals(st, compat::iframe_code(frame)).state < 0) {
        return false;
    }
    bool calling = false;
    each_block_local(frame, [&](int i, bool is_state, long /*k*/) {
        const long value = is_state ? state_value(frame->localsplus[i]) : -1;
        calling = value >= open_state_returning && value < open_state_returning + open_state_span;
        return calling;
    });
    return calling;
}

int join_open_block(void* frame_ptr, Scope* scope) {
    auto* frame = static_cast<_PyInterpreterFrame*>(frame_ptr);
    const int local = running_open_block(frame);
    if (local < 0) {
        return 0;
    }
    PyObject** state = &frame->localsplus[local];
    if (*state == Py_None) {  // the block's first entry in the core: its entries start here
        PyObject* core = PyLong_FromLong(open_state_core);
        if (core == nullptr) {
            return -1;
        }
        Py_SETREF(*state, core);
        scope->marks.push_back(scope->size());
    }
    return 1;
}

PyObject* prepared_block_unwind(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    _PyInterpreterFrame* frame = nullptr;
    Ref exc;
    if (!in_handler("_prepared_block_unwind", nargs, 2, frame, exc)) {
        return nullptr;
    }
    const long state = state_value(args[0]);
    const long block = PyLong_AsLong(args[1]);
    if (block < 0) {
        return nullptr;
    }
    if (state == open_state_core_done) {
        return Py_NewRef(st->reraise);  // raised by the exit the core already ran
    }
    Scope* scope = st->table->find_or_create(frame, nullptr, true);
    std::size_t floor = scope->size();
    if (state == open_state_core && !scope->marks.empty()) {
        floor = scope->marks.back();
        scope->marks.pop_back();
    }
    return drain_block(st, frame, block, scope, floor, args + 2, nargs - 2,
                       ran_from(state, open_state_returning), exc.get(),
                       compat::handler_saved_exception(frame));
}

PyObject* prepared_block_complete(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    _PyInterpreterFrame* frame = compat::block_frame(PyThreadState_Get());
    Scope* scope = frame != nullptr ? st->table->find(frame) : nullptr;
    const long block = nargs > 0 ? PyLong_AsLong(args[0]) : -1;
    if (scope == nullptr || scope->marks.empty() || block < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_SystemError, "godefer: _prepared_block_complete() misused");
        return nullptr;
    }
    const std::size_t floor = scope->marks.back();
    scope->marks.pop_back();
    return drain_block(st, frame, block, scope, floor, args + 1, nargs - 1, PY_SSIZE_T_MAX, nullptr,
                       nullptr);
}

PyObject* mark_open_coded(PyObject* module, PyObject* code_obj) {
    if (!PyCode_Check(code_obj)) {
        PyErr_SetString(PyExc_TypeError, "_mark_open_coded() takes a code object");
        return nullptr;
    }
    ModuleState* st = module_state(module);
    auto* code = reinterpret_cast<PyCodeObject*>(code_obj);
    const int state = local_index(code, "__godefer_st__");
    const int result = local_index(code, "__godefer_rv__");
    if (state < 0 || result < 0 || state > static_cast<int>(code_index_mask) ||
        result > static_cast<int>(code_index_mask)) {
        PyErr_SetString(PyExc_ValueError, "_mark_open_coded(): not an open-coded function");
        return nullptr;
    }
    uintptr_t flags = 0;
    if (code_flags(st, code, &flags) < 0) {
        return nullptr;
    }
    flags |= code_prepared | code_open_coded;
    flags |= static_cast<uintptr_t>(state) << code_state_shift;
    flags |= static_cast<uintptr_t>(result) << code_result_shift;
    if (set_code_flags(st, code, flags) < 0) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

}  // namespace godefer
