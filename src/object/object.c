/* object.c — object creation, the count-to-zero path and deferred deallocation (trashcan).
 *
 * Creation: one zeroed obm_calloc block, [GC head][object] for GC types, linked into
 * generation 0 at once (its fields are zero, so traverse is safe before the caller fills
 * them).  Generation 0's count is bumped first, and an automatic collection may run then,
 * before the new block exists (CPython 3.11's _PyObject_GC_Alloc order).
 *
 * Deallocation (obm_decref_slow, count 1 -> 0), CPython's subtype_dealloc order:
 *   finalize once (PEP 442, flag OBM_OBJECT_FINALIZED) and legacy_finalize, each with the
 *   object temporarily alive at count 1 — a count above 1 afterwards means it was resurrected
 *   and deallocation stops (a GC object is re-tracked for it, so a resurrected cycle stays
 *   collectable); weak references cleared, callbacks run; untrack; the type's dealloc (or
 *   clear); obm_free.
 *
 * Trashcan (CPython's Py_TRASHCAN_BEGIN/END): rt->dealloc_depth counts the deallocations now
 * nested on the C stack.  At OBM_TRASH_DEPTH, a GC object that reaches count 0 is not
 * released but pushed on rt->trash (untracked, linked through its GC head's prev, count 0).
 * When the outermost deallocation returns to depth 0 it pops and releases them one by one,
 * each again nesting at most OBM_TRASH_DEPTH levels.  So any chain costs O(OBM_TRASH_DEPTH)
 * stack frames and no memory beyond the objects.
 */
#include "object/object_internal.h"

#include <errno.h>
#include <string.h>

static size_t gc_head_size(const obm_type_t *type) {
  return (type->flags & OBM_TYPE_GC) ? sizeof(obm_gc_head_t) : 0;
}

/* The type invariants of obm_type_s (object.h). */
static bool type_is_valid(const obm_type_t *type, bool variable) {
  if (type == NULL || type->basic_size < sizeof(obm_object_t)) return false;
  if (variable && type->basic_size < sizeof(obm_var_object_t)) return false;
  if ((type->flags & OBM_TYPE_GC) && type->traverse == NULL) return false;
  if (type->weaklist_offset != 0 &&
      (type->weaklist_offset < sizeof(obm_object_t) ||
       type->weaklist_offset > type->basic_size - sizeof(obm_weakref_t *)))
    return false;
  return true;
}

static obm_object_t *object_alloc(obm_runtime_t *rt, const obm_type_t *type, size_t size) {
  bool gc = (type->flags & OBM_TYPE_GC) != 0;
  obm_gc_generation_t *young = &rt->generations[0];
  if (gc) {
    young->count++;
    if (obm_unlikely(young->count > _obm_gc_young_trigger(rt) || (rt->debug & OBM_GC_DEBUG_HARD)) &&
        young->threshold != 0 && rt->enabled && !rt->collecting)
      _obm_gc_collect_generations(rt);
  }
  size_t head = gc_head_size(type);
  char *block = obm_calloc(1, head + size);
  if (block == NULL) {
    if (gc && young->count > 0) young->count--;
    return NULL; /* errno == ENOMEM */
  }
  obm_object_t *op = (obm_object_t *)(block + head);
  op->refcnt = 1;
  op->type = type;
  rt->nobjects++;
  if (gc) {
    op->flags = OBM_OBJECT_TRACKED;
    _obm_gc_list_append(_obm_as_gc(op), &young->head);
  }
  return op;
}

obm_object_t *obm_object_new(obm_runtime_t *rt, const obm_type_t *type) {
  if (!type_is_valid(type, false)) {
    errno = EINVAL;
    return NULL;
  }
  return object_alloc(rt, type, type->basic_size);
}

obm_object_t *obm_object_new_var(obm_runtime_t *rt, const obm_type_t *type, size_t nitems) {
  if (!type_is_valid(type, true)) {
    errno = EINVAL;
    return NULL;
  }
  size_t items_bytes;
  if (__builtin_mul_overflow(nitems, type->item_size, &items_bytes) ||
      items_bytes > SIZE_MAX / 2 - type->basic_size) {
    errno = ENOMEM;
    return NULL;
  }
  obm_object_t *op = object_alloc(rt, type, type->basic_size + items_bytes);
  if (op != NULL) ((obm_var_object_t *)op)->size = nitems;
  return op;
}

size_t obm_object_size(const obm_object_t *op) {
  const obm_type_t *type = op->type;
  size_t size = gc_head_size(type) + type->basic_size;
  if (type->item_size != 0) size += ((const obm_var_object_t *)op)->size * type->item_size;
  return size;
}

int obm_is_finalized(const obm_object_t *op) {
  return (op->flags & OBM_OBJECT_FINALIZED) != 0;
}

int obm_gc_is_tracked(const obm_object_t *op) {
  return _obm_is_gc(op) && _obm_as_gc(op)->next != 0;
}

