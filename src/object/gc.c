/* gc.c — the generational cycle collector: CPython 3.12's algorithm, with the per-object
 * state in the object header's flags word (object_internal.h) and an incremental mode.
 *
 * A collection of a set of objects (collect_set; a generation and the younger ones, or one
 * increment of the oldest generation):
 *   1. deduce_unreachable: gc_refs := refcnt for each object of the set (update_refs); for
 *      every reference from one object of the set to another, the target's gc_refs -= 1
 *      (subtract_refs); objects left with gc_refs > 0 are referenced from outside the set.
 *      move_unreachable scans the set once: an object with gc_refs > 0 is reachable and
 *      marks what it refers to reachable; one with gc_refs == 0 moves to `unreachable`
 *      tentatively, and back to the scan's tail when a reachable object refers to it.
 *   2. survivors join the next generation (g < 2) or stay (g == 2; an increment's join
 *      rt->visited), their flags set to that list's in the scan itself.
 *   3. unreachable objects with a legacy finalizer, and all they reach, move to `finalizers`:
 *      uncollectable (step 8).
 *   4. handle_weakrefs: weak references inside the unreachable set are cleared, and so is
 *      every weak reference to an unreachable object; then the callbacks of the cleared weak
 *      references that are reachable themselves run.  No callback can see garbage: every
 *      weak reference into it is cleared, and a reachable callback refers to no garbage.
 *   5. finalize_garbage: each finalizer runs once per object lifetime, the object alive.
 *   6. handle_resurrected: deduce_unreachable again over the unreachable set alone; what a
 *      finalizer made referenced from outside, and everything it reaches, survives.  Weak
 *      references made meanwhile into the final set are cleared (no callbacks).
 *   7. delete_garbage: clear(op) on each final object (op kept alive across the call) breaks
 *      the cycles and counting frees them; with SAVEALL they go to the garbage list instead.
 *      Anything still alive afterwards survives.
 *   8. finalizers' objects: those with a legacy finalizer (all, with SAVEALL) go to the
 *      garbage list; all survive.  Result: collected (final set) + uncollectable.
 * Fast path: move_unreachable notes whether any object it moved to `unreachable` has a
 * finalizer not yet run, a legacy finalizer or weak references.  When none has (and no
 * debug flag asks to see the garbage), steps 3-6 and their passes over the garbage are
 * skipped (nothing can be resurrected: a callback cannot reach garbage).  Step 7 stays a
 * cascade: clearing one object frees the others of its cycle by counting while their
 * lines are hot (a batch that pinned every count, called each dealloc, then freed every
 * block was measured slower: two more passes over cold memory).
 *
 * Speed (docs/object.md has the numbers): a visitor decides by one load of the child's
 * flags word (COLLECTING), never its type; records and lists are traversed inline (the
 * types' own traverse through a pointer otherwise); both links stay valid, so moving an
 * object between lists is O(1) and no pass restores them; the sizes the generation
 * bookkeeping needs are counted on the way, never by walking a list; the list walks
 * prefetch the memory ahead of them (gc_prefetch_ahead), and a long list's visits wait
 * until the walk meets its items ("deferred visits"), so each line is loaded once a pass.
 *
 * Incremental mode (gc_step): the oldest generation's list is the sweep's pending part;
 * rt->visited holds what the running sweep examined.  A step takes the newest pending
 * object and every pending object reachable from it (the closure, computed with gc_refs
 * on the way: a closure's visit is also subtract_refs' visit), repeating until the budget
 * is spent, so a reference cycle inside the pending part is always examined whole by one
 * step; references from outside the step (younger generations, visited objects) count as
 * external, so a step is a collection of an ordinary subset: safe for any subset, and
 * complete for every garbage cycle that is wholly pending when its step runs (a cycle that
 * straddles visited and pending survives to the next sweep).  Garbage that held objects
 * visited earlier in the sweep sends them back to pending (repend_children), so garbage
 * hanging from garbage is found by the same sweep.  Promotions during a sweep
 * join the pending part's tail (examined first), and each step takes the promotions since
 * the last one on top of its budget, so a sweep always ends.  At the end, visited becomes
 * the oldest generation again and visited_bit flips: every object is unvisited at once.
 * Pacing: during a sweep, automatic young collections (each followed by a step) come every
 * budget / OBM_GC_PACE (8) creations at least (_obm_gc_young_trigger), so that a step
 * examines 8 times what the program added since the last one: the sweep of an old
 * generation of T objects ends within about T / 8 creations, and the garbage that waits
 * for it stays near what waits for the 25 % rule's whole collections.
 * Order: a step's survivors go in front of rt->visited, so that the next sweep, taking
 * from the tail again, meets the objects in the order this one did — the order that kept
 * its steps small (a root container examined last, when what it holds is visited, instead
 * of first, when its closure is the whole heap).
 *
 * Memory: every list is threaded through the GC heads and gc_refs lives in the header, so
 * a collection allocates nothing but the garbage list's growth.  Automatic collections (at
 * GC object creation) pick the oldest generation whose count exceeds its threshold,
 * generation 2 only when long_lived_pending exceeds long_lived_total / 4 (which makes full
 * collections amortized linear); in incremental mode that full collection becomes the
 * start of a sweep, and every young collection of a sweep is followed by one step.
 */
#include "object/object_internal.h"

#include <errno.h>
#include <inttypes.h>

/* ---- flags ------------------------------------------------------------------------------- */

#define GC_PERSISTENT                                                                              \
  (OBM_OBJECT_FINALIZED | OBM_OBJECT_OLD | OBM_OBJECT_VISITED | OBM_OBJECT_TRACKED)

static inline uint32_t gc_refs(uint32_t flags) {
  return flags >> OBM_GC_REFS_SHIFT;
}
static inline obm_gc_head_t *gc_first(const obm_gc_head_t *list) {
  return (obm_gc_head_t *)list->next;
}
/* The flags of an object that leaves a collection alive into a list whose objects have
 * `bits` (0 for generations 0-1, OLD | VISITED value for the oldest and rt->visited). */
static inline void gc_survive(obm_object_t *op, uint32_t bits) {
  op->flags = (op->flags & OBM_OBJECT_FINALIZED) | OBM_OBJECT_TRACKED | bits;
}
/* The flags of the oldest generation's list (unvisited by any sweep) and of rt->visited. */
static inline uint32_t old_bits(const obm_runtime_t *rt) {
  return OBM_OBJECT_OLD | (rt->visited_bit ^ OBM_OBJECT_VISITED);
}
static inline uint32_t visited_bits(const obm_runtime_t *rt) {
  return OBM_OBJECT_OLD | rt->visited_bit;
}

static FILE *debug_out(const obm_runtime_t *rt) {
  return rt->debug_output != NULL ? rt->debug_output : stderr;
}

static void debug_object(const obm_runtime_t *rt, const char *what, const obm_object_t *op) {
  fprintf(debug_out(rt), "gc: %s <%s %p>\n", what, op->type->name, (const void *)op);
}

/* ---- traversal ----------------------------------------------------------------------------- */

