/* test_threads.c — multi-thread stress in the manner of mimalloc's test-stress.
 *
 * An integration test (only obmem.h).  THREADS workers run at once (more than the machine's
 * cores, so the scheduler interleaves them); when one finishes, main joins it and starts a
 * new one, ITER * THREADS workers in all, so new threads start after others exited and must
 * adopt abandoned heaps.  Each worker allocates, frees, reallocs and trades blocks with the
 * others through TRANSFERS shared slots (atomic exchange), so blocks are freed and realloc'ed
 * by threads that did not allocate them.  A worker exits still holding blocks: it parks some
 * in ORPHANS slots, which later workers and main free.  Every block carries its size and id
 * in its first 16 bytes and a pattern derived from the id after that; the pattern is checked
 * before every free and realloc.  At the end main frees everything left, calls obm_trim(),
 * and the statistics must show no live block in any class, no large block, no pending
 * remote free, and no more heaps than threads that were ever alive at once.
 *
 * Usage: test_threads [THREADS] [SCALE] [ITER] [SEED]   (env: OBMEM_TEST_SEED)
 */
#include "obmem.h"

#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>

#define KiB ((size_t)1024)
#define TRANSFERS 1024
#define ORPHANS 4096

static _Atomic(uintptr_t) transfer[TRANSFERS];
static _Atomic(uintptr_t) orphans[ORPHANS];
static long nthreads, scale, iterations;

static void on_error(obm_error_t code, void *address, const char *message, void *arg) {
  (void)arg;
  CHECKF(0, "error report code %d at %p: %s", (int)code, address, message);
}

/* ---- blocks: [size][id][pattern...] ------------------------------------------------------- */

typedef struct block_hdr_s {
  uint64_t size;
  uint64_t id;
} block_hdr_t;

static inline bool tracked(size_t i) {
  return i < 1024 || (i & 4095) < 32;
}

static void block_fill(unsigned char *p, size_t size, uint64_t id, size_t from) {
  block_hdr_t *h = (block_hdr_t *)p;
  h->size = size;
  h->id = id;
  for (size_t i = from > 16 ? from : 16; i < size; i++) {
    if (!tracked(i)) {
      i = (i | 4095); /* skip to the end of this page's untracked part */
      continue;
    }
    p[i] = check_pattern_byte(id, i);
  }
  if (size > 16)
    p[size - 1] = check_pattern_byte(id, size - 1);
}

/* Checks the block and returns its size; `upto` limits the checked prefix (0: all). */
static size_t block_check(const unsigned char *p, size_t upto, const char *when) {
  const block_hdr_t *h = (const block_hdr_t *)p;
  size_t size = (size_t)h->size;
  CHECKF(size >= 16 && size <= 4 * 1024 * KiB, "%s: block %p has a bad header size %zu", when,
         (const void *)p, size);
  size_t end = upto != 0 && upto < size ? upto : size;
  for (size_t i = 16; i < end; i++) {
    if (!tracked(i)) {
      i = (i | 4095);
      continue;
    }
    if (p[i] != check_pattern_byte(h->id, i))
      CHECKF(0, "%s: block %p (size %zu id %" PRIu64 ") byte %zu is 0x%02x", when,
             (const void *)p, size, h->id, i, p[i]);
  }
  if (upto == 0 && size > 16)
    CHECKF(p[size - 1] == check_pattern_byte(h->id, size - 1), "%s: block %p last byte", when,
           (const void *)p);
  atomic_fetch_add_explicit(&check_npassed, 1, memory_order_relaxed);
  return size;
}

static size_t random_size(uint64_t *rng) {
  uint64_t r = check_rand_below(rng, 1000);
  if (r < 850)
    return 16 + (size_t)check_rand_below(rng, check_rand_below(rng, 4) == 0 ? 497 : 113);
  if (r < 995)
    return 513 + (size_t)check_rand_below(rng, (size_t)1 << (10 + check_rand_below(rng, 7)));
  return 65537 + (size_t)check_rand_below(rng, 1024 * KiB);
}

static unsigned char *block_new(uint64_t *rng) {
  size_t size = random_size(rng);
  unsigned char *p;
  errno = 0;
  switch (check_rand_below(rng, 8)) {
  case 0:
    p = obm_calloc(1, size);
    CHECK(p != NULL);
    CHECK(p[0] == 0 && p[size - 1] == 0 && p[size / 2] == 0);
    break;
  case 1:
    p = obm_aligned_alloc((size_t)64 << check_rand_below(rng, 7), size);
    break;
  default:
    p = obm_malloc(size);
    break;
  }
  CHECKF(p != NULL, "allocation of %zu bytes failed, errno %d", size, errno);
  CHECK(((uintptr_t)p & (OBM_ALIGNMENT - 1)) == 0);
  block_fill(p, size, check_rand(rng) | 1, 0);
  return p;
}

