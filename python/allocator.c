/* allocator.c — obmem.install() and obmem.uninstall(): CPython's allocators on obmem.
 *
 * CPython allocates through three domains (PyMem_SetAllocator): RAW (PyMem_RawMalloc, called
 * without the GIL), MEM (PyMem_Malloc) and OBJ (PyObject_Malloc).  The module moves all three
 * to its private copy of obmem and back.  States, changed only with the GIL held:
 *
 *   ORIGINAL    the allocators CPython had when the module was first installed ("previous":
 *               pymalloc and malloc, or whatever PYTHONMALLOC or an embedder set)
 *   INSTALLED   malloc, calloc: obmem.  free: obmem's block (obm_free_or: obm_free's
 *               own lookup, safe on any address) to obmem, any other block to the domain's
 *               previous allocator.  realloc: the same split, so a block allocated before install
 *               stays with the allocator that made it until it is freed.
 *   FORWARDING  after uninstall: malloc, calloc: the previous allocator.  free tests ownership
 *               as above, so obmem's live blocks are still freed by obmem; realloc of an obmem
 *               block moves it to the previous allocator.
 *
 *   ORIGINAL -> INSTALLED <-> FORWARDING
 *
 * While obmem.start() traces (trace.c), INSTALLED uses the traced functions: the same calls,
 * then _obm_py_trace_add() after an allocation and _obm_py_trace_remove() after a free, with
 * the GIL held, so trace.c's tables need no lock of their own (the MEM and OBJ domains are
 * called with it; the RAW domain takes it to record, and queues a free made without it).
 * uninstall() stops the tracing first.
 *
 * The previous allocators are saved once, at the first install; CPython never gets them back
 * unwrapped, since obmem blocks may stay live until the process exits.  The hot path is one
 * indirect call into a function of this file that calls obmem directly (malloc, calloc) or
 * after the ownership test (free, realloc); ctx is not used.  Each domain has its own free
 * and realloc (generated below) that name the domain's previous allocator statically: a thread
 * calling PyMem_RawFree without the GIL while install() rewrites the RAW domain may read the
 * new function with the old ctx, which such a function does not look at.
 *
 * Size 0: obm_malloc(0) and obm_realloc(p, 0) return a unique minimum block, as CPython
 * requires of every domain.  Thread safety: obmem is thread-safe, which the RAW domain needs.
 */
#include "obmem_py.h"

#include <obmem.h>
#include <string.h>

typedef enum install_state_e { ORIGINAL, INSTALLED, FORWARDING } install_state_t;

static install_state_t state = ORIGINAL;
static PyMemAllocatorEx previous[3]; /* indexed by PyMemAllocatorDomain; set at first install */
static obm_py_origin_t origin = OBM_PY_ORIGIN_UNKNOWN;

#define DOMAINS 3
static const PyMemAllocatorDomain domain_ids[DOMAINS] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM,
                                                         PYMEM_DOMAIN_OBJ};

/* ---- the functions CPython calls -------------------------------------------------------- */

static void *obmem_malloc(void *ctx, size_t size) {
  (void)ctx;
  return obm_malloc(size);
}

static void *obmem_calloc(void *ctx, size_t count, size_t size) {
  (void)ctx;
  return obm_calloc(count, size);
}

/* Frees p with obmem when obmem handed it out, else with prev (blocks from before install;
 * NULL too: every allocator's free(NULL) does nothing).  obm_free's own lookup decides, no
 * obm_owns first (one lookup, not two), and prev's free is obm_free_or's tail call: this
 * function is two loads and a jump. */
static inline void free_by_owner(const PyMemAllocatorEx *prev, void *p) {
  obm_free_or(p, prev->free, prev->ctx);
}

static inline void *realloc_installed(const PyMemAllocatorEx *prev, void *p, size_t size) {
  if (p == NULL || obm_owns(p)) return obm_realloc(p, size);
  return prev->realloc(prev->ctx, p, size);
}