/* A long list met by a pass, whose visits to its items wait until the walk meets each item
 * (see "deferred visits" below).  Invariant: i < n while the slot is in use; items
 * and n are the list's, which no pass changes (passes run no user code). */
typedef struct gc_deferred_s {
  obm_object_t *container; /* the list (for messages) */
  obm_object_t **items;
  size_t n;      /* its size */
  size_t i;      /* items[0..i) visited */
  size_t misses; /* objects met since items[i - 1] was */
} gc_deferred_t;

/* Tunables (settable with -D: test_gc_stress passes with -DGC_DEFER_MIN_ITEMS=1 and
 * -DGC_DEFER_MISSES=0..3, which defer every list and drain them all the time). */
#ifndef GC_DEFER_SLOTS
#define GC_DEFER_SLOTS 4 /* lists deferred at once; more are traversed at once */
#endif
#ifndef GC_DEFER_MIN_ITEMS
#define GC_DEFER_MIN_ITEMS 64 /* shorter lists are traversed at once */
#endif
#ifndef GC_DEFER_MISSES
#define GC_DEFER_MISSES 64 /* objects met without its next item before a list is drained */
#endif

/* The state of one collection's passes. */
typedef struct gc_ctx_s {
  obm_object_t *parent;       /* the object being traversed (for messages) */
  size_t problems;            /* refcount errors reported */
  obm_gc_head_t *young;       /* move_unreachable: the scanned list; a step: its set */
  obm_gc_head_t *cursor;      /* move_unreachable: where objects found reachable go back */
  obm_gc_head_t *unreachable; /* move_unreachable's output */
  size_t nunreachable;        /* objects in unreachable */
  size_t nset;                /* a step: objects taken so far */
  uint32_t survivor_bits;     /* flags of the list the survivors join */
  uint32_t pending_bits;      /* a step: (flags & (OLD|VISITED|COLLECTING)) of a pending object */
  bool special;               /* an object moved to unreachable has a pending finalizer, a
                                 legacy finalizer, weak references, or no clear */
  unsigned ndeferred;         /* deferred[0..ndeferred) in use; 0 between passes */
  gc_deferred_t deferred[GC_DEFER_SLOTS];
} gc_ctx_t;

/* Software prefetch.  A walk over a linked list has one load in flight at a time (the next
 * object's address is known only once this one is loaded), so over a heap that is not in
 * cache it pays the memory's latency per object (bench/gc.c's heap: 16 ns per object for
 * the bare walk, 8 for a list of the same size in address order).  The generation lists are
 * close to address order, though: the allocator carves a pool's blocks in address order and
 * move_unreachable's depth-first order keeps a structure's objects together (on that heap
 * every link but one in 2000 goes less than 256 bytes away), so the object a walk reaches
 * some 30 objects later is mostly about GC_PREFETCH_AHEAD bytes further on.  Asking for that
 * line now turns the walk into a stream; where the order differs the hint is wasted, never
 * wrong (a prefetch does not fault).  A long list's items are scattered by nature: its
 * traversal asks for the item GC_PREFETCH_ITEMS places ahead.  Measured: docs/object.md. */
#ifndef GC_PREFETCH_AHEAD
#define GC_PREFETCH_AHEAD 2048 /* bytes: 32 blocks of 64 */
#endif
#ifndef GC_PREFETCH_ITEMS
#define GC_PREFETCH_ITEMS 16
#endif
OBM_INLINE void gc_prefetch_ahead(const obm_gc_head_t *g) {
  __builtin_prefetch((const char *)g + GC_PREFETCH_AHEAD, 1);
}

/* Calls visit(items[i], ctx) for i in [from, n), asking for the item GC_PREFETCH_ITEMS
 * places ahead. */
OBM_INLINE void visit_items(obm_object_t **items, size_t from, size_t n, obm_visit_t *visit,
                            gc_ctx_t *ctx) {
  size_t i = from;
  for (; i + GC_PREFETCH_ITEMS < n; i++) {
    __builtin_prefetch(items[i + GC_PREFETCH_ITEMS], 1);
    visit(items[i], ctx);
  }
  for (; i < n; i++)
    visit(items[i], ctx);
}

/* Calls visit(child, ctx) on each child of op: inline for records and lists (most objects
 * of most programs), through the type's traverse otherwise.  visit returns 0. */
OBM_INLINE void gc_traverse(obm_object_t *op, obm_visit_t *visit, gc_ctx_t *ctx) {
  const obm_type_t *type = op->type;
  if (type->traverse == obm_record_traverse) {
    obm_record_t *rec = (obm_record_t *)op;
    size_t n = rec->base.size;
    for (size_t i = 0; i < n; i++) {
      obm_object_t *child = rec->slots[i];
      if (child != NULL) visit(child, ctx);
    }
  } else if (type == &obm_list_type) {
    obm_list_t *list = (obm_list_t *)op;
    visit_items(list->items, 0, list->size, visit, ctx);
  } else {
    ctx->parent = op;
    type->traverse(op, visit, ctx);
  }
}

/* ---- deferred visits ---------------------------------------------------------------------
 * A list holding a large part of the heap (a program's big container; bench/gc.c's root
 * holds a third of its objects) makes each pass touch every item's line twice: once from
 * the list, long before the walk gets there (the line is evicted again on a large heap), and
 * once on the item's own turn — about a quarter of a whole collection's memory traffic on
 * that heap.  But the walk mostly meets a list's items in the list's order: move_unreachable
 * puts the objects it finds through a traversal one after the other, in the traversal's
 * order, right behind their referrer.  So a pass can wait with a long list's visits: it
 * keeps the list in a slot, and when the walk meets the object that is the list's next item,
 * visits it then, while its line is hot.  A list whose next item has not come up for
 * GC_DEFER_MISSES objects (another order, items outside the set) is drained: its remaining
 * visits happen at once, as without deferring; every slot is drained by the pass's end.
 * Both passes are indifferent to the order of visits (update_subtract_refs counts references
 * before an object's turn; move_unreachable moves an object back from `unreachable` when a
 * late visit reaches it), so deferring changes no result. */

/* Takes a slot for op if it is a long list and one is free (instead of traversing it). */
static inline bool defer_list(obm_object_t *op, gc_ctx_t *ctx) {
  if (op->type != &obm_list_type || ctx->ndeferred == GC_DEFER_SLOTS) return false;
  obm_list_t *list = (obm_list_t *)op;
  if (list->size < GC_DEFER_MIN_ITEMS) return false;
  ctx->deferred[ctx->ndeferred++] = (gc_deferred_t){op, list->items, list->size, 0, 0};
  return true;
}

/* Visits the rest of slot k's items and frees the slot. */
static void drain_deferred(unsigned k, obm_visit_t *visit, gc_ctx_t *ctx) {
  gc_deferred_t d = ctx->deferred[k];
  ctx->deferred[k] = ctx->deferred[--ctx->ndeferred];
  ctx->parent = d.container;
  visit_items(d.items, d.i, d.n, visit, ctx);
}

