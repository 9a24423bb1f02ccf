/* test_gc_stress.c — randomized object graphs against a reachability oracle.
 *
 * A unit test (calls _obm_gc_check).  For each of ROUNDS seeds, STEPS random operations
 * build and cut a graph of "snode" objects (three slots, an id), lists of snodes and weak
 * references (with callbacks, sometimes kept in the graph so that they become garbage
 * themselves); snodes may have a finalizer, a finalizer that resurrects (into the roots),
 * or a legacy finalizer (uncollectable in a cycle).  Collections happen at random and
 * automatically (thresholds drawn per round, down to "hard GC": a collection every second
 * creation).  Checked all along:
 *   - every snode is deallocated at most once (its dealloc hook), and never while reachable;
 *   - finalizers and weak-reference callbacks see only intact objects: the object, the
 *     callback's data and their direct children are alive and were never cleared;
 *   - every weak reference's callback finds its referent gone;
 *   - every 2000 steps (the oracle, by its own walk of the graph from the roots and the
 *     garbage list): every snode unreachable when a full collection starts is freed by it
 *     unless a finalizer resurrected it (then it is reachable after); and once collections
 *     find nothing more, the snodes alive are exactly the reachable ones;
 *   - _obm_gc_check finds the lists and the counts consistent (every 500 steps too);
 *   - at the end of a round everything is freed: each snode exactly once, no object left.
 * MODE (the fourth argument) adds:
 *   incremental   each round an incremental budget of 1..100 objects per step, explicit
 *                 steps among the random collections, and a second oracle: after a
 *                 generation 1 collection (everything young becomes old), sweeps made of
 *                 steps only free every snode unreachable before (unless resurrected),
 *                 each whole sweep some of what is left — so no step split a cycle;
 *   hard          Lua's "hard GC": a whole collection at every creation (OBM_GC_DEBUG_HARD);
 *   hard-incremental  both: a young collection and a step at every creation.
 * Usage: test_gc_stress [SEED] [ROUNDS] [STEPS] [plain|incremental|hard|hard-incremental]
 */
#include "object/object_internal.h"

#include "check.h"

#define NSLOTS 3

typedef struct snode_s {
  obm_object_t base;
  uint32_t id;
  uint32_t kind;
  obm_weakref_t *weaklist;
  obm_object_t *slots[NSLOTS];
} snode_t;

enum { PLAIN, FIN, RESURRECT, LEGACY, NKINDS };

typedef struct info_s {
  snode_t *op; /* valid while alive */
  uint8_t alive;
  uint8_t freed;        /* deallocations seen */
  uint8_t cleared;      /* the collector called clear */
  uint8_t finalized;    /* finalize calls */
  uint32_t reached;     /* oracle epoch */
  uint32_t alive_index; /* position in alive_ids */
} info_t;

static info_t *infos;
static uint32_t ninfos, infos_capacity;
static uint32_t *alive_ids;
static uint32_t nalive;
static obm_runtime_t *rt;
static obm_object_t *roots;
static uint64_t rng;
static size_t ncallbacks, nresurrected;
static int incremental_mode, hard_mode; /* MODE */

static const obm_type_t snode_types[NKINDS];

static int is_snode(const obm_object_t *op) {
  for (int k = 0; k < NKINDS; k++)
    if (op->type == &snode_types[k]) return 1;
  return 0;
}

static info_t *info_of(const obm_object_t *op) {
  return &infos[((const snode_t *)op)->id];
}

/* An object a finalizer or callback may look at: alive and never cleared, so are its
 * direct snode children. */
static void check_intact(const obm_object_t *op, const char *who) {
  if (op == NULL || !is_snode(op)) return;
  const info_t *in = info_of(op);
  CHECKF(in->alive && !in->cleared, "%s sees snode %u alive=%d cleared=%d", who,
         ((const snode_t *)op)->id, in->alive, in->cleared);
  for (int i = 0; i < NSLOTS; i++) {
    const obm_object_t *child = ((const snode_t *)op)->slots[i];
    if (child != NULL && is_snode(child))
      CHECKF(info_of(child)->alive && !info_of(child)->cleared,
             "%s sees child snode %u of %u alive=%d cleared=%d", who, ((const snode_t *)child)->id,
             ((const snode_t *)op)->id, info_of(child)->alive, info_of(child)->cleared);
  }
}

static int snode_traverse(obm_object_t *op, obm_visit_t *visit, void *arg) {
  for (int i = 0; i < NSLOTS; i++)
    OBM_VISIT(((snode_t *)op)->slots[i]);
  return 0;
}