/* After uninstall: an obmem block moves to the previous allocator. */
static inline void *realloc_forwarding(const PyMemAllocatorEx *prev, void *p, size_t size) {
  if (p == NULL || !obm_owns(p)) return prev->realloc(prev->ctx, p, size);
  void *moved = prev->malloc(prev->ctx, size);
  if (moved == NULL) return NULL; /* p untouched, as realloc promises */
  size_t have = obm_usable_size(p);
  memcpy(moved, p, have < size ? have : size);
  obm_free(p);
  return moved;
}

static inline void *malloc_forwarding(const PyMemAllocatorEx *prev, size_t size) {
  return prev->malloc(prev->ctx, size);
}

static inline void *calloc_forwarding(const PyMemAllocatorEx *prev, size_t count, size_t size) {
  return prev->calloc(prev->ctx, count, size);
}

/* One set per domain, each naming its previous allocator as a constant. */
#define DOMAIN_FUNCTIONS(name, index)                                                              \
  static void free_##name(void *ctx, void *p) {                                                    \
    (void)ctx;                                                                                     \
    free_by_owner(&previous[index], p);                                                            \
  }                                                                                                \
  static void *realloc_##name(void *ctx, void *p, size_t size) {                                   \
    (void)ctx;                                                                                     \
    return realloc_installed(&previous[index], p, size);                                           \
  }                                                                                                \
  static void *forwarding_malloc_##name(void *ctx, size_t size) {                                  \
    (void)ctx;                                                                                     \
    return malloc_forwarding(&previous[index], size);                                              \
  }                                                                                                \
  static void *forwarding_calloc_##name(void *ctx, size_t count, size_t size) {                    \
    (void)ctx;                                                                                     \
    return calloc_forwarding(&previous[index], count, size);                                       \
  }                                                                                                \
  static void *forwarding_realloc_##name(void *ctx, void *p, size_t size) {                        \
    (void)ctx;                                                                                     \
    return realloc_forwarding(&previous[index], p, size);                                          \
  }

DOMAIN_FUNCTIONS(raw, PYMEM_DOMAIN_RAW)
DOMAIN_FUNCTIONS(mem, PYMEM_DOMAIN_MEM)
DOMAIN_FUNCTIONS(obj, PYMEM_DOMAIN_OBJ)

/* Traced (MEM and OBJ, GIL held).  A block the tracer cannot record (its own memory ran out)
 * is not handed out, as tracemalloc does; a realloc that moved the block already cannot be
 * undone, so its trace is counted as lost instead. */
static inline void *traced_new(void *p, size_t size) {
  if (p != NULL && __builtin_expect(_obm_py_trace_add(p, size) < 0, 0)) {
    obm_free(p);
    return NULL;
  }
  return p;
}

static void *traced_malloc(void *ctx, size_t size) {
  (void)ctx;
  return traced_new(obm_malloc(size), size);
}

static void *traced_calloc(void *ctx, size_t count, size_t size) {
  (void)ctx;
  return traced_new(obm_calloc(count, size), count * size);
}

static inline void *realloc_traced(const PyMemAllocatorEx *prev, void *p, size_t size) {
  void *moved = realloc_installed(prev, p, size);
  if (moved != NULL) {
    if (p != NULL) _obm_py_trace_remove(p);
    if (__builtin_expect(_obm_py_trace_add(moved, size) < 0, 0)) _obm_py_trace_lost();
  }
  return moved;
}

#define TRACED_FUNCTIONS(name, index)                                                              \
  static void traced_free_##name(void *ctx, void *p) {                                             \
    (void)ctx;                                                                                     \
    if (p == NULL) return;                                                                         \
    /* the free overlaps the load of p's trace slot; no other thread can trace p before the  */    \
    /* removal: this one holds the GIL, and the RAW domain records under it too               */   \
    _obm_py_trace_free(p, previous[index].free, previous[index].ctx);                              \
  }                                                                                                \
  static void *traced_realloc_##name(void *ctx, void *p, size_t size) {                            \
    (void)ctx;                                                                                     \
    return realloc_traced(&previous[index], p, size);                                              \
  }

TRACED_FUNCTIONS(mem, PYMEM_DOMAIN_MEM)
TRACED_FUNCTIONS(obj, PYMEM_DOMAIN_OBJ)

