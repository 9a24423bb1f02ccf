/* module.c — the CPython module `obmem`: its function table, the allocator statistics as
 * Python objects (stats) and as the C library's table (print_stats), and OBMEM_PYTHON.
 *
 * Import does nothing to CPython's allocation unless OBMEM_PYTHON=1 is in the environment
 * then: the module's copy of obmem starts no tracer (it is built without src/trace/autostart.c,
 * so OBMEM_TRACE is left to a preloaded obmem) and maps nothing until its first allocation.
 * The statistics are those of the module's copy: the blocks CPython allocated from obmem.
 */
#define _GNU_SOURCE
#include "obmem_py.h"

#include <obmem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- stats() ----------------------------------------------------------------------------- */

/* dict[key] = value (a non-negative count); -1 with an exception set on failure. */
static int set_count(PyObject *dict, const char *key, uint64_t value) {
  PyObject *number = PyLong_FromUnsignedLongLong(value);
  if (number == NULL) return -1;
  int err = PyDict_SetItemString(dict, key, number);
  Py_DECREF(number);
  return err;
}

typedef struct field_s {
  const char *name;
  size_t offset;
} field_t;

#define CLASS_FIELD(name, member)                                                                  \
  { name, offsetof(obm_class_stats_t, member) }
static const field_t class_fields[] = {
    CLASS_FIELD("pools", npools),
    CLASS_FIELD("full_pools", nfull_pools),
    CLASS_FIELD("blocks_in_use", blocks_in_use),
    CLASS_FIELD("blocks_free", blocks_free),
    CLASS_FIELD("allocations", nmalloc),
    CLASS_FIELD("requested_bytes", requested_bytes),
    CLASS_FIELD("rounding_bytes", rounding_bytes),
    CLASS_FIELD("tail_bytes", tail_bytes),
};

#define STATS_FIELD(name, member)                                                                  \
  { name, offsetof(obm_stats_t, member) }
static const field_t stats_fields[] = {
    STATS_FIELD("arenas_allocated", arenas_allocated),
    STATS_FIELD("arenas_reclaimed", arenas_reclaimed),
    STATS_FIELD("arenas_current", arenas_current),
    STATS_FIELD("arenas_highwater", arenas_highwater),
    STATS_FIELD("arenas_spare", arenas_spare),
    STATS_FIELD("large_blocks", large_blocks),
    STATS_FIELD("large_bytes", large_bytes),
    STATS_FIELD("large_mapped_bytes", large_mapped_bytes),
    STATS_FIELD("large_cached_blocks", large_cached_blocks),
    STATS_FIELD("large_cached_bytes", large_cached_bytes),
    STATS_FIELD("large_allocations", large_nmalloc),
    STATS_FIELD("large_cache_hits", large_cache_hits),
    STATS_FIELD("os_maps", os_maps),
    STATS_FIELD("os_unmaps", os_unmaps),
    STATS_FIELD("bytes_in_use", bytes_in_use),
    STATS_FIELD("bytes_requested_est", bytes_requested_est),
    STATS_FIELD("bytes_free_in_pools", bytes_free_in_pools),
    STATS_FIELD("bytes_pool_tails", bytes_pool_tails),
    STATS_FIELD("bytes_rounding", bytes_rounding),
    STATS_FIELD("bytes_free_pools", bytes_free_pools),
    STATS_FIELD("bytes_metadata", bytes_metadata),
    STATS_FIELD("bytes_mapped", bytes_mapped),
    STATS_FIELD("bytes_mapped_peak", bytes_mapped_peak),
    STATS_FIELD("heaps", nheaps),
    STATS_FIELD("heaps_abandoned", nheaps_abandoned),
    STATS_FIELD("purge_delay_ms_max", purge_delay_ms_max),
    STATS_FIELD("remote_frees_pending", remote_frees_pending),
};

static int set_fields(PyObject *dict, const void *record, const field_t *fields, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t value;
    memcpy(&value, (const char *)record + fields[i].offset, sizeof value);
    if (set_count(dict, fields[i].name, value) < 0) return -1;
  }
  return 0;
}

static PyObject *class_dict(const obm_class_stats_t *c, int index) {
  PyObject *dict = PyDict_New();
  if (dict == NULL) return NULL;
  if (set_count(dict, "index", (uint64_t)index) < 0 ||
      set_count(dict, "block_size", c->block_size) < 0 ||
      set_count(dict, "pool_size", c->pool_size) < 0 ||
      set_fields(dict, c, class_fields, sizeof class_fields / sizeof class_fields[0]) < 0) {
    Py_DECREF(dict);
    return NULL;
  }
  return dict;
}

