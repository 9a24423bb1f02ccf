/* footprint.c — obmem.sizeof(), obmem.footprint() and obmem.deep_sizeof(): what a Python
 * object really occupies.
 *
 * An object's footprint is the allocator block that holds it plus the blocks of the buffers
 * it alone owns (docs/python.md lists them by type):
 *
 *   block start   the object's address minus its pre-header: PyGC_Head (16 B) for GC types,
 *                 and on 3.11 (and 3.12) two more words for Py_TPFLAGS_MANAGED_DICT (and
 *                 MANAGED_WEAKREF) types: the instance's values and dict pointers
 *   block size    obmem's block (obm_owns, then obm_usable_size): exact.  Any other block
 *                 is sized from the bytes the object asked for ("request", computed as
 *                 CPython computes it), rounded as its allocator does: pymalloc's 16-byte
 *                 classes up to 512 B, malloc_usable_size above (or for every size under
 *                 PYTHONMALLOC=malloc), 16-byte rounding when CPython had hooks of unknown
 *                 layout (debug hooks, tracemalloc) at import.  An object in a loaded
 *                 object's static data (None, small ints, static types, one-character
 *                 strings, ...) counts its request: it holds no block.
 *   buffers       list items (allocated capacity), dict keys table (unless shared by a class)
 *                 and split values, set table (when not the inline small table), bytearray
 *                 buffer, array.array buffer, a non-compact str's data and a str's UTF-8 and
 *                 (3.11) wchar_t copies, and on 3.11 an instance's inline values array.
 *
 * deep_sizeof walks tp_traverse (what gc.get_referents sees) depth-first with an explicit
 * stack and a pointer set, so each object counts once and deep structures do not recurse on
 * the C stack.  Types, modules, functions (Python and built-in) and code objects are neither
 * counted nor entered unless they are the root: they are the program, not its data, and a
 * class leads to its module's globals.  No Python code runs during the walk.
 */
#define _GNU_SOURCE
#include "obmem_py.h"

#include <obmem.h>

#include <link.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PYMALLOC_MAX   512 /* pymalloc's largest request (SMALL_REQUEST_THRESHOLD) */
#define PYMALLOC_ALIGN 16  /* its classes' step on 64-bit builds */
#define GC_HEAD_SIZE   (2 * sizeof(uintptr_t)) /* PyGC_Head: _gc_next, _gc_prev */

/* The CPython 3.11 dict layouts this file reads (Include/internal/pycore_dict.h), which the
 * tests check against dict.__sizeof__. */
#define DICT_LAYOUT_311  (PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000)
#define DICT_KEYS_LAYOUT (PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000)

static size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

/* ---- statically allocated objects: the writable segments of every loaded object ---------- */

typedef struct range_s {
  uintptr_t start, end;
} range_t;

/* Invariant: ranges[0 .. nranges) sorted by start, disjoint; rebuilt when the set of loaded
 * objects changed (dl_iterate_phdr's adds/subs counters). */
static range_t *ranges;
static size_t nranges, ranges_capacity;
static unsigned long long seen_adds = ~0ull, seen_subs = ~0ull;

static int peek_counters(struct dl_phdr_info *info, size_t size, void *changed) {
  (void)size;
  *(int *)changed = info->dlpi_adds != seen_adds || info->dlpi_subs != seen_subs;
  seen_adds = info->dlpi_adds;
  seen_subs = info->dlpi_subs;
  return 1; /* the counters are the same in every call: stop at the first */
}

static int add_segments(struct dl_phdr_info *info, size_t size, void *unused) {
  (void)size;
  (void)unused;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W)) continue; /* objects are written */
    if (nranges == ranges_capacity) {
      size_t capacity = ranges_capacity ? 2 * ranges_capacity : 64;
      range_t *grown = realloc(ranges, capacity * sizeof *grown);
      if (grown == NULL) return 1; /* fewer ranges: some static objects look allocated */
      ranges = grown;
      ranges_capacity = capacity;
    }
    uintptr_t start = info->dlpi_addr + ph->p_vaddr;
    ranges[nranges++] = (range_t){start, start + ph->p_memsz};
  }
  return 0;
}

