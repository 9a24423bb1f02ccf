/* obmem_py.h — what the files of the CPython module `obmem` (python/) share.
 *
 *   module.c     the module: functions table, stats(), print_stats(), OBMEM_PYTHON at import
 *   allocator.c  install(), uninstall(), is_installed(): CPython's allocator domains on obmem
 *   footprint.c  sizeof(), deep_sizeof(), footprint(): what an object really occupies
 *
 * The module links its own private copy of obmem (python/CMakeLists.txt, setup.py) and uses
 * only the public header: a front end never includes an internal one (STYLE.md).
 */
#ifndef OBMEM_PY_H
#define OBMEM_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030B0000
#error "the obmem module needs CPython 3.11 or newer"
#endif

/* allocator.c */
PyObject *_obm_py_install(PyObject *module, PyObject *unused);
PyObject *_obm_py_uninstall(PyObject *module, PyObject *unused);
PyObject *_obm_py_is_installed(PyObject *module, PyObject *unused);
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

#endif /* OBMEM_PY_H */
