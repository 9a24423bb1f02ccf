/* test_object.c — reference counting, immortal objects, error reports, the list and record
 * API, deep deallocation chains and runtimes side by side.
 *
 * An integration test: only include/obmem/object.h.  Deep chains (a million nested lists,
 * records, a chain hanging from a garbage cycle, finalizers along a chain) are released on a
 * thread whose stack is 512 KiB: recursion of even 10^4 levels would overflow it.  Two
 * runtimes run on two threads at once, both referring to one static immortal object (under
 * TSan: nothing writes it).  Usage: test_object [SEED] [DEPTH]
 */
#include "obmem/object.h"

#include "object_test.h"

#include <errno.h>
#include <pthread.h>

static long depth = 1000000;

/* ---- counts ------------------------------------------------------------------------------- */

static void test_counts(void) {
  obm_runtime_t *rt = obm_runtime_new();
  CHECK(rt != NULL);
  obm_object_t *a = obm_object_new(rt, &ot_atom);
  CHECK(a != NULL && obm_refcnt(a) == 1 && a->type == &ot_atom && a->flags == 0);
  CHECK(!obm_is_immortal(a) && !obm_gc_is_tracked(a));
  for (int i = 0; i < 1000; i++)
    obm_incref(a);
  CHECK(obm_refcnt(a) == 1001);
  for (int i = 0; i < 1000; i++)
    obm_decref(rt, a);
  CHECK(obm_refcnt(a) == 1);
  obm_xincref(NULL);
  obm_xdecref(rt, NULL);
  CHECK(obm_runtime_live_objects(rt) == 1);
  obm_decref(rt, a);
  CHECK(obm_runtime_live_objects(rt) == 0);
  CHECK(obm_runtime_free(rt) == 0);
}

/* Immortal objects: incref saturates into the immortal range and stops writing; decref
 * ignores them; they are never freed. */
static obm_object_t static_atom = OBM_OBJECT_STATIC_INIT(&ot_atom);

static void test_immortal(void) {
  obm_runtime_t *rt = obm_runtime_new();
  obm_object_t *a = obm_object_new(rt, &ot_atom);
  a->refcnt = OBM_IMMORTAL_MIN - 16;
  for (int i = 0; i < 64; i++)
    obm_incref(a);
  CHECK(obm_refcnt(a) == OBM_IMMORTAL_MIN && obm_is_immortal(a));
  for (int i = 0; i < 1000; i++)
    obm_decref(rt, a);
  CHECK(obm_refcnt(a) == OBM_IMMORTAL_MIN);
  CHECK(obm_runtime_live_objects(rt) == 1);

  obm_object_t *l = obm_list_new(rt, 0);
  obm_set_immortal(l);
  CHECK(obm_refcnt(l) == OBM_IMMORTAL_REFCNT);
  obm_decref(rt, l);
  obm_decref(rt, l);
  CHECK(obm_list_append(rt, l, &static_atom) == 0);
  CHECK(obm_refcnt(&static_atom) == OBM_IMMORTAL_REFCNT); /* never written */
  obm_decref(rt, &static_atom);
  CHECK(obm_refcnt(&static_atom) == OBM_IMMORTAL_REFCNT);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(obm_runtime_live_objects(rt) == 2);
  CHECK(obm_runtime_free(rt) == 2); /* both immortal: leaked on purpose */
  /* the test gives their memory back itself */
  obm_free(a);
  CHECK(obm_object_size(l) == 16 + sizeof(obm_list_t));
  obm_free(((obm_list_t *)l)->items);
  obm_free((char *)l - 16);
}

/* Underflow is reported in every build, and the object is left alone. */
static void self_decref_dealloc(obm_runtime_t *rt, obm_object_t *op) {
  obm_decref(rt, op); /* a bug: drops a reference the dying object does not have */
}
static const obm_type_t buggy_type = {
    .name = "buggy", .basic_size = sizeof(obm_object_t), .dealloc = self_decref_dealloc};

