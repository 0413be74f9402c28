// scope() blocks and scoped(obj).
#include "api.hpp"
#include "async_exit.hpp"
#include "module_state.hpp"
#include "open_coded.hpp"
#include "schedule.hpp"
#include "unwind.hpp"

namespace godefer {

Ref lookup_special(PyObject* obj, PyObject* name) {
    PyObject* descr = _PyType_Lookup(Py_TYPE(obj), name);
    if (descr == nullptr) {
        return {};
    }
    descrgetfunc get = Py_TYPE(descr)->tp_descr_get;
    if (get == nullptr) {
        return Ref::borrow(descr);
    }
    return Ref::steal(get(descr, obj, reinterpret_cast<PyObject*>(Py_TYPE(obj))));
}

namespace {

// @scope: prepares the function ahead of its first call (godefer._decorator registers how);
// without preparation every function is a scope already, so it is returned as it is.
PyObject* prepare_function(ModuleState* st, PyObject* fn) {
    if (st->function_preparer == nullptr) {
        return Py_NewRef(fn);
    }
    return PyObject_CallOneArg(st->function_preparer, fn);
}

// What scoped(obj) enters and schedules: a context manager's __enter__() value and bound
// __exit__ (Kind::exit_cm), or obj itself and its close() (Kind::always). Null with TypeError
// for anything else, or with __enter__'s exception.
struct ScopedParts {
    Ref value;
    Ref exit;
    Kind kind = Kind::always;
};

bool scoped_parts(ModuleState* st, PyObject* obj, ScopedParts& out) {
    Ref exit = lookup_special(obj, st->str_exit);
    Ref enter = exit ? lookup_special(obj, st->str_enter) : Ref{};
    if (PyErr_Occurred() != nullptr) {
        return false;
    }
    if (enter && exit) {
        out.value = Ref::steal(PyObject_CallNoArgs(enter.get()));
        out.exit = std::move(exit);
        out.kind = Kind::exit_cm;
        return static_cast<bool>(out.value);  // like `with`: an __enter__ that raises schedules
    }
    Ref close = Ref::steal(PyObject_GetAttr(obj, st->str_close));
    if (close && PyCallable_Check(close.get()) != 0) {
        out.value = Ref::borrow(obj);
        out.exit = std::move(close);
        out.kind = Kind::always;
        return true;
    }
    if (!close && !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return false;
    }
    PyErr_Clear();
    const bool async_cm = PyObject_HasAttrString(obj, "__aenter__") != 0;
    PyErr_Format(PyExc_TypeError,
                 "scoped() needs a context manager (__enter__ and __exit__) or an object with a "
                 "close() method; got %.100s object%s",
                 Py_TYPE(obj)->tp_name,
                 async_cm ? ", an asynchronous context manager: use `await ascoped(cm)` in an "
                            "async function"
                          : "");
    return false;
}

PyObject* scoped_impl(ModuleState* st, PyObject* obj, bool prepared) {
    ScopedParts parts;
    if (!scoped_parts(st, obj, parts)) {
        return nullptr;
    }
    if (schedule(st, parts.kind, parts.exit.get(), nullptr, 0, nullptr, "scoped", prepared) < 0) {
        if (parts.kind != Kind::exit_cm) {
            return nullptr;
        }
        // Entered but not scheduled: exit now, as `with` would on an exception at this line.
        Ref exc = compat::fetch_exception();
        auto* t = reinterpret_cast<PyObject*>(Py_TYPE(exc.get()));
        Ref tb = Ref::steal(PyException_GetTraceback(exc.get()));
        Ref ignored = Ref::steal(PyObject_CallFunctionObjArgs(parts.exit.get(), t, exc.get(),
                                                              tb ? tb.get() : Py_None, nullptr));
        if (!ignored) {
            return nullptr;
        }
        compat::restore_exception(std::move(exc));
        return nullptr;
    }
    return parts.value.release();
}

}  // namespace

PyObject* scoped(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "scoped() takes exactly one argument (%zd given)", nargs);
        return nullptr;
    }
    return scoped_impl(module_state(module), args[0], false);
}

