/* test_gc.c — the cycle collector against the scenarios of CPython's Lib/test/test_gc.py and
 * test_finalization.py (our own code; each test names the CPython test it follows).
 *
 * A unit test: it calls the invariant checker _obm_gc_check() after every scenario and
 * checks that the runtime frees everything (obm_runtime_free returns the live count).
 * Automatic collection is disabled where a scenario needs exact counts, as CPython's tests
 * do.  Usage: test_gc [SEED]
 */
#include "object/object_internal.h"

#include "object_test.h"

#include <errno.h>

static obm_runtime_t *rt_new(void) {
  obm_runtime_t *rt = obm_runtime_new();
  CHECK(rt != NULL);
  obm_gc_disable(rt);
  ot_reset_calls();
  return rt;
}

static size_t garbage_size(obm_runtime_t *rt) {
  return obm_list_size(obm_gc_garbage(rt));
}

static int in_list(obm_object_t *list, obm_object_t *op) {
  for (size_t i = 0; i < obm_list_size(list); i++)
    if (obm_list_get(list, i) == op) return 1;
  return 0;
}

/* ---- test_gc.py: basic cycles ---------------------------------------------------------- */

/* test_list: a list that contains itself */
static void test_list_self(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *l = obm_list_new(rt, 0);
  CHECK(obm_list_append(rt, l, l) == 0);
  CHECK(obm_refcnt(l) == 2);
  obm_decref(rt, l);
  CHECK(obm_runtime_live_objects(rt) == 1);
  CHECK(obm_gc_collect(rt, 2) == 1);
  CHECK(obm_runtime_live_objects(rt) == 0);
  CHECK(obm_gc_collect(rt, 2) == 0);
  ot_rt_done(rt);
}

/* test_instance / test_newinstance: records in self-cycles and in a two-cycle */
static void test_record_cycles(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *a = ot_self_cycle(rt, &ot_node);
  obm_object_t *b = ot_new(rt, &ot_node, 2);
  obm_object_t *c = ot_new(rt, &ot_node, 2);
  obm_record_set(rt, b, 0, c);
  obm_record_set(rt, c, 1, b);
  obm_decref(rt, a);
  obm_decref(rt, b);
  obm_decref(rt, c);
  CHECK(ot_ndealloc == 0);
  CHECK(obm_gc_collect(rt, 2) == 3);
  CHECK(ot_ndealloc == 3);
  ot_rt_done(rt);
}

/* test_tuple: a list and a record that refer to each other (CPython: tuple <-> list) */
static void test_list_record_cycle(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *l = obm_list_new(rt, 0);
  obm_object_t *t = ot_new(rt, &ot_node, 1);
  obm_record_set(rt, t, 0, l);
  obm_list_append(rt, l, t);
  obm_decref(rt, t);
  obm_decref(rt, l);
  CHECK(obm_gc_collect(rt, 2) == 2);
  CHECK(ot_ndealloc == 1);
  ot_rt_done(rt);
}

/* Reachable structures survive, including cycles hanging from a live object, and
 * non-GC leaves inside garbage are freed by counting. */
static void test_reachable_survives(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *root = obm_list_new(rt, 0);
  obm_object_t *a = ot_new(rt, &ot_node, 2);
  obm_object_t *b = ot_new(rt, &ot_node, 2);
  obm_object_t *atom = obm_object_new(rt, &ot_atom);
  CHECK(atom != NULL);
  obm_record_set(rt, a, 0, b);
  obm_record_set(rt, b, 0, a); /* a <-> b, reachable from root */
  obm_record_set(rt, b, 1, atom);
  obm_list_append(rt, root, a);
  obm_decref(rt, a);
  obm_decref(rt, b);
  obm_decref(rt, atom);
  for (int g = 0; g < OBM_GC_NGENERATIONS; g++)
    CHECK(obm_gc_collect(rt, g) == 0);
  CHECK(ot_ndealloc == 0);
  CHECK(obm_record_get(a, 0) == b && obm_record_get(b, 1) == atom);
  CHECK(_obm_gc_check(rt) == 0);
  obm_decref(rt, root); /* now a <-> b is garbage, and the atom with it */
  CHECK(obm_runtime_live_objects(rt) == 3);
  CHECK(obm_gc_collect(rt, 2) == 2);
  CHECK(obm_runtime_live_objects(rt) == 0);
  ot_rt_done(rt);
}

/* ---- generations, thresholds, counts, stats --------------------------------------------- */

/* test_get_count and test_collect_generations: an object trickles into generation n + 1
 * after each collect(n); counts follow CPython's rules. */
static void test_generations(void) {
  obm_runtime_t *rt = rt_new();
  size_t c[3];
  obm_gc_collect(rt, 2);
  obm_gc_get_count(rt, c);
  CHECK(c[0] == 0 && c[1] == 0 && c[2] == 0);
  obm_object_t *x = obm_list_new(rt, 0);
  obm_gc_get_count(rt, c);
  CHECK(c[0] == 1 && c[1] == 0 && c[2] == 0);

  obm_object_t *in[3];
  for (int g = 0; g < 3; g++) {
    obm_gc_collect(rt, g);
    for (int i = 0; i < 3; i++) {
      in[i] = obm_gc_get_objects(rt, i);
      CHECK(in[i] != NULL);
    }
    CHECK(in_list(in[g < 2 ? g + 1 : 2], x));
    for (int i = 0; i < 3; i++) {
      if (i != (g < 2 ? g + 1 : 2)) CHECK(!in_list(in[i], x));
      obm_decref(rt, in[i]);
    }
    obm_gc_get_count(rt, c);
    if (g == 0) CHECK(c[1] == 1 && c[2] == 0);
    if (g == 1) CHECK(c[1] == 0 && c[2] == 1);
    if (g == 2) CHECK(c[1] == 0 && c[2] == 0);
  }
  /* invalid generations */
  errno = 0;
  CHECK(obm_gc_collect(rt, 3) == -1 && errno == EINVAL);
  CHECK(obm_gc_collect(rt, -1) == -1);
  CHECK(obm_gc_get_objects(rt, 5) == NULL);
  obm_decref(rt, x);
  ot_rt_done(rt);
}

typedef struct cb_log_s {
  int n;
  obm_gc_phase_t phase[64];
  obm_gc_info_t info[64];
} cb_log_t;

static void log_callback(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info,
                         void *arg) {
  (void)rt;
  cb_log_t *log = arg;
  CHECK(log->n < 64);
  log->phase[log->n] = phase;
  log->info[log->n] = *info;
  log->n++;
}

/* Automatic collections: generation 0 when its count exceeds threshold0 (the new object not
 * yet among the candidates); generation 1 when threshold1 generation-0 collections passed. */