static PyObject *module_stats(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  obm_stats_t *s = PyMem_RawMalloc(sizeof *s); /* ~5 KiB: not on the stack of any thread */
  if (s == NULL) return PyErr_NoMemory();
  PyThreadState *thread = PyEval_SaveThread(); /* the other threads run meanwhile */
  obm_stats_get(s);
  PyEval_RestoreThread(thread);
  PyObject *dict = PyDict_New();
  PyObject *classes = PyList_New(OBM_NCLASSES);
  if (dict == NULL || classes == NULL) goto fail;
  for (int i = 0; i < OBM_NCLASSES; i++) {
    PyObject *c = class_dict(&s->classes[i], i);
    if (c == NULL) goto fail;
    PyList_SET_ITEM(classes, i, c);
  }
  if (PyDict_SetItemString(dict, "classes", classes) < 0 ||
      set_fields(dict, s, stats_fields, sizeof stats_fields / sizeof stats_fields[0]) < 0)
    goto fail;
  Py_DECREF(classes);
  PyMem_RawFree(s);
  return dict;
fail:
  Py_XDECREF(classes);
  Py_XDECREF(dict);
  PyMem_RawFree(s);
  return NULL;
}

/* ---- print_stats(file=None) --------------------------------------------------------------- */

/* The C library writes its table to a FILE; a memory stream (malloc'ed by libc, outside
 * obmem, so the report does not count itself) takes it, and file.write() gets the text. */
static PyObject *module_print_stats(PyObject *module, PyObject *args, PyObject *kwargs) {
  (void)module;
  static char *keywords[] = {"file", "json", NULL};
  PyObject *file = Py_None;
  int json = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$p:print_stats", keywords, &file, &json))
    return NULL;
  char *text = NULL;
  size_t text_size = 0;
  FILE *stream = open_memstream(&text, &text_size);
  if (stream == NULL) return PyErr_SetFromErrno(PyExc_OSError);
  PyThreadState *thread = PyEval_SaveThread();
  if (json)
    obm_stats_print_json(stream);
  else
    obm_stats_print(stream);
  PyEval_RestoreThread(thread);
  fclose(stream);
  PyObject *result = NULL;
  if (file == Py_None) file = PySys_GetObject("stdout"); /* borrowed */
  if (file == NULL || file == Py_None) {
    PyErr_SetString(PyExc_RuntimeError, "obmem.print_stats(): sys.stdout is not set");
  } else {
    PyObject *str = PyUnicode_DecodeUTF8(text, (Py_ssize_t)text_size, "replace");
    if (str != NULL) {
      result = PyObject_CallMethod(file, "write", "O", str);
      Py_DECREF(str);
    }
  }
  free(text);
  if (result == NULL) return NULL;
  Py_DECREF(result);
  Py_RETURN_NONE;
}

