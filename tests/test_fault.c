/* test_fault.c — fault injection: the N-th OS mapping fails, for N = 1, 2, 3, ...
 *
 * A unit test (uses the hooks in src/internal.h).  For each N, `_obm_os_fail_map_after(N)`
 * arms the failure and a fresh thread (so a new heap is set up) runs a fixed sequence that
 * needs many fresh mappings: small and medium blocks filling several arenas, large blocks,
 * aligned large blocks, a large realloc that grows, calloc and posix_memalign.  Every call
 * that fails must return NULL (or ENOMEM from posix_memalign) with errno ENOMEM, must not
 * crash or abort, and a failed realloc must leave its block intact.  Everything that
 * succeeded is checked and freed, `_obm_heap_check_all()` must return 0 and no block may
 * stay in use.  obm_trim() between rounds gives the spare arenas and cached large mappings
 * back, so every round needs fresh mappings again.  A single fault may be absorbed (the
 * allocator reclaims and retries once), so "no failure" alone does not end the loop: it
 * stops at the first N whose run saw no failure and made fewer than N - MAX_REMAPS mapping
 * calls, i.e. the fault lay beyond every call that can consume it (_obm_os_map_calls counts
 * mmaps; growing a large block in place consumes a fault without an mmap, at most
 * MAX_REMAPS times per run).  The very first round also covers obmem's own initialization.
 *
 * Usage: test_fault [SEED] [MAX_N]   (FAULT_VERBOSE=1 prints every round)
 */
#include "internal.h"
#include "obmem.h"

#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

#define NSMALL 6000   /* 6000 * 400 B ~ 2.3 MiB: three arenas */
#define NMEDIUM 160   /* 160 * 20 KiB ~ 3.1 MiB */
#define NLARGE 8
#define MAX_REMAPS (NLARGE / 3 + 1 + NSMALL / 1000) /* realloc calls in the sequence */

static long current_n;

static void on_error(obm_error_t code, void *address, const char *message, void *arg) {
  (void)arg;
  CHECKF(0, "N=%ld: error report code %d at %p: %s", current_n, (int)code, address, message);
}

typedef struct run_s {
  unsigned char *small[NSMALL];
  unsigned char *medium[NMEDIUM];
  unsigned char *large[NLARGE];
  size_t large_size[NLARGE];
  long nfailures; /* calls that returned NULL / ENOMEM */
  long ncalls;    /* allocation calls made */
} run_t;

static void fill(unsigned char *p, size_t n, uint64_t id) {
  /* The first and last 64 bytes and one byte per page are enough to see misplacement. */
  for (size_t i = 0; i < n; i++) {
    if (i == 64 && n > 128) {
      for (i = 64; i < n - 64; i += 4096)
        p[i] = check_pattern_byte(id, i);
      i = n - 64;
    }
    p[i] = check_pattern_byte(id, i);
  }
}

static void check_fill(const unsigned char *p, size_t n, uint64_t id, const char *what) {
  for (size_t i = 0; i < n; i++) {
    if (i == 64 && n > 128) {
      for (i = 64; i < n - 64; i += 4096)
        CHECKF(p[i] == check_pattern_byte(id, i), "N=%ld: %s: byte %zu of %p", current_n, what,
               i, (const void *)p);
      i = n - 64;
    }
    CHECKF(p[i] == check_pattern_byte(id, i), "N=%ld: %s: byte %zu of %p", current_n, what, i,
           (const void *)p);
  }
}

/* Records one allocation result: success is filled, failure must be NULL + ENOMEM. */
static unsigned char *took(run_t *r, void *p, int saved_errno, size_t n, uint64_t id,
                           const char *what) {
  r->ncalls++;
  if (p == NULL) {
    CHECKF(saved_errno == ENOMEM, "N=%ld: %s(%zu) failed with errno %d, not ENOMEM", current_n,
           what, n, saved_errno);
    r->nfailures++;
    return NULL;
  }
  CHECKF(((uintptr_t)p & (OBM_ALIGNMENT - 1)) == 0, "N=%ld: %s gave %p", current_n, what, p);
  fill(p, n, id);
  return p;
}