/* Sampled (start(sample=BYTES); MEM and OBJ, GIL held): the byte countdown here, trace.c
 * records the allocation that runs it out; a free is looked up (trace.c's page filter first),
 * without the prefetch of the exact mode. */
static inline void *sampled_new(void *p, size_t size) {
  if (p != NULL && (_obm_py_trace_sample_left -= (int64_t)size) <= 0 &&
      __builtin_expect(_obm_py_trace_add_sampled(p, size) < 0, 0)) {
    obm_free(p);
    return NULL;
  }
  return p;
}

static void *sampled_malloc(void *ctx, size_t size) {
  (void)ctx;
  return sampled_new(obm_malloc(size), size);
}

static void *sampled_calloc(void *ctx, size_t count, size_t size) {
  (void)ctx;
  return sampled_new(obm_calloc(count, size), count * size);
}

#define SAMPLED_FUNCTIONS(name, index)                                                             \
  static void sampled_free_##name(void *ctx, void *p) {                                            \
    (void)ctx;                                                                                     \
    if (p == NULL) return;                                                                         \
    free_by_owner(&previous[index], p);                                                            \
    _obm_py_trace_remove(p);                                                                       \
  }

SAMPLED_FUNCTIONS(mem, PYMEM_DOMAIN_MEM)
SAMPLED_FUNCTIONS(obj, PYMEM_DOMAIN_OBJ)

/* The RAW domain while tracing (exact or sampled): CPython calls it with or without the GIL
 * (frames.c's _obm_py_holds_gil tells).  With it, the functions above.  Without it, an
 * allocation takes the GIL to be recorded, as tracemalloc does (PyGILState_Ensure: the
 * thread's own Python frames, those of the call that released the GIL, give its stack; a
 * thread without a thread state gets one for the call and records no frame), except inside
 * that call's own allocations (raw_busy: the thread state it makes) and once the interpreter
 * finalizes (taking the GIL then ends the thread; a thread that starts to take it just as
 * finalization begins ends there, as with tracemalloc), whose allocations are not recorded.
 * A free without the GIL never takes it (CPython frees a thread state with PyMem_RawFree
 * after dropping the GIL): trace.c queues the address first, then the block is freed
 * (_obm_py_trace_remove_later). */
static __thread int raw_busy;

static int raw_may_take_gil(void) {
#if PY_VERSION_HEX >= 0x030D0000
  return !raw_busy && !Py_IsFinalizing();
#else
  return !raw_busy && !_Py_IsFinalizing();
#endif
}

/* Evaluates `traced` with the GIL held (taken for it when this thread does not hold it) into
 * the caller's `void *result`, or `plain` when the GIL may not be taken. */
#define RAW_UNDER_GIL(result, traced, plain)                                                       \
  do {                                                                                             \
    if (_obm_py_holds_gil()) {                                                                     \
      result = (traced);                                                                           \
    } else if (!raw_may_take_gil()) {                                                              \
      result = (plain);                                                                            \
    } else {                                                                                       \
      raw_busy = 1;                                                                                \
      PyGILState_STATE gil = PyGILState_Ensure();                                                  \
      result = (traced);                                                                           \
      PyGILState_Release(gil);                                                                     \
      raw_busy = 0;                                                                                \
    }                                                                                              \
  } while (0)

/* A realloc that cannot be recorded: p's trace (if any) is queued out first (the realloc may
 * free p), the new block is not traced; should the realloc fail, p stays live untraced. */
static void *raw_realloc_unrecorded(void *p, size_t size) {
  if (p != NULL) _obm_py_trace_remove_later(p);
  return realloc_installed(&previous[PYMEM_DOMAIN_RAW], p, size);
}

/* One set per mode: its malloc and calloc (traced_ or sampled_); one realloc and free. */
#define RAW_FUNCTIONS(mode)                                                                        \
  static void *mode##_malloc_raw(void *ctx, size_t size) {                                         \
    void *p;                                                                                       \
    RAW_UNDER_GIL(p, mode##_malloc(ctx, size), obm_malloc(size));                                  \
    return p;                                                                                      \
  }                                                                                                \
  static void *mode##_calloc_raw(void *ctx, size_t count, size_t size) {                           \
    void *p;                                                                                       \
    RAW_UNDER_GIL(p, mode##_calloc(ctx, count, size), obm_calloc(count, size));                    \
    return p;                                                                                      \
  }

