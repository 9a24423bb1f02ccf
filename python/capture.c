/* capture.c — obmem's tracer writing a capture file of a Python program (`python -m obmem run`,
 * `obmem run script.py`): the allocations of CPython's domains with their Python stacks.
 *
 * The module's copy of obmem holds the tracer; this file registers the interpreter with it
 * (obm_trace_set_interpreter, include/obmem/trace.h): `frames` reads the calling thread's
 * frames (frames.c) as (code object, instruction offset) pairs when that thread holds the GIL
 * (the RAW domain is also called without it: then no Python frames), and `names` resolves a
 * frame seen for the first time in the session: its code's qualified name, file name and
 * line, and a reference to the code object (kept until stop, so its address, part of the
 * frame's key, is not reused by another code object meanwhile).  Nothing is formatted on
 * the allocation path; a frame's names are copied by the tracer once.
 *
 * _capture_summary(path) replays a capture (the peak of live bytes and what is live at its
 * end) for the budgets of `python -m obmem run`, with the reader and the live-block replay
 * (obm_capture_live_*) of the same copy: the numbers `obmem report` gives.
 */
#include "obmem_py.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <obmem.h>
#include <obmem/capture.h>
#include <obmem/trace.h>
#include <stdlib.h>
#include <string.h>

static PyObject **kept;        /* code objects named this session (references; libc memory) */
static size_t nkept, kept_cap; /* the GIL guards them: names runs with it held */
static int capturing;
#define STOP_CODES 4
static PyObject *stop_codes[STOP_CODES]; /* the runner's frames: a stack ends below them */
static int nstop_codes;

/* The thread's Python frames, innermost first, up to (not including) the first frame of a
 * stop code (the runner's own: runpy's _run_code, obmem.__main__'s run_target). */
static int capture_frames(obm_trace_interp_frame_t *out, int max) {
  int n = _obm_py_frames_capture(out, max);
  for (int i = 0; i < n; i++)
    for (int k = 0; k < nstop_codes; k++)
      if (out[i].code == stop_codes[k]) return i;
  return n;
}

static void release_stop_codes(void) {
  for (int k = 0; k < nstop_codes; k++)
    Py_CLEAR(stop_codes[k]);
  nstop_codes = 0;
}

static int capture_names(const void *code, uint32_t offset, obm_trace_interp_names_t *out) {
  PyCodeObject *co = (PyCodeObject *)code;
  if (nkept == kept_cap) {
    size_t n = kept_cap ? 2 * kept_cap : 256;
    PyObject **grown = realloc(kept, n * sizeof *grown);
    if (grown == NULL) return -1; /* not kept: the frame is recorded as "?" */
    kept = grown;
    kept_cap = n;
  }
  Py_INCREF(co);
  kept[nkept++] = (PyObject *)co;
  /* inside an allocation: whatever error is being raised must survive (a non-ASCII name's
   * UTF-8 copy is made once and may fail) */
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  Py_ssize_t function_len = 0, file_len = 0;
  const char *function = PyUnicode_AsUTF8AndSize(co->co_qualname, &function_len);
  if (function == NULL) {
    PyErr_Clear();
    function = "?", function_len = 1;
  }
  const char *file = PyUnicode_AsUTF8AndSize(co->co_filename, &file_len);
  if (file == NULL) {
    PyErr_Clear();
    file = "", file_len = 0;
  }
  int line = _obm_py_frames_line((PyObject *)co, (int32_t)offset);
  PyErr_Restore(type, value, traceback);
  out->function = function;
  out->function_len = (size_t)function_len;
  out->file = file;
  out->file_len = (size_t)file_len;
  out->line = line > 0 ? (uint32_t)line : 0;
  return 0;
}

static void release_kept(void) {
  PyObject **list = kept;
  size_t n = nkept;
  kept = NULL;
  nkept = kept_cap = 0;
  for (size_t i = 0; i < n; i++)
    Py_DECREF(list[i]);
  free(list);
}

/* _capture_start(path, native=False, sample=0, max_frames=64, interval_ms=50, stop_at=())
 * -> path */
