// Open-coded defers: prepared functions whose defers are all top-level statements keep them in
// frame locals and call them inline when returning normally (the cost of a hand-written
// try/finally). The core takes over only for what inline code cannot do: an exception in flight
// (recover, errdefer, sys.exception()), or entries the core added to the same frame (a ScopeBound
// constructed there), which are always newer than every filled slot.
#pragma once

#include <Python.h>

#include "compat.hpp"
#include "module_state.hpp"
#include "scope_table.hpp"

namespace godefer {

// Local variable indices of an open-coded frame's state and result, or -1 when `code` is not
// open-coded.
struct OpenCodedLocals {
    int state = -1;
    int result = -1;
};
OpenCodedLocals open_coded_locals(ModuleState* st, PyCodeObject* code);

// State values of `__godefer_st__` in an open-coded frame (None while the body runs: preparation
// tests it with `is None`, which CPython specialises, unlike an int's truth value). Preparation
// writes the same numbers (_prepare.py, OPEN_*).
constexpr long open_state_body_raised = 1;  // the body raised: slots are called inline
constexpr long open_state_core = 3;         // the core holds entries too: exit through the core
constexpr long open_state_core_done = 4;    // the core ran (or is running) the exit
constexpr long open_state_core_raised = 5;  // the body raised and the core holds entries
constexpr long open_state_returning = 100;  // + i: calling slot i inline on return
constexpr long open_state_unwinding = 200;  // + i: calling slot i inline, the body's exception
                                            // in flight
constexpr long open_state_recovered = 300;  // + i: slot i recovered that exception
constexpr long open_state_span = 100;

// Where an open-coded frame is in calling its slots inline.
enum class InlinePhase : uint8_t { none, returning, unwinding, recovered };
struct InlineExit {
    InlinePhase phase = InlinePhase::none;
    long slot = -1;               // the slot being called
    PyObject** state = nullptr;   // the frame's state local
    PyObject** result = nullptr;  // the frame's result local
};
InlineExit inline_exit(ModuleState* st, _PyInterpreterFrame* frame);

// A registration the core made in an open-coded frame: from now on the frame exits through the
// core. `frame` is a _PyInterpreterFrame*.
int note_core_entry(ModuleState* st, void* frame);

// _prepared_unwind_slots(result, state, *groups): the exception being handled leaves the frame;
// the state says which slots are still pending (all, or those below the slot that raised), and
// `result` is the value set_result() gave while unwinding inline (None: none).
// _prepared_complete_slots(result, state, *groups): a normal exit the core finishes (the core
// holds entries of the frame, or slot i recovered). Each group is False (slot not reached) or
// (kind, fn, args tuple, kwargs dict or None), oldest first.
PyObject* prepared_unwind_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* prepared_complete_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
// The same for a coroutine whose slots are awaited (adefer): an AsyncExit the frame steps.
PyObject* prepared_aunwind_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* prepared_acomplete_slots(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
// _prepared_bind_slots(names): in the exception handler of an open-coded function whose
// top-level slots get no None before the body runs (preparation leaves them unbound until their
// statement fills them), binds to None those of `names` the body did not reach, so the
// handler's tests read them as unreached. Names bound already keep their value.
PyObject* prepared_bind_slots(PyObject* module, PyObject* names);
// Open-coded `with scope():` blocks keep their slots in locals too, with a state local named
// `__godefer_b<K>_st__` (None while the block runs, 3 once the core holds entries of it).
inline constexpr const char* block_state_prefix = "__godefer_b";
inline constexpr const char* block_state_suffix = "_st__";

// A registration the core is about to make in an open-coded frame: if an open-coded block is
// running there, the entry is the block's (its first one opens the block's part of the record
// with a mark). Returns 1 if so, 0 if not, -1 with an exception set.
int join_open_block(void* frame, Scope* scope);

// Whether an open-coded block of `frame` is calling one of its slots inline (for result():
// a block has none).
bool calling_block_slot(ModuleState* st, _PyInterpreterFrame* frame);

// _prepared_block_unwind(state, K, *groups): in block K's handler, the exception being handled
// leaves the block (state None or 3), or slot i raised on a normal exit (state 100 + i), or the
// core's exit raised (state 4). Returns RERAISE (it goes on), None (recovered: execution goes on
// after the block), or raises what replaced it.
// _prepared_block_complete(K, *groups): a normal exit of block K, whose entries the core holds
// too.
PyObject* prepared_block_unwind(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* prepared_block_complete(PyObject* module, PyObject* const* args, Py_ssize_t nargs);
PyObject* mark_open_coded(PyObject* module, PyObject* code);

}  // namespace godefer