static void test_thresholds(void) {
  obm_runtime_t *rt = rt_new();
  size_t t[3];
  obm_gc_get_threshold(rt, t);
  CHECK(t[0] == 700 && t[1] == 10 && t[2] == 10);
  cb_log_t log = {0};
  CHECK(obm_gc_callback_add(rt, log_callback, &log) == 0);
  obm_gc_set_threshold(rt, 10, 2, 1000);
  obm_gc_get_threshold(rt, t);
  CHECK(t[0] == 10 && t[1] == 2 && t[2] == 1000);
  obm_gc_enable(rt);
  CHECK(obm_gc_is_enabled(rt));
  obm_object_t *keep = obm_list_new(rt, 0);
  for (int i = 0; i < 9; i++) {
    obm_object_t *l = obm_list_new(rt, 0);
    obm_list_append(rt, keep, l);
    obm_decref(rt, l);
  }
  CHECK(log.n == 0);                     /* count 10 == threshold: not yet */
  obm_object_t *l = obm_list_new(rt, 0); /* count 11 > 10 */
  CHECK(log.n == 2 && log.phase[0] == OBM_GC_START && log.phase[1] == OBM_GC_STOP);
  CHECK(log.info[0].generation == 0 && log.info[1].generation == 0);
  CHECK(log.info[0].collected == 0 && log.info[0].duration_ns == 0);
  CHECK(log.info[1].candidates == 10);
  obm_decref(rt, l); /* freed at once: generation 0's count goes back down */
  size_t c[3];
  obm_gc_get_count(rt, c);
  CHECK(c[0] == 0 && c[1] == 1);
  /* two more generation-0 collections, then the third trigger collects generation 1 */
  log.n = 0;
  for (int i = 0; i < 3 * 11; i++) {
    obm_object_t *k = obm_list_new(rt, 0);
    obm_list_append(rt, keep, k);
    obm_decref(rt, k);
  }
  CHECK(log.n == 6);
  CHECK(log.info[1].generation == 0 && log.info[3].generation == 0);
  CHECK(log.info[5].generation == 1);
  obm_gc_get_count(rt, c);
  CHECK(c[1] == 0 && c[2] == 1);
  /* threshold0 == 0 turns automatic collection off; so does disable */
  obm_gc_set_threshold(rt, 0, 2, 1000);
  log.n = 0;
  for (int i = 0; i < 100; i++)
    obm_decref(rt, obm_list_new(rt, 0));
  obm_gc_set_threshold(rt, 10, 2, 1000);
  obm_gc_disable(rt);
  for (int i = 0; i < 100; i++) {
    obm_object_t *k = obm_list_new(rt, 0);
    obm_list_append(rt, keep, k);
    obm_decref(rt, k);
  }
  CHECK(log.n == 0);
  CHECK(obm_gc_callback_remove(rt, log_callback, &log) == 0);
  CHECK(obm_gc_callback_remove(rt, log_callback, &log) == ENOENT);
  obm_decref(rt, keep);
  ot_rt_done(rt);
}

/* The 25 % rule: an automatic full collection starts only when the objects promoted to
 * generation 2 since the last full collection reach a quarter of what it left there. */
typedef struct rule_log_s {
  int full, deferred; /* full collections; triggers where generation 2 was over threshold */
  size_t pending_at_full, total_at_full;
} rule_log_t;

static void rule_callback(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info,
                          void *arg) {
  rule_log_t *log = arg;
  if (phase != OBM_GC_START) return;
  if (info->generation == 2) {
    CHECKF(rt->long_lived_pending >= rt->long_lived_total / 4,
           "full collection with %zu "
           "pending of %zu long-lived",
           rt->long_lived_pending, rt->long_lived_total);
    if (log->full++ == 0) {
      log->pending_at_full = rt->long_lived_pending;
      log->total_at_full = rt->long_lived_total;
    }
  } else if (rt->generations[2].count > rt->generations[2].threshold) {
    log->deferred++;
  }
}

static void test_long_lived_rule(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *keep = obm_list_new(rt, 0);
  for (int i = 0; i < 400; i++) {
    obm_object_t *l = obm_list_new(rt, 0);
    obm_list_append(rt, keep, l);
    obm_decref(rt, l);
  }
  obm_gc_collect(rt, 2);
  CHECK(rt->long_lived_total == 401 && rt->long_lived_pending == 0);
  rule_log_t log = {0};
  obm_gc_callback_add(rt, rule_callback, &log);
  obm_gc_set_threshold(rt, 5, 0, 0); /* generations 1 and 2 always over threshold */
  obm_gc_enable(rt);
  int created = 0;
  while (log.full == 0 && created < 10000) {
    obm_object_t *l = obm_list_new(rt, 0);
    obm_list_append(rt, keep, l);
    obm_decref(rt, l);
    created++;
  }
  CHECK(log.full == 1);
  CHECK(log.deferred > 0);
  CHECK(log.pending_at_full >= 100 && log.pending_at_full < 100 + 12);
  CHECK(created >= 100);
  obm_gc_disable(rt);
  obm_gc_callback_remove(rt, rule_callback, &log);
  obm_decref(rt, keep);
  ot_rt_done(rt);
}

/* test_get_stats: collect(n) counts a collection of generation n only */
static void test_stats(void) {
  obm_runtime_t *rt = rt_new();
  obm_gc_stats_t before[3], after[3];
  obm_gc_get_stats(rt, before);
  obm_gc_collect(rt, 0);
  obm_gc_get_stats(rt, after);
  CHECK(after[0].collections == before[0].collections + 1);
  CHECK(after[1].collections == before[1].collections);
  CHECK(after[2].collections == before[2].collections);
  obm_decref(rt, ot_self_cycle(rt, &ot_node));
  obm_decref(rt, ot_self_cycle(rt, &ot_node));
  obm_gc_collect(rt, 2);
  obm_gc_get_stats(rt, after);
  CHECK(after[0].collections == before[0].collections + 1);
  CHECK(after[2].collections == before[2].collections + 1);
  CHECK(after[2].collected == before[2].collected + 2);
  CHECK(after[2].uncollectable == before[2].uncollectable);
  ot_rt_done(rt);
}

/* test_collect / test_collect_generation / test_collect_garbage (gc.callbacks): two
 * callbacks, start and stop each, with the generation and the stop phase's counts; a stop
 * callback may clean the garbage list and break the uncollectable cycles. */
typedef struct pair_log_s {
  cb_log_t log;
  int cleanup;
} pair_log_t;

static void cleanup_callback(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info,
                             void *arg) {
  pair_log_t *p = arg;
  log_callback(rt, phase, info, &p->log);
  if (phase != OBM_GC_STOP || !p->cleanup) return;
  obm_object_t *garbage = obm_gc_garbage(rt);
  while (obm_list_size(garbage) > 0) {
    obm_object_t *op = obm_list_pop(rt, garbage);
    obm_record_set(rt, op, 0, NULL); /* partner = None */
    obm_decref(rt, op);
  }
}