static void block_free(unsigned char *p, const char *when) {
  if (p == NULL)
    return;
  block_check(p, 0, when);
  obm_free(p);
}

static unsigned char *block_realloc(unsigned char *p, uint64_t *rng) {
  size_t old_size = block_check(p, 0, "before realloc");
  uint64_t id = ((block_hdr_t *)p)->id;
  size_t size = random_size(rng);
  unsigned char *q = obm_realloc(p, size);
  CHECKF(q != NULL, "realloc %zu -> %zu failed, errno %d", old_size, size, errno);
  size_t keep = old_size < size ? old_size : size;
  CHECK(((block_hdr_t *)q)->id == id);
  ((block_hdr_t *)q)->size = size; /* the prefix check reads the header size */
  block_check(q, keep, "after realloc");
  block_fill(q, size, id, keep);
  return q;
}

/* ---- workers ------------------------------------------------------------------------------ */

typedef struct worker_s {
  pthread_t thread;
  long number; /* 0 .. ITER * THREADS - 1 */
  bool running;
} worker_t;

static void *worker_main(void *arg) {
  worker_t *w = arg;
  uint64_t rng = check_seed ^ ((uint64_t)(w->number + 1) * 0xD1B54A32D192ED03ull);
  long nlocal = scale * 4 + 16;
  long nsteps = scale * 100;
  unsigned char **local = calloc((size_t)nlocal, sizeof *local);
  CHECK(local != NULL);

  for (long step = 0; step < nsteps; step++) {
    long k = (long)check_rand_below(&rng, (uint64_t)nlocal);
    uint64_t r = check_rand_below(&rng, 100);
    if (r < 40) {
      block_free(local[k], "replaced");
      local[k] = block_new(&rng);
    } else if (r < 55) {
      block_free(local[k], "free");
      local[k] = NULL;
    } else if (r < 85) {
      /* Trade with whoever left a block in a transfer slot (maybe a dead thread). */
      long j = (long)check_rand_below(&rng, TRANSFERS);
      uintptr_t got = atomic_exchange_explicit(&transfer[j], (uintptr_t)local[k],
                                               memory_order_acq_rel);
      local[k] = (unsigned char *)got;
      if (got != 0 && check_rand_below(&rng, 2) == 0) {
        block_free(local[k], "taken and freed");
        local[k] = NULL;
      } else if (local[k] != NULL) {
        block_check(local[k], 0, "taken");
      }
    } else if (r < 95) {
      if (local[k] != NULL)
        local[k] = block_realloc(local[k], &rng);
    } else {
      /* Free a block some exited thread left behind. */
      long j = (long)check_rand_below(&rng, ORPHANS);
      uintptr_t got = atomic_exchange_explicit(&orphans[j], 0, memory_order_acq_rel);
      block_free((unsigned char *)got, "orphan freed by a worker");
    }
  }

  /* Exit holding blocks: a third is freed, the rest parked for others to free. */
  for (long k = 0; k < nlocal; k++) {
    if (local[k] == NULL)
      continue;
    if (check_rand_below(&rng, 3) == 0) {
      block_free(local[k], "freed at exit");
    } else {
      long j = (long)check_rand_below(&rng, ORPHANS);
      uintptr_t got = atomic_exchange_explicit(&orphans[j], (uintptr_t)local[k],
                                               memory_order_acq_rel);
      block_free((unsigned char *)got, "displaced orphan");
    }
    local[k] = NULL;
  }
  free(local);
  return NULL;
}

static void start_worker(worker_t *w, long number) {
  w->number = number;
  int rc = pthread_create(&w->thread, NULL, worker_main, w);
  CHECKF(rc == 0, "pthread_create: %d", rc);
  w->running = true;
}

static void join_worker(worker_t *w) {
  if (!w->running)
    return;
  CHECK(pthread_join(w->thread, NULL) == 0);
  w->running = false;
}

static uint64_t blocks_in_use(const obm_stats_t *st) {
  uint64_t n = 0;
  for (int c = 0; c < OBM_NCLASSES; c++)
    n += st->classes[c].blocks_in_use;
  return n;
}

