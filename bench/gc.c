/* gc.c — the cycle collector's benchmark (obmem's side; bench/python/gc_bench.py is CPython's).
 *
 * The heap shape, the same in both programs: N tracked objects in units of three, each unit
 * a small list L = [a, b] and a mutually referencing pair a = (b, L), b = (a, None) (records of
 * two slots; in Python, instances of a class with __slots__), all held by one root list.
 * Every unit is a cycle, so once the root goes all of it is cyclic garbage.
 *
 *   bench_gc shapes N REPS   builds the heap REPS times; each time: one full collection of the
 *                            live heap (ns per tracked object), then 200 allocations past the
 *                            young threshold per young collection: the young pause (µs), then
 *                            the root dropped and a full collection (ns per garbage object).
 *                            Prints "live N ns", "garbage N ns", "young N us_median us_max"
 *                            (medians over REPS; the young pause over every young collection).
 *   bench_gc incremental N BUDGET
 *                            grows a heap of N live objects with automatic collection on
 *                            (units in chunk lists of 1000; every 4th unit replaces a random
 *                            earlier one, which becomes a garbage cycle), with the
 *                            incremental mode's step budget (0: off); prints "incremental N
 *                            BUDGET total_gc_ms max_pause_us peak_rss_mib max_pause_cpu_us".
 * Timing: the collector's own duration_ns from its stop callback, so allocation is not
 * timed; the incremental run's pause is the collector's time within one operation.
 */
#define _GNU_SOURCE
#include "obmem/object.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const obm_type_t pair_type = {OBM_RECORD_TYPE_FIELDS("pair")};

static void die(const char *what) {
  fprintf(stderr, "bench_gc: %s\n", what);
  exit(3);
}

/* One unit: L = [a, b], a = (b, L), b = (a, None); returns L (new reference). */
static obm_object_t *make_unit(obm_runtime_t *rt) {
  obm_object_t *a = obm_record_new(rt, &pair_type, 2);
  obm_object_t *b = obm_record_new(rt, &pair_type, 2);
  obm_object_t *l = obm_list_new(rt, 2);
  if (a == NULL || b == NULL || l == NULL) die("out of memory");
  if (obm_record_set(rt, a, 0, b) || obm_record_set(rt, a, 1, l) || obm_record_set(rt, b, 0, a) ||
      obm_list_append(rt, l, a) || obm_list_append(rt, l, b))
    die("building a unit failed");
  obm_decref(rt, a);
  obm_decref(rt, b);
  return l;
}

static obm_object_t *make_heap(obm_runtime_t *rt, size_t nunits) {
  obm_object_t *root = obm_list_new(rt, nunits);
  if (root == NULL) die("out of memory");
  for (size_t i = 0; i < nunits; i++) {
    obm_object_t *l = make_unit(rt);
    if (obm_list_append(rt, root, l)) die("append failed");
    obm_decref(rt, l);
  }
  return root;
}

/* ---- pauses, from the stop callback -------------------------------------------------------- */

static struct {
  uint64_t last_ns;     /* the last collection's duration */
  uint64_t total_ns;    /* all collections */
  uint64_t max_ns;      /* the largest pause */
  uint64_t young[4096]; /* generation 0 pauses while recording */
  size_t nyoung;
  int record_young;
} pauses;

static int verbose; /* BENCH_GC_VERBOSE: every collection over 1 ms on stderr */
static void on_gc(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info, void *arg) {
  (void)rt, (void)arg;
  if (phase != OBM_GC_STOP) return;
  if (verbose && info->duration_ns > 1000000)
    fprintf(stderr, "generation %d: %zu candidates, %zu found, %.2f ms\n", info->generation,
            info->candidates, info->collected + info->uncollectable,
            (double)info->duration_ns / 1e6);
  pauses.last_ns = info->duration_ns;
  pauses.total_ns += info->duration_ns;
  if (info->duration_ns > pauses.max_ns) pauses.max_ns = info->duration_ns;
  if (pauses.record_young && info->generation == 0 && pauses.nyoung < 4096)
    pauses.young[pauses.nyoung++] = info->duration_ns;
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return (a > b) - (a < b);
}
static double median(uint64_t *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_u64);
  return n == 0 ? 0 : (n % 2 ? (double)v[n / 2] : ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2);
}