/* CPython's Uncollectable: two objects with legacy finalizers that are each other's partner. */
static void make_uncollectable_pair(obm_runtime_t *rt) {
  obm_object_t *a = ot_new(rt, &ot_legacy_type, 1);
  obm_object_t *b = ot_new(rt, &ot_legacy_type, 1);
  obm_record_set(rt, a, 0, b);
  obm_record_set(rt, b, 0, a);
  obm_decref(rt, a);
  obm_decref(rt, b);
}

static void test_callbacks(void) {
  obm_runtime_t *rt = rt_new();
  cb_log_t one = {0};
  pair_log_t two = {{0}, 0};
  obm_gc_callback_add(rt, log_callback, &one);
  obm_gc_callback_add(rt, cleanup_callback, &two);
  obm_gc_collect(rt, 2);
  CHECK(one.n == 2 && two.log.n == 2);
  CHECK(one.phase[0] == OBM_GC_START && one.phase[1] == OBM_GC_STOP);
  CHECK(one.info[0].generation == 2 && one.info[1].generation == 2);
  obm_gc_collect(rt, 1);
  CHECK(one.n == 4 && one.info[2].generation == 1 && one.info[3].generation == 1);

  one.n = two.log.n = 0;
  make_uncollectable_pair(rt);
  make_uncollectable_pair(rt);
  obm_decref(rt, ot_self_cycle(rt, &ot_node));
  CHECK(obm_gc_collect(rt, 2) == 5);
  CHECK(one.n == 2 && one.info[1].collected == 1 && one.info[1].uncollectable == 4);
  CHECK(one.info[1].duration_ns > 0);
  CHECK(two.log.info[1].collected == 1 && two.log.info[1].uncollectable == 4);
  CHECK(garbage_size(rt) == 4);
  for (size_t i = 0; i < 4; i++)
    CHECK(obm_list_get(obm_gc_garbage(rt), i)->type == &ot_legacy_type);
  CHECK(ot_nlegacy_calls == 0); /* never called on uncollectable objects */

  /* while garbage holds them they are reachable */
  CHECK(obm_gc_collect(rt, 2) == 0);
  /* emptied, they are found again; the stop callback now breaks the pairs */
  obm_list_clear(rt, obm_gc_garbage(rt));
  two.cleanup = 1;
  one.n = 0;
  CHECK(obm_gc_collect(rt, 2) == 4);
  CHECK(one.info[1].collected == 0 && one.info[1].uncollectable == 4);
  CHECK(garbage_size(rt) == 0);
  CHECK(ot_nlegacy_calls == 4); /* each legacy finalizer ran at its deallocation */
  CHECK(obm_gc_collect(rt, 2) == 0);
  obm_gc_callback_remove(rt, log_callback, &one);
  obm_gc_callback_remove(rt, cleanup_callback, &two);
  ot_rt_done(rt);
}

/* test_saveall: with SAVEALL, cyclic garbage goes to the garbage list instead of being
 * freed; DEBUG_LEAK also prints each object (checked in the debug output). */
static void test_saveall_and_leak(void) {
  obm_runtime_t *rt = rt_new();
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(garbage_size(rt) == 0);
  obm_object_t *l = obm_list_new(rt, 0);
  obm_list_append(rt, l, l);
  obm_gc_set_debug(rt, obm_gc_get_debug(rt) | OBM_GC_DEBUG_SAVEALL);
  obm_decref(rt, l);
  CHECK(obm_gc_collect(rt, 2) == 1);
  obm_gc_set_debug(rt, 0);
  CHECK(garbage_size(rt) == 1);
  obm_object_t *got = obm_list_pop(rt, obm_gc_garbage(rt));
  CHECK(got == l);
  obm_decref(rt, got);
  CHECK(obm_runtime_live_objects(rt) == 2); /* l and the garbage list */
  CHECK(obm_gc_collect(rt, 2) == 1);        /* without SAVEALL it is freed */
  CHECK(obm_runtime_live_objects(rt) == 1);

  /* DEBUG_LEAK: the collectable object is printed and saved, and so is everything the
   * uncollectable one reaches */
  FILE *out = tmpfile();
  CHECK(out != NULL);
  obm_gc_set_debug_output(rt, out);
  obm_gc_set_debug(rt, OBM_GC_DEBUG_LEAK | OBM_GC_DEBUG_STATS);
  obm_object_t *c = ot_self_cycle(rt, &ot_node);
  obm_object_t *u = ot_self_cycle(rt, &ot_legacy_type);
  obm_object_t *under = ot_new(rt, &ot_node, 1);
  obm_record_set(rt, u, 0, NULL);
  obm_record_set(rt, u, 0, under);
  obm_record_set(rt, under, 0, u);
  obm_decref(rt, c);
  obm_decref(rt, u);
  obm_decref(rt, under);
  CHECK(obm_gc_collect(rt, 2) == 3);
  CHECK(garbage_size(rt) == 3); /* SAVEALL: under too */
  obm_gc_set_debug(rt, 0);
  obm_gc_set_debug_output(rt, NULL);
  char text[4096] = "";
  rewind(out);
  size_t n = fread(text, 1, sizeof text - 1, out);
  text[n] = '\0';
  fclose(out);
  char want[128];
  snprintf(want, sizeof want, "gc: collectable <node %p>", (void *)c);
  CHECKF(strstr(text, want) != NULL, "debug output:\n%s", text);
  snprintf(want, sizeof want, "gc: uncollectable <legacy %p>", (void *)u);
  CHECKF(strstr(text, want) != NULL, "debug output:\n%s", text);
  snprintf(want, sizeof want, "gc: uncollectable <node %p>", (void *)under);
  CHECKF(strstr(text, want) != NULL, "debug output:\n%s", text);
  CHECKF(strstr(text, "gc: collecting generation 2") != NULL, "%s", text);
  CHECKF(strstr(text, "gc: done, 3 unreachable, 2 uncollectable") != NULL, "%s", text);
  /* break the legacy cycle by hand, as a program must */
  obm_record_set(rt, u, 0, NULL);
  obm_list_clear(rt, obm_gc_garbage(rt));
  CHECK(ot_nlegacy_calls == 1);
  ot_rt_done(rt);
}