static int by_start(const void *a, const void *b) {
  uintptr_t x = ((const range_t *)a)->start, y = ((const range_t *)b)->start;
  return (x > y) - (x < y);
}

static void refresh_static_ranges(void) {
  int changed = 0;
  dl_iterate_phdr(peek_counters, &changed);
  if (!changed) return;
  nranges = 0;
  dl_iterate_phdr(add_segments, NULL);
  qsort(ranges, nranges, sizeof *ranges, by_start);
}

static int is_static(const void *p) {
  uintptr_t a = (uintptr_t)p;
  size_t lo = 0, hi = nranges;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ranges[mid].end <= a)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < nranges && ranges[lo].start <= a;
}

/* ---- blocks -------------------------------------------------------------------------------- */

typedef enum allocator_e { BY_OBMEM, BY_PYMALLOC, BY_MALLOC, BY_STATIC, BY_UNKNOWN } allocator_t;
static const char *const allocator_names[] = {"obmem", "pymalloc", "malloc", "static", "unknown"};

/* The size of the block at `block`, which its owner asked `request` bytes for. */
static size_t block_size(const void *block, size_t request, allocator_t *by) {
  if (obm_owns(block)) {
    *by = BY_OBMEM;
    return obm_usable_size(block);
  }
  if (is_static(block)) {
    *by = BY_STATIC;
    return request;
  }
  size_t rounded = round_up(request ? request : 1, PYMALLOC_ALIGN);
  switch (_obm_py_origin()) {
  case OBM_PY_ORIGIN_PYMALLOC:
    if (request <= PYMALLOC_MAX) {
      *by = BY_PYMALLOC;
      return rounded;
    }
    /* pymalloc passes larger requests to PyMem_RawMalloc, i.e. malloc */
    __attribute__((fallthrough));
  case OBM_PY_ORIGIN_MALLOC:
    *by = BY_MALLOC;
    return malloc_usable_size((void *)block);
  case OBM_PY_ORIGIN_UNKNOWN:
    break;
  }
  *by = BY_UNKNOWN;
  return rounded;
}

/* ---- what an object asked for ------------------------------------------------------------ */

size_t _obm_py_pre_header_size(PyTypeObject *tp) {
  size_t n = PyType_IS_GC(tp) ? GC_HEAD_SIZE : 0;
  unsigned long preheader_flags = Py_TPFLAGS_MANAGED_DICT;
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
  preheader_flags |= Py_TPFLAGS_MANAGED_WEAKREF;
#endif
  if (tp->tp_flags & preheader_flags) n += 2 * sizeof(PyObject *);
  return n;
}

/* The bytes the object's own allocation asked for, pre-header excluded (as CPython's
 * allocation functions compute them). */
static size_t inline_request(PyObject *o) {
  PyTypeObject *tp = Py_TYPE(o);
  size_t basic = (size_t)tp->tp_basicsize, item = (size_t)tp->tp_itemsize;
  if (PyUnicode_Check(o) && PyUnicode_IS_COMPACT(o)) {
    size_t header = PyUnicode_IS_ASCII(o) ? sizeof(PyASCIIObject) : sizeof(PyCompactUnicodeObject);
    return header + ((size_t)PyUnicode_GET_LENGTH(o) + 1) * PyUnicode_KIND(o);
  }
  if (PyLong_Check(o) && item != 0) {
    /* digits of PyLong_SHIFT bits (30 in 4-byte digits, 15 in 2-byte ones); zero has one */
    size_t shift = item == 4 ? 30 : 15;
    size_t nbits = _PyLong_NumBits(o);
    if (nbits == (size_t)-1) { /* too many bits for a size_t: cannot be in memory */
      PyErr_Clear();
      nbits = 0;
    }
    size_t ndigits = nbits ? (nbits + shift - 1) / shift : 1;
    return basic + ndigits * item;
  }
  /* PyType_GenericAlloc rounds this up to a multiple of 8, bytes and int do not: the block
   * is a multiple of 16 either way */
  if (item == 0) return basic;
  Py_ssize_t n = Py_SIZE(o);
  return basic + item * (size_t)(n < 0 ? -n : n);
}

