/* frames.c — the Python stack of the running thread, read from the interpreter's own frames.
 *
 * The tracer (trace.c) attributes each allocation to the (code object, instruction offset) of
 * up to `limit` frames of the thread that holds the GIL, most recent first.  CPython 3.11 and
 * 3.12 keep a thread's Python frames as a linked list of _PyInterpreterFrame (the thread
 * state's cframe->current_frame, then ->previous), whose layout is in the internal header
 * pycore_frame.h: this is the only file of the module built with Py_BUILD_CORE, and it reads
 * three fields of a frame (f_code, prev_instr, previous) and two of its code object.  Walking
 * them allocates nothing, creates no frame object and runs no Python code, so it is safe
 * inside an allocation hook.  A frame is skipped, as CPython's own tracemalloc and traceback
 * code skip it, when it is incomplete (pushed but not yet at its first traceable
 * instruction: only the newest frame can be, so only it is tested, which spares a load of
 * each older frame's code object) and, on 3.12, when it is a C-stack shim
 * (FRAME_OWNED_BY_CSTACK).  Other
 * versions: _obm_py_frames_supported() is 0 and obmem.start() refuses.
 *
 * The tracer's site cache (trace.c) uses _obm_py_frames_top, the newest frame the walk would
 * give and its instruction address (the first key), _obm_py_frames_callers_key (the second
 * key: with up to 3 callers' addresses), and _obm_py_frames_match, which compares the frames
 * with a stack's instruction addresses: two loads a frame, with the walk's own rules for
 * skipping frames.
 *
 * Why a walk per allocation and not a shadow stack kept by a profile hook: the walk costs
 * two loads per frame only when something is allocated, while a shadow stack costs a
 * callback on every call and return, allocating or not (docs/python.md has the numbers).
 */
#include <patchlevel.h> /* PY_VERSION_HEX alone: Py_BUILD_CORE must come before Python.h */

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
#define OBM_PY_FRAMES 1
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#else
#define OBM_PY_FRAMES 0
#endif

#include "obmem_py.h"

#if OBM_PY_FRAMES
#include <internal/pycore_frame.h>
#if PY_VERSION_HEX < 0x030C0000
#include <internal/pycore_pystate.h> /* _PyThreadState_GET: an inline read of _PyRuntime */
#define CURRENT_THREAD() _PyThreadState_GET()
#else /* 3.12 keeps it in a thread-local variable that is not exported */
#define CURRENT_THREAD() _PyThreadState_UncheckedGet()
#endif
#endif

int _obm_py_frames_supported(void) {
  return OBM_PY_FRAMES;
}

#if OBM_PY_FRAMES && PY_VERSION_HEX < 0x030C0000
#include <pthread.h>

/* The calling thread's stack, read once (pthread_getattr_np); empty when unknown. */
static __thread uintptr_t stack_lo, stack_hi;
static __thread int stack_known;

static int on_this_stack(const void *p) {
  if (!stack_known) {
    pthread_attr_t attr;
    void *addr;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
        stack_lo = (uintptr_t)addr;
        stack_hi = (uintptr_t)addr + size;
      }
      pthread_attr_destroy(&attr);
    }
    stack_known = 1;
  }
  return (uintptr_t)p >= stack_lo && (uintptr_t)p < stack_hi;
}
#endif

/* Whether the calling thread holds the GIL.  Not PyGILState_Check, which answers 1 on every
 * thread once a sub-interpreter was made (it turns its checks off) and once finalization
 * deleted the interpreter's thread-state key.  3.12: this thread's own thread state (a
 * thread-local, NULL while detached).  3.11: the thread state running now is the GIL holder's,
 * but it need not be one this thread made (a sub-interpreter's head thread state runs code for
 * whichever thread calls _xxsubinterpreters.run_string): it is this thread's while its current
 * C frame record lies on this thread's stack (the evaluation loop keeps it there), else, when
 * it runs no Python code (its root record), while its thread id is this thread's. */
int _obm_py_holds_gil(void) {
#if OBM_PY_FRAMES && PY_VERSION_HEX < 0x030C0000
  PyThreadState *thread = CURRENT_THREAD();
  if (thread == NULL) return 0;
  _PyCFrame *cframe = thread->cframe;
  if (cframe != NULL && cframe != &thread->root_cframe) return on_this_stack(cframe);
  return thread->thread_id == PyThread_get_thread_ident();
#elif OBM_PY_FRAMES
  return CURRENT_THREAD() != NULL;
#else
  return PyGILState_Check();
#endif
}

#if OBM_PY_FRAMES
/* The walk, writing (code, offset) pairs to whichever of py and interp is not NULL (a
 * constant at each call, so each caller gets its own copy without the test). */
