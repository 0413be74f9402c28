// Pending deferred calls, one record per frame that has any, keyed by the frame's identity.
#pragma once

#include <Python.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "compat.hpp"
#include "pyref.hpp"

namespace godefer {

enum class Kind : uint8_t {
    always = 0,      // defer
    on_error = 1,    // errdefer
    on_success = 2,  // okdefer
    exit_cm = 3,     // scoped(cm): call cm.__exit__(type, value, tb), may suppress
};

struct UnwindState;

// One popped entry, owning its references, laid out for a vectorcall.
class PoppedEntry {
   public:
    static constexpr std::size_t inline_args = 6;

    PoppedEntry() = default;
    PoppedEntry(const PoppedEntry&) = delete;
    PoppedEntry& operator=(const PoppedEntry&) = delete;
    PoppedEntry(PoppedEntry&&) = delete;
    PoppedEntry& operator=(PoppedEntry&&) = delete;
    ~PoppedEntry();

    Kind kind = Kind::always;
    PyObject* fn = nullptr;
    PyObject* kwnames = nullptr;
    std::size_t nargs = 0;  // argument slots, positional then keyword values
    [[nodiscard]] PyObject** args() noexcept { return heap_ ? heap_.get() : inline_.data(); }
    void reserve(std::size_t n);

   private:
    std::array<PyObject*, inline_args> inline_{};
    std::unique_ptr<PyObject*[]> heap_;
};

// The deferred calls of one frame: a LIFO of entries, plus the start index of each open
// `with scope():` block. Entries are stored flat, each as
//   [fn][arg0..argN-1][kwnames if any][header]
// where the header is an integer (not an object) giving kind, N and whether kwnames follows. That
// costs 16 bytes per entry beyond its arguments, and no allocation per entry once the vector has
// grown.
class Scope {
   public:
    Scope(compat::FrameKey key, PyObject* frame) noexcept;
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    Scope(Scope&&) = delete;
    Scope& operator=(Scope&&) = delete;
    ~Scope();

    // Takes new references to everything; `args` holds positional then keyword values.
    void push(Kind kind, PyObject* fn, PyObject* const* args, std::size_t nargs,
              PyObject* kwnames);
    // Moves the last entry into `out`. Precondition: size() > 0.
    void pop(PoppedEntry& out);

    [[nodiscard]] std::size_t size() const noexcept { return slots_.size(); }
    [[nodiscard]] bool empty() const noexcept { return slots_.empty() && marks.empty(); }

    compat::FrameKey key;
    PyObject* frame;                       // strong reference to the PyFrameObject
    std::vector<std::size_t> marks;        // slot index where each open block scope starts
    bool armed = false;                    // a frame-exit hook watches this frame
    UnwindState* unwinding = nullptr;      // the drain in progress, if any
#ifdef GODEFER_USE_TRACING
    Ref pending_exception;                 // last exception reported in this frame (3.11)
#endif

   private:
    std::vector<uintptr_t> slots_;
};

class ScopeTable {
   public:
    [[nodiscard]] Scope* find(compat::FrameKey key) const noexcept {
        auto it = scopes_.find(key);
        return it == scopes_.end() ? nullptr : it->second.get();
    }
    // Returns the record for key, creating it (holding `frame`) if absent.
    Scope* find_or_create(compat::FrameKey key, PyObject* frame);
    void erase(Scope* scope) noexcept;
    [[nodiscard]] std::size_t size() const noexcept { return scopes_.size(); }
    void clear() noexcept;

    // Records being drained right now (any thread), innermost last: recover() and result() look
    // here for the scope whose deferred call is asking.
    std::vector<Scope*> draining;

   private:
    std::unordered_map<compat::FrameKey, std::unique_ptr<Scope>> scopes_;
};

}  // namespace godefer