void obm_gc_track(obm_runtime_t *rt, obm_object_t *op) {
  obm_assert(_obm_is_gc(op));
  obm_gc_head_t *g = _obm_as_gc(op);
  if (_obm_is_gc(op) && g->next == 0) {
    op->flags = (op->flags & ~(OBM_OBJECT_OLD | OBM_OBJECT_VISITED)) | OBM_OBJECT_TRACKED;
    _obm_gc_list_append(g, &rt->generations[0].head);
  }
}

void obm_gc_untrack(obm_object_t *op) {
  if (_obm_is_gc(op) && _obm_as_gc(op)->next != 0) _obm_gc_list_remove(_obm_as_gc(op));
}

/* ---- the count-to-zero path ------------------------------------------------------------- */

/* Calls a finalizer on op (count 0) with op temporarily alive.  Returns true when op is still
 * dead afterwards (count back to 0), false when the finalizer resurrected it. */
static bool call_finalizer(obm_runtime_t *rt, obm_object_t *op, obm_finalize_t *finalize) {
  if (_obm_is_gc(op) && _obm_as_gc(op)->next == 0) obm_gc_track(rt, op);
  op->refcnt = 1;
  finalize(rt, op);
  uint32_t rc = op->refcnt;
  if (rc == 1) {
    op->refcnt = 0;
    return true;
  }
  /* rc == 0 cannot be seen here: the finalizer's own decref to 0 would have freed op, which
   * is the finalizer's bug (it dropped a reference it did not own). */
  if (rc < OBM_IMMORTAL_MIN) op->refcnt = rc - 1;
  return false;
}

/* Releases op's contents and memory; op is untracked first, so that no collection started
 * by the type's dealloc sees a dying object. */
static void object_free(obm_runtime_t *rt, obm_object_t *op) {
  const obm_type_t *type = op->type;
  bool gc = _obm_is_gc(op);
  if (gc && _obm_as_gc(op)->next != 0) _obm_gc_list_remove(_obm_as_gc(op));
  if (gc && obm_unlikely(rt->sweeping)) _obm_gc_repend_children(rt, op);
  if (type->dealloc != NULL)
    type->dealloc(rt, op);
  else if (type->clear != NULL)
    type->clear(rt, op);
  if (gc && rt->generations[0].count > 0) rt->generations[0].count--;
  obm_assert(rt->nobjects > 0);
  rt->nobjects--;
  obm_free(gc ? (void *)_obm_as_gc(op) : (void *)op);
}

/* The whole deallocation of op (count 0), at the current nesting depth. */
static void dealloc_body(obm_runtime_t *rt, obm_object_t *op) {
  const obm_type_t *type = op->type;
  if (type->finalize != NULL && !(op->flags & OBM_OBJECT_FINALIZED)) {
    op->flags |= OBM_OBJECT_FINALIZED;
    if (!call_finalizer(rt, op, type->finalize)) return;
  }
  if (type->legacy_finalize != NULL && !call_finalizer(rt, op, type->legacy_finalize)) return;
  obm_weakref_t **weaklist = _obm_weaklist(op);
  if (weaklist != NULL && *weaklist != NULL) {
    obm_weakref_chain_t chain = {NULL, NULL};
    _obm_weakref_clear_referent(op, &chain);
    _obm_weakref_run_chain(rt, &chain);
  }
  object_free(rt, op);
}

static void trash_push(obm_runtime_t *rt, obm_object_t *op) {
  obm_gc_head_t *g = _obm_as_gc(op);
  if (g->next != 0) _obm_gc_list_remove(g);
  g->prev = (uintptr_t)rt->trash;
  rt->trash = g;
}

static void trash_drain(obm_runtime_t *rt) {
  while (rt->trash != NULL) {
    obm_gc_head_t *g = rt->trash;
    rt->trash = (obm_gc_head_t *)g->prev;
    g->prev = 0;
    rt->dealloc_depth++;
    dealloc_body(rt, _obm_from_gc(g));
    rt->dealloc_depth--;
  }
}

void obm_decref_slow(obm_runtime_t *rt, obm_object_t *op) {
  uint32_t rc = op->refcnt;
  if (rc >= OBM_IMMORTAL_MIN) return;
  if (obm_unlikely(rc == 0)) {
    _obm_error(OBM_ERR_REFCOUNT, op,
               "obm_decref of a '%s' object whose count is already 0 (a reference dropped "
               "twice, or the object is being deallocated); the object is left alone",
               op->type->name);
    return;
  }
  op->refcnt = 0;
  if (_obm_is_gc(op) && rt->dealloc_depth >= OBM_TRASH_DEPTH) {
    trash_push(rt, op);
    return;
  }
  rt->dealloc_depth++;
  dealloc_body(rt, op);
  rt->dealloc_depth--;
  if (rt->dealloc_depth == 0 && rt->trash != NULL) trash_drain(rt);
}
