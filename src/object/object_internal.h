/* object_internal.h — the object layer's shared declarations: the GC head, its list
 * operations, the runtime structure, and the hooks between object.c, gc.c and weakref.c.
 *
 * GC head (16 bytes in front of the object, CPython's PyGC_Head without its flag bits):
 *   next  0: untracked; else the next head in a circular doubly-linked list
 *   prev  the previous head.  An untracked object on the runtime's deferred-deallocation
 *         list has next == 0 and prev == the next deferred head (or 0).
 * The collector's per-object state lives in the object header's flags word, not in the
 * links (CPython overloads prev with gc_refs and keeps a flag in next):
 *   flags = FINALIZED (bit 0) | COLLECTING (1) | UNREACHABLE (2) | VISITED (3) | OLD (4)
 *           | TRACKED (5) | gc_refs << 6
 *   COLLECTING   the object is in the set a collection examines (only GC objects ever get
 *                it, so a visitor tests one word of the child, never its type)
 *   UNREACHABLE  inside move_unreachable: the object sits in the tentatively unreachable list;
 *                inside a whole collection's first pass: reached, not yet walked (gc_refs
 *                then counts the references found so far)
 *   TRACKED      the object is in a generation's list or rt->visited (not permanent): the
 *                set a whole collection examines
 *   OLD          the object is in the oldest generation (its list or rt->visited); cleared
 *                when it is untracked or frozen
 *   VISITED      for OLD objects: == rt->visited_bit <=> the running incremental sweep has
 *                examined it (flipping rt->visited_bit at a sweep's end makes all unvisited)
 *   gc_refs      0 outside a collection; during one, refcnt minus the references found from
 *                the set, saturated at OBM_GC_REFS_MAX (such an object is never unreachable)
 * Both links stay valid during a collection, so moving an object between lists is O(1).
 */
#ifndef OBM_OBJECT_INTERNAL_H
#define OBM_OBJECT_INTERNAL_H

#include "internal.h"
#include "obmem/object.h"

typedef struct obm_gc_head_s {
  uintptr_t next;
  uintptr_t prev;
} obm_gc_head_t;

#define OBM_OBJECT_COLLECTING  0x2u
#define OBM_OBJECT_UNREACHABLE 0x4u
#define OBM_OBJECT_VISITED     0x8u
#define OBM_OBJECT_OLD         0x10u
#define OBM_OBJECT_TRACKED     0x20u
#define OBM_GC_REFS_SHIFT      6
#define OBM_GC_REFS_ONE        (1u << OBM_GC_REFS_SHIFT)
#define OBM_GC_REFS_MAX        ((1u << (32 - OBM_GC_REFS_SHIFT)) - 1u)
#define OBM_GC_FLAGS_MASK      (OBM_GC_REFS_ONE - 1u) /* the flag bits below gc_refs */

OBM_INLINE obm_gc_head_t *_obm_as_gc(const obm_object_t *op) {
  return (obm_gc_head_t *)op - 1;
}
OBM_INLINE obm_object_t *_obm_from_gc(obm_gc_head_t *g) {
  return (obm_object_t *)(g + 1);
}
OBM_INLINE bool _obm_is_gc(const obm_object_t *op) {
  return (op->type->flags & OBM_TYPE_GC) != 0;
}
OBM_INLINE obm_gc_head_t *_obm_gc_next(const obm_gc_head_t *g) {
  return (obm_gc_head_t *)g->next;
}
OBM_INLINE obm_gc_head_t *_obm_gc_prev(const obm_gc_head_t *g) {
  return (obm_gc_head_t *)g->prev;
}

/* ---- circular doubly-linked lists of GC heads (a list is its head node) ------------------- */