/* test_freeze: frozen objects are ignored by collections until unfrozen */
static void test_freeze(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *keep = obm_list_new(rt, 0);
  obm_object_t *cycle = ot_self_cycle(rt, &ot_node);
  obm_decref(rt, cycle);
  obm_gc_freeze(rt);
  CHECK(obm_gc_get_freeze_count(rt) == 2);
  size_t c[3];
  obm_gc_get_count(rt, c);
  CHECK(c[0] == 0);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(ot_ndealloc == 0);
  obm_object_t *all = obm_gc_get_objects(rt, -1);
  CHECK(all != NULL && obm_list_size(all) == 0); /* the permanent generation is hidden */
  obm_decref(rt, all);
  CHECK(obm_gc_is_tracked(cycle));
  obm_gc_unfreeze(rt);
  CHECK(obm_gc_get_freeze_count(rt) == 0);
  all = obm_gc_get_objects(rt, 2);
  CHECK(in_list(all, cycle) && in_list(all, keep));
  obm_decref(rt, all);
  CHECK(obm_gc_collect(rt, 2) == 1);
  CHECK(ot_ndealloc == 1);
  obm_decref(rt, keep);
  ot_rt_done(rt);
}

/* test_get_referents / get_referrers, is_tracked */
static void test_introspection(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *atoms[3];
  obm_object_t *alist = obm_list_new(rt, 0);
  for (int i = 0; i < 3; i++) {
    atoms[i] = obm_object_new(rt, &ot_atom);
    obm_list_append(rt, alist, atoms[i]);
  }
  obm_object_t *got = obm_gc_get_referents(rt, &alist, 1);
  CHECK(obm_list_size(got) == 3);
  for (int i = 0; i < 3; i++)
    CHECK(obm_list_get(got, (size_t)i) == atoms[i]);
  obm_decref(rt, got);
  got = obm_gc_get_referents(rt, atoms, 3); /* non-GC objects refer to nothing */
  CHECK(obm_list_size(got) == 0);
  obm_decref(rt, got);

  obm_object_t *other = ot_new(rt, &ot_node, 2);
  obm_record_set(rt, other, 1, atoms[1]);
  obm_object_t *both[2] = {atoms[1], atoms[2]};
  got = obm_gc_get_referrers(rt, both, 2);
  CHECK(obm_list_size(got) == 2 && in_list(got, alist) && in_list(got, other));
  obm_decref(rt, got);
  got = obm_gc_get_referrers(rt, &other, 1);
  CHECK(obm_list_size(got) == 0);
  obm_decref(rt, got);

  CHECK(!obm_gc_is_tracked(atoms[0]));
  CHECK(obm_gc_is_tracked(alist) && obm_gc_is_tracked(other));
  obm_gc_untrack(other);
  CHECK(!obm_gc_is_tracked(other));
  got = obm_gc_get_referrers(rt, both, 1); /* untracked objects are invisible */
  CHECK(obm_list_size(got) == 1 && obm_list_get(got, 0) == alist);
  obm_decref(rt, got);
  obm_gc_untrack(other);
  obm_gc_track(rt, other);
  obm_gc_track(rt, other);
  CHECK(obm_gc_is_tracked(other));
  CHECK(_obm_gc_check(rt) == 0);
  for (int i = 0; i < 3; i++)
    obm_decref(rt, atoms[i]);
  obm_decref(rt, alist);
  obm_decref(rt, other);
  ot_rt_done(rt);
}

/* ---- test_finalization.py ------------------------------------------------------------- */

static void survivors_init(obm_runtime_t *rt) {
  ot_survivors = obm_list_new(rt, 0);
  CHECK(ot_survivors != NULL);
}
static void survivors_clear(obm_runtime_t *rt) {
  obm_list_clear(rt, ot_survivors);
}
static void survivors_done(obm_runtime_t *rt) {
  obm_decref(rt, ot_survivors);
  ot_survivors = NULL;
}

/* SimpleFinalizationTest (no cycle): the finalizer runs at count 0; one that resurrects keeps
 * the object, its weak reference alive; it is never finalized again. */
static void test_simple_finalization(void) {
  obm_runtime_t *rt = rt_new();
  survivors_init(rt);
  obm_object_t *s = ot_new(rt, &ot_fin_type, 1);
  obm_weakref_t *wr = obm_weakref_new(rt, s, NULL, NULL);
  CHECK(!obm_is_finalized(s));
  obm_decref(rt, s);
  CHECK(ot_nfin_calls == 1 && ot_fin_calls[0] == s && ot_ndealloc == 1);
  CHECK(obm_weakref_get(wr) == NULL);
  obm_decref(rt, &wr->base);

  ot_reset_calls();
  s = ot_new(rt, &ot_resurrect_type, 1);
  wr = obm_weakref_new(rt, s, NULL, NULL);
  obm_decref(rt, s);
  CHECK(ot_nfin_calls == 1 && ot_ndealloc == 0);
  CHECK(obm_list_get(ot_survivors, 0) == s && obm_refcnt(s) == 1);
  CHECK(obm_weakref_get(wr) == s); /* weak references cleared only after finalizers */
  CHECK(obm_is_finalized(s));
  CHECK(obm_gc_is_tracked(s));
  survivors_clear(rt); /* dies now, without a second finalizer call */
  CHECK(ot_nfin_calls == 1 && ot_ndealloc == 1);
  CHECK(obm_weakref_get(wr) == NULL);
  obm_decref(rt, &wr->base);
  survivors_done(rt);
  ot_rt_done(rt);
}

/* A non-GC object with a finalizer: same rules (ours run once, where CPython reruns it). */
static int nongc_resurrect;
static obm_object_t *nongc_saved;
static void nongc_finalize(obm_runtime_t *rt, obm_object_t *op) {
  (void)rt;
  ot_record_fin(op);
  if (nongc_resurrect) {
    obm_incref(op);
    nongc_saved = op;
  }
}
static const obm_type_t nongc_fin_type = {
    .name = "nongc_fin", .basic_size = sizeof(obm_object_t), .finalize = nongc_finalize};

static void test_non_gc_finalization(void) {
  obm_runtime_t *rt = rt_new();
  nongc_resurrect = 1;
  obm_object_t *s = obm_object_new(rt, &nongc_fin_type);
  CHECK(!obm_gc_is_tracked(s));
  obm_decref(rt, s);
  CHECK(ot_nfin_calls == 1 && nongc_saved == s && obm_refcnt(s) == 1);
  CHECK(obm_runtime_live_objects(rt) == 1);
  obm_decref(rt, nongc_saved);
  CHECK(ot_nfin_calls == 1 && obm_runtime_live_objects(rt) == 0);
  nongc_resurrect = 0;
  ot_rt_done(rt);
}