static void drop_slots(obm_runtime_t *r, obm_object_t *op) {
  for (int i = 0; i < NSLOTS; i++) {
    obm_object_t *child = ((snode_t *)op)->slots[i];
    ((snode_t *)op)->slots[i] = NULL;
    obm_xdecref(r, child);
  }
}

static void snode_clear(obm_runtime_t *r, obm_object_t *op) {
  CHECK(info_of(op)->alive);
  info_of(op)->cleared = 1;
  drop_slots(r, op);
}

static void snode_dealloc(obm_runtime_t *r, obm_object_t *op) {
  info_t *in = info_of(op);
  CHECKF(in->alive && in->freed == 0, "snode %u deallocated twice", ((snode_t *)op)->id);
  in->alive = 0;
  in->freed++;
  uint32_t last = alive_ids[--nalive];
  alive_ids[in->alive_index] = last;
  infos[last].alive_index = in->alive_index;
  drop_slots(r, op);
}

static void snode_finalize(obm_runtime_t *r, obm_object_t *op) {
  check_intact(op, "finalizer");
  info_t *in = info_of(op);
  in->finalized++;
  CHECK(in->finalized == 1);
  if (((snode_t *)op)->kind == RESURRECT) {
    CHECK(obm_list_append(r, roots, op) == 0);
    nresurrected++;
  }
}

static void snode_legacy(obm_runtime_t *r, obm_object_t *op) {
  (void)r;
  check_intact(op, "legacy finalizer");
}

#define SNODE_FIELDS(n)                                                                            \
  .name = (n), .basic_size = sizeof(snode_t), .flags = OBM_TYPE_GC,                                \
  .weaklist_offset = offsetof(snode_t, weaklist), .traverse = snode_traverse,                      \
  .clear = snode_clear, .dealloc = snode_dealloc

static const obm_type_t snode_types[NKINDS] = {
    {SNODE_FIELDS("snode")},
    {SNODE_FIELDS("snode_fin"), .finalize = snode_finalize},
    {SNODE_FIELDS("snode_resurrect"), .finalize = snode_finalize},
    {SNODE_FIELDS("snode_legacy"), .legacy_finalize = snode_legacy},
};

static void weak_callback(obm_runtime_t *r, obm_weakref_t *wr, obm_object_t *data) {
  (void)r;
  CHECK(obm_weakref_get(wr) == NULL);
  check_intact(data, "weakref callback");
  ncallbacks++;
}

/* ---- operations ------------------------------------------------------------------------ */

static obm_object_t *random_alive(void) {
  if (nalive == 0) return NULL;
  return &infos[alive_ids[check_rand_below(&rng, nalive)]].op->base;
}

static obm_object_t *new_snode(int allow_legacy) {
  uint64_t r = check_rand_below(&rng, 100);
  uint32_t kind = r < 60 ? PLAIN : r < 80 ? FIN : r < 92 ? RESURRECT : allow_legacy ? LEGACY : FIN;
  snode_t *op = (snode_t *)obm_object_new(rt, &snode_types[kind]);
  CHECK(op != NULL);
  if (ninfos == infos_capacity) {
    infos_capacity = infos_capacity ? 2 * infos_capacity : 1024;
    infos = realloc(infos, infos_capacity * sizeof *infos);
    alive_ids = realloc(alive_ids, infos_capacity * sizeof *alive_ids);
    CHECK(infos != NULL && alive_ids != NULL);
  }
  op->id = ninfos++;
  op->kind = kind;
  infos[op->id] = (info_t){.op = op, .alive = 1, .alive_index = nalive};
  alive_ids[nalive++] = op->id;
  return &op->base;
}

/* Stores a new reference to value in a random slot of a random snode, or in the roots. */
static void place(obm_object_t *value) {
  obm_object_t *target = random_alive();
  if (target == NULL || check_rand_below(&rng, 2) == 0) {
    CHECK(obm_list_append(rt, roots, value) == 0);
    return;
  }
  obm_incref(target);
  snode_t *t = (snode_t *)target;
  size_t i = check_rand_below(&rng, NSLOTS);
  obm_object_t *old = t->slots[i];
  obm_incref(value);
  t->slots[i] = value;
  obm_xdecref(rt, old);
  obm_decref(rt, target);
}