/* Drains every slot whose list is overdue (all of them with `all`). */
static void drain_overdue(obm_visit_t *visit, gc_ctx_t *ctx, bool all) {
  for (unsigned k = ctx->ndeferred; k-- > 0;)
    if (all || ctx->deferred[k].misses > GC_DEFER_MISSES) drain_deferred(k, visit, ctx);
}

/* The walk meets op (before its own turn): the deferred lists whose next item is op visit it
 * now.  Returns whether some list is overdue. */
OBM_INLINE bool meet_deferred(obm_object_t *op, obm_visit_t *visit, gc_ctx_t *ctx) {
  bool overdue = false;
  for (unsigned k = ctx->ndeferred; k-- > 0;) {
    gc_deferred_t *d = &ctx->deferred[k];
    if (d->items[d->i] != op) {
      overdue |= ++d->misses > GC_DEFER_MISSES;
      continue;
    }
    ctx->parent = d->container;
    do
      visit(op, ctx);
    while (++d->i < d->n && d->items[d->i] == op);
    d->misses = 0;
    if (d->i == d->n) ctx->deferred[k] = ctx->deferred[--ctx->ndeferred];
  }
  return overdue;
}

/* ---- deduce_unreachable ------------------------------------------------------------------ */

/* gc_refs's starting value for op: its count, saturated (0 is reported and taken as 1). */
static inline uint32_t initial_refs(obm_object_t *op, gc_ctx_t *ctx) {
  uint32_t rc = op->refcnt;
  if (obm_unlikely(rc == 0)) {
    _obm_error(OBM_ERR_REFCOUNT, op,
               "the collector found a tracked '%s' object whose count is 0 (a dealloc left "
               "it tracked, or a reference was dropped twice); it is kept",
               op->type->name);
    ctx->problems++;
    rc = 1;
  }
  return rc < OBM_GC_REFS_MAX ? rc : OBM_GC_REFS_MAX;
}

/* gc_refs := refcnt and COLLECTING, for each object of list; returns their number. */
static size_t update_refs(obm_gc_head_t *list, gc_ctx_t *ctx) {
  size_t n = 0;
  for (obm_gc_head_t *g = gc_first(list); g != list; g = (obm_gc_head_t *)g->next) {
    obm_object_t *op = _obm_from_gc(g);
    op->flags = (op->flags & GC_PERSISTENT) | OBM_OBJECT_COLLECTING |
                (initial_refs(op, ctx) << OBM_GC_REFS_SHIFT);
    n++;
  }
  return n;
}

static OBM_COLD void report_too_small(obm_object_t *child, gc_ctx_t *ctx) {
  ctx->problems++;
  const obm_object_t *parent = ctx->parent;
  _obm_error(OBM_ERR_REFCOUNT, child,
             "refcount too small: a '%s' object is referenced by more tracked objects than its "
             "count %u admits (one of them a '%s' at %p); an incref is missing",
             child->type->name, child->refcnt, parent ? parent->type->name : "?",
             (const void *)parent);
}

/* One reference to child (flags f, COLLECTING) from the set: gc_refs -= 1. */
OBM_INLINE void decref_child(obm_object_t *child, uint32_t f, gc_ctx_t *ctx) {
  uint32_t refs = gc_refs(f);
  if (obm_likely(refs - 1u < OBM_GC_REFS_MAX - 1u)) /* 1 <= refs < MAX (saturated stays) */
    child->flags = f - OBM_GC_REFS_ONE;
  else if (refs == 0)
    report_too_small(child, ctx);
}

static int visit_decref(obm_object_t *child, void *arg) {
  uint32_t f = child->flags;
  if (f & OBM_OBJECT_COLLECTING) decref_child(child, f, arg);
  return 0;
}

/* Subtracts the references between objects of list (all COLLECTING) from gc_refs. */
static void subtract_refs(obm_gc_head_t *list, gc_ctx_t *ctx) {
  for (obm_gc_head_t *g = gc_first(list); g != list; g = (obm_gc_head_t *)g->next) {
    ctx->parent = _obm_from_gc(g);
    gc_traverse(_obm_from_gc(g), visit_decref, ctx);
  }
}

/* Moves node (in a list) to just after pos. */
static inline void list_move_after(obm_gc_head_t *node, obm_gc_head_t *pos) {
  obm_gc_head_t *prev = _obm_gc_prev(node), *next = _obm_gc_next(node);
  prev->next = (uintptr_t)next;
  next->prev = (uintptr_t)prev;
  obm_gc_head_t *after = _obm_gc_next(pos);
  node->prev = (uintptr_t)pos;
  node->next = (uintptr_t)after;
  pos->next = (uintptr_t)node;
  after->prev = (uintptr_t)node;
}

/* child is referenced by an object found reachable.  Objects not COLLECTING are outside
 * the set or already scanned.  One in `unreachable` moves back into the scan just after
 * the object being scanned (and its siblings moved before it), so it is scanned next: the
 * survivors come out parent before children, which keeps a structure's objects together in
 * the list, and the next collection's walk meets them while their lines are hot (CPython
 * appends them at the scan's tail; measured on bench/gc.c's units: see docs/object.md).
 * One still ahead in the scan with gc_refs 0 gets 1. */
static int visit_reachable(obm_object_t *child, void *arg) {
  uint32_t f = child->flags;
  if (!(f & OBM_OBJECT_COLLECTING)) return 0;
  gc_ctx_t *ctx = arg;
  if (f & OBM_OBJECT_UNREACHABLE) {
    list_move_after(_obm_as_gc(child), ctx->cursor);
    ctx->cursor = _obm_as_gc(child);
    child->flags = ((f & OBM_GC_FLAGS_MASK) & ~OBM_OBJECT_UNREACHABLE) | OBM_GC_REFS_ONE;
    ctx->nunreachable--;
  } else if (gc_refs(f) == 0) {
    child->flags = f | OBM_GC_REFS_ONE;
  }
  return 0;
}

/* Whether op, found unreachable, needs the careful path (see "Fast path" above). */
static inline bool is_special(const obm_object_t *op) {
  const obm_type_t *type = op->type;
  if (type->legacy_finalize != NULL || type == &obm_weakref_type) return true;
  if (type->finalize != NULL && !(op->flags & OBM_OBJECT_FINALIZED)) return true;
  obm_weakref_t **list = _obm_weaklist(op);
  return list != NULL && *list != NULL;
}

/* update_refs and subtract_refs in one pass, for a set that is every object with TRACKED
 * (a whole collection), so that an object reached before its own turn is known to belong
 * to the set by its flags: it gets COLLECTING | UNREACHABLE ("reached, not yet walked") and
 * gc_refs counts the references found to it, which its turn subtracts from its count. */
static int visit_fused(obm_object_t *child, void *arg) {
  uint32_t f = child->flags;
  if (f & OBM_OBJECT_COLLECTING) {
    if (!(f & OBM_OBJECT_UNREACHABLE))
      decref_child(child, f, arg);
    else if (gc_refs(f) < OBM_GC_REFS_MAX)
      child->flags = f + OBM_GC_REFS_ONE;
  } else if (f & OBM_OBJECT_TRACKED) {
    child->flags =
        (f & GC_PERSISTENT) | OBM_OBJECT_COLLECTING | OBM_OBJECT_UNREACHABLE | OBM_GC_REFS_ONE;
  }
  return 0;
}

