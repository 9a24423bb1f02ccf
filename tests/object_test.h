/* object_test.h — helpers shared by the object-layer tests (test_object, test_gc,
 * test_gc_stress): an error handler that records reports, and record types whose hooks count
 * and remember their calls, in the roles CPython's test_finalization.py gives its classes:
 *   ot_node        plain record, counts deallocations
 *   ot_fin         finalizer that only records the call
 *   ot_resurrect   finalizer that stores the object in ot_survivors (resurrects it)
 *   ot_suicide     finalizer that clears its own slots (breaks its cycle)
 *   ot_legacy      legacy finalizer (uncollectable in a cycle) that records the call
 *   ot_legacy_res  legacy finalizer that resurrects into ot_survivors
 * Each test is one translation unit, so everything here is static.
 */
#ifndef OBMEM_TESTS_OBJECT_TEST_H
#define OBMEM_TESTS_OBJECT_TEST_H

#include "obmem/object.h"

#include "check.h"

/* ---- error reports --------------------------------------------------------------------- */

static struct {
  int expecting;    /* reports allowed */
  int n;            /* reports since ot_expect_errors */
  obm_error_t code; /* of the last one */
  void *address;
  char message[1024];
} ot_err;

static void ot_on_error(obm_error_t code, void *address, const char *message, void *arg) {
  (void)arg;
  CHECKF(ot_err.expecting, "unexpected error report: %s", message);
  ot_err.n++;
  ot_err.code = code;
  ot_err.address = address;
  snprintf(ot_err.message, sizeof ot_err.message, "%s", message);
}

static __attribute__((unused)) void ot_expect_errors(int on) {
  ot_err.expecting = on;
  ot_err.n = 0;
  ot_err.code = OBM_OK;
  ot_err.address = NULL;
  ot_err.message[0] = '\0';
}

/* ---- hook calls -------------------------------------------------------------------------- */

#define OT_MAX_CALLS 4096
static obm_object_t *ot_fin_calls[OT_MAX_CALLS]; /* objects finalize ran on, in order */
static size_t ot_nfin_calls;
static obm_object_t *ot_legacy_calls[OT_MAX_CALLS]; /* objects legacy_finalize ran on */
static size_t ot_nlegacy_calls;
static size_t ot_ndealloc;         /* deallocations of ot_* records */
static obm_object_t *ot_survivors; /* list: where resurrectors go */

/* Counts every call; remembers the first OT_MAX_CALLS. */
static void ot_record_fin(obm_object_t *op) {
  if (ot_nfin_calls < OT_MAX_CALLS) ot_fin_calls[ot_nfin_calls] = op;
  ot_nfin_calls++;
}

static void ot_dealloc(obm_runtime_t *rt, obm_object_t *op) {
  ot_ndealloc++;
  obm_record_clear(rt, op);
}

static void ot_fin(obm_runtime_t *rt, obm_object_t *op) {
  (void)rt;
  ot_record_fin(op);
}

static void ot_resurrect(obm_runtime_t *rt, obm_object_t *op) {
  ot_record_fin(op);
  CHECK(ot_survivors != NULL);
  CHECK(obm_list_append(rt, ot_survivors, op) == 0);
}

static void ot_suicide(obm_runtime_t *rt, obm_object_t *op) {
  ot_record_fin(op);
  obm_record_clear(rt, op);
}

static void ot_legacy(obm_runtime_t *rt, obm_object_t *op) {
  (void)rt;
  if (ot_nlegacy_calls < OT_MAX_CALLS) ot_legacy_calls[ot_nlegacy_calls] = op;
  ot_nlegacy_calls++;
}

static void ot_legacy_resurrect(obm_runtime_t *rt, obm_object_t *op) {
  ot_legacy(rt, op);
  CHECK(obm_list_append(rt, ot_survivors, op) == 0);
}

static const obm_type_t ot_node = {OBM_RECORD_TYPE_FIELDS("node"), .dealloc = ot_dealloc};
static const obm_type_t ot_fin_type = {OBM_RECORD_TYPE_FIELDS("fin"), .dealloc = ot_dealloc,
                                       .finalize = ot_fin};
static const obm_type_t ot_resurrect_type = {OBM_RECORD_TYPE_FIELDS("resurrector"),
                                             .dealloc = ot_dealloc, .finalize = ot_resurrect};
static const obm_type_t ot_suicide_type = {OBM_RECORD_TYPE_FIELDS("suicider"),
                                           .dealloc = ot_dealloc, .finalize = ot_suicide};
static const obm_type_t ot_legacy_type = {OBM_RECORD_TYPE_FIELDS("legacy"), .dealloc = ot_dealloc,
                                          .legacy_finalize = ot_legacy};
static const obm_type_t ot_legacy_res_type = {OBM_RECORD_TYPE_FIELDS("legacy_resurrector"),
                                              .dealloc = ot_dealloc,
                                              .legacy_finalize = ot_legacy_resurrect};

/* A leaf: not a GC type, holds nothing (an "int"). */
static const obm_type_t ot_atom = {.name = "atom", .basic_size = sizeof(obm_object_t)};

static void ot_reset_calls(void) {
  ot_nfin_calls = ot_nlegacy_calls = 0;
  ot_ndealloc = 0;
}

/* 1 when calls[0..n) holds exactly the objects of want[0..nwant) (in any order). */
static __attribute__((unused)) int ot_same_set(obm_object_t *const *calls, size_t n,
                                               obm_object_t *const *want, size_t nwant) {
  if (n != nwant || n > OT_MAX_CALLS) return 0;
  for (size_t i = 0; i < nwant; i++) {
    size_t hits = 0;
    for (size_t j = 0; j < n; j++)
      hits += calls[j] == want[i];
    if (hits != 1) return 0;
  }
  return 1;
}

/* A record of `type` with nslots slots; fails the test on NULL. */
static obm_object_t *ot_new(obm_runtime_t *rt, const obm_type_t *type, size_t nslots) {
  obm_object_t *op = obm_record_new(rt, type, nslots);
  CHECK(op != NULL);
  return op;
}

/* A record whose slot 0 refers to itself. */
static __attribute__((unused)) obm_object_t *ot_self_cycle(obm_runtime_t *rt,
                                                           const obm_type_t *type) {
  obm_object_t *op = ot_new(rt, type, 1);
  CHECK(obm_record_set(rt, op, 0, op) == 0);
  return op;
}

#ifdef OBM_OBJECT_INTERNAL_H
/* Unit tests: checks the runtime's structures, then frees it; nothing may be left alive. */
static __attribute__((unused)) void ot_rt_done(obm_runtime_t *rt) {
  CHECK(_obm_gc_check(rt) == 0);
  size_t live = obm_runtime_free(rt);
  CHECKF(live == 0, "%zu objects left alive", live);
}
#endif

#endif /* OBMEM_TESTS_OBJECT_TEST_H */