static void step(int allow_legacy) {
  uint64_t r = check_rand_below(&rng, 100);
  if (r < 25) { /* a new snode */
    obm_object_t *op = new_snode(allow_legacy);
    place(op);
    obm_decref(rt, op);
  } else if (r < 50) { /* a link between existing snodes, or a cut */
    obm_object_t *a = random_alive(), *b = random_alive();
    if (a == NULL) return;
    obm_incref(a);
    snode_t *t = (snode_t *)a;
    size_t i = check_rand_below(&rng, NSLOTS);
    obm_object_t *value = check_rand_below(&rng, 5) == 0 ? NULL : b;
    obm_xincref(value);
    obm_object_t *old = t->slots[i];
    t->slots[i] = value;
    obm_xdecref(rt, old);
    obm_decref(rt, a);
  } else if (r < 55) { /* a list of a few snodes */
    obm_object_t *l = obm_list_new(rt, 0);
    CHECK(l != NULL);
    for (uint64_t n = check_rand_below(&rng, 4); n > 0; n--) {
      obm_object_t *item = random_alive();
      if (item != NULL) CHECK(obm_list_append(rt, l, item) == 0);
    }
    place(l);
    obm_decref(rt, l);
  } else if (r < 60) { /* a weak reference with a callback */
    obm_object_t *target = random_alive();
    if (target == NULL) return;
    obm_incref(target);
    obm_object_t *data = check_rand_below(&rng, 2) ? random_alive() : NULL;
    obm_xincref(data); /* a borrowed pointer must be owned while passed on */
    obm_weakref_t *wr = obm_weakref_new(rt, target, weak_callback, data);
    CHECK(wr != NULL);
    obm_xdecref(rt, data);
    place(&wr->base);
    obm_decref(rt, &wr->base);
    obm_decref(rt, target);
  } else if (r < 80) { /* drop a root */
    size_t n = obm_list_size(roots);
    if (n > 0) obm_list_delete(rt, roots, check_rand_below(&rng, n));
  } else if (r < 83) {
    uint64_t g = check_rand_below(&rng, 10);
    if (incremental_mode && g < 5)
      CHECK(obm_gc_collect_step(rt) >= 0);
    else
      obm_gc_collect(rt, g < 6 ? 0 : g < 9 ? 1 : 2);
  }
  if (obm_list_size(roots) > 400) obm_list_delete(rt, roots, check_rand_below(&rng, 400));
}

/* ---- the oracle -------------------------------------------------------------------------- */

static uint32_t epoch;

static void reach_object(obm_object_t *op, uint32_t *stack, uint32_t *nstack);

static void reach_children(obm_object_t *op, uint32_t *stack, uint32_t *nstack) {
  if (obm_list_check(op)) {
    for (size_t i = 0; i < obm_list_size(op); i++)
      reach_object(obm_list_get(op, i), stack, nstack);
  } else if (op->type == &obm_weakref_type) {
    obm_weakref_t *wr = (obm_weakref_t *)op;
    if (wr->callback_data != NULL) reach_object(wr->callback_data, stack, nstack);
  }
}

/* Marks an snode and pushes it, or walks a list / weak reference at once (they only refer
 * to snodes, so every cycle passes through a marked snode). */
static void reach_object(obm_object_t *op, uint32_t *stack, uint32_t *nstack) {
  if (is_snode(op)) {
    info_t *in = info_of(op);
    CHECKF(in->alive && !in->cleared, "reachable snode %u alive=%d cleared=%d", ((snode_t *)op)->id,
           in->alive, in->cleared);
    if (in->reached == epoch) return;
    in->reached = epoch;
    stack[(*nstack)++] = ((snode_t *)op)->id;
  } else {
    reach_children(op, stack, nstack);
  }
}

/* Marks the snodes reachable from the roots and the garbage list (a new epoch); returns
 * how many. */
static size_t walk_reachable(void) {
  epoch++;
  uint32_t *stack = malloc((ninfos + 1) * sizeof *stack);
  uint32_t nstack = 0;
  CHECK(stack != NULL);
  reach_children(roots, stack, &nstack);
  reach_children(obm_gc_garbage(rt), stack, &nstack);
  size_t nreached = 0;
  while (nstack > 0) {
    snode_t *op = infos[stack[--nstack]].op;
    nreached++;
    for (int i = 0; i < NSLOTS; i++)
      if (op->slots[i] != NULL) reach_object(op->slots[i], stack, &nstack);
  }
  free(stack);
  return nreached;
}

/* Removes from ids[0..*n) the garbage snodes reachable from a garbage snode with a legacy
 * finalizer: they are uncollectable, and if that object dies during the collection (only
 * other garbage referred to it, and clearing that garbage frees it by counting, as in
 * CPython) they are left as ordinary garbage for the next collection, neither freed nor in
 * the garbage list. */