/* SelfCycleFinalizationTest: test_simple, test_simple_resurrect, test_simple_suicide */
static void test_self_cycle_finalization(void) {
  obm_runtime_t *rt = rt_new();
  survivors_init(rt);
  obm_object_t *s = ot_self_cycle(rt, &ot_fin_type);
  obm_weakref_t *wr = obm_weakref_new(rt, s, NULL, NULL);
  obm_decref(rt, s);
  CHECK(obm_gc_collect(rt, 2) == 1);
  CHECK(ot_nfin_calls == 1 && ot_fin_calls[0] == s && ot_ndealloc == 1);
  CHECK(obm_weakref_get(wr) == NULL);
  obm_decref(rt, &wr->base);

  /* resurrection: the object survives, its weak reference is cleared (CPython: "XXX is this
   * desirable?"), the collection counts nothing, and the second time no finalizer runs */
  ot_reset_calls();
  s = ot_self_cycle(rt, &ot_resurrect_type);
  wr = obm_weakref_new(rt, s, NULL, NULL);
  obm_decref(rt, s);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(ot_nfin_calls == 1 && ot_ndealloc == 0);
  CHECK(obm_list_get(ot_survivors, 0) == s && obm_record_get(s, 0) == s);
  CHECK(obm_weakref_get(wr) == NULL);
  CHECK(obm_is_finalized(s));
  survivors_clear(rt);
  CHECK(obm_gc_collect(rt, 2) == 1);
  CHECK(ot_nfin_calls == 1 && ot_ndealloc == 1);
  obm_decref(rt, &wr->base);

  /* suicide: the finalizer breaks the cycle; the object dies by counting */
  ot_reset_calls();
  s = ot_self_cycle(rt, &ot_suicide_type);
  wr = obm_weakref_new(rt, s, NULL, NULL);
  obm_decref(rt, s);
  obm_gc_collect(rt, 2);
  CHECK(ot_nfin_calls == 1 && ot_ndealloc == 1);
  CHECK(obm_weakref_get(wr) == NULL);
  obm_decref(rt, &wr->base);
  survivors_done(rt);
  ot_rt_done(rt);
}

/* CycleChainFinalizationTest: a cycle of n records of the given types (types[i % ntypes]).
 * Returns the records (borrowed after the call: only the cycle holds them). */
static void make_chain(obm_runtime_t *rt, const obm_type_t *const *types, size_t ntypes, size_t n,
                       obm_object_t **out, obm_weakref_t **wrs) {
  for (size_t i = 0; i < n; i++) {
    out[i] = ot_new(rt, types[i % ntypes], 1);
    wrs[i] = obm_weakref_new(rt, out[i], NULL, NULL);
  }
  for (size_t i = 0; i < n; i++)
    obm_record_set(rt, out[i], 0, out[(i + 1) % n]);
  for (size_t i = 0; i < n; i++)
    obm_decref(rt, out[i]);
}

static void drop_weakrefs(obm_runtime_t *rt, obm_weakref_t **wrs, size_t n) {
  for (size_t i = 0; i < n; i++)
    obm_decref(rt, &wrs[i]->base);
}

static void test_cycle_chains(void) {
  enum { N = 5 };
  obm_object_t *objs[N];
  obm_weakref_t *wrs[N];
  obm_runtime_t *rt = rt_new();
  survivors_init(rt);
  const obm_type_t *fin[] = {&ot_fin_type};
  const obm_type_t *res[] = {&ot_resurrect_type};
  const obm_type_t *suicide[] = {&ot_suicide_type};
  const obm_type_t *one_res[] = {&ot_fin_type, &ot_resurrect_type, &ot_fin_type, &ot_fin_type,
                                 &ot_fin_type};
  const obm_type_t *one_suicide[] = {&ot_node, &ot_suicide_type, &ot_node, &ot_node, &ot_node};

  /* test_homogenous */
  make_chain(rt, fin, 1, N, objs, wrs);
  CHECK(obm_gc_collect(rt, 2) == N);
  CHECK(ot_same_set(ot_fin_calls, ot_nfin_calls, objs, N) && ot_ndealloc == N);
  for (int i = 0; i < N; i++)
    CHECK(obm_weakref_get(wrs[i]) == NULL);
  drop_weakrefs(rt, wrs, N);

  /* test_homogenous_resurrect: all survive, finalized once */
  ot_reset_calls();
  make_chain(rt, res, 1, N, objs, wrs);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(ot_same_set(ot_fin_calls, ot_nfin_calls, objs, N) && ot_ndealloc == 0);
  CHECK(obm_list_size(ot_survivors) == N);
  for (int i = 0; i < N; i++)
    CHECK(obm_weakref_get(wrs[i]) == NULL);
  survivors_clear(rt);
  CHECK(obm_gc_collect(rt, 2) == N);
  CHECK(ot_nfin_calls == N && ot_ndealloc == N);
  drop_weakrefs(rt, wrs, N);

  /* test_homogenous_suicidal */
  ot_reset_calls();
  make_chain(rt, suicide, 1, N, objs, wrs);
  obm_gc_collect(rt, 2);
  CHECK(ot_nfin_calls == N && ot_ndealloc == N);
  drop_weakrefs(rt, wrs, N);

  /* test_heterogenous_resurrect_one: the resurrected one keeps the whole cycle alive */
  ot_reset_calls();
  make_chain(rt, one_res, 5, N, objs, wrs);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(ot_same_set(ot_fin_calls, ot_nfin_calls, objs, N) && ot_ndealloc == 0);
  CHECK(obm_list_size(ot_survivors) == 1 && obm_list_get(ot_survivors, 0) == objs[1]);
  for (int i = 0; i < N; i++)
    CHECK(obm_record_get(objs[i], 0) == objs[(i + 1) % N]);
  survivors_clear(rt);
  CHECK(obm_gc_collect(rt, 2) == N);
  CHECK(ot_nfin_calls == N && ot_ndealloc == N);
  drop_weakrefs(rt, wrs, N);

  /* test_heterogenous_suicidal_one */
  ot_reset_calls();
  make_chain(rt, one_suicide, 5, N, objs, wrs);
  obm_gc_collect(rt, 2);
  CHECK(ot_nfin_calls == 1 && ot_ndealloc == N);
  drop_weakrefs(rt, wrs, N);
  survivors_done(rt);
  ot_rt_done(rt);
}

/* test_resurrection_does_not_block_cleanup_of_other_objects: resurrected objects are not
 * counted as collected, and do not keep other garbage alive. */