static void test_underflow(void) {
  obm_runtime_t *rt = obm_runtime_new();
  obm_object_t zero = {0, 0, &ot_atom};
  ot_expect_errors(1);
  obm_decref(rt, &zero);
  CHECK(ot_err.n == 1 && ot_err.code == OBM_ERR_REFCOUNT && ot_err.address == &zero);
  CHECKF(strstr(ot_err.message, "'atom'") != NULL && strstr(ot_err.message, "already 0"), "%s",
         ot_err.message);
  CHECK(zero.refcnt == 0 && zero.type == &ot_atom);

  ot_expect_errors(1);
  obm_object_t *b = obm_object_new(rt, &buggy_type);
  obm_decref(rt, b);
  CHECK(ot_err.n == 1 && ot_err.code == OBM_ERR_REFCOUNT);
  CHECK(obm_runtime_live_objects(rt) == 0); /* the deallocation itself went on */
  ot_expect_errors(0);
  CHECK(obm_runtime_free(rt) == 0);
}

/* ---- the list and record API ------------------------------------------------------------- */

static void test_list_record_api(void) {
  obm_runtime_t *rt = obm_runtime_new();
  obm_object_t *l = obm_list_new(rt, 3);
  CHECK(obm_list_check(l) && !obm_record_check(l));
  CHECK(obm_list_size(l) == 0 && obm_list_get(l, 0) == NULL && obm_list_pop(rt, l) == NULL);
  obm_object_t *atoms[10];
  for (int i = 0; i < 10; i++) {
    atoms[i] = obm_object_new(rt, &ot_atom);
    CHECK(obm_list_append(rt, l, atoms[i]) == 0);
    CHECK(obm_refcnt(atoms[i]) == 2);
  }
  CHECK(obm_list_size(l) == 10 && obm_list_get(l, 9) == atoms[9]);
  CHECK(obm_list_append(rt, l, NULL) == EINVAL);
  CHECK(obm_list_append(rt, atoms[0], atoms[1]) == EINVAL);
  CHECK(obm_list_set(rt, l, 10, atoms[0]) == EINVAL);
  CHECK(obm_list_set(rt, l, 0, atoms[5]) == 0);
  CHECK(obm_refcnt(atoms[0]) == 1 && obm_refcnt(atoms[5]) == 3);
  CHECK(obm_list_delete(rt, l, 0) == 0);
  CHECK(obm_list_get(l, 0) == atoms[1] && obm_list_size(l) == 9);
  CHECK(obm_list_delete(rt, l, 9) == EINVAL);
  obm_object_t *last = obm_list_pop(rt, l);
  CHECK(last == atoms[9] && obm_refcnt(last) == 2);
  obm_decref(rt, last);
  obm_list_clear(rt, l);
  CHECK(obm_list_size(l) == 0);
  for (int i = 0; i < 10; i++)
    CHECK(obm_refcnt(atoms[i]) == 1);

  obm_object_t *r = obm_record_new(rt, &obm_record_type, 4);
  CHECK(r != NULL && obm_record_check(r) && obm_record_size(r) == 4);
  CHECK(obm_object_size(r) == 16 + sizeof(obm_record_t) + 4 * sizeof(obm_object_t *));
  for (size_t i = 0; i < 4; i++)
    CHECK(obm_record_get(r, i) == NULL);
  CHECK(obm_record_set(rt, r, 4, atoms[0]) == EINVAL);
  CHECK(obm_record_set(rt, r, 3, atoms[0]) == 0 && obm_refcnt(atoms[0]) == 2);
  CHECK(obm_record_set(rt, r, 3, NULL) == 0 && obm_refcnt(atoms[0]) == 1);
  CHECK(obm_record_get(r, 99) == NULL);
  errno = 0;
  CHECK(obm_record_new(rt, &obm_list_type, 2) == NULL && errno == EINVAL);
  obm_object_t *r0 = obm_record_new(rt, &obm_record_type, 0);
  CHECK(r0 != NULL && obm_record_size(r0) == 0);

  /* inconsistent types are refused */
  static const obm_type_t gc_without_traverse = {
      .name = "bad", .basic_size = sizeof(obm_object_t), .flags = OBM_TYPE_GC};
  static const obm_type_t weaklist_outside = {
      .name = "bad2", .basic_size = sizeof(obm_object_t), .weaklist_offset = 64};
  errno = 0;
  CHECK(obm_object_new(rt, &gc_without_traverse) == NULL && errno == EINVAL);
  CHECK(obm_object_new(rt, &weaklist_outside) == NULL);
  CHECK(obm_object_new_var(rt, &ot_atom, 3) == NULL); /* too small for a size field */
  errno = 0;
  CHECK(obm_object_new_var(rt, &obm_record_type, SIZE_MAX / 4) == NULL && errno == ENOMEM);

  for (int i = 0; i < 10; i++)
    obm_decref(rt, atoms[i]);
  obm_decref(rt, l);
  obm_decref(rt, r);
  obm_decref(rt, r0);
  CHECK(obm_runtime_free(rt) == 0);
}