RAW_FUNCTIONS(traced)
RAW_FUNCTIONS(sampled)

static void *realloc_raw_traced(void *ctx, void *p, size_t size) {
  (void)ctx;
  void *moved;
  RAW_UNDER_GIL(moved, realloc_traced(&previous[PYMEM_DOMAIN_RAW], p, size),
                raw_realloc_unrecorded(p, size));
  return moved;
}

static void free_raw_traced(void *ctx, void *p) {
  (void)ctx;
  if (p == NULL) return;
  if (_obm_py_holds_gil()) {
    _obm_py_trace_free(p, previous[PYMEM_DOMAIN_RAW].free, previous[PYMEM_DOMAIN_RAW].ctx);
    return;
  }
  _obm_py_trace_remove_later(p); /* before the free: nobody can be handed p and trace it */
  free_by_owner(&previous[PYMEM_DOMAIN_RAW], p);
}

static const PyMemAllocatorEx installed[DOMAINS] = {
    {NULL, obmem_malloc, obmem_calloc, realloc_raw, free_raw},
    {NULL, obmem_malloc, obmem_calloc, realloc_mem, free_mem},
    {NULL, obmem_malloc, obmem_calloc, realloc_obj, free_obj},
};

static const PyMemAllocatorEx traced[DOMAINS] = {
    {NULL, traced_malloc_raw, traced_calloc_raw, realloc_raw_traced, free_raw_traced},
    {NULL, traced_malloc, traced_calloc, traced_realloc_mem, traced_free_mem},
    {NULL, traced_malloc, traced_calloc, traced_realloc_obj, traced_free_obj},
};

static const PyMemAllocatorEx sampled[DOMAINS] = {
    {NULL, sampled_malloc_raw, sampled_calloc_raw, realloc_raw_traced, free_raw_traced},
    {NULL, sampled_malloc, sampled_calloc, traced_realloc_mem, sampled_free_mem},
    {NULL, sampled_malloc, sampled_calloc, traced_realloc_obj, sampled_free_obj},
};

/* The INSTALLED functions now: `installed`, or `traced` or `sampled` while trace.c traces. */
static const PyMemAllocatorEx *installed_now = installed;

static const PyMemAllocatorEx forwarding[DOMAINS] = {
    {NULL, forwarding_malloc_raw, forwarding_calloc_raw, forwarding_realloc_raw, free_raw},
    {NULL, forwarding_malloc_mem, forwarding_calloc_mem, forwarding_realloc_mem, free_mem},
    {NULL, forwarding_malloc_obj, forwarding_calloc_obj, forwarding_realloc_obj, free_obj},
};

/* ---- switching --------------------------------------------------------------------------- */

/* 1 when every domain's current allocator is table[domain]. */
/* The RAW domain from the interpreter's exit on (_obm_py_at_exit): the forwarding
 * functions, and while tracing, a free or realloc of a block that may have a trace queues its
 * removal first (trace.c applies the queue under the GIL; the queue rather than a GIL test:
 * late in finalization a thread state may already be freed). */
static void at_exit_free_raw(void *ctx, void *p) {
  (void)ctx;
  if (p != NULL && _obm_py_trace_is_on()) _obm_py_trace_remove_later(p);
  free_by_owner(&previous[PYMEM_DOMAIN_RAW], p);
}

static void *at_exit_realloc_raw(void *ctx, void *p, size_t size) {
  (void)ctx;
  if (p != NULL && _obm_py_trace_is_on() && obm_owns(p)) _obm_py_trace_remove_later(p);
  return realloc_forwarding(&previous[PYMEM_DOMAIN_RAW], p, size);
}

static const PyMemAllocatorEx at_exit_raw = {NULL, forwarding_malloc_raw, forwarding_calloc_raw,
                                             at_exit_realloc_raw, at_exit_free_raw};

/* Set at exit: the RAW domain stays on at_exit_raw whatever is installed later. */
static int raw_forwarding_at_exit;