static void test_resurrection_does_not_block_cleanup(void) {
  enum { N = 100 };
  obm_runtime_t *rt = rt_new();
  survivors_init(rt);
  obm_gc_stats_t st[3];
  for (int i = 0; i < N; i++)
    obm_decref(rt, ot_self_cycle(rt, &ot_node));
  CHECK(obm_gc_collect(rt, 2) == N);
  obm_gc_get_stats(rt, st);
  CHECK(st[2].collected == N && st[2].uncollectable == 0);

  obm_decref(rt, ot_self_cycle(rt, &ot_resurrect_type));
  CHECK(obm_gc_collect(rt, 2) == 0); /* merely resurrected */
  obm_gc_get_stats(rt, st);
  CHECK(st[2].collected == N);

  for (int i = 0; i < N; i++)
    obm_decref(rt, ot_self_cycle(rt, &ot_node));
  obm_decref(rt, ot_self_cycle(rt, &ot_resurrect_type));
  CHECK(obm_gc_collect(rt, 2) == N);
  obm_gc_get_stats(rt, st);
  CHECK(st[2].collected == 2 * N);
  CHECK(obm_list_size(ot_survivors) == 2);

  survivors_clear(rt);
  CHECK(obm_gc_collect(rt, 2) == 2);
  CHECK(ot_nfin_calls == 2);
  survivors_done(rt);
  ot_rt_done(rt);
}

/* Transitive resurrection: what a resurrected object reaches survives intact, even garbage
 * whose own finalizer did not resurrect anything. */
static void test_resurrection_transitive(void) {
  obm_runtime_t *rt = rt_new();
  survivors_init(rt);
  obm_object_t *r = ot_new(rt, &ot_resurrect_type, 1);
  obm_object_t *x = ot_self_cycle(rt, &ot_fin_type);
  obm_object_t *l = obm_list_new(rt, 0);
  obm_object_t *y = ot_new(rt, &ot_node, 1);
  obm_record_set(rt, r, 0, x);
  obm_record_set(rt, x, 0, NULL);
  obm_record_set(rt, x, 0, l);
  obm_list_append(rt, l, y);
  obm_list_append(rt, l, r); /* r -> x -> l -> (y, r) */
  obm_decref(rt, r);
  obm_decref(rt, x);
  obm_decref(rt, l);
  obm_decref(rt, y);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(ot_nfin_calls == 2 && ot_ndealloc == 0);
  CHECK(obm_record_get(r, 0) == x && obm_record_get(x, 0) == l);
  CHECK(obm_list_size(l) == 2 && obm_list_get(l, 0) == y);
  CHECK(_obm_gc_check(rt) == 0);
  survivors_clear(rt);
  CHECK(obm_gc_collect(rt, 2) == 4);
  CHECK(ot_nfin_calls == 2 && ot_ndealloc == 3);
  survivors_done(rt);
  ot_rt_done(rt);
}

/* LegacyFinalizationTest: legacy finalizers run at every deallocation (resurrection allowed),
 * and a cycle that has one goes to garbage with its weak references alive. */
static void test_legacy_finalization(void) {
  obm_runtime_t *rt = rt_new();
  survivors_init(rt);
  /* test_legacy */
  obm_object_t *s = ot_new(rt, &ot_legacy_type, 1);
  obm_decref(rt, s);
  CHECK(ot_nlegacy_calls == 1 && ot_legacy_calls[0] == s && ot_ndealloc == 1);
  /* test_legacy_resurrect: called again on the next deallocation */
  ot_reset_calls();
  s = ot_new(rt, &ot_legacy_res_type, 1);
  obm_weakref_t *wr = obm_weakref_new(rt, s, NULL, NULL);
  obm_decref(rt, s);
  CHECK(ot_nlegacy_calls == 1 && ot_ndealloc == 0 && obm_weakref_get(wr) == s);
  survivors_clear(rt); /* resurrects again */
  CHECK(ot_nlegacy_calls == 2 && ot_ndealloc == 0 && obm_list_size(ot_survivors) == 1);
  obm_list_clear(rt, ot_survivors);
  CHECK(ot_nlegacy_calls == 3 && obm_list_size(ot_survivors) == 1);
  /* a legacy object that stopped resurrecting: let it go through the plain type */
  obm_object_t *last = obm_list_pop(rt, ot_survivors);
  last->type = &ot_node; /* the program's "del obj.__del__" */
  obm_decref(rt, last);
  CHECK(ot_ndealloc == 1 && obm_weakref_get(wr) == NULL);
  obm_decref(rt, &wr->base);

  /* test_legacy_self_cycle */
  ot_reset_calls();
  s = ot_self_cycle(rt, &ot_legacy_type);
  wr = obm_weakref_new(rt, s, NULL, NULL);
  obm_decref(rt, s);
  CHECK(obm_gc_collect(rt, 2) == 1);
  CHECK(ot_nlegacy_calls == 0 && ot_ndealloc == 0);
  CHECK(garbage_size(rt) == 1 && obm_list_get(obm_gc_garbage(rt), 0) == s);
  CHECK(obm_weakref_get(wr) == s);
  CHECK(obm_gc_collect(rt, 2) == 0); /* garbage holds it now */
  CHECK(garbage_size(rt) == 1);
  obm_record_set(rt, s, 0, NULL); /* break the cycle */
  obm_list_clear(rt, obm_gc_garbage(rt));
  CHECK(ot_nlegacy_calls == 1 && ot_ndealloc == 1 && obm_weakref_get(wr) == NULL);
  obm_decref(rt, &wr->base);
  survivors_done(rt);
  ot_rt_done(rt);
}

/* test_is_finalized (Lazarus) */
static void test_is_finalized(void) {
  obm_runtime_t *rt = rt_new();
  survivors_init(rt);
  obm_object_t *lazarus = ot_new(rt, &ot_resurrect_type, 0);
  CHECK(!obm_is_finalized(lazarus));
  obm_decref(rt, lazarus);
  obm_gc_collect(rt, 2);
  CHECK(obm_list_get(ot_survivors, 0) == lazarus);
  CHECK(obm_is_finalized(lazarus));
  survivors_done(rt);
  ot_rt_done(rt);
}

/* ---- weak references in collections (test_gc.py: test_bug1055820b/c/d) ----------------- */

/* The callbacks' shared state: the weak references to look through, and what they saw. */
static struct {
  obm_weakref_t *wrs[4];
  size_t nwrs;
  size_t ncalls;
  size_t nseen_alive; /* referents a callback could still reach: must stay 0 */
  obm_weakref_t *order[8];
} wcb;

static void look_callback(obm_runtime_t *rt, obm_weakref_t *wr, obm_object_t *data) {
  (void)rt;
  (void)data;
  CHECK(obm_weakref_get(wr) == NULL);
  if (wcb.ncalls < 8) wcb.order[wcb.ncalls] = wr;
  wcb.ncalls++;
  for (size_t i = 0; i < wcb.nwrs; i++)
    wcb.nseen_alive += obm_weakref_get(wcb.wrs[i]) != NULL;
}

/* 1055820b: two self-cycles with weak references whose callbacks look at both referents:
 * they must find both cleared, never a half-destroyed object. */
