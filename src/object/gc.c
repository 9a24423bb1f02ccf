/* gc.c — the generational cycle collector: CPython 3.12's algorithm on obm_gc_head_t.
 *
 * A collection of generation g (collect_main):
 *   0. counts: generation g+1's count += 1, counts 0..g := 0; generations 0..g-1 merge into g.
 *   1. deduce_unreachable: gc_refs := refcnt for each object of g (update_refs); for every
 *      reference from one object of g to another, the target's gc_refs -= 1 (subtract_refs);
 *      objects left with gc_refs > 0 are referenced from outside g.  move_unreachable scans g
 *      once: an object with gc_refs > 0 is reachable and marks what it refers to reachable;
 *      one with gc_refs == 0 moves to `unreachable` tentatively, and back to the scan's tail
 *      when a reachable object turns out to refer to it.
 *   2. survivors join generation g+1 (g < 2; from generation 1 they count as pending
 *      long-lived objects), or become long_lived_total (g == 2).
 *   3. unreachable objects with a legacy finalizer, and all they reach, move to `finalizers`:
 *      uncollectable (step 8).
 *   4. handle_weakrefs: weak references inside the unreachable set are cleared, and so is
 *      every weak reference to an unreachable object; then the callbacks of the cleared weak
 *      references that are reachable themselves run.  No callback can see garbage: every
 *      weak reference into it is cleared, and a reachable callback refers to no garbage.
 *   5. finalize_garbage: each finalizer runs once per object lifetime, the object alive.
 *   6. handle_resurrected: deduce_unreachable again over the unreachable set alone; what a
 *      finalizer made referenced from outside, and everything it reaches, survives into
 *      g+1.  Weak references made meanwhile into the final set are cleared (no callbacks).
 *   7. delete_garbage: clear(op) on each final object (op kept alive across the call) breaks
 *      the cycles and counting frees them; with SAVEALL they go to the garbage list instead.
 *      Anything still alive afterwards joins g+1.
 *   8. finalizers' objects: those with a legacy finalizer (all, with SAVEALL) go to the
 *      garbage list; all join g+1.  Result: collected (final set) + uncollectable.
 * Steps 4 and 5-6 run only when the garbage holds weak references / pending finalizers
 * (learned in step 3's pass): without a finalizer nothing can resurrect, since a callback
 * cannot reach garbage — which saves two of the passes over the garbage.
 * Memory: every list is threaded through the GC heads (gc_refs lives in prev's upper bits
 * while the list is singly linked), so a collection allocates nothing but the garbage
 * list's growth.  Automatic collections (at GC object creation) pick the oldest generation
 * whose count exceeds its threshold, generation 2 only when long_lived_pending exceeds
 * long_lived_total / 4 (which makes full collections amortized linear).
 */
#include "object/object_internal.h"

#include <errno.h>
#include <inttypes.h>

/* ---- gc_refs and flags in the GC head --------------------------------------------------- */

static inline size_t gc_get_refs(const obm_gc_head_t *g) {
  return (size_t)(g->prev >> OBM_GC_REFS_SHIFT);
}
static inline void gc_set_refs(obm_gc_head_t *g, size_t refs) {
  g->prev = (g->prev & OBM_GC_PREV_FLAGS) | ((uintptr_t)refs << OBM_GC_REFS_SHIFT);
}
static inline bool gc_is_collecting(const obm_gc_head_t *g) {
  return (g->prev & OBM_GC_PREV_COLLECTING) != 0;
}
static inline void gc_clear_collecting(obm_gc_head_t *g) {
  g->prev &= ~OBM_GC_PREV_COLLECTING;
}
static inline obm_gc_head_t *gc_first(const obm_gc_head_t *list) {
  return (obm_gc_head_t *)list->next;
}

static FILE *debug_out(const obm_runtime_t *rt) {
  return rt->debug_output != NULL ? rt->debug_output : stderr;
}

static void debug_object(const obm_runtime_t *rt, const char *what, const obm_object_t *op) {
  fprintf(debug_out(rt), "gc: %s <%s %p>\n", what, op->type->name, (const void *)op);
}

/* ---- deduce_unreachable ------------------------------------------------------------------ */

/* State for visit_decref: the object being traversed (for messages) and problems found. */
typedef struct decref_ctx_s {
  obm_object_t *parent;
  size_t problems;
} decref_ctx_t;