static size_t update_subtract_refs(obm_gc_head_t *list, gc_ctx_t *ctx) {
  size_t n = 0;
  for (obm_gc_head_t *g = gc_first(list); g != list; g = (obm_gc_head_t *)g->next) {
    gc_prefetch_ahead(g);
    obm_object_t *op = _obm_from_gc(g);
    if (ctx->ndeferred != 0 && meet_deferred(op, visit_fused, ctx))
      drain_overdue(visit_fused, ctx, false);
    uint32_t f = op->flags;
    uint32_t refs = initial_refs(op, ctx);
    if (f & OBM_OBJECT_COLLECTING) { /* reached earlier: gc_refs references seen */
      uint32_t seen = gc_refs(f);
      if (refs == OBM_GC_REFS_MAX || seen == OBM_GC_REFS_MAX) {
        refs = OBM_GC_REFS_MAX;
      } else if (seen <= refs) {
        refs -= seen;
      } else {
        ctx->parent = NULL;
        report_too_small(op, ctx);
        refs = 0;
      }
    }
    op->flags = (f & GC_PERSISTENT) | OBM_OBJECT_COLLECTING | (refs << OBM_GC_REFS_SHIFT);
    ctx->parent = op;
    if (!defer_list(op, ctx)) gc_traverse(op, visit_fused, ctx);
    n++;
  }
  drain_overdue(visit_fused, ctx, true);
  return n;
}

/* Invariant of the scan: objects left of g in young are reachable, with COLLECTING cleared
 * and survivor_bits set; objects moved to unreachable have COLLECTING | UNREACHABLE and
 * gc_refs 0 (UNREACHABLE stays until the next update_refs: nothing after the scan reads
 * it); objects right of g are unscanned; the deferred lists' remaining visits are still to
 * come, so the scan ends only when none is left. */
static void move_unreachable(gc_ctx_t *ctx) {
  obm_gc_head_t *young = ctx->young, *unreachable = ctx->unreachable;
  obm_gc_head_t *g = gc_first(young);
  for (;;) {
    if (ctx->ndeferred != 0) {
      /* a drain puts what it finds reachable right before g, scanned next */
      obm_gc_head_t *before = _obm_gc_prev(g);
      bool overdue = g != young ? meet_deferred(_obm_from_gc(g), visit_reachable, ctx) : true;
      if (overdue) {
        ctx->cursor = before;
        drain_overdue(visit_reachable, ctx, g == young);
        g = _obm_gc_next(before);
      }
    }
    if (g == young) break;
    gc_prefetch_ahead(g);
    obm_object_t *op = _obm_from_gc(g);
    uint32_t f = op->flags;
    if (gc_refs(f) > 0) {
      ctx->cursor = g;
      if (!defer_list(op, ctx)) gc_traverse(op, visit_reachable, ctx);
      gc_survive(op, ctx->survivor_bits);
      g = _obm_gc_next(g); /* after the traverse, which may have inserted after g */
    } else {
      obm_gc_head_t *next = _obm_gc_next(g);
      _obm_gc_list_move(g, unreachable);
      op->flags = f | OBM_OBJECT_UNREACHABLE;
      ctx->nunreachable++;
      if (!ctx->special && is_special(op)) ctx->special = true;
      g = next;
    }
  }
}

/* Moves the objects of base not reachable from outside base to unreachable (initialized
 * here); the others stay in base with the survivor flags.  whole: base is every object
 * with TRACKED (one pass for both update_refs and subtract_refs).  Returns base's size. */
static size_t deduce_unreachable(obm_gc_head_t *base, obm_gc_head_t *unreachable, gc_ctx_t *ctx,
                                 bool whole) {
  _obm_gc_list_init(unreachable);
  ctx->young = base;
  ctx->unreachable = unreachable;
  ctx->nunreachable = 0;
  size_t n;
  if (whole) {
    n = update_subtract_refs(base, ctx);
  } else {
    n = update_refs(base, ctx);
    subtract_refs(base, ctx);
  }
  move_unreachable(ctx);
  return n;
}

/* ---- legacy finalizers ------------------------------------------------------------------- */

/* What the garbage holds, learned in move_legacy_finalizers' pass, so that later passes run
 * only when they can matter: without a pending finalizer nothing can be resurrected (a weak
 * reference callback cannot reach garbage), and without weak references there is nothing
 * to clear.  Flags are conservative (set before legacy-reachable objects leave the set). */
typedef struct garbage_scan_s {
  size_t n;        /* objects left in unreachable after the legacy moves */
  bool finalizers; /* some object has a finalizer that has not run */
  bool weakrefs;   /* some object is a weak reference or has some */
} garbage_scan_t;

/* Moves the objects with a legacy finalizer to finalizers (surviving: they are no longer
 * candidates), clears UNREACHABLE on the rest and fills scan. */
static void move_legacy_finalizers(obm_gc_head_t *unreachable, obm_gc_head_t *finalizers,
                                   garbage_scan_t *scan, uint32_t survivor_bits) {
  obm_gc_head_t *next;
  for (obm_gc_head_t *g = gc_first(unreachable); g != unreachable; g = next) {
    next = _obm_gc_next(g);
    obm_object_t *op = _obm_from_gc(g);
    const obm_type_t *type = op->type;
    if (type->legacy_finalize != NULL) {
      gc_survive(op, survivor_bits);
      _obm_gc_list_move(g, finalizers);
      continue;
    }
    scan->n++;
    if (type->finalize != NULL && !(op->flags & OBM_OBJECT_FINALIZED)) scan->finalizers = true;
    if (type->weaklist_offset != 0 || type == &obm_weakref_type) {
      obm_weakref_t **list = _obm_weaklist(op);
      if (type == &obm_weakref_type || *list != NULL) scan->weakrefs = true;
    }
  }
}

typedef struct move_ctx_s {
  obm_gc_head_t *to;
  size_t moved;
  uint32_t survivor_bits;
} move_ctx_t;

static int visit_move(obm_object_t *child, void *arg) {
  if (child->flags & OBM_OBJECT_COLLECTING) {
    move_ctx_t *ctx = arg;
    gc_survive(child, ctx->survivor_bits);
    _obm_gc_list_move(_obm_as_gc(child), ctx->to);
    ctx->moved++;
  }
  return 0;
}

/* Everything reachable from finalizers moves there too (the list grows while scanned);
 * returns how many objects moved. */
static size_t move_legacy_finalizer_reachable(obm_gc_head_t *finalizers, uint32_t survivor_bits) {
  move_ctx_t ctx = {finalizers, 0, survivor_bits};
  for (obm_gc_head_t *g = gc_first(finalizers); g != finalizers; g = gc_first(g)) {
    obm_object_t *op = _obm_from_gc(g);
    op->type->traverse(op, visit_move, &ctx);
  }
  return ctx.moved;
}

/* ---- weak references, finalizers, clearing ---------------------------------------------- */

