/* test_gc_incremental.c — the incremental mode (obm_gc_set_incremental, obm_gc_collect_step):
 * bounded steps, no cycle split between steps, the semantics of a whole collection
 * (finalizers once, resurrection, weak-reference callbacks, legacy finalizers to garbage),
 * sweeps ended by a whole collection or by freeze, and automatic steps keeping a churning
 * heap near its live size.  The randomized fuzzer runs in this mode too
 * (test_gc_stress ... incremental).
 *
 * A unit test: _obm_gc_check after every scenario, and the runtime must free everything.
 * Usage: test_gc_incremental [SEED]
 */
#include "object/object_internal.h"

#include "object_test.h"

static obm_runtime_t *rt_new(size_t budget) {
  obm_runtime_t *rt = obm_runtime_new();
  CHECK(rt != NULL);
  obm_gc_disable(rt);
  CHECK(obm_gc_set_incremental(rt, budget) == 0);
  CHECK(obm_gc_get_incremental(rt) == budget);
  ot_reset_calls();
  return rt;
}

/* What the callbacks saw: steps (generation 2 with collection 0 of generations 0/1 around). */
static struct {
  size_t nsteps;
  size_t max_candidates; /* of a step */
  size_t found;          /* collected + uncollectable, all steps */
} seen;

static void on_gc(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info, void *arg) {
  (void)rt, (void)arg;
  if (phase != OBM_GC_STOP || info->generation != 2) return;
  seen.nsteps++;
  if (info->candidates > seen.max_candidates) seen.max_candidates = info->candidates;
  seen.found += info->collected + info->uncollectable;
}

static uint64_t sweeps(obm_runtime_t *rt) {
  obm_gc_stats_t st[3];
  obm_gc_get_stats(rt, st);
  return st[2].collections;
}

/* Steps until one more sweep has ended; returns the objects the steps found. */
static size_t run_sweep(obm_runtime_t *rt) {
  uint64_t before = sweeps(rt);
  size_t found = 0;
  for (int n = 0; sweeps(rt) == before; n++) {
    CHECKF(n < 10000000, "a sweep does not end");
    ptrdiff_t r = obm_gc_collect_step(rt);
    CHECK(r >= 0);
    found += (size_t)r;
    if (n % 97 == 0) CHECK(_obm_gc_check(rt) == 0); /* between steps, mid-sweep */
  }
  return found;
}

/* Makes everything tracked old (generation 2, unvisited). */
static void age(obm_runtime_t *rt) {
  CHECK(obm_gc_collect(rt, 2) >= 0);
}

/* n two-cycles of records held by a list (returned): live */
static obm_object_t *make_pairs(obm_runtime_t *rt, size_t n) {
  obm_object_t *root = obm_list_new(rt, n);
  CHECK(root != NULL);
  for (size_t i = 0; i < n; i++) {
    obm_object_t *a = ot_new(rt, &ot_node, 1);
    obm_object_t *b = ot_new(rt, &ot_node, 1);
    obm_record_set(rt, a, 0, b);
    obm_record_set(rt, b, 0, a);
    CHECK(obm_list_append(rt, root, a) == 0);
    obm_decref(rt, a);
    obm_decref(rt, b);
  }
  return root;
}

/* Steps examine about `budget` objects each: a live heap of independent pairs never makes
 * a step bigger than the budget plus one pair (and the root list, taken last, alone). */
static void test_bounded_steps(void) {
  obm_runtime_t *rt = rt_new(100);
  obm_gc_callback_add(rt, on_gc, NULL);
  obm_object_t *root = make_pairs(rt, 5000);
  age(rt);
  seen.nsteps = seen.max_candidates = seen.found = 0;
  CHECK(run_sweep(rt) == 0);
  CHECKF(seen.max_candidates <= 100 + 2, "a step examined %zu objects", seen.max_candidates);
  CHECKF(seen.nsteps >= 10001 / 102, "%zu steps for 10001 objects", seen.nsteps);
  CHECK(ot_ndealloc == 0);
  /* the same once more: the next sweep meets the objects in the same good order */
  seen.max_candidates = 0;
  CHECK(run_sweep(rt) == 0);
  CHECKF(seen.max_candidates <= 100 + 2, "second sweep: a step examined %zu objects",
         seen.max_candidates);
  obm_decref(rt, root);
  CHECK(obm_gc_collect(rt, 2) == 10000);
  ot_rt_done(rt);
}

/* A garbage ring of 1000 records with a budget of 10: one step examines it whole (the step
 * is extended), and the sweep frees it; the unrelated live pairs around it do not join. */