static void *sequence(void *arg) {
  run_t *r = arg;
  void *p;

  /* Small blocks: several arenas' worth, two classes. */
  for (int i = 0; i < NSMALL; i++) {
    size_t n = i % 3 == 0 ? 24 : 400;
    errno = 0;
    p = obm_malloc(n);
    r->small[i] = took(r, p, errno, n, (uint64_t)i, "malloc");
  }
  /* Medium blocks, some zeroed. */
  for (int i = 0; i < NMEDIUM; i++) {
    size_t n = i % 4 == 0 ? 1000 : 20 * KiB;
    errno = 0;
    if (i % 5 == 0) {
      p = obm_calloc(4, n / 4);
      if (p != NULL)
        CHECK(((unsigned char *)p)[n - 1] == 0 && ((unsigned char *)p)[0] == 0);
    } else {
      p = obm_malloc(n);
    }
    r->medium[i] = took(r, p, errno, n, 100000 + (uint64_t)i, "malloc/calloc medium");
  }
  /* Large blocks of several sizes, and aligned ones. */
  const size_t large_sizes[NLARGE] = {100 * KiB, 300 * KiB, MiB, 2 * MiB + 100,
                                      4 * MiB,   80 * KiB,  MiB, 6 * MiB};
  for (int i = 0; i < NLARGE; i++) {
    size_t n = large_sizes[i];
    errno = 0;
    if (i == 5) {
      p = obm_aligned_alloc(2 * MiB, n);
      if (p != NULL)
        CHECK(((uintptr_t)p & (2 * MiB - 1)) == 0);
      errno = p == NULL ? errno : 0;
    } else if (i == 6) {
      void *out = (void *)0x10;
      int rc = obm_posix_memalign(&out, 64 * KiB, n);
      CHECKF(rc == 0 || rc == ENOMEM, "N=%ld: posix_memalign = %d", current_n, rc);
      p = rc == 0 ? out : NULL;
      errno = rc;
    } else {
      p = obm_malloc(n);
    }
    r->large[i] = took(r, p, errno, n, 200000 + (uint64_t)i, "large");
    r->large_size[i] = n;
  }
  /* Grow a large block a lot (may need a new mapping); a failure leaves it intact. */
  for (int i = 0; i < NLARGE; i += 3) {
    if (r->large[i] == NULL)
      continue;
    size_t n = r->large_size[i] * 4 + 12345;
    errno = 0;
    void *q = obm_realloc(r->large[i], n);
    r->ncalls++;
    if (q == NULL) {
      CHECKF(errno == ENOMEM, "N=%ld: realloc failed with errno %d", current_n, errno);
      r->nfailures++;
      check_fill(r->large[i], r->large_size[i], 200000 + (uint64_t)i, "block after failed realloc");
      continue;
    }
    check_fill(q, r->large_size[i] < 64 ? r->large_size[i] : 64, 200000 + (uint64_t)i,
               "realloc prefix");
    r->large[i] = q;
    r->large_size[i] = n;
    fill(q, n, 200000 + (uint64_t)i);
  }
  /* Grow some small blocks into medium and large ones. */
  for (int i = 0; i < NSMALL; i += 1000) {
    if (r->small[i] == NULL)
      continue;
    size_t old = i % 3 == 0 ? 24 : 400;
    size_t n = i % 2000 == 0 ? 9000 : 150 * KiB;
    errno = 0;
    void *q = obm_realloc(r->small[i], n);
    r->ncalls++;
    if (q == NULL) {
      CHECKF(errno == ENOMEM, "N=%ld: realloc failed with errno %d", current_n, errno);
      r->nfailures++;
      check_fill(r->small[i], old, (uint64_t)i, "block after failed realloc");
      continue;
    }
    check_fill(q, old, (uint64_t)i, "realloc prefix");
    fill(q, old, (uint64_t)i); /* the check below is on `old` bytes */
    r->small[i] = q;
  }

  /* Everything that succeeded is intact; free it all from this thread. */
  for (int i = 0; i < NSMALL; i++) {
    if (r->small[i] != NULL) {
      check_fill(r->small[i], i % 3 == 0 ? 24 : 400, (uint64_t)i, "small block");
      obm_free(r->small[i]);
    }
  }
  for (int i = 0; i < NMEDIUM; i++) {
    if (r->medium[i] != NULL) {
      check_fill(r->medium[i], i % 4 == 0 ? 1000 : 20 * KiB, 100000 + (uint64_t)i,
                 "medium block");
      obm_free(r->medium[i]);
    }
  }
  for (int i = 0; i < NLARGE; i++) {
    if (r->large[i] != NULL) {
      check_fill(r->large[i], r->large_size[i], 200000 + (uint64_t)i, "large block");
      obm_free(r->large[i]);
    }
  }
  return NULL;
}

static uint64_t live_blocks(void) {
  static obm_stats_t st;
  obm_stats_get(&st);
  uint64_t n = st.large_blocks;
  for (int c = 0; c < OBM_NCLASSES; c++)
    n += st.classes[c].blocks_in_use;
  return n;
}

int main(int argc, char **argv) {
  check_seed_init("test_fault", argc, argv, 1, 1);
  long max_n = check_arg_long(argc, argv, 2, NULL, 2000);
  obm_set_error_handler(on_error, NULL);
  static run_t run;
  long total_failures = 0;
  long n;
  bool done = false;
  for (n = 1; n <= max_n && !done; n++) {
    current_n = n;
    memset(&run, 0, sizeof run);
    uint64_t calls_before = _obm_os_map_calls();
    _obm_os_fail_map_after(n);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, sequence, &run) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    uint64_t calls = _obm_os_map_calls() - calls_before;
    _obm_os_fail_map_after(0);

    size_t problems = _obm_heap_check_all();
    CHECKF(problems == 0, "N=%ld: _obm_heap_check_all() found %zu problems", n, problems);
    CHECKF(live_blocks() == 0, "N=%ld: %" PRIu64 " blocks still in use after freeing all", n,
           live_blocks());
    total_failures += run.nfailures;
    if (getenv("FAULT_VERBOSE") || n <= 3 || n % 50 == 0 || run.nfailures == 0)
      printf("N=%ld: %ld calls, %ld failed, %" PRIu64 " mapping calls\n", n, run.ncalls,
             run.nfailures, calls);
    /* Done once the injected fault was beyond the sequence's last mapping call. */
    if (run.nfailures == 0 && calls + MAX_REMAPS < (uint64_t)n)
      done = true;
    obm_trim(); /* give spares and cached mappings back: the next run maps afresh */
    CHECK(_obm_heap_check_all() == 0);
  }
  CHECKF(done, "the sequence still met the fault at N=%ld (raise MAX_N?)", max_n);
  n--;
  printf("test_fault: the whole sequence succeeded at N=%ld; %ld injected failures seen\n", n,
         total_failures);
  CHECKF(n > 5 + MAX_REMAPS, "the sequence needed only %ld mapping calls; it proves little",
         n - MAX_REMAPS);
  CHECKF(total_failures > 0, "no injected fault ever made an allocation fail");

  /* With the fault off, everything works and the heap is clean. */
  current_n = 0;
  memset(&run, 0, sizeof run);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, sequence, &run) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(run.nfailures == 0);
  CHECK(_obm_heap_check_all() == 0);
  CHECK(live_blocks() == 0);
  return check_done();
}
