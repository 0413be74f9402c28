#include "scope_table.hpp"

#include <utility>

namespace godefer {

namespace {

constexpr uintptr_t kind_mask = 0x7;
constexpr uintptr_t has_kwnames_bit = 0x8;
constexpr unsigned nargs_shift = 4;

PyObject* as_object(uintptr_t slot) noexcept { return reinterpret_cast<PyObject*>(slot); }
uintptr_t as_slot(PyObject* obj) noexcept { return reinterpret_cast<uintptr_t>(obj); }

}  // namespace

PoppedEntry::~PoppedEntry() {
    Py_XDECREF(fn);
    Py_XDECREF(kwnames);
    PyObject** a = args();
    for (std::size_t i = 0; i < nargs; ++i) {
        Py_XDECREF(a[i]);
    }
}

void PoppedEntry::reserve(std::size_t n) {
    if (n > inline_args) {
        heap_ = std::make_unique<PyObject*[]>(n);
    }
}

void Scope::bind(compat::FrameKey key_, PyObject* frame_, bool prepared_) noexcept {
    key = key_;
    frame = Py_XNewRef(frame_);
    prepared = prepared_;
}

Scope::~Scope() { release(); }

void Scope::release() noexcept {
    // Entries left here were never run: only reached when the module itself is torn down.
    for (std::size_t i = slots_.size(); i > 0;) {
        const uintptr_t header = slots_[i - 1];
        const std::size_t count =
            1 + (header >> nargs_shift) + ((header & has_kwnames_bit) ? 1 : 0);
        for (std::size_t j = i - 1 - count; j < i - 1; ++j) {
            Py_XDECREF(as_object(slots_[j]));
        }
        i -= count + 1;
    }
    slots_.clear();
    marks.clear();
    armed = false;
    prepared = false;
    open_coded = false;
    unwinding = nullptr;
#ifdef GODEFER_USE_TRACING
    pending_exception.reset();
#endif
    key = nullptr;
    // Dropping the frame can run finalizers, so the record is already unbound when it happens.
    PyObject* old = frame;
    frame = nullptr;
    Py_XDECREF(old);
}

void Scope::encode(PyVector<uintptr_t>& out, Kind kind, PyObject* fn, PyObject* const* args,
                   std::size_t nargs, PyObject* kwnames) {
    out.push_back(as_slot(Py_NewRef(fn)));
    for (std::size_t i = 0; i < nargs; ++i) {
        out.push_back(as_slot(Py_NewRef(args[i])));
    }
    uintptr_t header =
        (static_cast<uintptr_t>(nargs) << nargs_shift) | static_cast<uintptr_t>(kind);
    if (kwnames != nullptr) {
        out.push_back(as_slot(Py_NewRef(kwnames)));
        header |= has_kwnames_bit;
    }
    out.push_back(header);
}

void Scope::push(Kind kind, PyObject* fn, PyObject* const* args, std::size_t nargs,
                 PyObject* kwnames) {
    encode(slots_, kind, fn, args, nargs, kwnames);
}

void Scope::push_bottom(const PyVector<uintptr_t>& encoded) {
    slots_.insert(slots_.begin(), encoded.begin(), encoded.end());
    for (std::size_t& mark : marks) {
        mark += encoded.size();
    }
}

void Scope::insert_at(std::size_t index, const PyVector<uintptr_t>& encoded) {
    slots_.insert(slots_.begin() + static_cast<std::ptrdiff_t>(index), encoded.begin(),
                  encoded.end());
    for (std::size_t& mark : marks) {
        if (mark > index) {
            mark += encoded.size();
        }
    }
}

void Scope::pop(PoppedEntry& out) {
    const uintptr_t header = slots_.back();
    slots_.pop_back();
    out.kind = static_cast<Kind>(header & kind_mask);
    if ((header & has_kwnames_bit) != 0) {
        out.kwnames = as_object(slots_.back());
        slots_.pop_back();
    }
    out.nargs = header >> nargs_shift;
    out.reserve(out.nargs);
    PyObject** args = out.args();
    const std::size_t base = slots_.size() - out.nargs;
    for (std::size_t i = 0; i < out.nargs; ++i) {
        args[i] = as_object(slots_[base + i]);
    }
    slots_.resize(base);
    out.fn = as_object(slots_.back());
    slots_.pop_back();
}

namespace {
constexpr std::size_t initial_buckets = 64;
constexpr std::size_t max_spare = 64;
constexpr std::size_t max_kept_slots = 256;  // a recycled record keeps at most this buffer
}  // namespace

ScopeTable::ScopeTable() : buckets_(initial_buckets), mask_(initial_buckets - 1), shift_(64 - 6) {}

ScopeTable::~ScopeTable() { clear(); }

void ScopeTable::grow() {
    PyVector<Bucket> old = std::move(buckets_);
    buckets_.assign(old.size() * 2, Bucket{});
    mask_ = buckets_.size() - 1;
    --shift_;
    for (const Bucket& b : old) {
        if (b.key != nullptr) {
            std::size_t i = index_of(b.key);
            while (buckets_[i].key != nullptr) {
                i = (i + 1) & mask_;
            }
            buckets_[i] = b;
        }
    }
}

Scope* ScopeTable::find_or_create(compat::FrameKey key, PyObject* frame, bool prepared) {
    std::size_t i = index_of(key);
    for (;; i = (i + 1) & mask_) {
        if (buckets_[i].key == key) {
            return buckets_[i].scope;
        }
        if (buckets_[i].key == nullptr) {
            break;
        }
    }
    if ((count_ + 1) * 2 > buckets_.size()) {
        grow();
        return find_or_create(key, frame, prepared);
    }
    std::unique_ptr<Scope> scope;
    if (!spare_.empty()) {
        scope = std::move(spare_.back());
        spare_.pop_back();
    } else {
        scope = std::make_unique<Scope>();
    }
    scope->bind(key, frame, prepared);
    buckets_[i] = Bucket{key, scope.release()};
    ++count_;
    return buckets_[i].scope;
}

void ScopeTable::erase(Scope* scope) noexcept {
    std::size_t i = index_of(scope->key);
    for (;; i = (i + 1) & mask_) {
        if (buckets_[i].key == nullptr) {
            return;  // not in the table
        }
        if (buckets_[i].scope == scope) {
            break;
        }
    }
    // Backward-shift deletion keeps every probe sequence unbroken without tombstones.
    std::size_t hole = i;
    for (std::size_t j = (i + 1) & mask_; buckets_[j].key != nullptr; j = (j + 1) & mask_) {
        const std::size_t home = index_of(buckets_[j].key);
        const bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            buckets_[hole] = buckets_[j];
            hole = j;
        }
    }
    buckets_[hole] = Bucket{};
    --count_;
    std::unique_ptr<Scope> owned(scope);
    owned->release();
    if (spare_.size() < max_spare && owned->capacity() <= max_kept_slots) {
        spare_.push_back(std::move(owned));
    }
}

void ScopeTable::clear() noexcept {
    for (Bucket& b : buckets_) {
        if (b.key != nullptr) {
            std::unique_ptr<Scope> owned(b.scope);
            b = Bucket{};
            --count_;
            owned.reset();
        }
    }
    spare_.clear();
}

}  // namespace godefer
