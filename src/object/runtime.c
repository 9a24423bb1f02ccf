/* runtime.c — a runtime's lifetime and the collector's settings (CPython's gcmodule.c
 * functions that only read or set state: thresholds, counts, enable, debug, callbacks,
 * stats, freeze, the garbage list).
 *
 * A runtime is one obm_calloc'd obm_runtime_t: no globals, so runtimes are independent and
 * each may run on its own thread.  obm_runtime_free collects twice (the second time after
 * dropping the garbage list, which may hold the last references to SAVEALL's objects), then
 * unlinks whatever is still tracked so that no object points into the freed structure.
 */
#include "object/object_internal.h"

#include <errno.h>

obm_runtime_t *obm_runtime_new(void) {
  static const size_t thresholds[OBM_GC_NGENERATIONS] = {700, 10, 10};
  obm_runtime_t *rt = obm_calloc(1, sizeof *rt);
  if (rt == NULL) return NULL;
  for (int i = 0; i < OBM_GC_NGENERATIONS; i++) {
    _obm_gc_list_init(&rt->generations[i].head);
    rt->generations[i].threshold = thresholds[i];
  }
  _obm_gc_list_init(&rt->permanent);
  _obm_gc_list_init(&rt->visited);
  rt->enabled = 1;
  return rt;
}

static void drop_garbage_list(obm_runtime_t *rt) {
  obm_object_t *garbage = rt->garbage;
  rt->garbage = NULL;
  obm_xdecref(rt, garbage);
}

size_t obm_runtime_free(obm_runtime_t *rt) {
  if (rt == NULL) return 0;
  rt->debug = 0;
  obm_gc_collect(rt, OBM_GC_NGENERATIONS - 1);
  drop_garbage_list(rt);
  obm_gc_collect(rt, OBM_GC_NGENERATIONS - 1);
  drop_garbage_list(rt); /* refilled by legacy-finalizer cycles, which stay uncollectable */
  _obm_gc_untrack_all(rt);
  _obm_str_interned_release(rt);
  size_t live = rt->nobjects;
  obm_free(rt->callbacks);
  obm_free(rt);
  return live;
}

size_t obm_runtime_live_objects(const obm_runtime_t *rt) {
  return rt->nobjects;
}

void obm_gc_enable(obm_runtime_t *rt) {
  rt->enabled = 1;
}

void obm_gc_disable(obm_runtime_t *rt) {
  rt->enabled = 0;
}

int obm_gc_is_enabled(const obm_runtime_t *rt) {
  return rt->enabled;
}

void obm_gc_set_threshold(obm_runtime_t *rt, size_t threshold0, size_t threshold1,
                          size_t threshold2) {
  rt->generations[0].threshold = threshold0;
  rt->generations[1].threshold = threshold1;
  rt->generations[2].threshold = threshold2;
}

void obm_gc_get_threshold(const obm_runtime_t *rt, size_t out[OBM_GC_NGENERATIONS]) {
  for (int i = 0; i < OBM_GC_NGENERATIONS; i++)
    out[i] = rt->generations[i].threshold;
}

void obm_gc_get_count(const obm_runtime_t *rt, size_t out[OBM_GC_NGENERATIONS]) {
  for (int i = 0; i < OBM_GC_NGENERATIONS; i++)
    out[i] = rt->generations[i].count;
}

void obm_gc_get_stats(const obm_runtime_t *rt, obm_gc_stats_t out[OBM_GC_NGENERATIONS]) {
  for (int i = 0; i < OBM_GC_NGENERATIONS; i++)
    out[i] = rt->stats[i];
}

/* Both walk the objects they move, to set their TRACKED/OLD/VISITED flags
 * (object_internal.h). */
void obm_gc_freeze(obm_runtime_t *rt) {
  _obm_gc_list_merge(&rt->visited, &rt->generations[OBM_GC_NGENERATIONS - 1].head);
  rt->sweeping = 0; /* a running sweep ends */
  for (int i = 0; i < OBM_GC_NGENERATIONS; i++) {
    obm_gc_head_t *list = &rt->generations[i].head;
    for (obm_gc_head_t *g = _obm_gc_next(list); g != list; g = _obm_gc_next(g))
      _obm_from_gc(g)->flags &= ~(OBM_OBJECT_OLD | OBM_OBJECT_VISITED | OBM_OBJECT_TRACKED);
    _obm_gc_list_merge(list, &rt->permanent);
  }
  rt->generations[0].count = 0;
}

void obm_gc_unfreeze(obm_runtime_t *rt) {
  /* unvisited objects of the oldest generation */
  uint32_t bits = OBM_OBJECT_TRACKED | OBM_OBJECT_OLD | (rt->visited_bit ^ OBM_OBJECT_VISITED);
  for (obm_gc_head_t *g = _obm_gc_next(&rt->permanent); g != &rt->permanent; g = _obm_gc_next(g))
    _obm_from_gc(g)->flags = (_obm_from_gc(g)->flags & ~OBM_OBJECT_VISITED) | bits;
  _obm_gc_list_merge(&rt->permanent, &rt->generations[OBM_GC_NGENERATIONS - 1].head);
}

size_t obm_gc_get_freeze_count(const obm_runtime_t *rt) {
  return _obm_gc_list_size(&rt->permanent);
}

void obm_gc_set_debug(obm_runtime_t *rt, unsigned flags) {
  rt->debug = flags;
}

unsigned obm_gc_get_debug(const obm_runtime_t *rt) {
  return rt->debug;
}

void obm_gc_set_debug_output(obm_runtime_t *rt, FILE *out) {
  rt->debug_output = out;
}

int obm_gc_callback_add(obm_runtime_t *rt, obm_gc_callback_t *fn, void *arg) {
  if (fn == NULL) return EINVAL;
  if (rt->ncallbacks == rt->callbacks_capacity) {
    size_t capacity = rt->callbacks_capacity < 4 ? 4 : 2 * rt->callbacks_capacity;
    obm_gc_callback_entry_t *entries =
        obm_realloc(rt->callbacks, capacity * sizeof(obm_gc_callback_entry_t));
    if (entries == NULL) return ENOMEM;
    rt->callbacks = entries;
    rt->callbacks_capacity = capacity;
  }
  rt->callbacks[rt->ncallbacks++] = (obm_gc_callback_entry_t){fn, arg};
  return 0;
}

int obm_gc_callback_remove(obm_runtime_t *rt, obm_gc_callback_t *fn, void *arg) {
  for (size_t i = 0; i < rt->ncallbacks; i++) {
    if (rt->callbacks[i].fn == fn && rt->callbacks[i].arg == arg) {
      for (size_t j = i + 1; j < rt->ncallbacks; j++)
        rt->callbacks[j - 1] = rt->callbacks[j];
      rt->ncallbacks--;
      return 0;
    }
  }
  return ENOENT;
}

obm_object_t *obm_gc_garbage(obm_runtime_t *rt) {
  if (rt->garbage == NULL) rt->garbage = obm_list_new(rt, 0);
  return rt->garbage;
}

int obm_gc_set_incremental(obm_runtime_t *rt, size_t budget) {
  rt->incremental = budget;
  return 0;
}

size_t obm_gc_get_incremental(const obm_runtime_t *rt) {
  return rt->incremental;
}
