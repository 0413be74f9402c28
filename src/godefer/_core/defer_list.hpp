// The list an open-coded function keeps one loop's deferred calls in (a DeferList), and how its
// entries are laid out: flat, so a pending call costs a few list slots and no tuple.
//
//   defer(f)                      [f]
//   K(f, a1, ..., an)             [f, a1, ..., an, header]
//   K(f, a1, ..., an, **kwargs)   [f, a1, ..., an, kwargs dict, header]
//
// header = kind | has_kwargs << 2 | n << 3, a small int (cached by CPython for up to 31
// arguments). An entry ends in a header exactly when its last item is an int: a plain entry's last
// item is a callable, and ints are not callable.
#pragma once

#include <Python.h>

#include "scope_table.hpp"

namespace godefer {

struct ListEntry {
    Py_ssize_t start = 0;  // index of the entry's first item
    Kind kind = Kind::always;
    PyObject* fn = nullptr;
    PyObject* const* args = nullptr;  // borrowed from the list
    Py_ssize_t nargs = 0;
    PyObject* kwargs = nullptr;  // dict or null
};

// The entry whose items end just before index `end` of `list`; false (SystemError set) when the
// list is not laid out as above.
bool list_entry_before(PyObject* list, Py_ssize_t end, ListEntry& out);

}  // namespace godefer