/* Clears the weak references inside and into the set; with a chain, collects the callbacks
 * that must run (CPython's handle_weakrefs), else none (clear_weakrefs). */
static void clear_weakrefs(obm_gc_head_t *set, obm_weakref_chain_t *chain) {
  for (obm_gc_head_t *g = gc_first(set); g != set; g = gc_first(g)) {
    obm_object_t *op = _obm_from_gc(g);
    if (op->type == &obm_weakref_type) _obm_weakref_clear_ref((obm_weakref_t *)op);
    obm_weakref_t **list = _obm_weaklist(op);
    if (list != NULL && *list != NULL) _obm_weakref_clear_referent(op, chain);
  }
}

static void handle_weakrefs(obm_runtime_t *rt, obm_gc_head_t *unreachable) {
  obm_weakref_chain_t chain = {NULL, NULL};
  clear_weakrefs(unreachable, &chain);
  _obm_weakref_run_chain(rt, &chain);
}

/* Runs each first-time finalizer.  A finalizer may free any object of the list, so the
 * scan always takes the list's first object and moves it to `seen`. */
static void finalize_garbage(obm_runtime_t *rt, obm_gc_head_t *collectable) {
  obm_gc_head_t seen;
  _obm_gc_list_init(&seen);
  while (!_obm_gc_list_is_empty(collectable)) {
    obm_gc_head_t *g = gc_first(collectable);
    obm_object_t *op = _obm_from_gc(g);
    _obm_gc_list_move(g, &seen);
    if (op->type->finalize != NULL && !(op->flags & OBM_OBJECT_FINALIZED)) {
      op->flags |= OBM_OBJECT_FINALIZED;
      obm_incref(op);
      op->type->finalize(rt, op);
      obm_decref(rt, op);
    }
  }
  _obm_gc_list_merge(&seen, collectable);
}

/* Objects of unreachable that finalizers made reachable from outside, and all they reach,
 * join old; the rest moves to still_unreachable (COLLECTING set). */
static void handle_resurrected(obm_gc_head_t *unreachable, obm_gc_head_t *still_unreachable,
                               obm_gc_head_t *old, gc_ctx_t *ctx) {
  deduce_unreachable(unreachable, still_unreachable, ctx, false);
  _obm_gc_list_merge(unreachable, old);
}

static void garbage_append(obm_runtime_t *rt, obm_object_t *op) {
  obm_object_t *garbage = obm_gc_garbage(rt);
  if (garbage != NULL) obm_list_append(rt, garbage, op); /* on ENOMEM the object survives */
}

static void delete_garbage(obm_runtime_t *rt, obm_gc_head_t *collectable, obm_gc_head_t *old,
                           uint32_t survivor_bits) {
  while (!_obm_gc_list_is_empty(collectable)) {
    obm_gc_head_t *g = gc_first(collectable);
    gc_prefetch_ahead(g);
    obm_object_t *op = _obm_from_gc(g);
    if (rt->debug & OBM_GC_DEBUG_SAVEALL) {
      garbage_append(rt, op);
    } else if (op->type->clear != NULL) {
      obm_incref(op);
      op->type->clear(rt, op);
      obm_decref(rt, op);
    }
    if (gc_first(collectable) == g) { /* still alive: it may die later */
      gc_survive(op, survivor_bits);
      _obm_gc_list_move(g, old);
    }
  }
}

/* ---- a collection ----------------------------------------------------------------------- */

/* While a sweep runs, an object that dies (found garbage by any collection, or freed by
 * counting: object.c calls _obm_gc_repend_children) may have been all that kept alive
 * objects the sweep visited earlier (a step examines children before their older
 * referrers, which then count as outside references): those go back to the pending part's
 * tail, examined by the next step, so that garbage hanging from garbage is found by the
 * same sweep, layer after layer, instead of one layer per sweep.  A weakref callback's
 * data, dropped after the call, goes back too (weakref.c).  The program's own decrefs that
 * free nothing are mutation: garbage they make waits for the next sweep. */
typedef struct repend_ctx_s {
  obm_gc_head_t *pending;
  uint32_t visited;   /* (flags & (OLD|VISITED|COLLECTING)) of a visited object */
  uint32_t unvisited; /* its VISITED bit once pending again */
  size_t moved;
} repend_ctx_t;

static int visit_repend(obm_object_t *child, void *arg) {
  repend_ctx_t *ctx = arg;
  uint32_t f = child->flags;
  if ((f & (OBM_OBJECT_OLD | OBM_OBJECT_VISITED | OBM_OBJECT_COLLECTING)) == ctx->visited) {
    _obm_gc_list_move(_obm_as_gc(child), ctx->pending);
    child->flags = (f & ~OBM_OBJECT_VISITED) | ctx->unvisited;
    ctx->moved++;
  }
  return 0;
}

static repend_ctx_t repend_ctx(const obm_runtime_t *rt) {
  return (repend_ctx_t){(obm_gc_head_t *)&rt->generations[OBM_GC_NGENERATIONS - 1].head,
                        visited_bits(rt), old_bits(rt) & OBM_OBJECT_VISITED, 0};
}

static void repend_children(obm_runtime_t *rt, obm_gc_head_t *garbage) {
  if (!rt->sweeping) return;
  repend_ctx_t ctx = repend_ctx(rt);
  for (obm_gc_head_t *g = gc_first(garbage); g != garbage; g = _obm_gc_next(g)) {
    obm_object_t *op = _obm_from_gc(g);
    op->type->traverse(op, visit_repend, &ctx);
  }
  rt->repended += ctx.moved;
}

void _obm_gc_repend_children(obm_runtime_t *rt, obm_object_t *op) {
  repend_ctx_t ctx = repend_ctx(rt);
  op->type->traverse(op, visit_repend, &ctx);
  rt->repended += ctx.moved;
}

void _obm_gc_repend(obm_runtime_t *rt, obm_object_t *op) {
  repend_ctx_t ctx = repend_ctx(rt);
  visit_repend(op, &ctx);
  rt->repended += ctx.moved;
}

/* How collect_set finds gc_refs: update_refs + subtract_refs; in one pass (the set is
 * every tracked object); or already done (a step's closure). */
typedef enum refs_mode_e { REFS_PASSES, REFS_WHOLE, REFS_READY } refs_mode_t;

/* Collects the objects of `set` (a list; steps 1-8 above).  Survivors join old (which may
 * be set itself) with survivor_bits; *survivors is how many survived step 1.
 * Returns collected + uncollectable; fills info's candidates, collected, uncollectable. */