static void drop_legacy_reachable(uint32_t *ids, uint32_t *n) {
  epoch++;
  uint32_t *stack = malloc((ninfos + 1) * sizeof *stack);
  uint32_t nstack = 0;
  CHECK(stack != NULL);
  for (uint32_t i = 0; i < *n; i++)
    if (infos[ids[i]].op->kind == LEGACY) reach_object(&infos[ids[i]].op->base, stack, &nstack);
  while (nstack > 0) {
    snode_t *op = infos[stack[--nstack]].op;
    for (int i = 0; i < NSLOTS; i++)
      if (op->slots[i] != NULL) reach_object(op->slots[i], stack, &nstack);
  }
  free(stack);
  uint32_t kept = 0;
  for (uint32_t i = 0; i < *n; i++)
    if (infos[ids[i]].reached != epoch) ids[kept++] = ids[i];
  *n = kept;
}

/* The ids of the snodes alive and unreachable now, less what a legacy finalizer's object
 * reaches (drop_legacy_reachable); *n of them, in a malloc'ed array. */
static uint32_t *garbage_now(uint32_t *n) {
  walk_reachable();
  uint32_t *ids = malloc((nalive + 1) * sizeof *ids);
  *n = 0;
  CHECK(ids != NULL);
  for (uint32_t i = 0; i < nalive; i++)
    if (infos[alive_ids[i]].reached != epoch) ids[(*n)++] = alive_ids[i];
  drop_legacy_reachable(ids, n);
  return ids;
}

/* (1) A full collection frees every snode unreachable when it starts, except what a finalizer
 * made reachable again (then it is reachable afterwards) and what a legacy finalizer's
 * object reaches (drop_legacy_reachable).  (2) Once collections find
 * nothing more (a callback that ran drops its data, which may make garbage only then, as in
 * CPython), the snodes alive are exactly the reachable ones. */
static void oracle(void) {
  uint32_t ngarbage;
  uint32_t *garbage_ids = garbage_now(&ngarbage);
  CHECK(obm_gc_collect(rt, 2) >= 0);
  CHECK(_obm_gc_check(rt) == 0);
  obm_object_t *garbage = obm_gc_garbage(rt);
  for (size_t i = 0; i < obm_list_size(garbage); i++)
    check_intact(obm_list_get(garbage, i), "the garbage list");
  walk_reachable();
  for (uint32_t i = 0; i < ngarbage; i++) {
    const info_t *in = &infos[garbage_ids[i]];
    CHECKF(!in->alive || in->reached == epoch,
           "snode %u was garbage at a full collection's start and survived it unreachable",
           garbage_ids[i]);
  }
  free(garbage_ids);
  for (int quiet = 0; quiet < 100; quiet++) {
    size_t callbacks = ncallbacks;
    if (obm_gc_collect(rt, 2) == 0 && ncallbacks == callbacks) break;
  }
  size_t nreached = walk_reachable();
  for (uint32_t i = 0; i < nalive; i++)
    CHECKF(infos[alive_ids[i]].reached == epoch,
           "snode %u alive but unreachable after the collections", alive_ids[i]);
  CHECK(nreached == nalive);
}

/* Garbage snodes of ids[0..n) that are still alive and unreachable (a new walk). */
static uint32_t count_left(const uint32_t *ids, uint32_t n) {
  walk_reachable();
  uint32_t left = 0;
  for (uint32_t i = 0; i < n; i++)
    left += infos[ids[i]].alive && infos[ids[i]].reached != epoch;
  return left;
}

/* Incremental mode: steps alone free all the garbage present before them (everything young
 * made old first), unless a finalizer resurrects it, and every whole sweep makes progress:
 * the garbage that only garbage refers to from outside its cycles ("top" cycles) is always
 * examined whole and found, so each sweep after the first (which may have started before)
 * frees some of what is left — a layer of cycles hanging from garbage examined earlier in
 * the sweep may wait for the next one.  With the closure disabled (cycles split) it fails. */
