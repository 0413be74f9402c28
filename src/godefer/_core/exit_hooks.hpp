// How the core learns that a frame with pending deferred calls exits: sys.monitoring on 3.12+,
// chained C trace and profile functions on 3.11.
#pragma once

#include "module_state.hpp"
#include "scope_table.hpp"

namespace godefer {

// Starts watching the frame of `scope` for its exit. Returns -1 with an exception set on failure.
int arm_frame_exit(ModuleState* st, Scope* scope);
// Bookkeeping for an armed record that leaves the table.
void disarm_frame_exit(ModuleState* st, Scope* scope) noexcept;
// Module exec / free.
int exit_hooks_init(PyObject* module, ModuleState* st);
void exit_hooks_free(ModuleState* st) noexcept;
int exit_hooks_traverse(ModuleState* st, visitproc visit, void* arg);

}  // namespace godefer