static inline int walk(PyThreadState *thread, obm_py_frame_t *py, obm_trace_interp_frame_t *interp,
                       int limit) {
  if (thread == NULL || thread->cframe == NULL) return 0;
  int n = 0;
  for (_PyInterpreterFrame *frame = thread->cframe->current_frame; frame != NULL && n < limit;
       frame = frame->previous) {
#if PY_VERSION_HEX >= 0x030C0000
    if (frame->owner == FRAME_OWNED_BY_CSTACK) continue;
#endif
    PyCodeObject *code = frame->f_code;
    _Py_CODEUNIT *first = _PyCode_CODE(code);
    /* Only the newest frame can be incomplete: a frame that called another has run. */
    if (frame == thread->cframe->current_frame && frame->owner != FRAME_OWNED_BY_GENERATOR &&
        frame->prev_instr < first + code->_co_firsttraceable)
      continue;
    if (py) {
      py[n].code = (PyObject *)code;
      py[n].offset = (int32_t)(frame->prev_instr - first);
    } else {
      interp[n].code = code;
      interp[n].offset = (uint32_t)(frame->prev_instr - first);
    }
    n++;
  }
  return n;
}
#endif

int _obm_py_frames_walk(obm_py_frame_t *out, int limit) {
#if OBM_PY_FRAMES
  return walk(CURRENT_THREAD(), out, NULL, limit);
#else
  (void)out;
  (void)limit;
  return 0;
#endif
}

#if OBM_PY_FRAMES
#define KEY_CALLERS 3

/* The frame after `frame` that the walk reads (3.12: C-stack shims skipped), or NULL. */
static inline _PyInterpreterFrame *frames_older(_PyInterpreterFrame *frame) {
  frame = frame->previous;
#if PY_VERSION_HEX >= 0x030C0000
  while (frame != NULL && frame->owner == FRAME_OWNED_BY_CSTACK)
    frame = frame->previous;
#endif
  return frame;
}
#endif

const void *_obm_py_frames_top(uintptr_t *key) {
#if OBM_PY_FRAMES
  PyThreadState *thread = CURRENT_THREAD();
  *key = 0;
  if (thread == NULL || thread->cframe == NULL) return NULL;
  _PyInterpreterFrame *frame = thread->cframe->current_frame;
#if PY_VERSION_HEX >= 0x030C0000
  while (frame != NULL && frame->owner == FRAME_OWNED_BY_CSTACK)
    frame = frame->previous;
#endif
  if (frame == NULL) return NULL;
  /* the walk's test of the newest frame, as in _obm_py_frames_walk */
  if (frame == thread->cframe->current_frame && frame->owner != FRAME_OWNED_BY_GENERATOR &&
      frame->prev_instr < _PyCode_CODE(frame->f_code) + frame->f_code->_co_firsttraceable) {
    frame = frames_older(frame);
    if (frame == NULL) return NULL;
  }
  *key = (uintptr_t)frame->prev_instr;
  return frame;
#else
  *key = 0;
  return NULL;
#endif
}

uintptr_t _obm_py_frames_callers_key(const void *top, int limit) {
#if OBM_PY_FRAMES
  /* one helper line reached from several places (random.randrange from the lines of an
   * f-string in bench/python/mixed.py) gets a slot per place: the first key alone missed 16 %
   * of mixed.py's allocations, this one 1.3 % */
  if (top == NULL) return 1;
  _PyInterpreterFrame *frame = (_PyInterpreterFrame *)(uintptr_t)top;
  uintptr_t hash = (uintptr_t)frame->prev_instr;
  _PyInterpreterFrame *caller = frames_older(frame);
  int ncallers = limit - 1 < KEY_CALLERS ? limit - 1 : KEY_CALLERS; /* no more than kept */
  for (int i = 0; i < ncallers && caller != NULL; i++, caller = frames_older(caller))
    hash = (hash ^ (uintptr_t)caller->prev_instr) * UINT64_C(0x9E3779B97F4A7C15);
  return hash ^ 1; /* never the innermost frame's key itself */
#else
  (void)top;
  (void)limit;
  return 1;
#endif
}

int _obm_py_frames_match(const void *top, const uintptr_t *instrs, int n, int limit) {
#if OBM_PY_FRAMES
  if (n > limit) return 0;
  _PyInterpreterFrame *frame = (_PyInterpreterFrame *)(uintptr_t)top;
  for (int i = 0; i < n; i++, frame = frames_older(frame))
    if (frame == NULL || (uintptr_t)frame->prev_instr != instrs[i]) return 0;
  return n == limit || frame == NULL;
#else
  (void)top;
  (void)instrs;
  (void)limit;
  return n == 0;
#endif
}

uintptr_t _obm_py_frames_instr(PyObject *code, int32_t offset) {
#if OBM_PY_FRAMES
  return (uintptr_t)(_PyCode_CODE((PyCodeObject *)code) + offset);
#else
  (void)code;
  (void)offset;
  return 0;
#endif
}

int _obm_py_frames_capture(obm_trace_interp_frame_t *out, int max) {
#if OBM_PY_FRAMES
  /* only a thread that holds the GIL may read its frames (the RAW domain is also called
   * without it) */
  if (!_obm_py_holds_gil()) return 0;
  return walk(CURRENT_THREAD(), NULL, out, max);
#else
  (void)out;
  (void)max;
  return 0;
#endif
}

int _obm_py_frames_line(PyObject *code, int32_t offset) {
#if OBM_PY_FRAMES
  return PyCode_Addr2Line((PyCodeObject *)code, offset * (int)sizeof(_Py_CODEUNIT));
#else
  (void)code;
  (void)offset;
  return -1;
#endif
}
