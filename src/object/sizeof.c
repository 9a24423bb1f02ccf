/* sizeof.c — footprints: obm_sizeof (one object, what sys.getsizeof should have been: the
 * allocator's real block sizes) and obm_sizeof_deep (everything reachable, each once).
 *
 * obm_sizeof(op) = obm_usable_size(op's block, GC head included) + obm_usable_size of the
 * blocks op owns: a list's item array, a dict's keys block.  The owned blocks are known per
 * built-in type here (the type struct has no footprint hook yet; other types count their
 * block).  A static immortal object (small ints, the empty str and tuple) is not an allocator
 * block: it counts its struct's bytes.
 *
 * obm_sizeof_deep walks the graph from op through each type's traverse with an explicit
 * stack (any depth, no recursion) and a visited set: an open-addressing hash set of pointers
 * (linear probing, grown at half full), both obm_malloc'd, O(1) words per object reached.
 * traverse changes no count, so nothing in the graph changes during the walk.
 */
#include "object/types_internal.h"

#include <errno.h>

/* The allocator block that holds op, and whether it is one (static objects are not). */
static size_t block_bytes(const obm_object_t *op) {
  const void *block = _obm_is_gc(op) ? (const void *)_obm_as_gc(op) : (const void *)op;
  if (!obm_owns(block)) return obm_object_size(op);
  return obm_usable_size(block);
}

size_t obm_sizeof(const obm_object_t *op) {
  if (op == NULL) return 0;
  size_t total = block_bytes(op);
  const obm_type_t *type = op->type;
  if (type == &obm_list_type) {
    const obm_list_t *list = (const obm_list_t *)op;
    if (list->items != NULL) total += obm_usable_size(list->items);
  } else if (type == &obm_dict_type) {
    const obm_dict_t *d = (const obm_dict_t *)op;
    if (d->keys != NULL) total += obm_usable_size(d->keys);
  } else if (type->sizeof_owned != NULL) {
    total += type->sizeof_owned(op);
  }
  return total;
}

/* ---- the deep walk ------------------------------------------------------------------------ */

/* Invariants: set_capacity is a power of two; set_count < set_capacity / 2; set holds the
 * objects pushed so far (NULL = free slot); stack[0..nstack) are pushed, not yet measured. */
typedef struct walk_s {
  obm_object_t **set;
  size_t set_capacity;
  size_t set_count;
  obm_object_t **stack;
  size_t nstack;
  size_t stack_capacity;
} walk_t;

static size_t pointer_slot(const walk_t *w, const obm_object_t *op) {
  uintptr_t p = (uintptr_t)op >> 4;
  p *= 0x9E3779B97F4A7C15ull;
  return (size_t)(p >> 17) & (w->set_capacity - 1);
}

/* 1 when op was added now, 0 when it was there, -1 when out of memory. */
static int set_add(walk_t *w, obm_object_t *op) {
  if ((w->set_count + 1) * 2 > w->set_capacity) {
    size_t old_capacity = w->set_capacity;
    obm_object_t **old = w->set;
    size_t capacity = old_capacity * 2;
    obm_object_t **set = obm_calloc(capacity, sizeof *set);
    if (set == NULL) return -1;
    w->set = set;
    w->set_capacity = capacity;
    for (size_t i = 0; i < old_capacity; i++) {
      if (old[i] == NULL) continue;
      size_t j = pointer_slot(w, old[i]);
      while (set[j] != NULL)
        j = (j + 1) & (capacity - 1);
      set[j] = old[i];
    }
    obm_free(old);
  }
  size_t j = pointer_slot(w, op);
  while (w->set[j] != NULL) {
    if (w->set[j] == op) return 0;
    j = (j + 1) & (w->set_capacity - 1);
  }
  w->set[j] = op;
  w->set_count++;
  return 1;
}

static int push(walk_t *w, obm_object_t *op) {
  int added = set_add(w, op);
  if (added <= 0) return added;
  if (w->nstack == w->stack_capacity) {
    size_t capacity = w->stack_capacity * 2;
    obm_object_t **stack = obm_realloc(w->stack, capacity * sizeof *stack);
    if (stack == NULL) return -1;
    w->stack = stack;
    w->stack_capacity = capacity;
  }
  w->stack[w->nstack++] = op;
  return 1;
}

static int visit_push(obm_object_t *child, void *arg) {
  return push(arg, child) < 0 ? ENOMEM : 0;
}

size_t obm_sizeof_deep(obm_runtime_t *rt, obm_object_t *op) {
  (void)rt; /* the walk reads only; rt names the world op lives in, for a later hook */
  if (op == NULL) return 0;
  walk_t w = {.set_capacity = 64, .stack_capacity = 64};
  w.set = obm_calloc(w.set_capacity, sizeof *w.set);
  w.stack = obm_malloc(w.stack_capacity * sizeof *w.stack);
  size_t total = 0;
  bool failed = w.set == NULL || w.stack == NULL || push(&w, op) < 0;
  while (!failed && w.nstack > 0) {
    obm_object_t *next = w.stack[--w.nstack];
    total += obm_sizeof(next);
    obm_traverse_t *traverse = next->type->traverse;
    if (traverse != NULL && traverse(next, visit_push, &w) != 0) failed = true;
  }
  obm_free(w.set);
  obm_free(w.stack);
  if (failed) {
    errno = ENOMEM;
    return 0;
  }
  return total;
}