OBM_INLINE void _obm_gc_list_init(obm_gc_head_t *list) {
  list->next = list->prev = (uintptr_t)list;
}
OBM_INLINE bool _obm_gc_list_is_empty(const obm_gc_head_t *list) {
  return list->next == (uintptr_t)list;
}
/* Appends node (not in a list) at list's tail. */
OBM_INLINE void _obm_gc_list_append(obm_gc_head_t *node, obm_gc_head_t *list) {
  obm_gc_head_t *last = (obm_gc_head_t *)list->prev;
  node->prev = (uintptr_t)last;
  last->next = (uintptr_t)node;
  node->next = (uintptr_t)list;
  list->prev = (uintptr_t)node;
}
/* Unlinks node from its list and marks it untracked (flags too). */
OBM_INLINE void _obm_gc_list_remove(obm_gc_head_t *node) {
  obm_gc_head_t *prev = _obm_gc_prev(node);
  obm_gc_head_t *next = _obm_gc_next(node);
  prev->next = (uintptr_t)next;
  next->prev = (uintptr_t)prev;
  node->next = 0;
  node->prev = 0;
  _obm_from_gc(node)->flags &= ~(OBM_OBJECT_OLD | OBM_OBJECT_TRACKED);
}
/* Moves node from its list to the tail of list. */
OBM_INLINE void _obm_gc_list_move(obm_gc_head_t *node, obm_gc_head_t *list) {
  obm_gc_head_t *prev = _obm_gc_prev(node);
  obm_gc_head_t *next = _obm_gc_next(node);
  prev->next = (uintptr_t)next;
  next->prev = (uintptr_t)prev;
  _obm_gc_list_append(node, list);
}
/* Appends all of `from` to `to`; `from` becomes empty. */
OBM_INLINE void _obm_gc_list_merge(obm_gc_head_t *from, obm_gc_head_t *to) {
  if (!_obm_gc_list_is_empty(from)) {
    obm_gc_head_t *to_tail = (obm_gc_head_t *)to->prev;
    obm_gc_head_t *first = (obm_gc_head_t *)from->next;
    obm_gc_head_t *last = (obm_gc_head_t *)from->prev;
    to_tail->next = (uintptr_t)first;
    first->prev = (uintptr_t)to_tail;
    last->next = (uintptr_t)to;
    to->prev = (uintptr_t)last;
  }
  _obm_gc_list_init(from);
}
OBM_INLINE size_t _obm_gc_list_size(const obm_gc_head_t *list) {
  size_t n = 0;
  for (const obm_gc_head_t *g = (obm_gc_head_t *)list->next; g != list;
       g = (obm_gc_head_t *)g->next)
    n++;
  return n;
}

/* Stores a new reference to value (may be NULL) in *slot, then drops the old one — last,
 * because a decref may run any code, which must find the container consistent. */
OBM_INLINE void _obm_set_ref(obm_runtime_t *rt, obm_object_t **slot, obm_object_t *value) {
  obm_object_t *old = *slot;
  obm_xincref(value);
  *slot = value;
  obm_xdecref(rt, old);
}

/* ---- the runtime ------------------------------------------------------------------------- */

typedef struct obm_gc_generation_s {
  obm_gc_head_t head; /* the list of objects in this generation */
  size_t threshold;   /* collect when count exceeds it */
  size_t count;       /* see obm_gc_get_count */
} obm_gc_generation_t;

typedef struct obm_gc_callback_entry_s {
  obm_gc_callback_t *fn;
  void *arg;
} obm_gc_callback_entry_t;

/* Invariants: every tracked object of this runtime is in exactly one of generations[i].head,
 * visited and permanent (outside a collection, which moves them through its local lists);
 * an object has OBM_OBJECT_OLD <=> it is in generations[2].head or visited, and
 * OBM_OBJECT_TRACKED <=> it is in one of generations[i].head or visited;
 * visited is empty unless sweeping, and holds exactly the OLD objects whose VISITED bit is
 * visited_bit;
 * long_lived_pending <= the size of generation 2's list plus what was freed since;
 * trash != NULL only while dealloc_depth > 0; collecting == 1 exactly during a collection
 * (callbacks included). */
struct obm_runtime_s {
  obm_gc_generation_t generations[OBM_GC_NGENERATIONS];
  obm_gc_head_t permanent;   /* frozen objects (obm_gc_freeze) */
  size_t long_lived_total;   /* generation 2's size after its last collection */
  size_t long_lived_pending; /* objects promoted to generation 2 since then */
  int enabled;               /* automatic collection */
  int collecting;            /* a collection runs (no nested one starts) */
  unsigned debug;            /* OBM_GC_DEBUG_* */
  FILE *debug_output;        /* NULL: stderr */
  obm_gc_stats_t stats[OBM_GC_NGENERATIONS];
  obm_object_t *garbage; /* list: uncollectable objects (and SAVEALL's) */
  obm_gc_callback_entry_t *callbacks;
  size_t ncallbacks;
  size_t callbacks_capacity;
  unsigned dealloc_depth; /* nested deallocations now running */
  obm_gc_head_t *trash;   /* deferred deallocations, linked through prev */
  size_t nobjects;        /* objects created and not yet freed */
  size_t incremental;     /* objects per incremental step; 0: the mode is off */
  obm_gc_head_t visited;  /* the oldest generation's objects the running sweep examined */
  int sweeping;           /* an incremental sweep of the oldest generation runs */
  uint32_t visited_bit;   /* OBM_OBJECT_VISITED or 0: the value that means "visited" */
  size_t sweep_survivors; /* objects the running sweep's steps kept */
  size_t sweep_collected; /* and found unreachable */
  size_t promoted_seen;   /* long_lived_pending when the last step ran */
  size_t repended;        /* visited objects sent back to pending (gc.c, repend) */
  size_t repended_seen;   /* repended when the last step ran */
  void *interned;         /* str.c's table of interned strings; NULL while there are none */
};