/* ---- the buffers an object owns alone ---------------------------------------------------- */

typedef struct buffer_s {
  const void *block;
  size_t request;
} buffer_t;

#define MAX_BUFFERS 4

#if DICT_KEYS_LAYOUT
/* struct _dictkeysobject up to dk_indices (pycore_dict.h, 3.11 and 3.12). */
typedef struct dict_keys_s {
  Py_ssize_t dk_refcnt;
  uint8_t dk_log2_size;
  uint8_t dk_log2_index_bytes;
  uint8_t dk_kind; /* 0: DICT_KEYS_GENERAL (hash, key, value entries), else (key, value) */
  uint32_t dk_version;
  Py_ssize_t dk_usable;
  Py_ssize_t dk_nentries;
} dict_keys_t;

#define USABLE_FRACTION(n) (((n) << 1) / 3)

static size_t keys_request(const dict_keys_t *k) {
  size_t entry = k->dk_kind == 0 ? 3 * sizeof(void *) : 2 * sizeof(void *);
  return sizeof(dict_keys_t) + ((size_t)1 << k->dk_log2_index_bytes) +
         USABLE_FRACTION((size_t)1 << k->dk_log2_size) * entry;
}
#endif

#if DICT_LAYOUT_311
/* A split table's values (dictobject.c's new_values): a block holding a prefix of bytes
 * (insertion order; the last byte is the prefix's size) and then one pointer per entry the
 * shared keys can hold; the pointer handed around is past the prefix. */
static buffer_t values_buffer(const void *values, const dict_keys_t *shared) {
  size_t prefix = ((const uint8_t *)values)[-1];
  size_t n = (size_t)(shared->dk_nentries + shared->dk_usable);
  return (buffer_t){(const uint8_t *)values - prefix, prefix + n * sizeof(PyObject *)};
}
#endif

/* array.array's object (Modules/arraymodule.c), up to the fields read here. */
typedef struct array_head_s {
  PyVarObject ob_base;
  char *ob_item;
  Py_ssize_t allocated;
} array_head_t;

static int is_array(PyTypeObject *tp) {
  for (; tp != NULL; tp = tp->tp_base)
    if (strcmp(tp->tp_name, "array.array") == 0) return 1;
  return 0;
}

static int str_buffers(PyObject *o, buffer_t *out) {
  int n = 0;
  size_t length = (size_t)PyUnicode_GET_LENGTH(o);
  if (!PyUnicode_IS_COMPACT(o)) {
    const void *data = ((PyUnicodeObject *)o)->data.any;
    if (data) out[n++] = (buffer_t){data, (length + 1) * PyUnicode_KIND(o)};
  }
  if (!(PyUnicode_IS_COMPACT(o) && PyUnicode_IS_ASCII(o))) {
    PyCompactUnicodeObject *c = (PyCompactUnicodeObject *)o;
    if (c->utf8 && c->utf8 != PyUnicode_DATA(o))
      out[n++] = (buffer_t){c->utf8, (size_t)c->utf8_length + 1};
  }
#if PY_VERSION_HEX < 0x030C0000
  const wchar_t *wstr = ((PyASCIIObject *)o)->wstr;
  if (wstr && (const void *)wstr != PyUnicode_DATA(o)) {
    size_t wlength =
        PyUnicode_IS_COMPACT_ASCII(o) ? length : (size_t)((PyCompactUnicodeObject *)o)->wstr_length;
    out[n++] = (buffer_t){wstr, (wlength + 1) * sizeof(wchar_t)};
  }
#endif
  return n;
}