static void test_cycle_never_split(void) {
  obm_runtime_t *rt = rt_new(10);
  obm_gc_callback_add(rt, on_gc, NULL);
  obm_object_t *before = make_pairs(rt, 200);
  obm_object_t *first = ot_new(rt, &ot_node, 1), *prev = first;
  for (int i = 1; i < 1000; i++) {
    obm_object_t *op = ot_new(rt, &ot_node, 1);
    obm_record_set(rt, prev, 0, op);
    obm_decref(rt, op);
    prev = op;
  }
  obm_record_set(rt, prev, 0, first);
  obm_object_t *after = make_pairs(rt, 200);
  age(rt);
  obm_decref(rt, first);
  seen.nsteps = seen.max_candidates = seen.found = 0;
  CHECK(run_sweep(rt) == 1000);
  CHECK(ot_ndealloc == 1000);
  CHECKF(seen.max_candidates >= 1000 && seen.max_candidates <= 1000 + 10 + 2,
         "the ring's step examined %zu objects", seen.max_candidates);
  obm_decref(rt, before);
  obm_decref(rt, after);
  ot_rt_done(rt);
}

/* Garbage hanging from garbage: an older self-referencing list holds a newer cycle.  The
 * newer cycle is examined first (steps take the newest) and survives its step because the
 * list, not yet examined, refers to it; the list's step frees the list, which sends the
 * cycle back to pending: one sweep frees both (without that, one sweep per layer). */
static void test_garbage_chain(void) {
  obm_runtime_t *rt = rt_new(1);
  obm_object_t *holder = obm_list_new(rt, 0);
  CHECK(obm_list_append(rt, holder, holder) == 0);
  obm_object_t *c = ot_self_cycle(rt, &ot_node), *d = ot_new(rt, &ot_node, 1);
  obm_record_set(rt, d, 0, c);
  CHECK(obm_list_append(rt, holder, c) == 0 && obm_list_append(rt, holder, d) == 0);
  obm_decref(rt, c);
  obm_decref(rt, d);
  age(rt);
  obm_decref(rt, holder);
  size_t found = run_sweep(rt); /* holder, then c; d dies by counting with holder */
  CHECKF(found == 2 && ot_ndealloc == 2 && obm_runtime_live_objects(rt) == 0,
         "one sweep found %zu, %zu records freed, %zu objects left", found, ot_ndealloc,
         obm_runtime_live_objects(rt));
  ot_rt_done(rt);
}

/* Finalizers run once, resurrection keeps the resurrected object and what it reaches, weak
 * reference callbacks run for reachable weak references only and see no cleared object,
 * legacy finalizers' cycles go to garbage — in steps as in a whole collection. */
static obm_object_t *cb_saw;
static void weak_cb(obm_runtime_t *rt, obm_weakref_t *wr, obm_object_t *data) {
  (void)rt, (void)wr;
  CHECK(obm_weakref_get(wr) == NULL);
  cb_saw = data;
}

static void test_semantics(void) {
  obm_runtime_t *rt = rt_new(5);
  ot_survivors = obm_list_new(rt, 0);
  /* a finalizer cycle and a resurrecting cycle that holds a plain node */
  obm_object_t *f1 = ot_new(rt, &ot_fin_type, 1), *f2 = ot_new(rt, &ot_fin_type, 1);
  obm_record_set(rt, f1, 0, f2);
  obm_record_set(rt, f2, 0, f1);
  obm_object_t *r = ot_new(rt, &ot_resurrect_type, 2), *kept = ot_new(rt, &ot_node, 1);
  obm_record_set(rt, r, 0, r);
  obm_record_set(rt, r, 1, kept);
  /* a legacy cycle, and a garbage node with a live weak reference holding a callback */
  obm_object_t *legacy = ot_self_cycle(rt, &ot_legacy_type);
  obm_object_t *target = ot_self_cycle(rt, &ot_node);
  obm_object_t *data = obm_list_new(rt, 0);
  obm_weakref_t *wr = obm_weakref_new(rt, target, weak_cb, data);
  CHECK(wr != NULL);
  age(rt);
  obm_decref(rt, f1);
  obm_decref(rt, f2);
  obm_decref(rt, r);
  obm_decref(rt, kept);
  obm_decref(rt, legacy);
  obm_decref(rt, target);
  cb_saw = NULL;
  run_sweep(rt);
  CHECK(ot_nfin_calls == 3); /* f1, f2, r: once each */
  CHECK(obm_list_size(ot_survivors) == 1 && obm_list_get(ot_survivors, 0) == r);
  CHECK(obm_record_get(r, 1) == kept && obm_refcnt(kept) >= 1);
  CHECK(obm_is_finalized(r));
  CHECK(cb_saw == data);
  CHECK(obm_weakref_get(wr) == NULL);
  CHECK(obm_list_size(obm_gc_garbage(rt)) == 1 && obm_list_get(obm_gc_garbage(rt), 0) == legacy);
  CHECK(ot_nlegacy_calls == 0);
  /* resurrected once: dropped again it goes without its finalizer */
  size_t fin = ot_nfin_calls, deallocs = ot_ndealloc;
  obm_list_clear(rt, ot_survivors);
  run_sweep(rt);
  run_sweep(rt);
  CHECK(ot_nfin_calls == fin);
  CHECK(ot_ndealloc == deallocs + 2); /* r and kept */
  obm_list_clear(rt, obm_gc_garbage(rt));
  obm_record_set(rt, legacy, 0, NULL);
  obm_decref(rt, &wr->base);
  obm_decref(rt, data);
  obm_decref(rt, ot_survivors);
  ot_survivors = NULL;
  ot_rt_done(rt);
}

