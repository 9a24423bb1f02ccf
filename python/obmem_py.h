/* obmem_py.h — what the files of the CPython module `obmem` (python/) share.
 *
 *   module.c     the module: functions table, stats(), print_stats(), OBMEM_PYTHON at import
 *   allocator.c  install(), uninstall(), is_installed(): CPython's allocator domains on obmem
 *   footprint.c  sizeof(), deep_sizeof(), footprint(): what an object really occupies
 *   trace.c      start(), stop(), ...: allocations recorded with their Python stacks
 *   capture.c    _capture_start(), _capture_stop(): the tracer's capture file (obmem run)
 *   frames.c     the running thread's Python frames (the one file built with Py_BUILD_CORE)
 *   _obmem_tracing.py  the tracemalloc-compatible classes over trace.c's raw data
 *
 * The module links its own private copy of obmem (python/CMakeLists.txt, setup.py) and uses
 * only the public header: a front end never includes an internal one (STYLE.md).
 */
#ifndef OBMEM_PY_H
#define OBMEM_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <obmem/trace.h>

#if PY_VERSION_HEX < 0x030B0000
#error "the obmem module needs CPython 3.11 or newer"
#endif

/* allocator.c */
PyObject *_obm_py_install(PyObject *module, PyObject *unused);
PyObject *_obm_py_uninstall(PyObject *module, PyObject *unused);
PyObject *_obm_py_is_installed(PyObject *module, PyObject *unused);
/* Switches the MEM and OBJ domains between the installed functions (on 0) and the traced
 * ones (which call trace.c; 1: exact mode, 2: sampled mode); installs first when needed.  0,
 * or -1 with an exception set. */
int _obm_py_allocator_set_traced(int on);
/* The atexit callback (also the module's _at_exit): from the interpreter's exit on, RAW
 * allocates from the previous allocator again (obmem's blocks still freed by obmem). */
PyObject *_obm_py_at_exit(PyObject *self, PyObject *unused);
/* Registers that callback once, from the main interpreter only (0 elsewhere; -1: error). */
int _obm_py_allocator_register_at_exit(void);
/* Records which allocator CPython used before obmem (footprint.c rounds foreign blocks by
 * it).  Called once at import, before any install. */
void _obm_py_note_original_allocator(void);

/* Where the blocks that obmem does not own come from (decided at import). */
typedef enum obm_py_origin_e {
  OBM_PY_ORIGIN_PYMALLOC, /* <= 512 B from pymalloc (16-byte classes), larger from malloc */
  OBM_PY_ORIGIN_MALLOC,   /* PYTHONMALLOC=malloc: every block from malloc */
  OBM_PY_ORIGIN_UNKNOWN,  /* debug hooks, tracemalloc or a third party: request rounded to 16 */
} obm_py_origin_t;
obm_py_origin_t _obm_py_origin(void);

/* footprint.c */
PyObject *_obm_py_sizeof(PyObject *module, PyObject *obj);
PyObject *_obm_py_deep_sizeof(PyObject *module, PyObject *obj);
PyObject *_obm_py_footprint(PyObject *module, PyObject *obj);
/* The bytes in front of an object of type tp in its block (GC and managed-dict headers). */
size_t _obm_py_pre_header_size(PyTypeObject *tp);

/* frames.c */
typedef struct obm_py_frame_s {
  PyObject *code; /* the frame's code object */
  int32_t offset; /* its instruction, in code units from the start of the code */
  int32_t line;   /* trace.c: its line, -2 until resolved */
} obm_py_frame_t;
/* 1 when this interpreter's frame layout is known (3.11, 3.12). */
int _obm_py_frames_supported(void);
/* Fills out[0..n) with the running thread's Python frames, most recent first, n <= limit;
 * the GIL held.  Allocates nothing and takes no reference. */