static void shapes(size_t n, int reps) {
  size_t nunits = n / 3;
  uint64_t live[64], garbage[64];
  uint64_t young_all[4096 * 4];
  size_t nyoung_all = 0;
  if (reps > 64) reps = 64;
  for (int r = 0; r < reps; r++) {
    obm_runtime_t *rt = obm_runtime_new();
    if (rt == NULL) die("no runtime");
    obm_gc_callback_add(rt, on_gc, NULL);
    obm_gc_disable(rt);
    obm_object_t *root = make_heap(rt, nunits);
    obm_gc_collect(rt, 2); /* everything to the oldest generation */
    obm_gc_collect(rt, 2);
    live[r] = pauses.last_ns;
    /* young pauses: automatic collections while more units come and go */
    obm_gc_enable(rt);
    pauses.record_young = 1;
    pauses.nyoung = 0;
    for (size_t i = 0; i < 200 * 700 / 3; i++) {
      obm_object_t *l = make_unit(rt);
      obm_decref(rt, l);
    }
    pauses.record_young = 0;
    for (size_t i = 0; i < pauses.nyoung && nyoung_all < 4096 * 4; i++)
      young_all[nyoung_all++] = pauses.young[i];
    obm_gc_disable(rt);
    obm_gc_collect(rt, 2);
    obm_decref(rt, root);
    ptrdiff_t found = obm_gc_collect(rt, 2);
    if (found < (ptrdiff_t)(3 * nunits)) die("the garbage was not all found");
    garbage[r] = pauses.last_ns;
    obm_runtime_free(rt);
  }
  double tracked = (double)(3 * nunits + 1);
  printf("live %zu %.2f\n", n, median(live, (size_t)reps) / tracked);
  printf("garbage %zu %.2f\n", n, median(garbage, (size_t)reps) / (double)(3 * nunits));
  double ymed = median(young_all, nyoung_all);
  printf("young %zu %.2f %.2f\n", n, ymed / 1e3,
         nyoung_all ? (double)young_all[nyoung_all - 1] / 1e3 : 0.0);
}

static uint64_t thread_cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Collector time within the current operation: wall (the collector's duration_ns) and this
 * thread's CPU time (which a preemption or a stall of the virtual machine does not count). */
static uint64_t op_gc_ns, op_gc_cpu_ns, cpu_start;
static void sum_gc(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info, void *arg) {
  (void)rt, (void)arg;
  if (phase == OBM_GC_START) {
    cpu_start = thread_cpu_ns();
  } else {
    op_gc_ns += info->duration_ns;
    op_gc_cpu_ns += thread_cpu_ns() - cpu_start;
  }
}

/* Grows a heap of n live objects: units in chunk lists of 1000 (a root list holds the
 * chunks), and after every 4th unit a random earlier unit is replaced, so that a quarter of
 * the units made become garbage cycles, many of them old.  Automatic collection runs; with
 * budget > 0 in incremental mode.  A pause is the collector's time within one operation
 * (a young collection and a step together count as one pause), wall and CPU: on a shared
 * 2-core virtual machine wall time has stalls of milliseconds (a 1 500-object young
 * collection measured 5.7 ms once) that are no work of the collector. */
static void incremental(size_t n, size_t budget) {
  obm_runtime_t *rt = obm_runtime_new();
  if (rt == NULL) die("no runtime");
  obm_gc_callback_add(rt, on_gc, NULL);
  obm_gc_callback_add(rt, sum_gc, NULL);
  if (budget > 0 && obm_gc_set_incremental(rt, budget) != 0) die("incremental mode refused");
  enum { CHUNK = 1000 };
  size_t nunits = n / 3, nchunks = (nunits + CHUNK - 1) / CHUNK;
  obm_object_t *root = obm_list_new(rt, nchunks);
  obm_object_t **chunks = calloc(nchunks, sizeof *chunks);
  if (root == NULL || chunks == NULL) die("out of memory");
  double max_pause = 0, max_pause_cpu = 0;
  uint64_t x = 88172645463325252ull; /* xorshift */
  for (size_t made = 0, placed = 0; placed < nunits; made++) {
    op_gc_ns = op_gc_cpu_ns = 0;
    obm_object_t *l = make_unit(rt);
    if (made % 4 == 3 && placed > 0) { /* replace a random earlier unit */
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      size_t i = (size_t)(x % placed);
      obm_list_set(rt, chunks[i / CHUNK], i % CHUNK, l);
    } else {
      if (placed % CHUNK == 0) {
        chunks[placed / CHUNK] = obm_list_new(rt, CHUNK);
        if (chunks[placed / CHUNK] == NULL || obm_list_append(rt, root, chunks[placed / CHUNK]))
          die("out of memory");
        obm_decref(rt, chunks[placed / CHUNK]); /* the root holds it */
      }
      if (obm_list_append(rt, chunks[placed / CHUNK], l)) die("append failed");
      placed++;
    }
    obm_decref(rt, l);
    if ((double)op_gc_ns > max_pause) max_pause = (double)op_gc_ns;
    if ((double)op_gc_cpu_ns > max_pause_cpu) max_pause_cpu = (double)op_gc_cpu_ns;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("incremental %zu %zu %.1f %.1f %.1f %.1f\n", n, budget, (double)pauses.total_ns / 1e6,
         max_pause / 1e3, (double)ru.ru_maxrss / 1024.0, max_pause_cpu / 1e3);
  obm_decref(rt, root);
  free(chunks);
  obm_runtime_free(rt);
}

int main(int argc, char **argv) {
  verbose = getenv("BENCH_GC_VERBOSE") != NULL;
  if (argc >= 3 && strcmp(argv[1], "shapes") == 0) {
    shapes((size_t)strtod(argv[2], NULL), argc > 3 ? atoi(argv[3]) : 5);
  } else if (argc >= 3 && strcmp(argv[1], "incremental") == 0) {
    incremental((size_t)strtod(argv[2], NULL), argc > 3 ? (size_t)atol(argv[3]) : 0);
  } else {
    fprintf(stderr, "usage: bench_gc shapes N [REPS] | bench_gc incremental N [BUDGET]\n");
    return 2;
  }
  return 0;
}
