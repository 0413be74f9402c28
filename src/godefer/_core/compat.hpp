// Every per-version difference of the CPython internals the core touches lives here.
//
// Supported: CPython 3.11, 3.12, 3.13. The rest of the core sees only these helpers.
#pragma once

#include <Python.h>
#include <frameobject.h>

#include <cstdint>

#include "pyref.hpp"

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif
#if PY_VERSION_HEX >= 0x030D0000
#include <opcode.h>
#endif

// The interpreter frame layout is internal to CPython and differs per version; everything the
// core reads from it goes through the helpers below.
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#error "godefer supports CPython 3.11, 3.12 and 3.13"
#endif

#if PY_VERSION_HEX >= 0x030C0000
#define GODEFER_USE_MONITORING 1  // sys.monitoring (PEP 669) exit hooks
#else
#define GODEFER_USE_TRACING 1  // chained C trace/profile functions (3.11)
#endif

namespace godefer::compat {

// A frame's identity in the scope table: the interpreter frame (_PyInterpreterFrame*), readable
// from the thread state without materialising a frame object. A record made by the runtime path
// also holds the frame's PyFrameObject and is only ever matched while that frame object is still
// attached to the interpreter frame, so it can never fire for another frame that reuses the same
// memory. Prepared frames always drain their own record at exit and hold no frame object; nor
// does a runtime record that is armed as it is made for a frame whose exits are always seen
// (exits_always_seen): its exit hook releases it before the frame's memory can be reused.
using FrameKey = const void*;

inline _PyInterpreterFrame* current_iframe(PyThreadState* tstate) noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#else
    return tstate->cframe->current_frame;
#endif
}

inline PyCodeObject* iframe_code(_PyInterpreterFrame* frame) noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    return _PyFrame_GetCode(frame);
#else
    return frame->f_code;
#endif
}

// Whether every exit of `frame` reaches an armed exit hook, so that a record of it can never
// outlive it unseen: on 3.12+, a frame its thread owns (not a generator's or coroutine's, which
// can be finalised while a callback runs, when sys.monitoring reports nothing), since
// schedule() refuses to arm a hook inside such a callback. 3.11's trace functions can be
// replaced by other tools: never.
inline bool exits_always_seen(_PyInterpreterFrame* frame) noexcept {
#ifdef GODEFER_USE_MONITORING
    return frame->owner == FRAME_OWNED_BY_THREAD;
#else
    (void)frame;
    return false;
#endif
}

// The PyFrameObject attached to an interpreter frame, or null if none was made.
inline PyObject* attached_frame_object(_PyInterpreterFrame* frame) noexcept {
    return reinterpret_cast<PyObject*>(frame->frame_obj);
}

inline _PyInterpreterFrame* iframe_of(PyFrameObject* frame) noexcept { return frame->f_frame; }

// Skips the frames CPython pushes for C calls into the interpreter and frames still being set up.
inline _PyInterpreterFrame* complete_frame(_PyInterpreterFrame* frame) noexcept {
    while (frame != nullptr && _PyFrame_IsIncomplete(frame)) {
        frame = frame->previous;
    }
    return frame;
}

inline _PyInterpreterFrame* caller_frame(_PyInterpreterFrame* frame) noexcept {
    return frame != nullptr ? complete_frame(frame->previous) : nullptr;
}

// In the exception handler that preparation wraps around a scope's body (a try statement at stack
// depth 0), CPython's PUSH_EXC_INFO left the handled exception that enclosed the scope in the
// first value-stack slot: what sys.exception() must show after a recovery. Null if the slot does
// not hold an exception or None (then the caller falls back to the current one).
inline PyObject* saved_exception_at(_PyInterpreterFrame* frame, int depth) noexcept {
    PyObject* saved = frame->localsplus[iframe_code(frame)->co_nlocalsplus + depth];
    if (saved == Py_None || (saved != nullptr && PyExceptionInstance_Check(saved))) {
        return saved;
    }
    return nullptr;
}

inline PyObject* enclosing_handled_exception(_PyInterpreterFrame* frame) noexcept {
    return saved_exception_at(frame, 0);
}

// The instruction the frame is executing (a CALL into the core), in code units.
inline Py_ssize_t current_instruction(_PyInterpreterFrame* frame) noexcept {
    PyCodeObject* code = iframe_code(frame);
#if PY_VERSION_HEX >= 0x030D0000
    return frame->instr_ptr - _PyCode_CODE(code);
#else
    return frame->prev_instr - _PyCode_CODE(code);
#endif
}

// One varint of a code object's exception table (6 bits a byte, bit 6: more follow).
inline const unsigned char* exception_table_varint(const unsigned char* p,
                                                   unsigned& value) noexcept {
    constexpr unsigned payload = 63U;
    constexpr unsigned more = 64U;
    value = *p & payload;
    while ((*p & more) != 0U) {
        ++p;
        value = (value << 6U) | (*p & payload);
    }
    return p + 1;
}