static void test_weakref_callbacks_see_nothing(void) {
  obm_runtime_t *rt = rt_new();
  memset(&wcb, 0, sizeof wcb);
  obm_object_t *cs[2];
  for (int i = 0; i < 2; i++) {
    cs[i] = ot_self_cycle(rt, &ot_node);
    wcb.wrs[wcb.nwrs++] = obm_weakref_new(rt, cs[i], look_callback, NULL);
  }
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(wcb.ncalls == 0);
  for (int i = 0; i < 2; i++)
    obm_decref(rt, cs[i]);
  CHECK(obm_gc_collect(rt, 2) == 2);
  CHECK(wcb.ncalls == 2 && wcb.nseen_alive == 0);
  for (size_t i = 0; i < wcb.nwrs; i++)
    obm_decref(rt, &wcb.wrs[i]->base);

  /* A weak reference that is itself garbage: its callback never runs. */
  memset(&wcb, 0, sizeof wcb);
  obm_object_t *a = ot_new(rt, &ot_node, 2);
  obm_weakref_t *inner = obm_weakref_new(rt, a, look_callback, NULL);
  obm_record_set(rt, a, 0, a);
  obm_record_set(rt, a, 1, &inner->base);
  obm_decref(rt, &inner->base);
  obm_decref(rt, a);
  CHECK(obm_gc_collect(rt, 2) == 2);
  CHECK(wcb.ncalls == 0);

  /* A garbage weak reference to a live object: cleared, so the object's later death does
   * not call its callback either. */
  obm_object_t *live = ot_new(rt, &ot_node, 0);
  obm_object_t *holder = ot_new(rt, &ot_node, 2);
  obm_weakref_t *dangling = obm_weakref_new(rt, live, look_callback, NULL);
  obm_record_set(rt, holder, 0, holder);
  obm_record_set(rt, holder, 1, &dangling->base);
  obm_decref(rt, &dangling->base);
  obm_decref(rt, holder);
  CHECK(obm_weakref_count(live) == 1);
  CHECK(obm_gc_collect(rt, 2) == 2);
  CHECK(obm_weakref_count(live) == 0);
  obm_decref(rt, live);
  CHECK(wcb.ncalls == 0);
  ot_rt_done(rt);
}

/* Run generation-0 collections "naturally" (by creating objects) until one happened. */
static int gc_happened;
static void detector(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info,
                     void *arg) {
  (void)rt;
  (void)info;
  (void)arg;
  if (phase == OBM_GC_STOP) gc_happened = 1;
}
static void until_natural_gc(obm_runtime_t *rt) {
  obm_object_t *junk = obm_list_new(rt, 0);
  gc_happened = 0;
  obm_gc_callback_add(rt, detector, NULL);
  obm_gc_enable(rt);
  for (int i = 0; !gc_happened; i++) {
    CHECKF(i < 10000, "no collection after 10000 creations");
    obm_object_t *l = obm_list_new(rt, 0);
    obm_list_append(rt, junk, l);
    obm_decref(rt, l);
  }
  obm_gc_disable(rt);
  obm_gc_callback_remove(rt, detector, NULL);
  obm_decref(rt, junk);
}

static struct {
  obm_weakref_t *c2wr;
  int ncalls;
  int saw_c2;
} ouch;

static void c0_callback(obm_runtime_t *rt, obm_weakref_t *wr, obm_object_t *data) {
  (void)rt;
  (void)wr;
  (void)data;
  ouch.ncalls++;
  ouch.saw_c2 += obm_weakref_get(ouch.c2wr) != NULL;
}
static void d0_finalize(obm_runtime_t *rt, obm_object_t *op) {
  c0_callback(rt, NULL, op);
}
static const obm_type_t d_type = {OBM_RECORD_TYPE_FIELDS("D1055820"), .finalize = d0_finalize};

/* 1055820c (weakref callback) and 1055820d (finalizer): c0 sits in generation 2, kept alive
 * only by c1 in generation 0; c1 and c2 are self-cycles; c2 has a callback-free weak
 * reference.  A generation-0 collection clears c1, which frees c0, whose callback (or
 * finalizer) looks at c2 through the weak reference: it must find it cleared. */
static void test_weakref_across_generations(int use_finalizer) {
  obm_runtime_t *rt = rt_new();
  memset(&ouch, 0, sizeof ouch);
  obm_object_t *c0 = ot_new(rt, use_finalizer ? &d_type : &ot_node, 1);
  obm_record_set(rt, c0, 0, c0);
  obm_gc_collect(rt, 2); /* c0 into generation 2 */
  obm_object_t *c1 = ot_new(rt, &ot_node, 2);
  obm_record_set(rt, c1, 0, c1);
  obm_record_set(rt, c1, 1, c0);   /* keep_c0_alive */
  obm_record_set(rt, c0, 0, NULL); /* del c0.loop */
  obm_object_t *c2 = ot_self_cycle(rt, &ot_node);
  ouch.c2wr = obm_weakref_new(rt, c2, NULL, NULL);
  obm_weakref_t *c0wr = use_finalizer ? NULL : obm_weakref_new(rt, c0, c0_callback, NULL);
  obm_decref(rt, c0);
  obm_decref(rt, c1);
  obm_decref(rt, c2);
  CHECK(ouch.ncalls == 0);
  until_natural_gc(rt);
  CHECK(ouch.ncalls == 1); /* the callback / finalizer ran */
  CHECK(ouch.saw_c2 == 0);
  CHECK(obm_weakref_get(ouch.c2wr) == NULL);
  obm_decref(rt, &ouch.c2wr->base);
  if (c0wr != NULL) obm_decref(rt, &c0wr->base);
  ot_rt_done(rt);
}

/* Deallocation by counting: every weak reference is cleared before any callback runs, and
 * callbacks run newest first; a weak reference dropped by an earlier callback still gets
 * its own call (the chain holds it). */
static void drop_data_callback(obm_runtime_t *rt, obm_weakref_t *wr, obm_object_t *data) {
  look_callback(rt, wr, data);
  if (wcb.ncalls == 1) {
    obm_decref(rt, &wcb.wrs[0]->base); /* the oldest, still waiting for its call */
    wcb.wrs[0] = NULL;
    wcb.nwrs = 0;
  }
}

static void test_weakref_dealloc_order(void) {
  obm_runtime_t *rt = rt_new();
  memset(&wcb, 0, sizeof wcb);
  obm_object_t *x = obm_list_new(rt, 0);
  for (int i = 0; i < 3; i++)
    wcb.wrs[wcb.nwrs++] = obm_weakref_new(rt, x, i == 2 ? drop_data_callback : look_callback, NULL);
  obm_weakref_t *plain = obm_weakref_new(rt, x, NULL, NULL);
  CHECK(obm_weakref_count(x) == 4);
  obm_weakref_t *w0 = wcb.wrs[0], *w1 = wcb.wrs[1], *w2 = wcb.wrs[2];
  obm_decref(rt, x);
  CHECK(wcb.ncalls == 3 && wcb.nseen_alive == 0);
  CHECK(wcb.order[0] == w2 && wcb.order[1] == w1 && wcb.order[2] == w0);
  CHECK(obm_weakref_get(plain) == NULL);
  obm_decref(rt, &w1->base);
  obm_decref(rt, &w2->base);
  obm_decref(rt, &plain->base);
  obm_object_t *atom = obm_object_new(rt, &ot_atom);
  errno = 0;
  CHECK(obm_weakref_new(rt, atom, NULL, NULL) == NULL && errno == EINVAL);
  obm_decref(rt, atom);
  ot_rt_done(rt);
}