PyObject* prepared_scoped(PyObject* module, PyObject* obj) {
    return scoped_impl(module_state(module), obj, true);
}

PyObject* prepared_scoped_slot(PyObject* module, PyObject* obj) {
    ScopedParts parts;
    if (!scoped_parts(module_state(module), obj, parts)) {
        return nullptr;
    }
    Ref kind = Ref::steal(PyLong_FromLong(static_cast<long>(parts.kind)));
    if (!kind) {
        return nullptr;
    }
    return PyTuple_Pack(3, parts.exit.get(), kind.get(), parts.value.get());
}

// ---- with scope(): -------------------------------------------------------------------------

namespace {

struct BlockScopeObject {
    PyObject_HEAD
    PyObject* frame;  // non-null while the block is open (see block_enter)
    PyObject* outer;  // sys.exception() when the block was entered (Py_None: none)
    compat::FrameKey key;
    std::size_t depth;  // number of open blocks in that frame, this one included
};

PyObject* block_enter(PyObject* self, PyObject* /*unused*/) {
    auto* b = reinterpret_cast<BlockScopeObject*>(self);
    if (b->frame != nullptr) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this scope() is already open; use a new scope() for each with block");
        return nullptr;
    }
    ModuleState* st = state_from_type(Py_TYPE(self));
    Scope* scope = calling_scope(st, "scope", false);
    if (scope == nullptr) {
        return nullptr;
    }
    // Opened inside an open-coded block (a scope() preparation did not see as one): that block
    // now keeps its part of the record under this one's, so each exit finds its own mark on top.
    if (scope->open_coded && join_open_block(const_cast<void*>(scope->key), scope) < 0) {
        return nullptr;
    }
    scope->marks.push_back(scope->size());
    // At __exit__ the with statement has already made the exception in flight the handled one;
    // after a recovery the block's remaining calls must see what enclosed the block instead.
    PyObject* outer = PyErr_GetHandledException();
    b->outer = outer != nullptr ? outer : Py_NewRef(Py_None);
    // Holding the scope's frame object (runtime records) or the block object itself (prepared
    // ones) marks the block as open; only the key identifies the scope.
    b->frame = Py_NewRef(scope->frame != nullptr ? scope->frame : self);
    b->key = scope->key;
    b->depth = scope->marks.size();
    return Py_NewRef(self);
}

// Closes `b`, which must be the innermost open block of its frame: pops its mark into `floor` and
// hands over what sys.exception() showed when it was entered. Null (RuntimeError) otherwise.
Scope* close_block(ModuleState* st, BlockScopeObject* b, std::size_t& floor, Ref& outer) {
    Scope* scope = b->key != nullptr ? st->table->find(b->key) : nullptr;
    if (scope == nullptr || scope->marks.size() != b->depth || b->frame == nullptr) {
        PyErr_SetString(PyExc_RuntimeError,
                        "scope() blocks must be exited in the frame, and in the order, in which "
                        "they were entered; use them only as `with scope():`");
        return nullptr;
    }
    floor = scope->marks.back();
    scope->marks.pop_back();
    Py_CLEAR(b->frame);
    outer = Ref::steal(b->outer);
    b->outer = nullptr;
    return scope;
}

PyObject* block_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "__exit__ takes 3 arguments (%zd given)", nargs);
        return nullptr;
    }
    ModuleState* st = state_from_type(Py_TYPE(self));
    std::size_t floor = 0;
    Ref outer;
    Scope* scope = close_block(st, reinterpret_cast<BlockScopeObject*>(self), floor, outer);
    if (scope == nullptr) {
        return nullptr;
    }
    PyObject* in_flight = args[1] != Py_None ? args[1] : nullptr;
    UnwindState state;
    state.kind = ExitKind::block;
    state.exc = Ref::borrow(in_flight);
    drain(st, *scope, floor, state, outer.get());
    release_if_empty(st, scope);
    if (state.exc.get() == in_flight) {
        Py_RETURN_FALSE;  // nothing raised, or the original exception goes on
    }
    if (!state.exc) {
        Py_RETURN_TRUE;  // recovered, or suppressed by a scoped() context manager
    }
    compat::restore_exception(std::move(state.exc));
    return nullptr;
}