/* gc_refs := refcnt and PREV_COLLECTING, for each object of list; returns their number.
 * The list is singly linked (next only) until move_unreachable restores prev. */
static size_t update_refs(obm_gc_head_t *list, decref_ctx_t *ctx) {
  size_t n = 0;
  for (obm_gc_head_t *g = gc_first(list); g != list; g = (obm_gc_head_t *)g->next) {
    obm_object_t *op = _obm_from_gc(g);
    size_t refs = op->refcnt;
    if (obm_unlikely(refs == 0)) {
      _obm_error(OBM_ERR_REFCOUNT, op,
                 "the collector found a tracked '%s' object whose count is 0 (a dealloc left "
                 "it tracked, or a reference was dropped twice); it is kept",
                 op->type->name);
      ctx->problems++;
      refs = 1;
    }
    g->prev = OBM_GC_PREV_COLLECTING | ((uintptr_t)refs << OBM_GC_REFS_SHIFT);
    n++;
  }
  return n;
}

static int visit_decref(obm_object_t *child, void *arg) {
  if (!_obm_is_gc(child)) return 0;
  obm_gc_head_t *g = _obm_as_gc(child);
  if (!gc_is_collecting(g)) return 0;
  if (obm_likely(gc_get_refs(g) > 0)) {
    g->prev -= (uintptr_t)1 << OBM_GC_REFS_SHIFT;
    return 0;
  }
  decref_ctx_t *ctx = arg;
  ctx->problems++;
  _obm_error(OBM_ERR_REFCOUNT, child,
             "refcount too small: a '%s' object is referenced by more tracked objects than its "
             "count %u admits (one of them a '%s' at %p); an incref is missing",
             child->type->name, child->refcnt, ctx->parent->type->name, (void *)ctx->parent);
  return 0;
}

/* Subtracts the references between objects of list (all PREV_COLLECTING) from gc_refs. */
static void subtract_refs(obm_gc_head_t *list, decref_ctx_t *ctx) {
  for (obm_gc_head_t *g = gc_first(list); g != list; g = (obm_gc_head_t *)g->next) {
    obm_object_t *op = _obm_from_gc(g);
    ctx->parent = op;
    op->type->traverse(op, visit_decref, ctx);
  }
}

/* child is referenced by an object found reachable.  Objects not PREV_COLLECTING are outside
 * the collected set or already scanned.  One in `unreachable` (NEXT_UNREACHABLE) moves back
 * to the scan's tail; one still ahead in the scan with gc_refs 0 gets 1. */
static int visit_reachable(obm_object_t *child, void *arg) {
  if (!_obm_is_gc(child)) return 0;
  obm_gc_head_t *g = _obm_as_gc(child);
  if (!gc_is_collecting(g)) return 0;
  obm_gc_head_t *young = arg;
  if (g->next & OBM_GC_NEXT_UNREACHABLE) {
    /* unlink by hand: the unreachable list's next pointers carry the flag */
    obm_gc_head_t *prev = _obm_gc_prev(g);
    obm_gc_head_t *next = _obm_gc_next(g);
    prev->next = g->next; /* keeps the flag, as prev is in unreachable (or its head) */
    _obm_gc_set_prev(next, prev);
    obm_gc_head_t *last = (obm_gc_head_t *)young->prev;
    last->next = (uintptr_t)g;
    g->next = (uintptr_t)young;
    young->prev = (uintptr_t)g;
    g->prev = OBM_GC_PREV_COLLECTING | ((uintptr_t)1 << OBM_GC_REFS_SHIFT);
  } else if (gc_get_refs(g) == 0) {
    gc_set_refs(g, 1);
  }
  return 0;
}

/* Invariant of the scan: heads left of g in young are reachable, have prev restored and
 * PREV_COLLECTING cleared; heads moved to unreachable have NEXT_UNREACHABLE, a valid prev
 * and PREV_COLLECTING; heads right of g are unscanned (gc_refs in prev). */