/* A whole collection in the middle of a sweep ends it (visited objects rejoin the oldest
 * generation); so does freeze.  The checker agrees at every point. */
static void test_sweep_interrupted(void) {
  obm_runtime_t *rt = rt_new(50);
  obm_object_t *root = make_pairs(rt, 1000);
  age(rt);
  for (int i = 0; i < 5; i++)
    CHECK(obm_gc_collect_step(rt) == 0);
  CHECK(_obm_gc_check(rt) == 0);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(_obm_gc_check(rt) == 0);
  for (int i = 0; i < 5; i++)
    CHECK(obm_gc_collect_step(rt) == 0);
  obm_gc_freeze(rt);
  CHECK(obm_gc_get_freeze_count(rt) == 2001);
  CHECK(_obm_gc_check(rt) == 0);
  CHECK(obm_gc_collect_step(rt) == 0); /* nothing to sweep: the frozen are left alone */
  obm_gc_unfreeze(rt);
  CHECK(_obm_gc_check(rt) == 0);
  obm_decref(rt, root);
  CHECK(run_sweep(rt) + run_sweep(rt) == 2000);
  ot_rt_done(rt);
}

/* Automatic collection: a program that keeps 30 000 pairs, and keeps each new pair a while
 * (20 000 at a time, so that they grow old before they become garbage cycles), with
 * incremental budget `budget` (0: off).  Returns its peak object count; *nsweeps gets the
 * sweeps (or whole collections of generation 2). */
static size_t churn(size_t budget, uint64_t *nsweeps) {
  obm_runtime_t *rt = rt_new(budget);
  obm_gc_enable(rt);
  obm_object_t *root = make_pairs(rt, 30000);
  enum { WINDOW = 20000 };
  obm_object_t *window = make_pairs(rt, WINDOW);
  size_t peak = 0;
  for (int i = 0; i < 300000; i++) {
    obm_object_t *fresh = make_pairs(rt, 1);
    CHECK(obm_list_set(rt, window, (size_t)i % WINDOW, obm_list_get(fresh, 0)) == 0);
    obm_decref(rt, fresh);
    size_t live = obm_runtime_live_objects(rt);
    if (live > peak) peak = live;
  }
  *nsweeps = sweeps(rt);
  obm_decref(rt, window);
  obm_decref(rt, root);
  ot_rt_done(rt);
  return peak;
}

/* In incremental mode the old garbage is found by steps (sweeps end), and the heap's peak
 * stays within 1.2x of the whole collections' (the memory target). */
static void test_automatic(void) {
  uint64_t full, sweeps_small, sweeps_large;
  size_t peak_full = churn(0, &full);
  size_t peak_small = churn(500, &sweeps_small);
  size_t peak_large = churn(10000, &sweeps_large);
  CHECKF(full >= 2 && sweeps_small >= 2 && sweeps_large >= 2,
         "%" PRIu64 " whole collections, %" PRIu64 " and %" PRIu64 " sweeps", full, sweeps_small,
         sweeps_large);
  CHECKF(peak_small * 5 <= peak_full * 6 && peak_large * 5 <= peak_full * 6,
         "peak objects: %zu (budget 500), %zu (10000), %zu (whole collections)", peak_small,
         peak_large, peak_full);
}

/* Hard GC with the incremental mode: a young collection and a step at every creation. */
static void test_hard_incremental(void) {
  obm_runtime_t *rt = rt_new(3);
  obm_gc_enable(rt);
  obm_gc_set_debug(rt, OBM_GC_DEBUG_HARD);
  obm_object_t *root = make_pairs(rt, 300);
  for (int i = 0; i < 300; i++)
    obm_decref(rt, make_pairs(rt, 1));
  CHECK(_obm_gc_check(rt) == 0);
  CHECK(obm_runtime_live_objects(rt) < 601 + 300 * 3);
  obm_gc_set_debug(rt, 0);
  obm_decref(rt, root);
  ot_rt_done(rt);
}

int main(int argc, char **argv) {
  check_seed_init("test_gc_incremental", argc, argv, 1, 1);
  obm_set_error_handler(ot_on_error, NULL);
  test_bounded_steps();
  test_cycle_never_split();
  test_garbage_chain();
  test_semantics();
  test_sweep_interrupted();
  test_automatic();
  test_hard_incremental();
  return check_done();
}
