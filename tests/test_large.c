/* test_large.c — the large tier's cache and realloc policies (src/alloc/large.c).
 *
 * An integration test: only obmem.h, with obm_stats_get's large_* counters and addresses as
 * the witnesses.  Three parts:
 *   grow      a block grown a few bytes per realloc (CPython's `s += t`) from a medium size
 *             to 2 MiB keeps its contents, never reports a usable size it cannot give (every
 *             usable byte is written), and its usable size changes O(log n) times (each
 *             change is one mremap or move), not once per page;
 *   cache     a cached 8 MiB block is not trimmed for a much smaller request (a fresh block
 *             is mapped, or a smaller cached block grown) and comes back whole, at the same
 *             address and without a new mapping, for the next 8 MiB request; with nothing
 *             smaller cached, a request within 8x takes it whole;
 *   slack     a block taken whole from the cache keeps its slack when the program reallocs it
 *             to a bigger size than it asked for, and gives the slack back on a real shrink.
 * In debug mode (blocks wrapped in guards, realloc always moves) only contents are checked.
 * Runs with OBMEM_PURGE_DELAY_MS=10000 (re-executes itself to set it) so that no cached block
 * expires between two steps on a slow machine.
 * Usage: test_large [SEED]   (the seed varies the growth steps)
 */
#include "obmem.h"

#include "check.h"

#include <stdbool.h>
#include <stdint.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

static bool debug;

static void fill_range(unsigned char *p, size_t from, size_t to, uint64_t id) {
  for (size_t i = from; i < to; i++)
    p[i] = check_pattern_byte(id, i);
}

/* The first offset < n that does not hold the pattern, or n. */
static size_t first_bad(const unsigned char *p, size_t n, uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != check_pattern_byte(id, i)) return i;
  return n;
}

static obm_stats_t st; /* large: ~20 KiB */
static const obm_stats_t *stats(void) {
  obm_stats_get(&st);
  return &st;
}

/* ---- grow: a few bytes per realloc ------------------------------------------------------- */

static void test_grow_by_bytes(void) {
  const size_t start = 60000, end = 2 * MiB + 12345; /* crosses OBM_MEDIUM_MAX */
  const uint64_t id = 1;
  uint64_t rng = check_seed;
  obm_trim(); /* an empty cache: the first large block is a fresh mapping */
  unsigned char *p = obm_malloc(start);
  CHECK(p != NULL);
  fill_range(p, 0, start, id);
  size_t n = start, usable = obm_usable_size(p), nchanges = 0, nmoves = 0;
  size_t fitted_before = n; /* the last request that the previous usable size held */
  while (n < end) {
    size_t next = n + 1 + (size_t)check_rand_below(&rng, 8);
    unsigned char *q = obm_realloc(p, next);
    CHECKF(q != NULL, "realloc(%zu -> %zu) failed", n, next);
    fill_range(q, n, next, id);
    size_t u = obm_usable_size(q);
    CHECKF(u >= next, "usable_size %zu < request %zu", u, next);
    if (u != usable || q != p) {
      fitted_before = n;
      nchanges++;
      nmoves += q != p;
      CHECKF(debug || u > usable, "growing %zu -> %zu: usable %zu -> %zu", n, next, usable, u);
      CHECKF(first_bad(q, next, id) == next, "contents lost growing %zu -> %zu", n, next);
      if (u > next)
        q[u - 1] = 0xEE; /* the whole usable size is writable (the pattern comes back later) */
    }
    p = q;
    n = next;
    usable = u;
  }
  CHECK(first_bad(p, n, id) == n);
  /* O(log n): growing by at least a quarter, 64 KiB -> `end` takes ~15 steps; the medium
   * classes below and page rounding add a few.  One mremap per page would be ~500. */
  size_t bound = 8;
  for (size_t m = 64 * KiB; m < end; m += m / 4)
    bound++;
  CHECKF(debug || nchanges <= bound, "usable size changed %zu times growing %zu -> %zu (bound %zu)",
         nchanges, start, end, bound);
  CHECK(nmoves <= nchanges);

  /* No ping-pong: back to the size asked for before the last growth keeps the block (that
   * saves less than the 25 % a shrink needs), and so does growing again. */
  CHECK(fitted_before > 64 * KiB && fitted_before < n);
  unsigned char *q = obm_realloc(p, fitted_before);
  CHECKF(debug || (q == p && obm_usable_size(q) == usable),
         "realloc %zu -> %zu (usable %zu) moved or shrank the block: usable %zu", n, fitted_before,
         usable, obm_usable_size(q));
  q = obm_realloc(q, n);
  CHECK(debug || (q == p && obm_usable_size(q) == usable));
  CHECK(first_bad(q, fitted_before, id) == fitted_before);
  p = q;
  obm_free(p);
}

/* ---- cache: big blocks stay whole for big requests --------------------------------------- */