/* ---- the module ---------------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"install", _obm_py_install, METH_NOARGS,
     "install()\n--\n\nMake CPython allocate from obmem in all three domains (raw, mem, "
     "object).\nBlocks allocated before keep their allocator until they are freed."},
    {"uninstall", _obm_py_uninstall, METH_NOARGS,
     "uninstall()\n--\n\nGive allocation back to the allocators CPython had before install(); "
     "blocks\nobmem handed out are still freed by obmem."},
    {"is_installed", _obm_py_is_installed, METH_NOARGS,
     "is_installed()\n--\n\nTrue while CPython allocates from obmem."},
    {"stats", module_stats, METH_NOARGS,
     "stats()\n--\n\nobmem's allocator statistics as a dict: per size class ('classes', 60 "
     "dicts:\nblock_size, pools, blocks_in_use, blocks_free, ...), arenas, large blocks, bytes "
     "in use,\nin free pools and lost to rounding and fragmentation.  See docs/python.md."},
    {"print_stats", (PyCFunction)(void (*)(void))module_print_stats, METH_VARARGS | METH_KEYWORDS,
     "print_stats(file=None, *, json=False)\n--\n\nWrite obmem's statistics table (or one JSON "
     "object) to file, sys.stdout by default."},
    {"sizeof", _obm_py_sizeof, METH_O,
     "sizeof(obj)\n--\n\nThe bytes obj really occupies: its allocator block (with the GC and "
     "managed-dict\npre-headers, rounded to the block size) plus the buffers it owns alone."},
    {"deep_sizeof", _obm_py_deep_sizeof, METH_O,
     "deep_sizeof(obj)\n--\n\nsizeof() summed over obj and everything reachable from it "
     "through tp_traverse,\neach object once; types, modules, functions and code are not "
     "entered."},
    {"footprint", _obm_py_footprint, METH_O,
     "footprint(obj)\n--\n\nsizeof(obj) in parts: a dict with 'total', 'object' (the block "
     "holding the object),\n'buffers' (the blocks it owns), 'request' (the bytes the object "
     "asked for),\n'buffers_request' (the bytes its buffers asked for) and 'allocator' ('obmem', "
     "'pymalloc', 'malloc', 'static' or 'unknown')."},
    /* tracing (trace.c); the tracemalloc-compatible classes and take_snapshot() etc. are
     * added at import from _obmem_tracing.py */
    {"start", (PyCFunction)(void (*)(void))_obm_py_trace_start, METH_VARARGS | METH_KEYWORDS,
     "start(nframe=1, *, sample=0, seed=0, timeline_interval_ms=10.0)\n--\n\nRecord every "
     "allocation of the RAW, MEM and OBJ domains with up to nframe frames of\nits Python stack "
     "(1..128), as tracemalloc.start() does; installs obmem first if needed.\nsample=BYTES: "
     "sampled mode, Poisson by bytes with that mean (an allocation of s bytes\nis recorded with "
     "probability 1 - exp(-s / BYTES) as s / that probability: sizes,\ntotals and statistics "
     "are estimates); seed: its draws (0: from the clock).\nThe timeline takes a sample "
     "every timeline_interval_ms (0: none)."},
    {"get_sampling", _obm_py_trace_sampling, METH_NOARGS,
     "get_sampling()\n--\n\nSampled mode's mean in bytes, 0 in exact mode or when not tracing."},
    {"stop", _obm_py_trace_stop_py, METH_NOARGS,
     "stop()\n--\n\nStop tracing and forget every trace (obmem stays installed)."},
    {"clear_traces", _obm_py_trace_clear, METH_NOARGS,
     "clear_traces()\n--\n\nForget every trace; tracing goes on."},
    {"is_tracing", _obm_py_trace_is_tracing, METH_NOARGS,
     "is_tracing()\n--\n\nTrue while obmem traces allocations."},
    {"get_traceback_limit", _obm_py_trace_limit, METH_NOARGS,
     "get_traceback_limit()\n--\n\nThe number of frames kept per traceback."},
    {"get_traced_memory", _obm_py_trace_memory, METH_NOARGS,
     "get_traced_memory()\n--\n\n(current, peak): bytes of the traced blocks, exact."},
    {"reset_peak", _obm_py_trace_reset_peak, METH_NOARGS,
     "reset_peak()\n--\n\nThe peak becomes the current traced size (and the peak set its "
     "stacks)."},
    {"get_tracemalloc_memory", _obm_py_trace_self_memory, METH_NOARGS,
     "get_tracemalloc_memory()\n--\n\nBytes of the tracer's own tables (libc memory)."},
    {"_raw_snapshot", _obm_py_trace_raw_snapshot, METH_VARARGS,
     "_raw_snapshot(peak=False)\n--\n\n(traces, names): the data of take_snapshot()."},
    {"_raw_object_traceback", _obm_py_trace_raw_object, METH_O,
     "_raw_object_traceback(obj)\n--\n\n(traceback, names) or None."},
    {"_raw_timeline", _obm_py_trace_raw_timeline, METH_NOARGS,
     "_raw_timeline()\n--\n\n(interval_ms, samples, gc_events)."},
    /* capture files (capture.c), used by `python -m obmem run` (obmem/__main__.py) */
    {"_capture_start", (PyCFunction)(void (*)(void))_obm_py_capture_start,
     METH_VARARGS | METH_KEYWORDS,
     "_capture_start(path, native=False, sample=0, max_frames=64, interval_ms=50)\n--\n\n"
     "Install obmem and trace every allocation of CPython's domains with its Python stack\n"
     "(and native frames with native=True) into the capture file path (%p = pid); returns\n"
     "the path written.  sample: mean bytes between samples (0 = every allocation)."},
    {"_capture_stop", _obm_py_capture_stop, METH_NOARGS,
     "_capture_stop()\n--\n\nStop the capture: the file is complete and closed."},
    {"_at_exit", _obm_py_at_exit, METH_NOARGS,
     "_at_exit()\n--\n\nWhat the atexit callback registered by the first install() does: "
     "from then on the\nRAW domain allocates from the allocator CPython had before install(), "
     "and obmem's\nblocks are still freed by obmem."},
    {"_capture_summary", _obm_py_capture_summary, METH_O,
     "_capture_summary(path)\n--\n\nA dict: peak_bytes, leak_bytes (live at the end), "
     "allocations, complete."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "obmem",
    .m_doc = "obmem: CPython's allocator on obmem (install), its statistics (stats), and what "
             "objects\nreally occupy (sizeof, deep_sizeof).  See docs/python.md.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit_obmem(void);

PyMODINIT_FUNC PyInit_obmem(void) {
  PyObject *module = PyModule_Create(&module_def);
  if (module == NULL) return NULL;
  if (PyModule_AddStringConstant(module, "__version__", OBM_VERSION_STRING) < 0) goto fail;
  _obm_py_note_original_allocator();
  /* the tracemalloc-compatible surface, in Python over the _raw_* functions */
  PyObject *tracing = PyImport_ImportModule("_obmem_tracing");
  if (tracing == NULL) goto fail;
  PyObject *bound = PyObject_CallMethod(tracing, "bind", "O", module);
  Py_DECREF(tracing);
  if (bound == NULL) goto fail;
  Py_DECREF(bound);
  if (_obm_py_allocator_register_at_exit() < 0) goto fail;
  /* OBMEM_PYTHON=1: install at import (docs/python.md says when that is) */
  const char *env = getenv("OBMEM_PYTHON");
  if (env != NULL && strcmp(env, "1") == 0) {
    PyObject *done = _obm_py_install(module, NULL);
    if (done == NULL) goto fail;
    Py_DECREF(done);
  } else if (env != NULL && *env && strcmp(env, "0") != 0) {
    if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                         "OBMEM_PYTHON=%s is not 0 or 1; obmem is not installed", env) < 0)
      goto fail;
  }
  return module;
fail:
  Py_DECREF(module);
  return NULL;
}