/* The functions of `table` for domain i as this module sets them. */
static const PyMemAllocatorEx *domain_entry(const PyMemAllocatorEx *table, int i) {
  return i == PYMEM_DOMAIN_RAW && raw_forwarding_at_exit ? &at_exit_raw : &table[i];
}

static int current_is(const PyMemAllocatorEx *table) {
  for (int i = 0; i < DOMAINS; i++) {
    PyMemAllocatorEx now;
    PyMem_GetAllocator(domain_ids[i], &now);
    const PyMemAllocatorEx *want = domain_entry(table, i);
    if (now.malloc != want->malloc || now.free != want->free) return 0;
  }
  return 1;
}

/* tracemalloc saves the allocators it wraps and puts them back at stop(): started before
 * install, it would give CPython the allocators that cannot free obmem's blocks. */
static int tracemalloc_is_tracing(int *tracing) {
  PyObject *module = PyImport_ImportModule("_tracemalloc");
  if (module == NULL) {
    if (!PyErr_ExceptionMatches(PyExc_ImportError)) return -1;
    PyErr_Clear(); /* an interpreter without it */
    *tracing = 0;
    return 0;
  }
  PyObject *result = PyObject_CallMethod(module, "is_tracing", NULL);
  Py_DECREF(module);
  if (result == NULL) return -1;
  *tracing = PyObject_IsTrue(result);
  Py_DECREF(result);
  return *tracing < 0 ? -1 : 0;
}

static int refuse_if_tracemalloc(const char *what) {
  int tracing;
  if (tracemalloc_is_tracing(&tracing) < 0) return -1;
  if (tracing) {
    PyErr_Format(PyExc_RuntimeError,
                 "obmem.%s(): tracemalloc is tracing; it would put back the allocators it "
                 "saved at its start when it stops.  Call tracemalloc.stop() first (tracemalloc "
                 "may be started after obmem.install())",
                 what);
    return -1;
  }
  return 0;
}

static void set_all(const PyMemAllocatorEx *table) {
  for (int i = 0; i < DOMAINS; i++) {
    PyMemAllocatorEx copy = *domain_entry(table, i);
    PyMem_SetAllocator(domain_ids[i], &copy);
  }
}

/* The module's atexit callback (registered by the import in the main interpreter, or by the
 * first install there when the module was first imported in a sub-interpreter; it runs after
 * the callbacks registered later, and those registered before run after it, their RAW frees
 * still seen): new RAW blocks come from the previous allocator from here on, obmem's are
 * still freed by obmem (at_exit_raw), also after a later install() or start().  Late in
 * finalization CPython sets the RAW domain to its default allocator for moments
 * (PyMem_SetDefaultAllocator, to free what it allocated so), and a daemon thread that frees a RAW
 * block without the GIL at such a moment (C code that released the GIL) hands the block to libc's
 * free: an obmem block there aborts the process. With RAW forwarding from the start of
 * finalization, such a thread's blocks are libc's unless it kept one from before the exit.  MEM and
 * OBJ need the GIL, which a daemon thread cannot take then. */
PyObject *_obm_py_at_exit(PyObject *self, PyObject *unused) {
  (void)self;
  (void)unused;
  if (raw_forwarding_at_exit || PyInterpreterState_Get() != PyInterpreterState_Main())
    Py_RETURN_NONE;
  raw_forwarding_at_exit = 1;
  PyMemAllocatorEx now;
  PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &now);
  const PyMemAllocatorEx *mine =
      state == INSTALLED ? &installed_now[PYMEM_DOMAIN_RAW] : &forwarding[PYMEM_DOMAIN_RAW];
  if (state != ORIGINAL && now.malloc == mine->malloc) { /* else not ours: left alone */
    PyMemAllocatorEx copy = at_exit_raw;
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &copy);
  }
  Py_RETURN_NONE;
}

/* Registers the module's atexit callback once, from the main interpreter (a sub-interpreter's
 * callbacks run when it ends, and the switch is for the whole process). */
static int at_exit_registered;