PyObject *_obm_py_capture_start(PyObject *module, PyObject *args, PyObject *kwargs) {
  (void)module;
  static char *keywords[] = {"path",        "native",  "sample", "max_frames",
                             "interval_ms", "stop_at", NULL};
  const char *path;
  int native = 0, max_frames = 64, interval_ms = 50;
  unsigned long long sample = 0;
  PyObject *stop_at = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|pKiiO!:_capture_start", keywords, &path,
                                   &native, &sample, &max_frames, &interval_ms, &PyTuple_Type,
                                   &stop_at))
    return NULL;
  if (stop_at != NULL) {
    if (PyTuple_GET_SIZE(stop_at) > STOP_CODES) {
      PyErr_Format(PyExc_ValueError, "stop_at: at most %d code objects", STOP_CODES);
      return NULL;
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(stop_at); k++)
      if (!PyCode_Check(PyTuple_GET_ITEM(stop_at, k))) {
        PyErr_SetString(PyExc_TypeError, "stop_at: a tuple of code objects");
        return NULL;
      }
  }
  if (!_obm_py_frames_supported()) {
    PyErr_SetString(PyExc_RuntimeError,
                    "obmem run: Python frames are read on CPython 3.11 and 3.12 only");
    return NULL;
  }
  if (max_frames < 1 || max_frames > 256) {
    PyErr_Format(PyExc_ValueError, "obmem run: max_frames must be 1..256, not %d", max_frames);
    return NULL;
  }
  if (interval_ms < 0) {
    PyErr_Format(PyExc_ValueError, "obmem run: interval_ms must be >= 0, not %d", interval_ms);
    return NULL;
  }
  if (capturing || obm_trace_active()) {
    PyErr_SetString(PyExc_RuntimeError, "obmem run: a capture is already being written");
    return NULL;
  }
  PyObject *done = _obm_py_install(NULL, NULL);
  if (done == NULL) return NULL;
  Py_DECREF(done);
  release_stop_codes();
  for (Py_ssize_t k = 0; stop_at != NULL && k < PyTuple_GET_SIZE(stop_at); k++) {
    stop_codes[k] = Py_NewRef(PyTuple_GET_ITEM(stop_at, k));
    nstop_codes++;
  }
  obm_trace_interp_t interp = {.frames = capture_frames, .names = capture_names};
  /* the interpreter loop: its native frames are replaced by the Python frames (--native) */
  Dl_info info;
  const ElfW(Sym) *symbol = NULL;
  void *eval = (void *)&_PyEval_EvalFrameDefault;
  if (dladdr1(eval, &info, (void **)&symbol, RTLD_DL_SYMENT) && symbol && symbol->st_size) {
    interp.eval_lo = (uintptr_t)eval;
    interp.eval_hi = (uintptr_t)eval + symbol->st_size;
  }
  int err = obm_trace_set_interpreter(&interp);
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.stacks = native ? OBM_TRACE_STACKS_AUTO : OBM_TRACE_STACKS_NONE;
  o.max_frames = (uint32_t)max_frames;
  o.sample_interval_ms = (uint32_t)interval_ms;
  if (sample) {
    o.mode = OBM_TRACE_SAMPLED;
    o.sample_mean_bytes = sample;
  }
  if (!err) err = obm_trace_start(path, &o);
  if (err) {
    obm_trace_set_interpreter(NULL);
    release_stop_codes();
    errno = err;
    PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    return NULL;
  }
  capturing = 1;
  return PyUnicode_DecodeFSDefault(obm_trace_path());
}

/* _capture_stop() -> None: the END record written, the file closed. */
PyObject *_obm_py_capture_stop(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (!capturing) Py_RETURN_NONE;
  /* EINVAL: not tracing, as in a forked child whose capture path had no %p (the child does
   * not trace, the file is the parent's) */
  int err = obm_trace_stop();
  if (err == EINVAL) err = 0;
  obm_trace_set_interpreter(NULL);
  capturing = 0;
  release_kept();
  release_stop_codes();
  if (err) {
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  Py_RETURN_NONE;
}

/* ---- _capture_summary(path): peak and live-at-end bytes, as `obmem report` counts them ---- */

PyObject *_obm_py_capture_summary(PyObject *module, PyObject *arg) {
  (void)module;
  PyObject *bytes_path;
  if (!PyUnicode_FSConverter(arg, &bytes_path)) return NULL;
  char err[800];
  obm_capture_t *cap = obm_capture_open(PyBytes_AS_STRING(bytes_path), err, sizeof err);
  Py_DECREF(bytes_path);
  if (cap == NULL) {
    PyErr_SetString(PyExc_ValueError, err);
    return NULL;
  }
  obm_capture_live_t *live = obm_capture_live_new(obm_capture_header(cap));
  double peak = 0;
  uint64_t nallocs = 0;
  obm_capture_record_t r;
  obm_capture_block_t b;
  int st = 0, change = 0;
  while (live && (st = obm_capture_next(cap, &r)) > 0) {
    if ((change = obm_capture_live_apply(live, &r, &b)) < 0) break;
    nallocs += r.kind == OBM_CAPTURE_ALLOC;
    if (change == OBM_CAPTURE_LIVE_ADDED && obm_capture_live_bytes(live) > peak)
      peak = obm_capture_live_bytes(live);
  }
  /* the leak as the report sums it: the blocks left (not the running sum) */
  double leak = 0;
  size_t cursor = 0;
  while (live && obm_capture_live_next(live, &cursor, &b))
    leak += b.bytes;
  int complete = obm_capture_complete(cap), oom = !live || change < 0;
  obm_capture_live_free(live);
  if (st < 0 || oom) {
    if (st < 0)
      PyErr_SetString(PyExc_ValueError, obm_capture_error(cap));
    else
      PyErr_NoMemory();
    obm_capture_close(cap);
    return NULL;
  }
  obm_capture_close(cap);
  return Py_BuildValue("{s:d,s:d,s:K,s:O}", "peak_bytes", peak, "leak_bytes", leak, "allocations",
                       (unsigned long long)nallocs, "complete", complete ? Py_True : Py_False);
}