static void move_unreachable(obm_gc_head_t *young, obm_gc_head_t *unreachable) {
  obm_gc_head_t *prev = young;
  obm_gc_head_t *g = gc_first(young);
  while (g != young) {
    if (gc_get_refs(g) > 0) {
      obm_object_t *op = _obm_from_gc(g);
      op->type->traverse(op, visit_reachable, young);
      g->prev = (uintptr_t)prev; /* pointer restored, flags cleared */
      prev = g;
    } else {
      prev->next = g->next;
      obm_gc_head_t *last = (obm_gc_head_t *)unreachable->prev;
      last->next = OBM_GC_NEXT_UNREACHABLE | (uintptr_t)g;
      g->prev = OBM_GC_PREV_COLLECTING | (uintptr_t)last;
      g->next = OBM_GC_NEXT_UNREACHABLE | (uintptr_t)unreachable;
      unreachable->prev = (uintptr_t)g;
    }
    g = (obm_gc_head_t *)prev->next;
  }
  young->prev = (uintptr_t)prev;
  unreachable->next &= ~OBM_GC_NEXT_UNREACHABLE;
}

/* Moves the objects of base not reachable from outside base to unreachable (initialized
 * here; its heads keep NEXT_UNREACHABLE and PREV_COLLECTING).  Returns base's size. */
static size_t deduce_unreachable(obm_gc_head_t *base, obm_gc_head_t *unreachable,
                                 decref_ctx_t *ctx) {
  _obm_gc_list_init(unreachable);
  size_t n = update_refs(base, ctx);
  subtract_refs(base, ctx);
  move_unreachable(base, unreachable);
  return n;
}