static size_t collect_set(obm_runtime_t *rt, obm_gc_head_t *set, obm_gc_head_t *old,
                          uint32_t survivor_bits, refs_mode_t mode, obm_gc_info_t *info,
                          size_t *survivors) {
  gc_ctx_t ctx = {.survivor_bits = survivor_bits};
  obm_gc_head_t unreachable, finalizers, final_unreachable;
  if (mode == REFS_READY) {
    _obm_gc_list_init(&unreachable);
    ctx.young = set;
    ctx.unreachable = &unreachable;
    move_unreachable(&ctx);
  } else {
    info->candidates = deduce_unreachable(set, &unreachable, &ctx, mode == REFS_WHOLE);
  }
  *survivors = info->candidates - ctx.nunreachable;
  if (mode == REFS_READY) { /* a step: in front of the visited objects, see gc_step */
    _obm_gc_list_merge(old, set);
    _obm_gc_list_merge(set, old);
  } else if (set != old) {
    _obm_gc_list_merge(set, old);
  }

  size_t collected, uncollectable = 0;
  _obm_gc_list_init(&final_unreachable);
  if (!ctx.special && !(rt->debug & OBM_GC_DEBUG_COLLECTABLE)) {
    /* nothing to finalize, no weak reference, no legacy finalizer: straight to step 7 */
    collected = ctx.nunreachable;
    repend_children(rt, &unreachable);
    delete_garbage(rt, &unreachable, old, survivor_bits);
    info->collected = collected;
    info->uncollectable = 0;
    return collected;
  }

  /* finalizers and weakref callbacks may drop references out of the garbage too */
  repend_children(rt, &unreachable);
  _obm_gc_list_init(&finalizers);
  garbage_scan_t scan = {0, false, false};
  move_legacy_finalizers(&unreachable, &finalizers, &scan, survivor_bits);
  collected = scan.n - move_legacy_finalizer_reachable(&finalizers, survivor_bits);
  if (rt->debug & OBM_GC_DEBUG_COLLECTABLE)
    for (obm_gc_head_t *g = gc_first(&unreachable); g != &unreachable; g = gc_first(g))
      debug_object(rt, "collectable", _obm_from_gc(g));

  if (scan.weakrefs) handle_weakrefs(rt, &unreachable);
  if (scan.finalizers) {
    finalize_garbage(rt, &unreachable);
    handle_resurrected(&unreachable, &final_unreachable, old, &ctx);
    collected = _obm_gc_list_size(&final_unreachable);
  } else {
    _obm_gc_list_merge(&unreachable, &final_unreachable);
  }
  if (scan.weakrefs || scan.finalizers) clear_weakrefs(&final_unreachable, NULL);
  repend_children(rt, &final_unreachable);
  delete_garbage(rt, &final_unreachable, old, survivor_bits);

  for (obm_gc_head_t *g = gc_first(&finalizers); g != &finalizers; g = gc_first(g)) {
    uncollectable++;
    obm_object_t *op = _obm_from_gc(g);
    if (rt->debug & OBM_GC_DEBUG_UNCOLLECTABLE) debug_object(rt, "uncollectable", op);
    if ((rt->debug & OBM_GC_DEBUG_SAVEALL) || op->type->legacy_finalize != NULL)
      garbage_append(rt, op);
  }
  _obm_gc_list_merge(&finalizers, old);
  info->collected = collected;
  info->uncollectable = uncollectable;
  return collected + uncollectable;
}

static void add_stats(obm_runtime_t *rt, int generation, obm_gc_info_t *info, uint64_t start,
                      bool count) {
  info->duration_ns = _obm_os_clock_ns() - start;
  obm_gc_stats_t *stats = &rt->stats[generation];
  stats->collections += count;
  stats->collected += info->collected;
  stats->uncollectable += info->uncollectable;
  stats->duration_ns += info->duration_ns;
  if (rt->debug & OBM_GC_DEBUG_STATS)
    fprintf(debug_out(rt), "gc: done, %zu unreachable, %zu uncollectable, %.6fs elapsed\n",
            info->collected + info->uncollectable, info->uncollectable,
            (double)info->duration_ns / 1e9);
}

static size_t collect_main(obm_runtime_t *rt, int generation, obm_gc_info_t *info) {
  uint64_t start = _obm_os_clock_ns();
  obm_gc_generation_t *gens = rt->generations;
  if (rt->debug & OBM_GC_DEBUG_STATS) {
    fprintf(debug_out(rt),
            "gc: collecting generation %d...\ngc: objects in each generation:", generation);
    for (int i = 0; i < OBM_GC_NGENERATIONS; i++)
      fprintf(debug_out(rt), " %zu",
              _obm_gc_list_size(&gens[i].head) +
                  (i == OBM_GC_NGENERATIONS - 1 ? _obm_gc_list_size(&rt->visited) : 0));
    fprintf(debug_out(rt), "\ngc: objects in permanent generation: %zu\n",
            _obm_gc_list_size(&rt->permanent));
  }
  if (generation + 1 < OBM_GC_NGENERATIONS) gens[generation + 1].count++;
  for (int i = 0; i <= generation; i++)
    gens[i].count = 0;
  for (int i = 0; i < generation; i++)
    _obm_gc_list_merge(&gens[i].head, &gens[generation].head);
  if (generation == OBM_GC_NGENERATIONS - 1 && rt->sweeping) {
    /* a whole collection ends the sweep: visited objects are examined again */
    _obm_gc_list_merge(&rt->visited, &gens[generation].head);
    rt->sweeping = 0;
  }

  obm_gc_head_t *young = &gens[generation].head;
  bool oldest = generation == OBM_GC_NGENERATIONS - 1;
  obm_gc_head_t *old = oldest ? young : &gens[generation + 1].head;
  size_t survivors;
  size_t found = collect_set(rt, young, old, generation == 0 ? 0 : old_bits(rt),
                             oldest ? REFS_WHOLE : REFS_PASSES, info, &survivors);
  if (generation == OBM_GC_NGENERATIONS - 2) rt->long_lived_pending += survivors;
  if (oldest) {
    rt->long_lived_pending = 0;
    rt->long_lived_total = survivors;
    rt->promoted_seen = 0;
  }
  add_stats(rt, generation, info, start, true);
  return found;
}

static void invoke_callbacks(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info) {
  for (size_t i = 0; i < rt->ncallbacks; i++) {
    obm_gc_callback_entry_t entry = rt->callbacks[i];
    entry.fn(rt, phase, info, entry.arg);
  }
}

/* A collection with its start and stop callbacks; the caller set rt->collecting. */
static size_t collect_with_callbacks(obm_runtime_t *rt, int generation) {
  if (OBM_DEBUG > 2) _obm_gc_check(rt);
  obm_gc_info_t info = {.generation = generation};
  invoke_callbacks(rt, OBM_GC_START, &info);
  size_t n = collect_main(rt, generation, &info);
  invoke_callbacks(rt, OBM_GC_STOP, &info);
  if (OBM_DEBUG > 2) _obm_gc_check(rt);
  return n;
}

/* ---- incremental steps --------------------------------------------------------------------- */

/* A step's closure: a child that is in the set gets gc_refs -= 1 (subtract_refs); a pending
 * child joins the set's tail with gc_refs = refcnt - 1. */
