// Per-code-object marks the core keeps in the code object's co_extra slot.
#pragma once

#include <Python.h>

#include <cstdint>

#include "module_state.hpp"

namespace godefer {

constexpr uintptr_t code_return_event = 0x1;   // PY_RETURN is on for godefer's tool (3.12+)
constexpr uintptr_t code_close_patched = 0x2;  // gh-140373 close() shortcut disabled (3.13.x)
constexpr uintptr_t code_prepared = 0x4;       // made by godefer's preparation: drains itself
constexpr uintptr_t code_open_coded = 0x8;     // keeps top-level defers in frame locals
// Open-coded code objects also record where their state and result locals live.
constexpr unsigned code_state_shift = 8;
constexpr unsigned code_result_shift = 20;
constexpr uintptr_t code_index_mask = 0xFFF;

inline int code_flags(ModuleState* st, PyCodeObject* code, uintptr_t* flags) {
    void* raw = nullptr;
#if PY_VERSION_HEX >= 0x030C0000
    const int rc =
        PyUnstable_Code_GetExtra(reinterpret_cast<PyObject*>(code), st->code_extra_index, &raw);
#else
    const int rc = _PyCode_GetExtra(reinterpret_cast<PyObject*>(code), st->code_extra_index, &raw);
#endif
    *flags = reinterpret_cast<uintptr_t>(raw);
    return rc;
}

inline int set_code_flags(ModuleState* st, PyCodeObject* code, uintptr_t flags) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyUnstable_Code_SetExtra(reinterpret_cast<PyObject*>(code), st->code_extra_index,
                                    reinterpret_cast<void*>(flags));
#else
    return _PyCode_SetExtra(reinterpret_cast<PyObject*>(code), st->code_extra_index,
                            reinterpret_cast<void*>(flags));
#endif
}

}  // namespace godefer