// `@scope()` as well as `@scope`: calling an unopened scope() with a function prepares it.
PyObject* block_call(PyObject* self, PyObject* args, PyObject* kwargs) {
    if (reinterpret_cast<BlockScopeObject*>(self)->frame == nullptr && kwargs == nullptr &&
        PyTuple_GET_SIZE(args) == 1 && PyCallable_Check(PyTuple_GET_ITEM(args, 0)) != 0) {
        return prepare_function(state_from_type(Py_TYPE(self)), PyTuple_GET_ITEM(args, 0));
    }
    PyErr_SetString(PyExc_TypeError,
                    "a scope() object is called only as a decorator: `@scope()` on a function");
    return nullptr;
}

int block_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(reinterpret_cast<BlockScopeObject*>(self)->frame);
    Py_VISIT(reinterpret_cast<BlockScopeObject*>(self)->outer);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

int block_clear(PyObject* self) {
    Py_CLEAR(reinterpret_cast<BlockScopeObject*>(self)->frame);
    Py_CLEAR(reinterpret_cast<BlockScopeObject*>(self)->outer);
    return 0;
}

void block_dealloc(PyObject* self) {
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    block_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyMethodDef block_methods[] = {
    {"__enter__", block_enter, METH_NOARGS, nullptr},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(block_exit)),
     METH_FASTCALL, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot block_slots[] = {
    {Py_tp_methods, block_methods},
    {Py_tp_call, reinterpret_cast<void*>(block_call)},
    {Py_tp_traverse, reinterpret_cast<void*>(block_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(block_clear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(block_dealloc)},
    {Py_tp_doc, const_cast<char*>("A block scope: `with scope():` runs the calls deferred in the "
                                  "block when the block exits.")},
    {0, nullptr},
};

PyType_Spec block_spec = {
    "godefer._core.BlockScope",
    sizeof(BlockScopeObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    block_slots,
};

}  // namespace

PyObject* prepared_ablock_exit(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    ModuleState* st = module_state(module);
    if (nargs != 2 || Py_TYPE(args[0]) != st->block_scope_type) {
        PyErr_SetString(PyExc_SystemError, "godefer: malformed async block exit");
        return nullptr;
    }
    std::size_t floor = 0;
    Ref outer;
    Scope* scope = close_block(st, reinterpret_cast<BlockScopeObject*>(args[0]), floor, outer);
    if (scope == nullptr) {
        return nullptr;
    }
    if (scope->size() <= floor) {
        release_if_empty(st, scope);
        Py_RETURN_NONE;  // nothing deferred in the block
    }
    AsyncExitStart start;
    start.kind = ExitKind::block;
    start.floor = floor;
    start.exc = args[1] != Py_None ? args[1] : nullptr;
    start.outer = outer.get();
    return make_async_exit(st, scope, start);
}

PyTypeObject* make_block_scope_type(PyObject* module) {
    return reinterpret_cast<PyTypeObject*>(PyType_FromModuleAndSpec(module, &block_spec, nullptr));
}

PyObject* scope(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs == 1 && PyCallable_Check(args[0]) != 0) {
        return prepare_function(module_state(module), args[0]);
    }
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError,
                        "scope() takes no arguments (`with scope():`), or a function to decorate "
                        "(`@scope`)");
        return nullptr;
    }
    ModuleState* st = module_state(module);
    auto* b = PyObject_GC_New(BlockScopeObject, st->block_scope_type);
    if (b == nullptr) {
        return nullptr;
    }
    b->frame = nullptr;
    b->outer = nullptr;
    b->key = nullptr;
    b->depth = 0;
    PyObject_GC_Track(b);
    return reinterpret_cast<PyObject*>(b);
}

}  // namespace godefer
