/* weakref.c — weak references (CPython's Objects/weakrefobject.c, reduced to its core).
 *
 * A type that supports weak references reserves an obm_weakref_t * field in its objects
 * (weaklist_offset): the head of a doubly-linked list of the weak references to the object,
 * newest first.  Clearing a weak reference unlinks it and sets referent = NULL.  A weak
 * reference never points to freed memory: the referent's deallocation clears its whole list
 * first (object.c), and the collector clears the lists of all garbage before anything is
 * finalized or cleared (gc.c).
 *
 * Callbacks run only after every weak reference to the dying object has been cleared, in
 * list order (newest first, as CPython documents), each weak reference kept alive by a
 * reference the chain holds during its callback.  A callback is taken out of its weak
 * reference before it is called, so it runs at most once.
 *
 * The weak reference is a GC object: its callback data is a strong reference, so a cycle
 * through a callback is collectable, and whether the weak reference itself is garbage
 * decides whether its callback may run (gc.c's handle_weakrefs).
 */
#include "object/object_internal.h"

#include <errno.h>

static int weakref_traverse(obm_object_t *op, obm_visit_t *visit, void *arg) {
  OBM_VISIT(((obm_weakref_t *)op)->callback_data);
  return 0;
}

/* Clear and dealloc: the weak reference forgets its referent and its callback. */
static void weakref_clear(obm_runtime_t *rt, obm_object_t *op) {
  obm_weakref_t *wr = (obm_weakref_t *)op;
  _obm_weakref_clear_ref(wr);
  obm_object_t *data = wr->callback_data;
  wr->callback = NULL;
  wr->callback_data = NULL;
  obm_xdecref(rt, data);
}

const obm_type_t obm_weakref_type = {
    .name = "weakref",
    .basic_size = sizeof(obm_weakref_t),
    .flags = OBM_TYPE_GC,
    .traverse = weakref_traverse,
    .clear = weakref_clear,
};

obm_weakref_t *obm_weakref_new(obm_runtime_t *rt, obm_object_t *referent,
                               obm_weakref_callback_t *callback, obm_object_t *data) {
  obm_weakref_t **list = _obm_weaklist(referent);
  if (list == NULL || referent->refcnt == 0) {
    errno = EINVAL;
    return NULL;
  }
  /* both held across the allocation, which may run a collection and finalizers */
  obm_incref(referent);
  obm_xincref(data);
  obm_weakref_t *wr = (obm_weakref_t *)obm_object_new(rt, &obm_weakref_type);
  if (wr == NULL) {
    obm_xdecref(rt, data);
    obm_decref(rt, referent);
    return NULL;
  }
  wr->referent = referent;
  wr->callback = callback;
  wr->callback_data = data; /* the reference taken above */
  wr->prev = NULL;
  wr->next = *list;
  if (*list != NULL) (*list)->prev = wr;
  *list = wr;
  obm_decref(rt, referent); /* the caller's reference keeps it alive */
  return wr;
}

obm_object_t *obm_weakref_get(const obm_weakref_t *wr) {
  obm_object_t *referent = wr->referent;
  return referent != NULL && referent->refcnt != 0 ? referent : NULL;
}

size_t obm_weakref_count(const obm_object_t *op) {
  obm_weakref_t **list = _obm_weaklist(op);
  size_t n = 0;
  if (list != NULL)
    for (const obm_weakref_t *wr = *list; wr != NULL; wr = wr->next)
      n++;
  return n;
}

void _obm_weakref_clear_ref(obm_weakref_t *wr) {
  obm_object_t *referent = wr->referent;
  if (referent == NULL) return;
  if (wr->prev != NULL)
    wr->prev->next = wr->next;
  else
    *_obm_weaklist(referent) = wr->next;
  if (wr->next != NULL) wr->next->prev = wr->prev;
  wr->prev = wr->next = NULL;
  wr->referent = NULL;
}

void _obm_weakref_clear_referent(obm_object_t *op, obm_weakref_chain_t *chain) {
  obm_weakref_t **list = _obm_weaklist(op);
  obm_weakref_t *wr;
  while ((wr = *list) != NULL) {
    _obm_weakref_clear_ref(wr);
    if (chain == NULL || wr->callback == NULL || wr->base.refcnt == 0 ||
        (wr->base.flags & OBM_OBJECT_COLLECTING))
      continue;
    obm_incref(&wr->base);
    if (chain->tail != NULL)
      chain->tail->next = wr;
    else
      chain->head = wr;
    chain->tail = wr;
  }
}

void _obm_weakref_run_chain(obm_runtime_t *rt, obm_weakref_chain_t *chain) {
  while (chain->head != NULL) {
    obm_weakref_t *wr = chain->head;
    chain->head = wr->next;
    if (chain->head == NULL) chain->tail = NULL;
    wr->next = NULL;
    obm_weakref_callback_t *callback = wr->callback;
    obm_object_t *data = wr->callback_data;
    wr->callback = NULL;
    wr->callback_data = NULL;
    if (callback != NULL) callback(rt, wr, data);
    if (data != NULL && rt->sweeping) _obm_gc_repend(rt, data); /* it may be garbage now */
    obm_xdecref(rt, data);
    obm_decref(rt, &wr->base);
  }
}