/* str.c: frees the runtime's table of interned strings, if any (obm_runtime_free; strings
 * still alive then are leaked and no longer marked interned). */
OBM_HIDDEN void _obm_str_interned_release(obm_runtime_t *rt);

/* Generation 0's count above which an automatic collection runs: threshold0, or during an
 * incremental sweep at most budget / OBM_GC_PACE creations, so that each step (budget
 * objects) does OBM_GC_PACE times the work the program adds between steps and a sweep ends
 * before the heap has grown much (gc.c, "Pacing"). */
#define OBM_GC_PACE 8 /* 4: peak 1.31x the whole collections', 8: 1.13x, 16: 1.06x (docs) */
OBM_INLINE size_t _obm_gc_young_trigger(const obm_runtime_t *rt) {
  size_t trigger = rt->generations[0].threshold;
  if (rt->sweeping && rt->incremental != 0 && rt->incremental / OBM_GC_PACE < trigger)
    trigger = rt->incremental / OBM_GC_PACE;
  return trigger;
}

/* ---- weakref.c --------------------------------------------------------------------------- */
OBM_INLINE obm_weakref_t **_obm_weaklist(const obm_object_t *op) {
  size_t offset = op->type->weaklist_offset;
  return offset != 0 ? (obm_weakref_t **)((char *)op + offset) : NULL;
}
/* Weak references whose callbacks are due, linked through their (no longer needed) next
 * field, each holding a reference taken when it was appended. */
typedef struct obm_weakref_chain_s {
  obm_weakref_t *head, *tail;
} obm_weakref_chain_t;
/* Unlinks wr from its referent's list and sets referent = NULL; the callback stays. */
OBM_HIDDEN void _obm_weakref_clear_ref(obm_weakref_t *wr);
/* Clears every weak reference to op.  With a chain, those whose callback must run are
 * appended to it, in list order (newest first): a weak reference that has a callback, is
 * alive (count > 0) and is not itself garbage of the running collection (OBM_OBJECT_COLLECTING).
 * Without a chain no callback will run (CPython's clear_weakrefs). */
OBM_HIDDEN void _obm_weakref_clear_referent(obm_object_t *op, obm_weakref_chain_t *chain);
/* Calls the chain's callbacks in order, each once, and drops the chain's references. */
OBM_HIDDEN void _obm_weakref_run_chain(obm_runtime_t *rt, obm_weakref_chain_t *chain);

/* ---- gc.c -------------------------------------------------------------------------------- */
/* An automatic collection: the oldest generation whose count exceeds its threshold
 * (generation 2 only under the 25 % rule).  Caller: not collecting. */
OBM_HIDDEN void _obm_gc_collect_generations(obm_runtime_t *rt);
/* Unlinks every tracked object (all generations and the permanent one); returns how many. */
OBM_HIDDEN size_t _obm_gc_untrack_all(obm_runtime_t *rt);
/* A sweep runs and op dies: the objects it refers to that the sweep visited go back to
 * pending (they may be garbage now). */
OBM_HIDDEN void _obm_gc_repend_children(obm_runtime_t *rt, obm_object_t *op);
/* The same for op itself (a reference to it is about to be dropped). */
OBM_HIDDEN void _obm_gc_repend(obm_runtime_t *rt, obm_object_t *op);
/* Whole-structure checker (Lua's lua_checkmemory): every list well linked and flag-free,
 * every tracked object of a GC type with a count > 0, and no tracked object referenced by
 * more tracked objects than its count.  Returns the problems found, each reported through
 * _obm_error(OBM_ERR_CORRUPTION or OBM_ERR_REFCOUNT).  Not during a collection. */
OBM_HIDDEN size_t _obm_gc_check(obm_runtime_t *rt);

#endif /* OBM_OBJECT_INTERNAL_H */