int _obm_py_frames_walk(obm_py_frame_t *out, int limit);
/* The frame the walk would give first (an opaque pointer), and in *key the address of its
 * instruction (0 with NULL: no Python frame); the GIL held.  An instruction address names the
 * (code object, offset) pair as long as the code object lives. */
const void *_obm_py_frames_top(uintptr_t *key);
/* A hash of the instruction addresses of top and of up to 3 of its callers (limit - 1 at
 * most), never equal to top's own address. */
uintptr_t _obm_py_frames_callers_key(const void *top, int limit);
/* 1 when the walk from `top` (from _obm_py_frames_top) with this limit gives exactly the n
 * frames whose instruction addresses are instrs[0..n): two loads a frame, nothing hashed. */
int _obm_py_frames_match(const void *top, const uintptr_t *instrs, int n, int limit);
/* The address of instruction `offset` of code (what _obm_py_frames_top gives for it). */
uintptr_t _obm_py_frames_instr(PyObject *code, int32_t offset);
/* The same as the tracer's interpreter frames (capture.c), when this thread holds the GIL;
 * 0 when it does not (the RAW domain is called without it) or runs no Python code. */
int _obm_py_frames_capture(obm_trace_interp_frame_t *out, int max);
/* The line of instruction `offset` of code (PyCode_Addr2Line), -1 when it has none. */
int _obm_py_frames_line(PyObject *code, int32_t offset);

/* trace.c: the hooks' side (GIL held) */
int _obm_py_trace_is_on(void);
int _obm_py_trace_add(void *p, size_t size); /* -1: the tracer's memory ran out */
/* Sampled mode: bytes until the next recorded allocation; the allocation that takes it to 0
 * or below calls _obm_py_trace_add_sampled (which draws the next countdown). */
extern int64_t _obm_py_trace_sample_left;
int _obm_py_trace_add_sampled(void *p, size_t size); /* -1: the tracer's memory ran out */
void _obm_py_trace_remove(void *p);
/* The same for a thread that does not hold the GIL (the RAW domain): queued, applied under the
 * GIL before the next trace is recorded; call it before freeing p. */
void _obm_py_trace_remove_later(void *p);
/* frames.c: whether the calling thread holds the GIL (not PyGILState_Check: see there) */
int _obm_py_holds_gil(void);
/* A traced free: obm_free_or(p, other, ctx), then p's trace out (GIL held, p not NULL). */
void _obm_py_trace_free(void *p, void (*other)(void *ctx, void *p), void *ctx);
void _obm_py_trace_lost(void);
int _obm_py_trace_stop(void); /* 0, or -1 with an exception set */
/* trace.c: the module's functions */
PyObject *_obm_py_trace_start(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *_obm_py_trace_stop_py(PyObject *module, PyObject *unused);
PyObject *_obm_py_trace_clear(PyObject *module, PyObject *unused);
PyObject *_obm_py_trace_is_tracing(PyObject *module, PyObject *unused);
PyObject *_obm_py_trace_limit(PyObject *module, PyObject *unused);
PyObject *_obm_py_trace_memory(PyObject *module, PyObject *unused);
PyObject *_obm_py_trace_sampling(PyObject *module, PyObject *unused);
PyObject *_obm_py_trace_reset_peak(PyObject *module, PyObject *unused);
PyObject *_obm_py_trace_self_memory(PyObject *module, PyObject *unused);
PyObject *_obm_py_trace_raw_snapshot(PyObject *module, PyObject *args);
PyObject *_obm_py_trace_raw_object(PyObject *module, PyObject *obj);
PyObject *_obm_py_trace_raw_timeline(PyObject *module, PyObject *unused);

/* capture.c: a capture file of the Python program (python -m obmem run) */
PyObject *_obm_py_capture_start(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *_obm_py_capture_stop(PyObject *module, PyObject *unused);
PyObject *_obm_py_capture_summary(PyObject *module, PyObject *path);

#endif /* OBMEM_PY_H */
