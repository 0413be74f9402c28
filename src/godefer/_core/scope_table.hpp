// Pending deferred calls, one record per frame that has any, keyed by the frame's identity.
#pragma once

#include <Python.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "compat.hpp"
#include "pymem_allocator.hpp"
#include "pyref.hpp"

namespace godefer {

enum class Kind : uint8_t {
    always = 0,      // defer
    on_error = 1,    // errdefer
    on_success = 2,  // okdefer
    exit_cm = 3,     // scoped(cm): call cm.__exit__(type, value, tb), may suppress
    // Awaited by an async function's exit (async_exit.cpp); a drain that cannot await refuses them.
    await_call = 4,     // adefer(fn, ...): await fn(...)
    await_exit_cm = 5,  // ascoped(cm): await cm.__aexit__(type, value, tb), may suppress
};

// Whether an entry of `kind` must be awaited.
constexpr bool awaited(Kind kind) noexcept {
    return kind == Kind::await_call || kind == Kind::await_exit_cm;
}

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
    Scope() noexcept = default;
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    Scope(Scope&&) = delete;
    Scope& operator=(Scope&&) = delete;
    ~Scope();

    // Takes new references to everything; `args` holds positional then keyword values.
    void push(Kind kind, PyObject* fn, PyObject* const* args, std::size_t nargs, PyObject* kwnames);
    // Inserts entries below all existing ones (they ran earlier, so they run later).
    void push_bottom(const PyVector<uintptr_t>& encoded);
    // Inserts entries at `index`, the start of the innermost block being drained (its mark
    // already popped): above the entries of the enclosing blocks, below the block's own.
    void insert_at(std::size_t index, const PyVector<uintptr_t>& encoded);
    // Encodes an entry the way push() stores it, into `out` (taking new references).
    static void encode(PyVector<uintptr_t>& out, Kind kind, PyObject* fn, PyObject* const* args,
                       std::size_t nargs, PyObject* kwnames);
    // Moves the last entry into `out`. Precondition: size() > 0.
    void pop(PoppedEntry& out);

    [[nodiscard]] std::size_t size() const noexcept { return slots_.size(); }
    [[nodiscard]] std::size_t capacity() const noexcept { return slots_.capacity(); }
    [[nodiscard]] bool has_entries() const noexcept { return !slots_.empty(); }
    // No entries and no open block: nothing for the frame's exit to do.
    [[nodiscard]] bool idle() const noexcept { return slots_.empty() && marks.empty(); }

    // Binds a fresh or recycled record to a frame; release() unbinds it, keeping the buffers.
    void bind(compat::FrameKey key, PyObject* frame, bool prepared) noexcept;
    void release() noexcept;

    compat::FrameKey key = nullptr;
    PyObject* frame = nullptr;         // runtime records: strong reference to the frame object
    bool prepared = false;             // the frame's own code drains this record at exit
    bool open_coded = false;           // ... and keeps its top-level defers in locals
    PyVector<std::size_t> marks;       // slot index where each open block scope starts
    bool armed = false;                // a frame-exit hook watches this frame
    UnwindState* unwinding = nullptr;  // the drain in progress, if any
#ifdef GODEFER_USE_TRACING
    Ref pending_exception;  // last exception reported in this frame (3.11)
#endif

   private:
    PyVector<uintptr_t> slots_;
};

// Frame key -> record, open addressing with linear probing and backward-shift deletion: no
// allocation per frame once warm. Released records are kept for reuse with their buffers.
class ScopeTable {
   public:
    ScopeTable();
    ScopeTable(const ScopeTable&) = delete;
    ScopeTable& operator=(const ScopeTable&) = delete;
    ScopeTable(ScopeTable&&) = delete;
    ScopeTable& operator=(ScopeTable&&) = delete;
    ~ScopeTable();

    [[nodiscard]] Scope* find(compat::FrameKey key) const noexcept {
        for (std::size_t i = index_of(key);; i = (i + 1) & mask_) {
            const Bucket& b = buckets_[i];
            if (b.key == key) {
                return b.scope;
            }
            if (b.key == nullptr) {
                return nullptr;
            }
        }
    }
    // Returns the record for key, creating it (holding `frame`, which may be null for a prepared
    // frame) if absent.
    Scope* find_or_create(compat::FrameKey key, PyObject* frame, bool prepared);
    void erase(Scope* scope) noexcept;
    [[nodiscard]] std::size_t size() const noexcept { return count_; }
    void clear() noexcept;

    // Records being drained right now (any thread), innermost last: recover() and result() look
    // here for the scope whose deferred call is asking.
    PyVector<Scope*> draining;

   private:
    struct Bucket {
        compat::FrameKey key = nullptr;
        Scope* scope = nullptr;
    };
    [[nodiscard]] std::size_t index_of(compat::FrameKey key) const noexcept {
        constexpr uint64_t fibonacci = 0x9E3779B97F4A7C15ULL;
        return static_cast<std::size_t>((reinterpret_cast<uint64_t>(key) >> 4U) * fibonacci >>
                                        shift_) &
               mask_;
    }
    void grow();

    PyVector<Bucket> buckets_;
    std::size_t mask_ = 0;
    unsigned shift_ = 0;
    std::size_t count_ = 0;
    std::vector<std::unique_ptr<Scope>> spare_;
};

}  // namespace godefer
