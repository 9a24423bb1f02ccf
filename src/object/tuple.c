/* tuple.c — the tuple type: an immutable array of strong references stored inline after the
 * header (CPython's Objects/tupleobject.c), so an n-tuple is one block of
 * 16 (GC head) + 24 (header, size) + 8n bytes: a 3-tuple is 64 bytes, as in CPython.
 *
 * The empty tuple is one static immortal object (CPython's _Py_SINGLETON(tuple_empty)),
 * preceded by a zeroed GC head as CPython's static tuple has: untracked (next == 0), never
 * collecting, so the collector's visits skip it, and never written, so every runtime shares it.
 *
 * Like CPython's tuple, no clear: a tuple cannot be in a cycle by itself (its items are fixed
 * before anyone can see it), so the collector breaks cycles through tuples by clearing the
 * mutable containers in them.  Hash: CPython's scheme (xxHash's round over the item hashes,
 * plus the length), recursive over nested tuples as CPython's is.
 */
#include "object/types_internal.h"

#include <errno.h>
#include <stdarg.h>

static int tuple_traverse(obm_object_t *op, obm_visit_t *visit, void *arg) {
  obm_tuple_t *t = (obm_tuple_t *)op;
  for (size_t i = 0; i < t->base.size; i++)
    OBM_VISIT(t->items[i]);
  return 0;
}

/* Items are dropped last first, each slot emptied before its decref. */
static void tuple_dealloc(obm_runtime_t *rt, obm_object_t *op) {
  obm_tuple_t *t = (obm_tuple_t *)op;
  for (size_t i = t->base.size; i-- > 0;) {
    obm_object_t *item = t->items[i];
    t->items[i] = NULL;
    obm_xdecref(rt, item);
  }
}

const obm_type_t obm_tuple_type = {
    .name = "tuple",
    .basic_size = sizeof(obm_tuple_t),
    .item_size = sizeof(obm_object_t *),
    .flags = OBM_TYPE_GC,
    .traverse = tuple_traverse,
    .dealloc = tuple_dealloc,
};

static struct {
  obm_gc_head_t head; /* zero: untracked, not collecting */
  obm_tuple_t tuple;
} empty_tuple = {
    .tuple = {.base = {.base = OBM_OBJECT_STATIC_INIT(&obm_tuple_type), .size = 0}},
};

int obm_tuple_check(const obm_object_t *op) {
  return op != NULL && op->type == &obm_tuple_type;
}

obm_object_t *obm_tuple_from_array(obm_runtime_t *rt, obm_object_t *const *items, size_t n) {
  if (n == 0) return &empty_tuple.tuple.base.base;
  if (items == NULL) {
    errno = EINVAL;
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    if (items[i] == NULL) {
      errno = EINVAL;
      return NULL;
    }
  obm_tuple_t *t = (obm_tuple_t *)obm_object_new_var(rt, &obm_tuple_type, n);
  if (t == NULL) return NULL;
  for (size_t i = 0; i < n; i++) {
    obm_incref(items[i]);
    t->items[i] = items[i];
  }
  return &t->base.base;
}

obm_object_t *obm_tuple_pack(obm_runtime_t *rt, size_t n, ...) {
  if (n == 0) return &empty_tuple.tuple.base.base;
  obm_tuple_t *t = (obm_tuple_t *)obm_object_new_var(rt, &obm_tuple_type, n);
  if (t == NULL) return NULL;
  va_list ap;
  va_start(ap, n);
  bool bad = false;
  for (size_t i = 0; i < n; i++) {
    obm_object_t *item = va_arg(ap, obm_object_t *);
    if (item == NULL) {
      bad = true;
      continue;
    }
    obm_incref(item);
    t->items[i] = item;
  }
  va_end(ap);
  if (bad) {
    obm_decref(rt, &t->base.base); /* drops the items stored so far */
    errno = EINVAL;
    return NULL;
  }
  return &t->base.base;
}

size_t obm_tuple_size(const obm_object_t *op) {
  return obm_tuple_check(op) ? ((const obm_tuple_t *)op)->base.size : 0;
}

obm_object_t *obm_tuple_get(const obm_object_t *op, size_t index) {
  if (!obm_tuple_check(op)) return NULL;
  const obm_tuple_t *t = (const obm_tuple_t *)op;
  return index < t->base.size ? t->items[index] : NULL;
}

/* ---- hash and equality (used by obm_object_hash / obm_object_equal) ----------------------- */

#define XXPRIME_1 11400714785074694791ull
#define XXPRIME_2 14029467366897019727ull
#define XXPRIME_5 2870177450012600261ull

obm_hash_t _obm_tuple_hash(obm_object_t *op) {
  obm_tuple_t *t = (obm_tuple_t *)op;
  uint64_t acc = XXPRIME_5;
  for (size_t i = 0; i < t->base.size; i++) {
    acc += obm_object_hash(t->items[i]) * XXPRIME_2;
    acc = (acc << 31) | (acc >> 33);
    acc *= XXPRIME_1;
  }
  acc += t->base.size ^ (XXPRIME_5 ^ 3527539ull);
  return acc;
}

int _obm_tuple_equal(obm_object_t *a, obm_object_t *b) {
  obm_tuple_t *ta = (obm_tuple_t *)a, *tb = (obm_tuple_t *)b;
  if (ta->base.size != tb->base.size) return 0;
  for (size_t i = 0; i < ta->base.size; i++)
    if (!obm_object_equal(ta->items[i], tb->items[i])) return 0;
  return 1;
}