int main(int argc, char **argv) {
  nthreads = check_arg_long(argc, argv, 1, NULL, 8);
  scale = check_arg_long(argc, argv, 2, NULL, 300);
  iterations = check_arg_long(argc, argv, 3, NULL, 30);
  check_seed_init("test_threads", argc, argv, 4, 42);
  CHECK(nthreads >= 1 && scale >= 1 && iterations >= 1);
  obm_set_error_handler(on_error, NULL);
  printf("test_threads: %ld threads, scale %ld, %ld iterations, seed %" PRIu64 "\n", nthreads,
         scale, iterations, check_seed);
  fflush(stdout);

  /* Main allocates too, so its heap exists and blocks flow from it as well. */
  uint64_t rng = check_seed;
  for (long j = 0; j < TRANSFERS; j += 2)
    atomic_store(&transfer[j], (uintptr_t)block_new(&rng));

  worker_t *workers = calloc((size_t)nthreads, sizeof *workers);
  CHECK(workers != NULL);
  long total = nthreads * iterations;
  long started = 0;
  for (; started < nthreads; started++)
    start_worker(&workers[started], started);
  obm_stats_t *st = calloc(1, sizeof *st);
  CHECK(st != NULL);
  uint64_t max_heaps = 0;
  for (; started < total; started++) {
    worker_t *w = &workers[started % nthreads];
    join_worker(w);
    /* Main frees a few orphans between the deaths and the births. */
    for (int n = 0; n < 16; n++) {
      long j = (long)check_rand_below(&rng, ORPHANS);
      block_free((unsigned char *)atomic_exchange(&orphans[j], 0), "orphan freed by main");
    }
    obm_stats_get(st);
    if (st->nheaps > max_heaps)
      max_heaps = st->nheaps;
    CHECKF(st->nheaps_abandoned <= st->nheaps, "%" PRIu64 " of %" PRIu64 " heaps abandoned",
           st->nheaps_abandoned, st->nheaps);
    start_worker(w, started);
  }
  for (long i = 0; i < nthreads; i++)
    join_worker(&workers[i]);

  obm_stats_get(st);
  if (st->nheaps > max_heaps)
    max_heaps = st->nheaps;
  printf("after joining: nheaps %" PRIu64 " (max seen %" PRIu64 "), abandoned %" PRIu64
         ", remote frees pending %" PRIu64 ", blocks in use %" PRIu64 ", large %" PRIu64 "\n",
         st->nheaps, max_heaps, st->nheaps_abandoned, st->remote_frees_pending,
         blocks_in_use(st), st->large_blocks);
  CHECK(st->nheaps_abandoned <= st->nheaps);
  /* Heaps of exited threads are adopted: never more heaps than threads alive at once. */
  CHECKF(max_heaps <= (uint64_t)nthreads + 1,
         "%" PRIu64 " heaps for at most %ld live threads + main (%ld threads started)",
         max_heaps, nthreads, total);

  /* Free everything left behind; most of it belongs to heaps of dead threads. */
  long nleft = 0;
  for (long j = 0; j < TRANSFERS; j++) {
    unsigned char *p = (unsigned char *)atomic_exchange(&transfer[j], 0);
    nleft += p != NULL;
    block_free(p, "transfer freed by main");
  }
  for (long j = 0; j < ORPHANS; j++) {
    unsigned char *p = (unsigned char *)atomic_exchange(&orphans[j], 0);
    nleft += p != NULL;
    block_free(p, "orphan freed by main");
  }
  CHECKF(nleft > 0, "no block outlived its thread; the test proves nothing");
  uint64_t heaps_before_trim = st->nheaps;
  obm_trim();
  obm_stats_get(st);
  printf("after obm_trim: nheaps %" PRIu64 ", abandoned %" PRIu64 ", remote frees pending %" PRIu64
         ", blocks in use %" PRIu64 ", large %" PRIu64 ", arenas %" PRIu64 "\n",
         st->nheaps, st->nheaps_abandoned, st->remote_frees_pending, blocks_in_use(st),
         st->large_blocks, st->arenas_current);
  CHECKF(st->remote_frees_pending == 0, "%" PRIu64 " remote frees pending after obm_trim",
         st->remote_frees_pending);
  for (int c = 0; c < OBM_NCLASSES; c++)
    CHECKF(st->classes[c].blocks_in_use == 0, "class %d (%u bytes): %" PRIu64 " blocks in use",
           c, st->classes[c].block_size, st->classes[c].blocks_in_use);
  CHECKF(st->large_blocks == 0, "%" PRIu64 " large blocks live", st->large_blocks);
  CHECK(st->bytes_in_use == 0);
  CHECK(st->nheaps_abandoned <= st->nheaps);
  CHECK(st->nheaps <= heaps_before_trim);
  CHECK(st->arenas_spare == 0 && st->large_cached_blocks == 0);

  /* One more generation after the trim: it works and needs no new heap beyond one. */
  for (long i = 0; i < nthreads; i++)
    start_worker(&workers[i], total + i);
  for (long i = 0; i < nthreads; i++)
    join_worker(&workers[i]);
  for (long j = 0; j < ORPHANS; j++)
    block_free((unsigned char *)atomic_exchange(&orphans[j], 0), "orphan freed by main");
  for (long j = 0; j < TRANSFERS; j++)
    block_free((unsigned char *)atomic_exchange(&transfer[j], 0), "transfer freed by main");
  obm_trim();
  obm_stats_get(st);
  CHECK(blocks_in_use(st) == 0 && st->large_blocks == 0 && st->remote_frees_pending == 0);
  CHECKF(st->nheaps <= (uint64_t)nthreads + 1, "%" PRIu64 " heaps", st->nheaps);
  free(st);
  free(workers);
  return check_done();
}