static int visit_closure(obm_object_t *child, void *arg) {
  gc_ctx_t *ctx = arg;
  uint32_t f = child->flags;
  if (f & OBM_OBJECT_COLLECTING) {
    decref_child(child, f, ctx);
  } else if ((f & (OBM_OBJECT_OLD | OBM_OBJECT_VISITED)) == ctx->pending_bits) {
    _obm_gc_list_move(_obm_as_gc(child), ctx->young);
    uint32_t refs = initial_refs(child, ctx);
    refs -= refs < OBM_GC_REFS_MAX;
    child->flags = (f & GC_PERSISTENT) | OBM_OBJECT_COLLECTING | (refs << OBM_GC_REFS_SHIFT);
    ctx->nset++;
  }
  return 0;
}

/* One increment of the sweep (starting one if none runs): the newest pending objects and
 * their closure in the pending part, at least `budget` of them unless the pending part
 * runs out, collected as a set whose survivors join rt->visited.  Ends the sweep when
 * nothing is left pending.  The caller set rt->collecting.  Returns the objects found. */
static size_t gc_step(obm_runtime_t *rt, size_t budget, obm_gc_info_t *info) {
  uint64_t start = _obm_os_clock_ns();
  obm_gc_head_t *pending = &rt->generations[OBM_GC_NGENERATIONS - 1].head;
  if (!rt->sweeping) {
    rt->sweeping = 1;
    rt->sweep_survivors = rt->sweep_collected = 0;
    rt->promoted_seen = rt->long_lived_pending;
  }
  /* promotions and returns to pending since the last step come on top, so that pending
   * always shrinks */
  size_t target =
      budget + (rt->long_lived_pending - rt->promoted_seen) + (rt->repended - rt->repended_seen);
  rt->promoted_seen = rt->long_lived_pending;
  rt->repended_seen = rt->repended;
  obm_gc_head_t set;
  _obm_gc_list_init(&set);
  gc_ctx_t ctx = {.young = &set, .pending_bits = old_bits(rt)};
  while (ctx.nset < target && !_obm_gc_list_is_empty(pending)) {
    obm_gc_head_t *g = _obm_gc_prev(pending); /* the newest */
    obm_object_t *op = _obm_from_gc(g);
    _obm_gc_list_move(g, &set);
    op->flags = (op->flags & GC_PERSISTENT) | OBM_OBJECT_COLLECTING |
                (initial_refs(op, &ctx) << OBM_GC_REFS_SHIFT);
    ctx.nset++;
    for (; g != &set; g = _obm_gc_next(g)) {
      gc_prefetch_ahead(g);
      ctx.parent = _obm_from_gc(g);
      gc_traverse(_obm_from_gc(g), visit_closure, &ctx);
    }
  }
  info->candidates = ctx.nset;
  size_t survivors;
  size_t found =
      collect_set(rt, &set, &rt->visited, visited_bits(rt), REFS_READY, info, &survivors);
  rt->sweep_survivors += survivors;
  rt->sweep_collected += found;
  if (_obm_gc_list_is_empty(pending)) { /* the sweep is done */
    _obm_gc_list_merge(&rt->visited, pending);
    rt->visited_bit ^= OBM_OBJECT_VISITED;
    rt->sweeping = 0;
    rt->long_lived_total = rt->sweep_survivors;
    rt->long_lived_pending = 0;
    rt->promoted_seen = 0;
    rt->generations[OBM_GC_NGENERATIONS - 1].count = 0;
  }
  add_stats(rt, OBM_GC_NGENERATIONS - 1, info, start, !rt->sweeping);
  return found;
}

static size_t step_with_callbacks(obm_runtime_t *rt, size_t budget) {
  if (OBM_DEBUG > 2) _obm_gc_check(rt);
  obm_gc_info_t info = {.generation = OBM_GC_NGENERATIONS - 1};
  invoke_callbacks(rt, OBM_GC_START, &info);
  if (rt->debug & OBM_GC_DEBUG_STATS)
    fprintf(debug_out(rt), "gc: incremental step of generation %d...\n", info.generation);
  size_t n = gc_step(rt, budget, &info);
  invoke_callbacks(rt, OBM_GC_STOP, &info);
  if (OBM_DEBUG > 2) _obm_gc_check(rt);
  return n;
}

static size_t step_budget(const obm_runtime_t *rt) {
  return rt->incremental != 0 ? rt->incremental : OBM_GC_DEFAULT_STEP;
}

/* ---- entry points -------------------------------------------------------------------------- */

ptrdiff_t obm_gc_collect(obm_runtime_t *rt, int generation) {
  if (generation < 0 || generation >= OBM_GC_NGENERATIONS) {
    errno = EINVAL;
    return -1;
  }
  if (rt->collecting) return 0;
  rt->collecting = 1;
  size_t n = collect_with_callbacks(rt, generation);
  rt->collecting = 0;
  return (ptrdiff_t)n;
}

ptrdiff_t obm_gc_collect_step(obm_runtime_t *rt) {
  if (rt->collecting) return 0;
  rt->collecting = 1;
  size_t n = collect_with_callbacks(rt, 0);
  n += step_with_callbacks(rt, step_budget(rt));
  rt->collecting = 0;
  return (ptrdiff_t)n;
}

void _obm_gc_collect_generations(obm_runtime_t *rt) {
  rt->collecting = 1;
  if (rt->debug & OBM_GC_DEBUG_HARD) {
    /* hard GC: a whole collection, or a young one and a step, at every creation */
    if (rt->incremental != 0) {
      collect_with_callbacks(rt, 0);
      step_with_callbacks(rt, rt->incremental);
    } else {
      collect_with_callbacks(rt, OBM_GC_NGENERATIONS - 1);
    }
    rt->collecting = 0;
    return;
  }
  for (int i = OBM_GC_NGENERATIONS - 1; i >= 0; i--) {
    size_t limit = i == 0 ? _obm_gc_young_trigger(rt) : rt->generations[i].threshold;
    if (rt->generations[i].count <= limit) continue;
    bool start_sweep = false;
    if (i == OBM_GC_NGENERATIONS - 1) {
      if (rt->sweeping) continue; /* a sweep runs: young collections carry its steps */
      /* the 25 % rule: a full collection only once the objects promoted since the last one
       * reach a quarter of what it left (CPython's long_lived_pending / long_lived_total) */
      if (rt->long_lived_pending < rt->long_lived_total / 4) continue;
      if (rt->incremental != 0) {
        start_sweep = true; /* in incremental mode it starts a sweep instead */
        i--;
      }
    }
    collect_with_callbacks(rt, i);
    if (rt->incremental != 0 && (rt->sweeping || start_sweep))
      step_with_callbacks(rt, rt->incremental);
    break;
  }
  rt->collecting = 0;
}

/* ---- introspection (gc.get_referrers, get_referents, get_objects) ----------------------- */

typedef struct referrers_ctx_s {
  obm_object_t *const *objs;
  size_t n;
} referrers_ctx_t;

static int visit_is_wanted(obm_object_t *child, void *arg) {
  const referrers_ctx_t *ctx = arg;
  for (size_t i = 0; i < ctx->n; i++)
    if (ctx->objs[i] == child) return 1;
  return 0;
}