static void clear_unreachable_mask(obm_gc_head_t *list) {
  for (obm_gc_head_t *g = gc_first(list); g != list; g = (obm_gc_head_t *)g->next)
    g->next &= ~OBM_GC_NEXT_UNREACHABLE;
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

/* Clears NEXT_UNREACHABLE on unreachable, moves the objects with a legacy finalizer to
 * finalizers (PREV_COLLECTING cleared: they are no longer candidates) and fills scan. */
static void move_legacy_finalizers(obm_gc_head_t *unreachable, obm_gc_head_t *finalizers,
                                   garbage_scan_t *scan) {
  obm_gc_head_t *next;
  for (obm_gc_head_t *g = gc_first(unreachable); g != unreachable; g = next) {
    next = _obm_gc_next(g);
    g->next = (uintptr_t)next;
    obm_object_t *op = _obm_from_gc(g);
    const obm_type_t *type = op->type;
    if (type->legacy_finalize != NULL) {
      gc_clear_collecting(g);
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
} move_ctx_t;

static int visit_move(obm_object_t *child, void *arg) {
  if (_obm_is_gc(child) && gc_is_collecting(_obm_as_gc(child))) {
    move_ctx_t *ctx = arg;
    gc_clear_collecting(_obm_as_gc(child));
    _obm_gc_list_move(_obm_as_gc(child), ctx->to);
    ctx->moved++;
  }
  return 0;
}

/* Everything reachable from finalizers moves there too (the list grows while scanned);
 * returns how many objects moved. */
static size_t move_legacy_finalizer_reachable(obm_gc_head_t *finalizers) {
  move_ctx_t ctx = {finalizers, 0};
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
 * join old; the rest moves to still_unreachable (PREV_COLLECTING set). */
static void handle_resurrected(obm_gc_head_t *unreachable, obm_gc_head_t *still_unreachable,
                               obm_gc_head_t *old, decref_ctx_t *ctx) {
  for (obm_gc_head_t *g = gc_first(unreachable); g != unreachable; g = gc_first(g))
    gc_clear_collecting(g);
  deduce_unreachable(unreachable, still_unreachable, ctx);
  clear_unreachable_mask(still_unreachable);
  _obm_gc_list_merge(unreachable, old);
}

static void garbage_append(obm_runtime_t *rt, obm_object_t *op) {
  obm_object_t *garbage = obm_gc_garbage(rt);
  if (garbage != NULL) obm_list_append(rt, garbage, op); /* on ENOMEM the object survives */
}

static void delete_garbage(obm_runtime_t *rt, obm_gc_head_t *collectable, obm_gc_head_t *old) {
  while (!_obm_gc_list_is_empty(collectable)) {
    obm_gc_head_t *g = gc_first(collectable);
    obm_object_t *op = _obm_from_gc(g);
    if (rt->debug & OBM_GC_DEBUG_SAVEALL) {
      garbage_append(rt, op);
    } else if (op->type->clear != NULL) {
      obm_incref(op);
      op->type->clear(rt, op);
      obm_decref(rt, op);
    }
    if (gc_first(collectable) == g) { /* still alive: it may die later */
      gc_clear_collecting(g);
      _obm_gc_list_move(g, old);
    }
  }
}

/* ---- a collection ----------------------------------------------------------------------- */

static size_t collect_main(obm_runtime_t *rt, int generation, obm_gc_info_t *info) {
  uint64_t start = _obm_os_clock_ns();
  obm_gc_generation_t *gens = rt->generations;
  if (rt->debug & OBM_GC_DEBUG_STATS) {
    fprintf(debug_out(rt),
            "gc: collecting generation %d...\ngc: objects in each generation:", generation);
    for (int i = 0; i < OBM_GC_NGENERATIONS; i++)
      fprintf(debug_out(rt), " %zu", _obm_gc_list_size(&gens[i].head));
    fprintf(debug_out(rt), "\ngc: objects in permanent generation: %zu\n",
            _obm_gc_list_size(&rt->permanent));
  }
  if (generation + 1 < OBM_GC_NGENERATIONS) gens[generation + 1].count++;
  for (int i = 0; i <= generation; i++)
    gens[i].count = 0;
  for (int i = 0; i < generation; i++)
    _obm_gc_list_merge(&gens[i].head, &gens[generation].head);

  obm_gc_head_t *young = &gens[generation].head;
  obm_gc_head_t *old = generation < OBM_GC_NGENERATIONS - 1 ? &gens[generation + 1].head : young;
  decref_ctx_t ctx = {NULL, 0};
  obm_gc_head_t unreachable, finalizers, final_unreachable;
  info->candidates = deduce_unreachable(young, &unreachable, &ctx);

  if (young != old) {
    if (generation == OBM_GC_NGENERATIONS - 2) rt->long_lived_pending += _obm_gc_list_size(young);
    _obm_gc_list_merge(young, old);
  } else {
    rt->long_lived_pending = 0;
    rt->long_lived_total = _obm_gc_list_size(young);
  }

  _obm_gc_list_init(&finalizers);
  garbage_scan_t scan = {0, false, false};
  move_legacy_finalizers(&unreachable, &finalizers, &scan);
  size_t collected = scan.n - move_legacy_finalizer_reachable(&finalizers);
  if (rt->debug & OBM_GC_DEBUG_COLLECTABLE)
    for (obm_gc_head_t *g = gc_first(&unreachable); g != &unreachable; g = gc_first(g))
      debug_object(rt, "collectable", _obm_from_gc(g));

  if (scan.weakrefs) handle_weakrefs(rt, &unreachable);
  if (scan.finalizers) {
    finalize_garbage(rt, &unreachable);
    handle_resurrected(&unreachable, &final_unreachable, old, &ctx);
    collected = _obm_gc_list_size(&final_unreachable);
  } else {
    _obm_gc_list_init(&final_unreachable);
    _obm_gc_list_merge(&unreachable, &final_unreachable);
  }
  if (scan.weakrefs || scan.finalizers) clear_weakrefs(&final_unreachable, NULL);
  delete_garbage(rt, &final_unreachable, old);

  size_t uncollectable = 0;
  for (obm_gc_head_t *g = gc_first(&finalizers); g != &finalizers; g = gc_first(g)) {
    uncollectable++;
    obm_object_t *op = _obm_from_gc(g);
    if (rt->debug & OBM_GC_DEBUG_UNCOLLECTABLE) debug_object(rt, "uncollectable", op);
    if ((rt->debug & OBM_GC_DEBUG_SAVEALL) || op->type->legacy_finalize != NULL)
      garbage_append(rt, op);
  }
  _obm_gc_list_merge(&finalizers, old);

  uint64_t duration = _obm_os_clock_ns() - start;
  obm_gc_stats_t *stats = &rt->stats[generation];
  stats->collections++;
  stats->collected += collected;
  stats->uncollectable += uncollectable;
  stats->duration_ns += duration;
  info->collected = collected;
  info->uncollectable = uncollectable;
  info->duration_ns = duration;
  if (rt->debug & OBM_GC_DEBUG_STATS)
    fprintf(debug_out(rt), "gc: done, %zu unreachable, %zu uncollectable, %.6fs elapsed\n",
            collected + uncollectable, uncollectable, (double)duration / 1e9);
  return collected + uncollectable;
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

void _obm_gc_collect_generations(obm_runtime_t *rt) {
  rt->collecting = 1;
  for (int i = OBM_GC_NGENERATIONS - 1; i >= 0; i--) {
    if (rt->generations[i].count <= rt->generations[i].threshold) continue;
    /* the 25 % rule: a full collection only once the objects promoted since the last one
     * reach a quarter of what it left (CPython's long_lived_pending / long_lived_total) */
    if (i == OBM_GC_NGENERATIONS - 1 && rt->long_lived_pending < rt->long_lived_total / 4) continue;
    collect_with_callbacks(rt, i);
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
  for (int i = 0; i < OBM_GC_NGENERATIONS; i++) {
    obm_gc_head_t *list = &rt->generations[i].head;
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
  for (int i = 0; i < OBM_GC_NGENERATIONS; i++) {
    if (generation != -1 && generation != i) continue;
    obm_gc_head_t *list = &rt->generations[i].head;
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
  for (int i = 0; i <= OBM_GC_NGENERATIONS; i++) {
    obm_gc_head_t *list = i < OBM_GC_NGENERATIONS ? &rt->generations[i].head : &rt->permanent;
    while (!_obm_gc_list_is_empty(list)) {
      _obm_gc_list_remove(gc_first(list));
      n++;
    }
  }
  return n;
}

/* ---- the checker ------------------------------------------------------------------------ */

/* Structure of one list: links agree both ways, no flag bits, every object a live GC object;
 * at most `limit` objects (a longer walk means a cycle that bypasses the head). */
static size_t check_list(const obm_gc_head_t *list, const char *name, size_t limit, size_t *count) {
  size_t problems = 0;
  if ((list->next & OBM_GC_NEXT_UNREACHABLE) || (list->prev & OBM_GC_PREV_FLAGS)) {
    _obm_error(OBM_ERR_CORRUPTION, (void *)list, "gc list %s: flag bits in its head", name);
    return 1;
  }
  const obm_gc_head_t *prev = list;
  for (const obm_gc_head_t *g = gc_first(list); g != list; g = gc_first(g)) {
    const obm_object_t *op = _obm_from_gc((obm_gc_head_t *)g);
    const char *what = NULL;
    if (++*count > limit)
      what = "more objects than the runtime has (a loop)";
    else if (g->next == 0)
      what = "a tracked object's next is 0";
    else if ((g->next & OBM_GC_NEXT_UNREACHABLE) || (g->prev & OBM_GC_PREV_FLAGS))
      what = "flag bits left outside a collection";
    else if (_obm_gc_prev(g) != prev)
      what = "prev does not match";
    else if (!_obm_is_gc(op))
      what = "an object of a non-GC type";
    else if (op->refcnt == 0)
      what = "a tracked object with count 0";
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
  static const char *const names[] = {"generation 0", "generation 1", "generation 2", "permanent"};
  obm_gc_head_t *lists[OBM_GC_NGENERATIONS + 1];
  for (int i = 0; i < OBM_GC_NGENERATIONS; i++)
    lists[i] = &rt->generations[i].head;
  lists[OBM_GC_NGENERATIONS] = &rt->permanent;
  size_t problems = 0, count = 0;
  for (int i = 0; i <= OBM_GC_NGENERATIONS; i++)
    problems += check_list(lists[i], names[i], rt->nobjects, &count);
  if (rt->trash != NULL && rt->dealloc_depth == 0) {
    _obm_error(OBM_ERR_CORRUPTION, rt->trash, "deferred deallocations left pending");
    problems++;
  }
  if (problems != 0 || rt->collecting) return problems;
  /* Counts: gc_refs over all tracked objects at once; a reference found beyond an object's
   * count is reported by visit_decref.  Then prev pointers are rebuilt from next. */
  decref_ctx_t ctx = {NULL, 0};
  for (int i = 0; i <= OBM_GC_NGENERATIONS; i++)
    update_refs(lists[i], &ctx);
  for (int i = 0; i <= OBM_GC_NGENERATIONS; i++)
    subtract_refs(lists[i], &ctx);
  for (int i = 0; i <= OBM_GC_NGENERATIONS; i++) {
    obm_gc_head_t *prev = lists[i];
    for (obm_gc_head_t *g = gc_first(lists[i]); g != lists[i]; g = gc_first(g)) {
      g->prev = (uintptr_t)prev;
      prev = g;
    }
  }
  return problems + ctx.problems;
}