int _obm_py_allocator_register_at_exit(void) {
  if (at_exit_registered || PyInterpreterState_Get() != PyInterpreterState_Main()) return 0;
  static PyMethodDef def = {"_obmem_at_exit", _obm_py_at_exit, METH_NOARGS, NULL};
  PyObject *atexit = PyImport_ImportModule("atexit");
  if (atexit == NULL) return -1;
  PyObject *callback = PyCFunction_New(&def, NULL);
  PyObject *done = callback ? PyObject_CallMethod(atexit, "register", "O", callback) : NULL;
  Py_DECREF(atexit);
  Py_XDECREF(callback);
  if (done == NULL) return -1;
  Py_DECREF(done);
  at_exit_registered = 1;
  return 0;
}

/* Moves every domain from `expected` (the tables this module set last) to `target`.  Refused
 * while tracemalloc traces, and when someone replaced the allocators after this module set
 * them (their wrapper would be dropped, or would put back functions that cannot free obmem's
 * blocks). */
static PyObject *change(const char *what, const PyMemAllocatorEx *expected,
                        const PyMemAllocatorEx *target, install_state_t next) {
  if (refuse_if_tracemalloc(what) < 0) return NULL;
  if (expected != NULL && !current_is(expected)) {
    PyErr_Format(PyExc_RuntimeError,
                 "obmem.%s(): CPython's allocators were replaced after obmem set its own "
                 "(PyMem_SetAllocator by another module); obmem leaves them alone",
                 what);
    return NULL;
  }
  if (next == INSTALLED && _obm_py_allocator_register_at_exit() < 0) return NULL;
  if (state == ORIGINAL)
    for (int i = 0; i < DOMAINS; i++)
      PyMem_GetAllocator(domain_ids[i], &previous[i]);
  set_all(target);
  state = next;
  Py_RETURN_NONE;
}

PyObject *_obm_py_install(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (state == INSTALLED && current_is(installed_now)) Py_RETURN_NONE;
  const PyMemAllocatorEx *expected = state == ORIGINAL    ? NULL
                                     : state == INSTALLED ? installed_now
                                                          : forwarding;
  return change("install", expected, installed_now, INSTALLED);
}

PyObject *_obm_py_uninstall(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (state != INSTALLED) Py_RETURN_NONE;
  if (_obm_py_trace_stop() < 0) return NULL; /* the traces would outlive their hooks */
  return change("uninstall", installed_now, forwarding, FORWARDING);
}

int _obm_py_allocator_set_traced(int on) { /* 0: off, 1: exact, 2: sampled */
  if (on && state != INSTALLED) {
    PyObject *done = _obm_py_install(NULL, NULL);
    if (done == NULL) return -1;
    Py_DECREF(done);
  }
  const PyMemAllocatorEx *target = on == 2 ? sampled : on ? traced : installed;
  if (installed_now == target) return 0;
  if (state != INSTALLED) { /* stop() after uninstall(): the forwarding functions stay */
    installed_now = target;
    return 0;
  }
  if (!current_is(installed_now)) {
    PyErr_Format(PyExc_RuntimeError,
                 "obmem.%s(): CPython's allocators were replaced after obmem set its own "
                 "(PyMem_SetAllocator by another module, or tracemalloc.start()); obmem "
                 "leaves them alone",
                 on ? "start" : "stop");
    return -1;
  }
  set_all(target);
  installed_now = target;
  return 0;
}

PyObject *_obm_py_is_installed(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  return PyBool_FromLong(state == INSTALLED);
}

/* ---- where foreign blocks come from -------------------------------------------------------- */

void _obm_py_note_original_allocator(void) {
  PyMemAllocatorEx raw, obj;
  PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &raw);
  PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &obj);
  /* PYTHONMALLOC=malloc sets every domain to the RAW domain's functions; pymalloc gives OBJ
   * functions of its own; the debug hooks (and tracemalloc) pass a context, whose blocks
   * have a layout this module does not know. */
  if (raw.ctx != NULL || obj.ctx != NULL)
    origin = OBM_PY_ORIGIN_UNKNOWN;
  else if (obj.malloc == raw.malloc)
    origin = OBM_PY_ORIGIN_MALLOC;
  else
    origin = OBM_PY_ORIGIN_PYMALLOC;
}

obm_py_origin_t _obm_py_origin(void) {
  return origin;
}