obm_object_t *obm_gc_get_referrers(obm_runtime_t *rt, obm_object_t *const *objs, size_t n) {
  obm_object_t *result = obm_list_new(rt, 0);
  if (result == NULL) return NULL;
  referrers_ctx_t ctx = {objs, n};
  for (int i = 0; i <= OBM_GC_NGENERATIONS; i++) {
    obm_gc_head_t *list = i < OBM_GC_NGENERATIONS ? &rt->generations[i].head : &rt->visited;
    for (obm_gc_head_t *g = gc_first(list); g != list; g = gc_first(g)) {
      obm_object_t *op = _obm_from_gc(g);
      if (op == result || !op->type->traverse(op, visit_is_wanted, &ctx)) continue;
      if (obm_list_append(rt, result, op) != 0) goto fail;
    }
  }
  return result;
fail:
  obm_decref(rt, result);
  errno = ENOMEM;
  return NULL;
}

static int visit_append(obm_object_t *child, void *arg) {
  return obm_list_append(NULL, arg, child) != 0;
}

obm_object_t *obm_gc_get_referents(obm_runtime_t *rt, obm_object_t *const *objs, size_t n) {
  obm_object_t *result = obm_list_new(rt, 0);
  if (result == NULL) return NULL;
  for (size_t i = 0; i < n; i++) {
    obm_object_t *op = objs[i];
    if (!_obm_is_gc(op)) continue;
    if (op->type->traverse(op, visit_append, result) != 0) {
      obm_decref(rt, result);
      errno = ENOMEM;
      return NULL;
    }
  }
  return result;
}

obm_object_t *obm_gc_get_objects(obm_runtime_t *rt, int generation) {
  if (generation < -1 || generation >= OBM_GC_NGENERATIONS) {
    errno = EINVAL;
    return NULL;
  }
  obm_object_t *result = obm_list_new(rt, 0);
  if (result == NULL) return NULL;
  for (int i = 0; i <= OBM_GC_NGENERATIONS; i++) {
    int list_generation = i < OBM_GC_NGENERATIONS ? i : OBM_GC_NGENERATIONS - 1;
    if (generation != -1 && generation != list_generation) continue;
    obm_gc_head_t *list = i < OBM_GC_NGENERATIONS ? &rt->generations[i].head : &rt->visited;
    for (obm_gc_head_t *g = gc_first(list); g != list; g = gc_first(g)) {
      obm_object_t *op = _obm_from_gc(g);
      if (op != result && obm_list_append(rt, result, op) != 0) {
        obm_decref(rt, result);
        errno = ENOMEM;
        return NULL;
      }
    }
  }
  return result;
}

size_t _obm_gc_untrack_all(obm_runtime_t *rt) {
  size_t n = 0;
  obm_gc_head_t *lists[] = {&rt->generations[0].head, &rt->generations[1].head,
                            &rt->generations[2].head, &rt->visited, &rt->permanent};
  for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
    obm_gc_head_t *list = lists[i];
    while (!_obm_gc_list_is_empty(list)) {
      _obm_gc_list_remove(gc_first(list));
      n++;
    }
  }
  return n;
}

/* ---- the checker ------------------------------------------------------------------------ */

/* Structure of one list: links agree both ways, every object a live GC object whose flags
 * carry no collection state and whose TRACKED/OLD bits are those of `bits` (and, when OLD,
 * its VISITED bit too); at most `limit` objects
 * (a longer walk means a cycle that bypasses the head). */
static size_t check_list(const obm_gc_head_t *list, const char *name, uint32_t bits, size_t limit,
                         size_t *count) {
  size_t problems = 0;
  const obm_gc_head_t *prev = list;
  for (const obm_gc_head_t *g = gc_first(list); g != list; g = gc_first(g)) {
    const obm_object_t *op = _obm_from_gc((obm_gc_head_t *)g);
    const char *what = NULL;
    uint32_t f = op->flags;
    if (++*count > limit)
      what = "more objects than the runtime has (a loop)";
    else if (g->next == 0)
      what = "a tracked object's next is 0";
    else if (_obm_gc_prev(g) != prev)
      what = "prev does not match";
    else if (!_obm_is_gc(op))
      what = "an object of a non-GC type";
    else if (op->refcnt == 0)
      what = "a tracked object with count 0";
    else if (f & (OBM_OBJECT_COLLECTING | OBM_OBJECT_UNREACHABLE | ~OBM_GC_FLAGS_MASK))
      what = "collection state left in its flags outside a collection";
    else if ((f & (OBM_OBJECT_TRACKED | OBM_OBJECT_OLD)) != (bits & ~OBM_OBJECT_VISITED) ||
             ((f & OBM_OBJECT_OLD) && (f & OBM_OBJECT_VISITED) != (bits & OBM_OBJECT_VISITED)))
      what = "its TRACKED/OLD/VISITED flags do not match its list";
    if (what != NULL) {
      _obm_error(OBM_ERR_CORRUPTION, (void *)op, "gc list %s: %s", name, what);
      return problems + 1;
    }
    prev = g;
  }
  if (_obm_gc_prev(list) != prev) {
    _obm_error(OBM_ERR_CORRUPTION, (void *)list, "gc list %s: the head's prev is not the tail",
               name);
    problems++;
  }
  return problems;
}

size_t _obm_gc_check(obm_runtime_t *rt) {
  enum { NLISTS = OBM_GC_NGENERATIONS + 2 };
  static const char *const names[NLISTS] = {"generation 0", "generation 1", "generation 2",
                                            "visited", "permanent"};
  obm_gc_head_t *lists[NLISTS] = {&rt->generations[0].head, &rt->generations[1].head,
                                  &rt->generations[2].head, &rt->visited, &rt->permanent};
  const uint32_t bits[NLISTS] = {OBM_OBJECT_TRACKED, OBM_OBJECT_TRACKED,
                                 OBM_OBJECT_TRACKED | old_bits(rt),
                                 OBM_OBJECT_TRACKED | visited_bits(rt), 0};
  size_t problems = 0, count = 0;
  for (int i = 0; i < NLISTS; i++)
    problems += check_list(lists[i], names[i], bits[i], rt->nobjects, &count);
  if (!rt->sweeping && !_obm_gc_list_is_empty(&rt->visited)) {
    _obm_error(OBM_ERR_CORRUPTION, &rt->visited, "visited objects while no sweep runs");
    problems++;
  }
  if (rt->trash != NULL && rt->dealloc_depth == 0) {
    _obm_error(OBM_ERR_CORRUPTION, rt->trash, "deferred deallocations left pending");
    problems++;
  }
  if (problems != 0 || rt->collecting) return problems;
  /* Counts: gc_refs over all tracked objects at once; a reference found beyond an object's
   * count is reported by visit_decref.  Then the collection state is cleared again. */
  gc_ctx_t ctx = {.problems = 0};
  for (int i = 0; i < NLISTS; i++)
    update_refs(lists[i], &ctx);
  for (int i = 0; i < NLISTS; i++)
    subtract_refs(lists[i], &ctx);
  for (int i = 0; i < NLISTS; i++)
    for (obm_gc_head_t *g = gc_first(lists[i]); g != lists[i]; g = gc_first(g))
      _obm_from_gc(g)->flags &= GC_PERSISTENT;
  return problems + ctx.problems;
}