// Inside the body of an `except` clause at any stack depth: the handled exception the clause's
// PUSH_EXC_INFO saved, i.e. what sys.exception() showed where its try statement began. The
// exception table entry covering the current instruction is the clause's cleanup handler, whose
// depth is one above that saved slot. Null when the frame is not in such a clause.
inline PyObject* handler_saved_exception(_PyInterpreterFrame* frame) noexcept {
    PyObject* table = iframe_code(frame)->co_exceptiontable;
    const auto* p = reinterpret_cast<const unsigned char*>(PyBytes_AS_STRING(table));
    const unsigned char* end = p + PyBytes_GET_SIZE(table);
    const auto here = static_cast<unsigned>(current_instruction(frame));
    while (p < end) {
        unsigned start = 0;
        unsigned size = 0;
        unsigned target = 0;
        unsigned depth_lasti = 0;
        p = exception_table_varint(p, start);
        p = exception_table_varint(p, size);
        p = exception_table_varint(p, target);
        p = exception_table_varint(p, depth_lasti);
        if (start > here) {
            break;  // entries are sorted by start
        }
        if (here < start + size) {
            const unsigned depth = depth_lasti >> 1U;
            const bool lasti = (depth_lasti & 1U) != 0U;
            return lasti && depth > 0 ? saved_exception_at(frame, static_cast<int>(depth) - 1)
                                      : nullptr;
        }
    }
    return nullptr;
}

#if PY_VERSION_HEX < 0x030C0000
// 3.11 gives list/set/dict comprehensions a frame of their own; scopes must not see it.
inline bool is_comprehension_code(PyCodeObject* code) noexcept {
    static const char* const names[] = {"<listcomp>", "<setcomp>", "<dictcomp>"};
    for (const char* name : names) {
        if (PyUnicode_CompareWithASCIIString(code->co_name, name) == 0) {
            return true;
        }
    }
    return false;
}
#endif

// The frame of the innermost code block calling into the core: the current Python frame, or on
// 3.11 the block enclosing a comprehension's frame.
inline _PyInterpreterFrame* block_frame(PyThreadState* tstate) noexcept {
    _PyInterpreterFrame* frame = complete_frame(current_iframe(tstate));
#if PY_VERSION_HEX < 0x030C0000
    while (frame != nullptr && is_comprehension_code(iframe_code(frame))) {
        frame = caller_frame(frame);
    }
#endif
    return frame;
}

// Exception fetch/restore as one object, with its traceback attached.
inline Ref fetch_exception() noexcept {
#if PY_VERSION_HEX >= 0x030C0000
    return Ref::steal(PyErr_GetRaisedException());
#else
    PyObject* type = nullptr;
    PyObject* value = nullptr;
    PyObject* tb = nullptr;
    PyErr_Fetch(&type, &value, &tb);
    if (type == nullptr) {
        return {};
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != nullptr && value != nullptr) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return Ref::steal(value);
#endif
}

// Sets `exc` (may be null: no-op) as the raised exception, consuming the reference.
inline void restore_exception(Ref exc) noexcept {
    if (!exc) {
        return;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc.release());
#else
    PyObject* value = exc.release();
    PyObject* type = Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(value)));
    PyErr_Restore(type, value, PyException_GetTraceback(value));
#endif
}

#ifdef GODEFER_USE_TRACING
// True when a 3.11 PyTrace_RETURN event for `frame` is a yield (generator, coroutine or async
// generator suspending), not an exit. YIELD_VALUE marks the generator suspended before it
// reports the event. FRAME_SUSPENDED is -1 in 3.11's pycore_frame.h.
inline bool is_suspending(PyFrameObject* frame) noexcept {
    constexpr int8_t frame_suspended = -1;
    Ref gen = Ref::steal(PyFrame_GetGenerator(frame));
    if (!gen) {
        return false;
    }
    return reinterpret_cast<PyGenObject*>(gen.get())->gi_frame_state == frame_suspended;
}
#endif

// CPython 3.13.0-3.13.9 skip a generator's frame entirely on close() when it is suspended at a
// yield outside any try block (gh-140373), so no PY_UNWIND event reports the exit. The shortcut
// reads a bit of the RESUME oparg after each yield; clearing that bit in a code object that has
// pending runtime-path deferred calls makes close() throw GeneratorExit into the frame as every
// other version does. The bit has no other reader.
inline bool needs_close_shortcut_patch() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_Version < 0x030D0A00;
#else
    return false;
#endif
}

inline int disable_close_shortcut(PyCodeObject* code) noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    constexpr int resume_location_mask = 0x3;
    constexpr int resume_depth1_mask = 0x4;
    Ref bytes = Ref::steal(PyCode_GetCode(code));
    if (!bytes) {
        return -1;
    }
    const auto* raw = reinterpret_cast<const uint8_t*>(PyBytes_AS_STRING(bytes.get()));
    const Py_ssize_t size = PyBytes_GET_SIZE(bytes.get());
    auto* live = reinterpret_cast<uint8_t*>(code->co_code_adaptive);
    for (Py_ssize_t i = 0; i + 1 < size; i += 2) {
        const int arg = raw[i + 1];
        if (raw[i] == RESUME && (arg & resume_depth1_mask) != 0 &&
            (arg & resume_location_mask) != 0) {
            live[i + 1] = static_cast<uint8_t>(arg & ~resume_depth1_mask);
        }
    }
#else
    (void)code;
#endif
    return 0;
}

}  // namespace godefer::compat