/* The buffers o owns alone, into out[MAX_BUFFERS]; returns how many. */
static int owned_buffers(PyObject *o, buffer_t *out) {
  PyTypeObject *tp = Py_TYPE(o);
  int n = 0;
  if (PyList_Check(o)) {
    PyListObject *l = (PyListObject *)o;
    if (l->ob_item && l->allocated > 0)
      out[n++] = (buffer_t){l->ob_item, (size_t)l->allocated * sizeof(PyObject *)};
  } else if (PyByteArray_Check(o)) {
    PyByteArrayObject *b = (PyByteArrayObject *)o;
    if (b->ob_bytes && b->ob_alloc > 0) out[n++] = (buffer_t){b->ob_bytes, (size_t)b->ob_alloc};
  } else if (PyAnySet_Check(o)) {
    PySetObject *s = (PySetObject *)o;
    if (s->table != s->smalltable)
      out[n++] = (buffer_t){s->table, (size_t)(s->mask + 1) * sizeof(setentry)};
  } else if (PyDict_Check(o)) {
#if DICT_KEYS_LAYOUT
    PyDictObject *d = (PyDictObject *)o;
    const dict_keys_t *keys = (const dict_keys_t *)d->ma_keys;
    if (keys->dk_refcnt == 1) out[n++] = (buffer_t){keys, keys_request(keys)};
#if DICT_LAYOUT_311
    if (d->ma_values) out[n++] = values_buffer(d->ma_values, keys);
#endif
#endif
  } else if (PyUnicode_Check(o)) {
    n = str_buffers(o, out);
  } else if (is_array(tp)) {
    array_head_t *a = (array_head_t *)o;
    Py_buffer view;
    if (a->ob_item && a->allocated > 0 && PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) == 0) {
      out[n++] = (buffer_t){a->ob_item, (size_t)a->allocated * (size_t)view.itemsize};
      PyBuffer_Release(&view);
    }
    PyErr_Clear();
  }
#if DICT_LAYOUT_311
  /* an instance's attribute values, kept at ((PyObject **)o)[-4] until a dict takes them */
  if ((tp->tp_flags & Py_TPFLAGS_MANAGED_DICT) && (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) &&
      n < MAX_BUFFERS) {
    const void *values = ((void *const *)o)[-4];
    const dict_keys_t *shared = (const dict_keys_t *)((PyHeapTypeObject *)tp)->ht_cached_keys;
    if (values && shared) out[n++] = values_buffer(values, shared);
  }
#endif
  return n;
}

/* ---- one object ------------------------------------------------------------------------- */

typedef struct footprint_s {
  size_t object;          /* the block holding the object */
  size_t buffers;         /* the blocks it owns alone */
  size_t buffers_request; /* what those blocks were asked for */
  size_t request;         /* what the object's own allocation asked for, pre-header included */
  allocator_t object_by;
} footprint_t;

static void measure(PyObject *o, footprint_t *f) {
  PyTypeObject *tp = Py_TYPE(o);
  size_t pre = _obm_py_pre_header_size(tp);
  f->request = pre + inline_request(o);
  if (is_static(o)) {
    f->object_by = BY_STATIC;
    f->object = f->request - pre; /* a static object has no pre-header in front */
  } else {
    f->object = block_size((const uint8_t *)o - pre, f->request, &f->object_by);
  }
  buffer_t buffers[MAX_BUFFERS];
  int n = owned_buffers(o, buffers);
  f->buffers = f->buffers_request = 0;
  for (int i = 0; i < n; i++) {
    allocator_t by;
    size_t size = block_size(buffers[i].block, buffers[i].request, &by);
    if (by == BY_STATIC) continue; /* a static buffer is shared, not owned */
    f->buffers += size;
    f->buffers_request += buffers[i].request;
  }
}

PyObject *_obm_py_sizeof(PyObject *module, PyObject *obj) {
  (void)module;
  refresh_static_ranges();
  footprint_t f;
  measure(obj, &f);
  return PyLong_FromSize_t(f.object + f.buffers);
}