/* ---- deep chains ------------------------------------------------------------------------- */

typedef struct deep_arg_s {
  int kind;
  long n;
} deep_arg_t;

enum { DEEP_LISTS, DEEP_RECORDS, DEEP_CYCLE, DEEP_FINALIZERS, DEEP_WEAKREFS };
static const char *const deep_names[] = {"lists", "records", "cycle", "finalizers", "weakrefs"};

static size_t deep_callbacks;
static void count_callback(obm_runtime_t *rt, obm_weakref_t *wr, obm_object_t *data) {
  (void)rt;
  (void)data;
  CHECK(obm_weakref_get(wr) == NULL);
  deep_callbacks++;
}

/* Builds a chain of n containers, each holding the next, and drops it; all must be freed. */
static void *deep_chain(void *p) {
  const deep_arg_t *arg = p;
  obm_runtime_t *rt = obm_runtime_new();
  CHECK(rt != NULL);
  ot_reset_calls();
  deep_callbacks = 0;
  const obm_type_t *type = arg->kind == DEEP_FINALIZERS ? &ot_fin_type : &ot_node;
  obm_object_t *head = NULL;
  obm_object_t *keep_wrs = obm_list_new(rt, 0);
  for (long i = 0; i < arg->n; i++) {
    obm_object_t *op;
    if (arg->kind == DEEP_LISTS) {
      op = obm_list_new(rt, 1);
      if (head != NULL) CHECK(obm_list_append(rt, op, head) == 0);
    } else {
      op = ot_new(rt, type, 1);
      obm_record_set(rt, op, 0, head);
    }
    if (arg->kind == DEEP_WEAKREFS && i % 1000 == 0) {
      obm_weakref_t *wr = obm_weakref_new(rt, op, count_callback, NULL);
      obm_list_append(rt, keep_wrs, &wr->base);
      obm_decref(rt, &wr->base);
    }
    obm_xdecref(rt, head);
    head = op;
  }
  size_t live = obm_runtime_live_objects(rt);
  CHECK(live >= (size_t)arg->n);
  if (arg->kind == DEEP_CYCLE) {
    /* the chain's first element refers back to the head: all of it is one garbage cycle,
     * freed by the collector's clear of one object and then by counting */
    obm_object_t *tail = head;
    while (obm_record_get(tail, 0) != NULL)
      tail = obm_record_get(tail, 0);
    obm_record_set(rt, tail, 0, head);
    obm_decref(rt, head);
    CHECK(obm_gc_collect(rt, 2) == arg->n);
  } else {
    obm_decref(rt, head);
  }
  CHECK(obm_runtime_live_objects(rt) == live - (size_t)arg->n);
  if (arg->kind == DEEP_FINALIZERS) CHECK(ot_nfin_calls == (size_t)arg->n);
  if (arg->kind == DEEP_WEAKREFS) CHECK(deep_callbacks == (size_t)(arg->n + 999) / 1000);
  if (arg->kind != DEEP_LISTS) CHECK(ot_ndealloc == (size_t)arg->n);
  obm_decref(rt, keep_wrs);
  CHECK(obm_runtime_free(rt) == 0);
  return NULL;
}

static void test_deep_chains(void) {
  for (int kind = DEEP_LISTS; kind <= DEEP_WEAKREFS; kind++) {
    deep_arg_t arg = {kind, kind == DEEP_FINALIZERS || kind == DEEP_WEAKREFS ? depth / 10 : depth};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    CHECK(pthread_attr_setstacksize(&attr, 512 * 1024) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, &attr, deep_chain, &arg) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    pthread_attr_destroy(&attr);
    printf("deep chain of %ld %s released on a 512 KiB stack\n", arg.n, deep_names[kind]);
  }
}

