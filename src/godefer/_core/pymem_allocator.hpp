// A standard allocator over PyMem_RawMalloc, so that tracemalloc sees (and the benchmark can
// measure) the memory the core's containers use for pending deferred calls.
#pragma once

#include <Python.h>

#include <cstddef>
#include <vector>

namespace godefer {

template <typename T>
struct PyRawAllocator {
    using value_type = T;

    PyRawAllocator() noexcept = default;
    template <typename U>
    explicit PyRawAllocator(const PyRawAllocator<U>& /*other*/) noexcept {}

    T* allocate(std::size_t n) {
        void* p = PyMem_RawMalloc(n * sizeof(T));
        if (p == nullptr) {
            // The core is built without C++ exceptions; a container cannot report failure.
            Py_FatalError("godefer: out of memory");
        }
        return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t /*n*/) noexcept { PyMem_RawFree(static_cast<void*>(p)); }

    template <typename U>
    bool operator==(const PyRawAllocator<U>& /*other*/) const noexcept {
        return true;
    }
    template <typename U>
    bool operator!=(const PyRawAllocator<U>& /*other*/) const noexcept {
        return false;
    }
};

template <typename T>
using PyVector = std::vector<T, PyRawAllocator<T>>;

}  // namespace godefer