PyObject *_obm_py_footprint(PyObject *module, PyObject *obj) {
  (void)module;
  refresh_static_ranges();
  footprint_t f;
  measure(obj, &f);
  return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:s}", "total", (Py_ssize_t)(f.object + f.buffers),
                       "object", (Py_ssize_t)f.object, "buffers", (Py_ssize_t)f.buffers, "request",
                       (Py_ssize_t)f.request, "buffers_request", (Py_ssize_t)f.buffers_request,
                       "allocator", allocator_names[f.object_by]);
}

/* ---- everything reachable --------------------------------------------------------------- */

/* An open-addressing set of addresses (0 is never an object's) and the stack of objects
 * still to measure; both in libc memory, outside obmem, so that measuring does not change
 * obmem's statistics.  Invariant: nused <= capacity / 2. */
typedef struct walk_s {
  uintptr_t *slots;
  size_t capacity, nused;
  PyObject **stack;
  size_t depth, stack_capacity;
  int failed; /* out of memory */
} walk_t;

static size_t slot_of(uintptr_t key, size_t capacity) {
  uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull; /* Fibonacci hashing */
  return (size_t)(h >> 20) & (capacity - 1);
}

/* 1 when key was added, 0 when it was there already or memory ran out (w->failed). */
static int walk_add(walk_t *w, uintptr_t key) {
  if (2 * (w->nused + 1) > w->capacity) {
    size_t capacity = w->capacity ? 2 * w->capacity : 1024;
    uintptr_t *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL) {
      w->failed = 1;
      return 0;
    }
    for (size_t i = 0; i < w->capacity; i++) {
      if (w->slots[i] == 0) continue;
      size_t j = slot_of(w->slots[i], capacity);
      while (slots[j])
        j = (j + 1) & (capacity - 1);
      slots[j] = w->slots[i];
    }
    free(w->slots);
    w->slots = slots;
    w->capacity = capacity;
  }
  size_t j = slot_of(key, w->capacity);
  while (w->slots[j]) {
    if (w->slots[j] == key) return 0;
    j = (j + 1) & (w->capacity - 1);
  }
  w->slots[j] = key;
  w->nused++;
  return 1;
}

static void walk_push(walk_t *w, PyObject *o) {
  if (w->depth == w->stack_capacity) {
    size_t capacity = w->stack_capacity ? 2 * w->stack_capacity : 1024;
    PyObject **stack = realloc(w->stack, capacity * sizeof *stack);
    if (stack == NULL) {
      w->failed = 1;
      return;
    }
    w->stack = stack;
    w->stack_capacity = capacity;
  }
  w->stack[w->depth++] = o;
}

/* The program rather than its data: not counted or entered below the root. */
static int is_program(PyObject *o) {
  return PyType_Check(o) || PyModule_Check(o) || PyFunction_Check(o) || PyCFunction_Check(o) ||
         PyCode_Check(o);
}

static int visit_referent(PyObject *o, void *arg) {
  walk_t *w = arg;
  if (o == NULL || is_program(o)) return 0;
  if (walk_add(w, (uintptr_t)o)) walk_push(w, o);
  return w->failed; /* non-zero stops tp_traverse */
}

PyObject *_obm_py_deep_sizeof(PyObject *module, PyObject *obj) {
  (void)module;
  refresh_static_ranges();
  walk_t w = {0};
  size_t total = 0;
  if (walk_add(&w, (uintptr_t)obj)) walk_push(&w, obj);
  while (w.depth > 0 && !w.failed) {
    PyObject *o = w.stack[--w.depth];
    footprint_t f;
    measure(o, &f);
    total += f.object + f.buffers;
    /* what gc.get_referents(o) sees: every GC object's tp_traverse, tracked or not */
    traverseproc traverse = Py_TYPE(o)->tp_traverse;
    if (PyObject_IS_GC(o) && traverse) traverse(o, visit_referent, &w);
  }
  free(w.slots);
  free(w.stack);
  if (w.failed) return PyErr_NoMemory();
  return PyLong_FromSize_t(total);
}