static void test_cache_keeps_big_blocks(void) {
  const size_t big_size = 8 * MiB;
  obm_trim();
  CHECK(stats()->large_cached_blocks == 0);
  unsigned char *big = obm_malloc(big_size);
  CHECK(big != NULL);
  memset(big, 0x5B, big_size);
  obm_free(big);
  const uint64_t cached_bytes = stats()->large_cached_bytes;
  CHECKF(st.large_cached_blocks == 1 && cached_bytes >= big_size,
         "after freeing 8 MiB: %" PRIu64 " cached blocks, %" PRIu64 " bytes",
         st.large_cached_blocks, cached_bytes);
  if (debug) return; /* the policy is the raw allocator's; debug blocks are bigger than asked for */

  /* 100 KiB (1/80 of it): a fresh mapping; the 8 MiB block is neither used nor trimmed. */
  unsigned char *small = obm_malloc(100 * KiB);
  CHECK(small != NULL && small != big);
  CHECKF(obm_usable_size(small) < MiB, "100 KiB request got %zu usable bytes",
         obm_usable_size(small));
  CHECKF(stats()->large_cached_blocks == 1 && st.large_cached_bytes == cached_bytes,
         "a 100 KiB request changed the cache: %" PRIu64 " blocks, %" PRIu64 " bytes (was %" PRIu64
         ")",
         st.large_cached_blocks, st.large_cached_bytes, cached_bytes);
  obm_free(small);

  /* 2 MiB (1/4 of it) with the 100 KiB block cached too: the small one is grown. */
  unsigned char *mid = obm_malloc(2 * MiB);
  CHECK(mid != NULL && mid != big);
  memset(mid, 0x3C, 2 * MiB);
  CHECKF(obm_usable_size(mid) < 3 * MiB, "2 MiB request got %zu usable bytes",
         obm_usable_size(mid));
  CHECKF(stats()->large_cached_blocks == 1 && st.large_cached_bytes == cached_bytes,
         "a 2 MiB request changed the cached 8 MiB block: %" PRIu64 " blocks, %" PRIu64 " bytes",
         st.large_cached_blocks, st.large_cached_bytes);

  /* 8 MiB again: the same block, whole (its last page still holds what was written: it was
   * never unmapped and faulted in again), and no new mapping. */
  const uint64_t maps = st.os_maps, hits = st.large_cache_hits;
  unsigned char *again = obm_malloc(big_size);
  CHECKF(again == big, "8 MiB request got %p, the cached 8 MiB block is %p", (void *)again,
         (void *)big);
  CHECK(again[0] == 0x5B && again[big_size - 1] == 0x5B);
  CHECK(stats()->os_maps == maps && st.large_cache_hits == hits + 1);
  CHECK(st.large_cached_blocks == 0);
  obm_free(mid);
  obm_free(again);

  /* Nothing smaller cached and within 8x: 1.5 MiB takes the 8 MiB block whole. */
  obm_trim();
  big = obm_malloc(big_size);
  CHECK(big != NULL);
  obm_free(big);
  unsigned char *p = obm_malloc(3 * MiB / 2);
  CHECKF(p == big && obm_usable_size(p) >= big_size,
         "1.5 MiB request beside only a cached 8 MiB block: %p (usable %zu), block %p", (void *)p,
         obm_usable_size(p), (void *)big);
  CHECK(stats()->large_cached_blocks == 0);
  obm_free(p);
}

/* ---- slack: realloc of a block taken whole from the cache ------------------------------- */

static void test_slack_kept_on_growth(void) {
  const uint64_t id = 3;
  obm_trim();
  unsigned char *a = obm_malloc(900 * KiB);
  CHECK(a != NULL);
  obm_free(a);
  unsigned char *p = obm_malloc(70000); /* less than 1 MiB too small for it: taken whole */
  CHECK(p != NULL);
  fill_range(p, 0, 70000, id);
  size_t usable = obm_usable_size(p);
  CHECKF(debug || (p == a && usable >= 900 * KiB),
         "70000 bytes beside a cached 900 KiB block: "
         "%p (usable %zu), block %p",
         (void *)p, usable, (void *)a);

  /* Growth within the slack (a list or string growing from 70000 bytes) keeps all of it. */
  unsigned char *q = obm_realloc(p, 70001);
  CHECK(q != NULL);
  CHECKF(debug || (q == p && obm_usable_size(q) == usable),
         "realloc 70000 -> 70001 in a %zu-byte block: %p, usable %zu", usable, (void *)q,
         obm_usable_size(q));
  q = obm_realloc(q, 200000);
  CHECK(q != NULL);
  fill_range(q, 70000, 200000, id);
  CHECK(debug || (q == p && obm_usable_size(q) == usable));

  /* A real shrink (below the last request, saving more than 25 %) gives the slack back. */
  q = obm_realloc(q, 100000);
  CHECK(q != NULL && first_bad(q, 100000, id) == 100000);
  CHECKF(debug || (q == p && obm_usable_size(q) < 128 * KiB),
         "realloc 200000 -> 100000 in a %zu-byte block: %p, usable %zu", usable, (void *)q,
         obm_usable_size(q));
  obm_free(q);
}

int main(int argc, char **argv) {
  check_env_reexec(argv, "OBMEM_PURGE_DELAY_MS", "10000", 1);
  check_seed_init("test_large", argc, argv, 1, 1);
  debug = obm_debug_enabled() != 0;

  test_grow_by_bytes();
  test_cache_keeps_big_blocks();
  test_slack_kept_on_growth();

  obm_trim();
  CHECK(stats()->large_blocks == 0 && st.large_cached_blocks == 0);
  return check_done();
}