/* A finalizer that makes a weak reference (with a callback) to another object of its garbage
 * cycle and keeps it: the weak reference is cleared once the cycle is known to be garbage,
 * and its callback never runs (CPython's clear_weakrefs after handle_resurrected_objects). */
static obm_weakref_t *late_wr;
static void late_finalize(obm_runtime_t *rt, obm_object_t *op) {
  ot_record_fin(op);
  late_wr = obm_weakref_new(rt, obm_record_get(op, 0), look_callback, NULL);
  CHECK(late_wr != NULL);
}
static const obm_type_t late_type = {OBM_RECORD_TYPE_FIELDS("late"), .finalize = late_finalize};

static void test_weakref_made_by_finalizer(void) {
  obm_runtime_t *rt = rt_new();
  memset(&wcb, 0, sizeof wcb);
  obm_object_t *a = ot_new(rt, &late_type, 1);
  obm_object_t *b = ot_new(rt, &ot_node, 1);
  obm_record_set(rt, a, 0, b);
  obm_record_set(rt, b, 0, a);
  obm_decref(rt, a);
  obm_decref(rt, b);
  CHECK(obm_gc_collect(rt, 2) == 2);
  CHECK(ot_nfin_calls == 1 && ot_ndealloc == 1);
  CHECK(obm_weakref_get(late_wr) == NULL);
  CHECK(wcb.ncalls == 0);
  obm_decref(rt, &late_wr->base);
  ot_rt_done(rt);
}

/* ---- finalizers and collections ----------------------------------------------------------- */

/* A finalizer that triggers a collection: inside a collection it is refused (returns 0);
 * from a deallocation by counting it runs. */
static ptrdiff_t nested_result = -2;
static void collecting_finalizer(obm_runtime_t *rt, obm_object_t *op) {
  ot_record_fin(op);
  nested_result = obm_gc_collect(rt, 2);
}
static const obm_type_t collecting_type = {OBM_RECORD_TYPE_FIELDS("collector"),
                                           .finalize = collecting_finalizer};

static void test_finalizer_collects(void) {
  obm_runtime_t *rt = rt_new();
  obm_decref(rt, ot_self_cycle(rt, &collecting_type));
  obm_decref(rt, ot_self_cycle(rt, &ot_node));
  CHECK(obm_gc_collect(rt, 2) == 2);
  CHECK(nested_result == 0 && ot_nfin_calls == 1);
  /* by counting: the nested collection finds a waiting cycle */
  obm_decref(rt, ot_self_cycle(rt, &ot_node));
  obm_object_t *c = ot_new(rt, &collecting_type, 0);
  obm_decref(rt, c);
  CHECK(nested_result == 1 && ot_nfin_calls == 2);
  CHECK(obm_runtime_live_objects(rt) == 0);
  ot_rt_done(rt);
}

/* ---- counts ------------------------------------------------------------------------------ */

/* Immortal objects are never freed, even in a garbage cycle, and act as roots. */
static void test_immortal_in_cycle(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *a = ot_new(rt, &ot_node, 1);
  obm_object_t *b = ot_new(rt, &ot_node, 1);
  obm_record_set(rt, a, 0, b);
  obm_record_set(rt, b, 0, a);
  obm_set_immortal(a);
  obm_decref(rt, a);
  obm_decref(rt, b);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(ot_ndealloc == 0 && obm_record_get(a, 0) == b && obm_refcnt(b) == 1);
  CHECK(obm_is_immortal(a) && obm_refcnt(a) == OBM_IMMORTAL_REFCNT);
  obm_record_set(rt, a, 0, NULL); /* b dies; a stays */
  CHECK(ot_ndealloc == 1);
  CHECK(_obm_gc_check(rt) == 0);
  size_t live = obm_runtime_free(rt);
  CHECK(live == 1); /* the immortal one, leaked on purpose */
}

/* A missing incref is found by the collector ("refcount too small") and reported through
 * the error handler; the object is not freed for it. */
static void test_refcount_too_small(void) {
  obm_runtime_t *rt = rt_new();
  obm_object_t *l = obm_list_new(rt, 0);
  obm_object_t *x = ot_new(rt, &ot_node, 0);
  obm_list_append(rt, l, x);
  obm_list_append(rt, l, x);
  obm_decref(rt, x); /* count 2: the list's two references */
  x->refcnt = 1;     /* as if one incref had been forgotten */
  ot_expect_errors(1);
  CHECK(_obm_gc_check(rt) == 1);
  CHECK(ot_err.n == 1 && ot_err.code == OBM_ERR_REFCOUNT && ot_err.address == x);
  CHECKF(strstr(ot_err.message, "refcount too small") != NULL, "%s", ot_err.message);
  ot_expect_errors(1);
  CHECK(obm_gc_collect(rt, 2) == 0); /* reported, and nothing is freed for it */
  CHECK(ot_err.n == 1 && ot_err.address == x);
  CHECK(ot_ndealloc == 0);
  ot_expect_errors(0);
  x->refcnt = 2;
  obm_decref(rt, l);
  CHECK(ot_ndealloc == 1);
  ot_rt_done(rt);
}

int main(int argc, char **argv) {
  check_seed_init("test_gc", argc, argv, 1, 1);
  obm_set_error_handler(ot_on_error, NULL);
  test_list_self();
  test_record_cycles();
  test_list_record_cycle();
  test_reachable_survives();
  test_generations();
  test_thresholds();
  test_long_lived_rule();
  test_stats();
  test_callbacks();
  test_saveall_and_leak();
  test_freeze();
  test_introspection();
  test_simple_finalization();
  test_non_gc_finalization();
  test_self_cycle_finalization();
  test_cycle_chains();
  test_resurrection_does_not_block_cleanup();
  test_resurrection_transitive();
  test_legacy_finalization();
  test_is_finalized();
  test_weakref_callbacks_see_nothing();
  test_weakref_across_generations(0);
  test_weakref_across_generations(1);
  test_weakref_dealloc_order();
  test_weakref_made_by_finalizer();
  test_finalizer_collects();
  test_immortal_in_cycle();
  test_refcount_too_small();
  return check_done();
}