/* ---- runtimes side by side --------------------------------------------------------------- */

typedef struct side_arg_s {
  uint64_t seed;
  size_t freed;    /* objects freed by this runtime's collections */
  size_t leftover; /* live objects at runtime_free */
} side_arg_t;

/* Random self-cycles, pairs and lists sharing the static immortal atom, collected as they go;
 * counts are checked against what the runtime must have freed. */
static void *side_by_side(void *p) {
  side_arg_t *arg = p;
  uint64_t rng = arg->seed;
  obm_runtime_t *rt = obm_runtime_new();
  CHECK(rt != NULL);
  obm_gc_set_threshold(rt, 100, 5, 5);
  obm_object_t *roots = obm_list_new(rt, 0);
  for (int round = 0; round < 200; round++) {
    for (int i = 0; i < 50; i++) {
      obm_object_t *l = obm_list_new(rt, 2);
      obm_list_append(rt, l, &static_atom);
      switch (check_rand_below(&rng, 3)) {
      case 0:
        obm_list_append(rt, l, l);
        break; /* garbage cycle */
      case 1:
        obm_list_append(rt, roots, l);
        break;
      default:
        break; /* freed by counting */
      }
      obm_decref(rt, l);
    }
    if (check_rand_below(&rng, 4) == 0) obm_gc_collect(rt, (int)check_rand_below(&rng, 3));
    if (obm_list_size(roots) > 500) obm_list_clear(rt, roots);
  }
  obm_decref(rt, roots);
  obm_gc_collect(rt, 2);
  arg->leftover = obm_runtime_live_objects(rt);
  obm_gc_stats_t st[3];
  obm_gc_get_stats(rt, st);
  arg->freed = (size_t)(st[0].collected + st[1].collected + st[2].collected);
  CHECK(obm_runtime_free(rt) == 0);
  return NULL;
}

static void test_runtimes_side_by_side(void) {
  side_arg_t args[2] = {{check_seed ^ 1, 0, 0}, {check_seed ^ 2, 0, 0}};
  pthread_t t[2];
  for (int i = 0; i < 2; i++)
    CHECK(pthread_create(&t[i], NULL, side_by_side, &args[i]) == 0);
  for (int i = 0; i < 2; i++)
    CHECK(pthread_join(t[i], NULL) == 0);
  for (int i = 0; i < 2; i++)
    CHECK(args[i].leftover == 0 && args[i].freed > 1000);
  CHECK(obm_refcnt(&static_atom) == OBM_IMMORTAL_REFCNT);

  /* one thread, two runtimes in turn: each collects only its own objects */
  obm_runtime_t *a = obm_runtime_new(), *b = obm_runtime_new();
  for (int i = 0; i < 10; i++) {
    obm_decref(a, ot_self_cycle(a, &obm_record_type));
    if (i % 2 == 0) obm_decref(b, ot_self_cycle(b, &obm_record_type));
  }
  obm_object_t *keep = obm_list_new(b, 0);
  CHECK(obm_runtime_live_objects(a) == 10 && obm_runtime_live_objects(b) == 6);
  CHECK(obm_gc_collect(b, 2) == 5);
  CHECK(obm_runtime_live_objects(a) == 10 && obm_runtime_live_objects(b) == 1);
  CHECK(obm_gc_collect(a, 2) == 10);
  CHECK(obm_runtime_free(a) == 0);
  obm_decref(b, keep);
  CHECK(obm_runtime_free(b) == 0);
}

int main(int argc, char **argv) {
  check_seed_init("test_object", argc, argv, 1, 42);
  depth = check_arg_long(argc, argv, 2, "OBMEM_TEST_DEPTH", depth);
  obm_set_error_handler(ot_on_error, NULL);
  test_counts();
  test_immortal();
  test_underflow();
  test_list_record_api();
  test_deep_chains();
  test_runtimes_side_by_side();
  return check_done();
}