static void oracle_incremental(void) {
  uint32_t ngarbage;
  uint32_t *garbage_ids = garbage_now(&ngarbage);
  CHECK(obm_gc_collect(rt, 1) >= 0);
  uint32_t left = ngarbage;
  for (uint32_t sweep = 0; left > 0; sweep++) {
    CHECKF(sweep <= ngarbage + 1, "%u sweeps left %u garbage snodes", sweep, left);
    obm_gc_stats_t before[3], after[3];
    obm_gc_get_stats(rt, before);
    for (long n = 0;; n++) {
      CHECKF(n < 1000000, "a sweep did not end");
      CHECK(obm_gc_collect_step(rt) >= 0);
      obm_gc_get_stats(rt, after);
      if (after[2].collections > before[2].collections) break;
    }
    CHECK(_obm_gc_check(rt) == 0);
    uint32_t now = count_left(garbage_ids, ngarbage);
    CHECKF(sweep == 0 || now < left, "a whole sweep freed none of %u garbage snodes", left);
    left = now;
  }
  free(garbage_ids);
}

/* Ends a round: roots dropped, legacy cycles broken by hand, everything must be freed. */
static void finish_round(void) {
  /* Resurrectors come back to the roots once (their finalizer runs once), and what a
   * legacy cycle reaches surfaces only when the cycle is broken: repeat until both lists
   * stay empty. */
  for (int pass = 0; pass == 0 || obm_list_size(roots) > 0 || obm_list_size(obm_gc_garbage(rt)) > 0;
       pass++) {
    CHECKF(pass < 1000, "the graph does not empty");
    obm_list_clear(rt, roots);
    obm_gc_collect(rt, 2);
    obm_object_t *garbage = obm_gc_garbage(rt);
    for (size_t i = 0; i < obm_list_size(garbage); i++) {
      obm_object_t *op = obm_list_get(garbage, i);
      check_intact(op, "the garbage list"); /* what a legacy cycle reaches is kept whole */
      if (is_snode(op)) drop_slots(rt, op);
    }
    obm_list_clear(rt, garbage);
    obm_gc_collect(rt, 2);
  }
  oracle();
  CHECKF(nalive == 0, "%u snodes alive at the end", nalive);
  for (uint32_t i = 0; i < ninfos; i++)
    CHECKF(infos[i].freed == 1, "snode %u freed %d times", i, infos[i].freed);
  obm_decref(rt, roots);
  size_t live = obm_runtime_free(rt);
  CHECKF(live == 0, "%zu objects left", live);
}

int main(int argc, char **argv) {
  check_seed_init("test_gc_stress", argc, argv, 1, 7);
  long rounds = check_arg_long(argc, argv, 2, NULL, 20);
  long steps = check_arg_long(argc, argv, 3, NULL, 20000);
  const char *mode = argc > 4 ? argv[4] : "plain";
  incremental_mode = strstr(mode, "incremental") != NULL;
  hard_mode = strncmp(mode, "hard", 4) == 0;
  CHECKF(incremental_mode || hard_mode || strcmp(mode, "plain") == 0, "unknown mode '%s'", mode);
  uint64_t first = check_seed;
  size_t total_nodes = 0, total_collections = 0;
  for (long round = 0; round < rounds; round++) {
    check_seed = first + (uint64_t)round; /* printed on failure: replay with it, ROUNDS 1 */
    rng = check_seed;
    ninfos = nalive = 0;
    rt = obm_runtime_new();
    CHECK(rt != NULL);
    static const size_t thresholds[][3] = {{700, 10, 10}, {50, 5, 5}, {10, 2, 2}, {1, 1, 1}};
    const size_t *t = thresholds[check_rand_below(&rng, 4)];
    obm_gc_set_threshold(rt, t[0], t[1], t[2]);
    int allow_legacy = check_rand_below(&rng, 2) == 0;
    if (incremental_mode) {
      static const size_t budgets[] = {1, 3, 10, 100};
      CHECK(obm_gc_set_incremental(rt, budgets[check_rand_below(&rng, 4)]) == 0);
    }
    if (hard_mode) obm_gc_set_debug(rt, OBM_GC_DEBUG_HARD);
    roots = obm_list_new(rt, 0);
    CHECK(roots != NULL);
    for (long s = 1; s <= steps; s++) {
      step(allow_legacy);
      if (s % 500 == 0) CHECK(_obm_gc_check(rt) == 0);
      if (s % 2000 == 0) oracle();
      if (incremental_mode && s % 2000 == 1000) oracle_incremental();
    }
    obm_gc_stats_t st[3];
    obm_gc_get_stats(rt, st);
    total_collections += st[0].collections + st[1].collections + st[2].collections;
    total_nodes += ninfos;
    finish_round();
  }
  printf("%ld rounds: %zu snodes, %zu collections, %zu weakref callbacks, %zu resurrections\n",
         rounds, total_nodes, total_collections, ncallbacks, nresurrected);
  free(infos);
  free(alive_ids);
  check_seed = first;
  return check_done();
}
