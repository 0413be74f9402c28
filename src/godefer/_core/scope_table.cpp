#include "scope_table.hpp"

#include <utility>

namespace godefer {

namespace {

constexpr uintptr_t kind_mask = 0x3;
constexpr uintptr_t has_kwnames_bit = 0x4;
constexpr int nargs_shift = 3;

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

Scope::Scope(compat::FrameKey key_, PyObject* frame_) noexcept
    : key(key_), frame(Py_NewRef(frame_)) {}

Scope::~Scope() {
    // Entries left here were never run: only reached when the module itself is torn down.
    for (std::size_t i = slots_.size(); i > 0;) {
        const uintptr_t header = slots_[i - 1];
        const std::size_t count = 1 + (header >> nargs_shift) + ((header & has_kwnames_bit) ? 1 : 0);
        for (std::size_t j = i - 1 - count; j < i - 1; ++j) {
            Py_XDECREF(as_object(slots_[j]));
        }
        i -= count + 1;
    }
    Py_DECREF(frame);
}

void Scope::push(Kind kind, PyObject* fn, PyObject* const* args, std::size_t nargs,
                 PyObject* kwnames) {
    slots_.push_back(as_slot(Py_NewRef(fn)));
    for (std::size_t i = 0; i < nargs; ++i) {
        slots_.push_back(as_slot(Py_NewRef(args[i])));
    }
    uintptr_t header = (static_cast<uintptr_t>(nargs) << nargs_shift) | static_cast<uintptr_t>(kind);
    if (kwnames != nullptr) {
        slots_.push_back(as_slot(Py_NewRef(kwnames)));
        header |= has_kwnames_bit;
    }
    slots_.push_back(header);
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

Scope* ScopeTable::find_or_create(compat::FrameKey key, PyObject* frame) {
    auto [it, inserted] = scopes_.try_emplace(key);
    if (inserted) {
        it->second = std::make_unique<Scope>(key, frame);
    }
    return it->second.get();
}

void ScopeTable::erase(Scope* scope) noexcept {
    auto it = scopes_.find(scope->key);
    if (it != scopes_.end() && it->second.get() == scope) {
        // Destroying the record drops the frame reference, which can run arbitrary code via
        // finalizers; take it out of the table first so that code sees a consistent table.
        std::unique_ptr<Scope> owned = std::move(it->second);
        scopes_.erase(it);
        owned.reset();
    }
}

void ScopeTable::clear() noexcept {
    auto scopes = std::move(scopes_);
    scopes_.clear();
    scopes.clear();
}

}  // namespace godefer
