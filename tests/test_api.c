/* test_api.c — the public allocation API against the contract in include/obmem.h.
 *
 * An integration test: only obmem.h.  Covers malloc(0), impossible sizes, calloc overflow
 * and zeroing of reused memory in every tier, every power-of-two alignment, realloc between
 * every pair of tiers and its in-place rules, usable sizes and the size-class table,
 * obm_owns, foreign and interior pointers through the error handler, stats bookkeeping and
 * obm_trim.  Checks that could crash the process on a broken allocator (freeing an interior
 * pointer) run in a forked child so the report names the case instead of a signal.
 * Usage: test_api [SEED]
 */
#include "obmem.h"

#include "check.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* ---- error handler: records reports; a report nobody expected fails the test ----------- */

static struct {
  int expecting;    /* > 0 while a test provokes reports */
  int ncalls;       /* reports since the last reset */
  obm_error_t code; /* of the last report */
  void *address;
  char message[2048];
} err;

static void on_error(obm_error_t code, void *address, const char *message, void *arg) {
  (void)arg;
  CHECKF(err.expecting > 0, "unexpected error report: code %d at %p: %s", (int)code, address,
         message);
  err.ncalls++;
  err.code = code;
  err.address = address;
  snprintf(err.message, sizeof err.message, "%s", message != NULL ? message : "(null)");
}

static void expect_reports(void) {
  err.expecting = 1;
  err.ncalls = 0;
  err.code = OBM_OK;
  err.address = NULL;
  err.message[0] = '\0';
}

static void expect_no_reports(void) {
  err.expecting = 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static bool aligned_to(const void *p, size_t alignment) {
  return ((uintptr_t)p & (alignment - 1)) == 0;
}

static void fill(void *p, size_t n, uint64_t id) {
  unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    b[i] = check_pattern_byte(id, i);
}

/* Returns the first offset < n that does not hold the pattern, or n. */
static size_t first_bad(const void *p, size_t n, uint64_t id) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != check_pattern_byte(id, i)) return i;
  return n;
}

static size_t first_nonzero(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != 0) return i;
  return n;
}

static uint64_t small_medium_in_use(void) {
  static obm_stats_t st; /* large; keep off the stack */
  obm_stats_get(&st);
  uint64_t n = 0;
  for (int i = 0; i < OBM_NCLASSES; i++)
    n += st.classes[i].blocks_in_use;
  return n;
}

/* Runs fn in a forked child; the child's CHECK failures and crashes fail the parent. */
static void run_in_child(const char *what, void (*fn)(void)) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    fn();
    fflush(stdout);
    _exit(0);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: child %s %d", what,
         WIFSIGNALED(status) ? "killed by signal" : "exited with",
         WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/* Sizes a test should not let the compiler see as constants (alloc_size warnings). */
static volatile size_t vsize_max = SIZE_MAX;

/* ---- malloc(0) and impossible sizes ------------------------------------------------------- */

static void test_size_zero(void) {
  void *p = obm_malloc(0);
  void *q = obm_malloc(0);
  CHECK(p != NULL && q != NULL);
  CHECK(p != q);
  CHECK(aligned_to(p, OBM_ALIGNMENT) && aligned_to(q, OBM_ALIGNMENT));
  CHECK(obm_owns(p) && obm_owns(q));
  /* A 16-byte block, as CPython: the caller may not use it, but it is a real block.  (In
   * debug mode the usable size is the request, 0, so that guards sit right after it.) */
  if (!obm_debug_enabled())
    CHECKF(obm_usable_size(p) == 16, "usable_size(malloc(0)) = %zu", obm_usable_size(p));
  void *many[64];
  for (int i = 0; i < 64; i++) {
    many[i] = obm_malloc(0);
    CHECK(many[i] != NULL);
    for (int j = 0; j < i; j++)
      CHECK(many[j] != many[i]);
  }
  for (int i = 0; i < 64; i++)
    obm_free(many[i]);
  obm_free(p);
  obm_free(q);
}

static void test_huge_sizes(void) {
  const size_t huge[] = {vsize_max,      vsize_max / 2,    (size_t)PTRDIFF_MAX + 1,
                         vsize_max - 15, vsize_max - 4096, vsize_max - OBM_ARENA_SIZE,
                         (size_t)1 << 62};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    size_t n = huge[i];
    errno = 0;
    void *p = obm_malloc(n);
    CHECKF(p == NULL && errno == ENOMEM, "malloc(%zu) = %p errno %d", n, p, errno);
    errno = 0;
    p = obm_calloc(1, n);
    CHECKF(p == NULL && errno == ENOMEM, "calloc(1, %zu) = %p errno %d", n, p, errno);
    errno = 0;
    p = obm_realloc(NULL, n);
    CHECKF(p == NULL && errno == ENOMEM, "realloc(NULL, %zu) = %p errno %d", n, p, errno);
    errno = 0;
    p = obm_aligned_alloc(16, n);
    CHECKF(p == NULL && errno == ENOMEM, "aligned_alloc(16, %zu) = %p errno %d", n, p, errno);
    errno = 0;
    p = obm_aligned_alloc(4096, n);
    CHECKF(p == NULL && errno == ENOMEM, "aligned_alloc(4096, %zu) = %p errno %d", n, p, errno);
    errno = 0;
    p = obm_aligned_alloc(2 * MiB, n);
    CHECKF(p == NULL && errno == ENOMEM, "aligned_alloc(2MiB, %zu) = %p errno %d", n, p, errno);
    void *out = NULL;
    int rc = obm_posix_memalign(&out, 64, n);
    CHECKF(rc == ENOMEM, "posix_memalign(64, %zu) = %d", n, rc);
  }

  /* A failed realloc leaves the block untouched, in every tier. */
  const size_t sizes[] = {24, 3000, 200 * KiB};
  for (size_t i = 0; i < 3; i++) {
    size_t n = sizes[i];
    unsigned char *p = obm_malloc(n);
    CHECK(p != NULL);
    fill(p, n, 77 + i);
    errno = 0;
    void *q = obm_realloc(p, vsize_max);
    CHECKF(q == NULL && errno == ENOMEM, "realloc(%zu-byte block, SIZE_MAX) = %p errno %d", n, q,
           errno);
    errno = 0;
    q = obm_realloc(p, vsize_max / 2 + 1); /* PTRDIFF_MAX + 1 */
    CHECK(q == NULL && errno == ENOMEM);
    CHECK(obm_owns(p));
    CHECK(obm_usable_size(p) >= n);
    CHECK(first_bad(p, n, 77 + i) == n);
    obm_free(p);
  }
}

static void test_calloc_overflow(void) {
  const size_t pairs[][2] = {
      {vsize_max, 2},
      {2, vsize_max},
      {vsize_max / 2 + 1, 2},
      {(size_t)1 << 32, (size_t)1 << 32}, /* wraps to exactly 0 */
      {((size_t)1 << 33) + 1, (size_t)1 << 31},
      {vsize_max, vsize_max},
      {65537, (size_t)1 << 48},
      {(size_t)PTRDIFF_MAX, 3},
  };
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    errno = 0;
    void *p = obm_calloc(pairs[i][0], pairs[i][1]);
    CHECKF(p == NULL && errno == ENOMEM, "calloc(%zu, %zu) = %p errno %d", pairs[i][0], pairs[i][1],
           p, errno);
  }
  /* Products that fit are fine. */
  void *p = obm_calloc((size_t)1 << 10, (size_t)1 << 10);
  CHECK(p != NULL);
  CHECK(first_nonzero(p, MiB) == MiB);
  obm_free(p);
}

/* calloc must zero memory that held garbage: allocate, scribble, free, calloc again. */
static void test_calloc_zeroes_reused(void) {
  const size_t sizes[] = {1,    8,     16,    100,   512,       513, 1000,
                          4096, 20000, 65536, 65537, 200 * KiB, MiB, 3 * MiB + 5};
  enum { NBLOCKS = 48 };
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    size_t n = sizes[s];
    int k = n > OBM_MEDIUM_MAX ? 4 : NBLOCKS;
    /* An anchor keeps the pool (or arena) in use so the freed blocks are really reused. */
    void *anchor = obm_malloc(n);
    CHECK(anchor != NULL);
    void *blocks[NBLOCKS];
    uintptr_t old[NBLOCKS];
    for (int i = 0; i < k; i++) {
      blocks[i] = obm_malloc(n);
      CHECK(blocks[i] != NULL);
      memset(blocks[i], 0xA5, obm_usable_size(blocks[i]));
      old[i] = (uintptr_t)blocks[i];
    }
    for (int i = k - 1; i >= 0; i--)
      obm_free(blocks[i]);
    int reused = 0;
    for (int i = 0; i < k; i++) {
      blocks[i] = obm_calloc(1, n);
      CHECK(blocks[i] != NULL);
      size_t bad = first_nonzero(blocks[i], n);
      CHECKF(bad == n, "calloc(1, %zu) = %p: byte %zu is 0x%02x", n, blocks[i], bad,
             ((unsigned char *)blocks[i])[bad < n ? bad : 0]);
      for (int j = 0; j < k; j++)
        reused += (uintptr_t)blocks[i] == old[j];
      /* Scribble again so the next round of calloc also meets garbage. */
      memset(blocks[i], 0x5A, n);
    }
    if (n <= OBM_MEDIUM_MAX)
      CHECKF(reused > 0, "calloc(%zu) never reused a freed block; the test proves nothing", n);
    for (int i = 0; i < k; i++)
      obm_free(blocks[i]);
    /* calloc(count, size) with count > 1 as well. */
    for (int i = 0; i < k; i++) {
      blocks[i] = obm_calloc(n < 4 ? 1 : 4, n < 4 ? n : n / 4);
      CHECK(blocks[i] != NULL);
      size_t m = n < 4 ? n : (n / 4) * 4;
      CHECK(first_nonzero(blocks[i], m) == m);
    }
    for (int i = 0; i < k; i++)
      obm_free(blocks[i]);
    obm_free(anchor);
  }
}

/* ---- alignment ---------------------------------------------------------------------------- */

static const size_t align_sizes[] = {0, 1, 100, 513, 4096, 70000, 3 * MiB};
#define NALIGN_SIZES (sizeof align_sizes / sizeof align_sizes[0])

static void check_aligned_block(const char *fn, void *p, size_t alignment, size_t n) {
  CHECKF(p != NULL, "%s(%zu, %zu) = NULL errno %d", fn, alignment, n, errno);
  CHECKF(aligned_to(p, alignment) && aligned_to(p, OBM_ALIGNMENT), "%s(%zu, %zu) = %p", fn,
         alignment, n, p);
  size_t usable = obm_usable_size(p);
  CHECKF(usable >= n, "%s(%zu, %zu): usable_size %zu", fn, alignment, n, usable);
  CHECK(obm_owns(p));
  if (n > 0) {
    memset(p, 0x3C, n);
    CHECK(((unsigned char *)p)[n - 1] == 0x3C);
    CHECK(obm_owns((char *)p + n - 1));
  }
}

static void test_alignment(void) {
  size_t alignments[32];
  int na = 0;
  for (int k = 0; k <= 20; k++)
    alignments[na++] = (size_t)1 << k;
  alignments[na++] = 2 * MiB;
  alignments[na++] = 16 * MiB;

  for (int a = 0; a < na; a++) {
    size_t alignment = alignments[a];
    void *blocks[NALIGN_SIZES];
    for (size_t s = 0; s < NALIGN_SIZES; s++) {
      errno = 0;
      blocks[s] = obm_aligned_alloc(alignment, align_sizes[s]);
      check_aligned_block("aligned_alloc", blocks[s], alignment, align_sizes[s]);
    }
    for (size_t s = 0; s < NALIGN_SIZES; s++)
      obm_free(blocks[s]);

    if (alignment < sizeof(void *)) continue;
    for (size_t s = 0; s < NALIGN_SIZES; s++) {
      void *out = (void *)0x1;
      int rc = obm_posix_memalign(&out, alignment, align_sizes[s]);
      CHECKF(rc == 0, "posix_memalign(%zu, %zu) = %d", alignment, align_sizes[s], rc);
      blocks[s] = out;
      check_aligned_block("posix_memalign", blocks[s], alignment, align_sizes[s]);
    }
    /* Free in the other order this time. */
    for (size_t s = NALIGN_SIZES; s-- > 0;)
      obm_free(blocks[s]);
  }

  /* Aligned blocks realloc like any other (alignment is not promised after realloc). */
  char *p = obm_aligned_alloc(4096, 100);
  CHECK(p != NULL && aligned_to(p, 4096));
  fill(p, 100, 5);
  p = obm_realloc(p, 100000);
  CHECK(p != NULL && first_bad(p, 100, 5) == 100);
  obm_free(p);
}

static void test_bad_alignment(void) {
  const size_t bad_posix[] = {0,
                              1,
                              2,
                              4,
                              3,
                              12,
                              24,
                              48,
                              1000,
                              4095,
                              (MiB) + 8,
                              vsize_max,
                              vsize_max / 2,
                              ((size_t)1 << 63) + 8};
  for (size_t i = 0; i < sizeof bad_posix / sizeof bad_posix[0]; i++) {
    void *sentinel = (void *)(uintptr_t)0xDEADBEE0;
    void *out = sentinel;
    int rc = obm_posix_memalign(&out, bad_posix[i], 64);
    CHECKF(rc == EINVAL, "posix_memalign(alignment %zu) = %d", bad_posix[i], rc);
    CHECKF(out == sentinel, "posix_memalign(alignment %zu) wrote *out = %p", bad_posix[i], out);
  }
  const size_t bad_c11[] = {0,
                            3,
                            12,
                            24,
                            48,
                            1000,
                            4095,
                            MiB + 16,
                            vsize_max,
                            vsize_max / 2,
                            OBM_MAX_ALIGNMENT * 2,
                            (size_t)1 << 63};
  for (size_t i = 0; i < sizeof bad_c11 / sizeof bad_c11[0]; i++) {
    errno = 0;
    void *p = obm_aligned_alloc(bad_c11[i], 64);
    CHECKF(p == NULL && errno == EINVAL, "aligned_alloc(alignment %zu) = %p errno %d", bad_c11[i],
           p, errno);
  }
  void *out = NULL;
  int rc = obm_posix_memalign(&out, OBM_MAX_ALIGNMENT * 2, 64);
  CHECKF(rc == EINVAL, "posix_memalign(2 * OBM_MAX_ALIGNMENT) = %d", rc);
}

/* ---- realloc ------------------------------------------------------------------------------ */

static const size_t tier_sizes[] = {1, 16, 100, 512, 513, 1000, 4096, 65536, 65537, MiB, 5 * MiB};
#define NTIER_SIZES (sizeof tier_sizes / sizeof tier_sizes[0])

static void test_realloc_tiers(void) {
  for (size_t a = 0; a < NTIER_SIZES; a++) {
    for (size_t b = 0; b < NTIER_SIZES; b++) {
      size_t from = tier_sizes[a], to = tier_sizes[b];
      uint64_t id = a * 100 + b + 1;
      /* A neighbour allocated around the block must not be disturbed by the move. */
      unsigned char *before = obm_malloc(from);
      unsigned char *p = obm_malloc(from);
      unsigned char *after = obm_malloc(from);
      CHECK(before != NULL && p != NULL && after != NULL);
      fill(before, from, id + 1000);
      fill(p, from, id);
      fill(after, from, id + 2000);
      errno = 0;
      unsigned char *q = obm_realloc(p, to);
      CHECKF(q != NULL, "realloc(%zu -> %zu) failed errno %d", from, to, errno);
      CHECK(aligned_to(q, OBM_ALIGNMENT));
      CHECKF(obm_usable_size(q) >= to, "realloc(%zu -> %zu): usable %zu", from, to,
             obm_usable_size(q));
      size_t keep = from < to ? from : to;
      size_t bad = first_bad(q, keep, id);
      CHECKF(bad == keep, "realloc(%zu -> %zu) lost contents at offset %zu", from, to, bad);
      memset(q, 0xEE, to); /* all of the new size is writable */
      CHECK(first_bad(before, from, id + 1000) == from);
      CHECK(first_bad(after, from, id + 2000) == from);
      obm_free(q);
      obm_free(before);
      obm_free(after);
    }
  }

  /* One block walked through a fixed random sequence of sizes. */
  uint64_t rng = check_seed ^ 0x1234;
  size_t size = 1;
  unsigned char *p = obm_malloc(size);
  CHECK(p != NULL);
  fill(p, size, 1);
  for (uint64_t step = 2; step < 300; step++) {
    size_t next = tier_sizes[check_rand_below(&rng, NTIER_SIZES)];
    next += check_rand_below(&rng, 3) == 0 ? check_rand_below(&rng, 100) : 0;
    unsigned char *q = obm_realloc(p, next);
    CHECK(q != NULL);
    size_t keep = size < next ? size : next;
    CHECKF(first_bad(q, keep, step - 1) == keep, "step %" PRIu64 ": %zu -> %zu", step, size, next);
    fill(q, next, step);
    p = q;
    size = next;
  }
  obm_free(p);
}

static void test_realloc_edges(void) {
  uint64_t in_use = small_medium_in_use();
  /* realloc(NULL, n) is malloc(n). */
  const size_t sizes[] = {0, 1, 100, 700, 70000};
  for (size_t i = 0; i < 5; i++) {
    void *p = obm_realloc(NULL, sizes[i]);
    CHECK(p != NULL);
    CHECK(obm_usable_size(p) >= sizes[i]);
    CHECK(obm_owns(p));
    obm_free(p);
  }
  /* realloc(p, 0) frees p and returns a fresh minimum block that can be freed. */
  for (size_t i = 0; i < NTIER_SIZES; i++) {
    void *p = obm_malloc(tier_sizes[i]);
    CHECK(p != NULL);
    void *q = obm_realloc(p, 0);
    CHECKF(q != NULL, "realloc(%zu-byte block, 0) = NULL", tier_sizes[i]);
    CHECK(obm_owns(q));
    CHECK(obm_debug_enabled() || obm_usable_size(q) >= 1); /* debug: the request, 0 */
    obm_free(q);
  }
  CHECKF(small_medium_in_use() == in_use, "realloc(p, 0) leaked: %" PRIu64 " -> %" PRIu64, in_use,
         small_medium_in_use());
}

/* In place: growing within the usable size, and shrinking to more than 75 % of it.  (Debug
 * mode may move any block, to keep its guards and serials; contents are checked anyway.) */
static void test_realloc_in_place(void) {
  bool debug = obm_debug_enabled() != 0;
  const size_t sizes[] = {16,   20,   48,    100,   300,   512,   513,    700, 1000,
                          3000, 4096, 10000, 40000, 65536, 65537, 100000, MiB, 3 * MiB + 100};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t n = sizes[i];
    unsigned char *p = obm_malloc(n);
    CHECK(p != NULL);
    size_t usable = obm_usable_size(p);
    CHECK(usable >= n);
    fill(p, usable, i);
    uintptr_t addr = (uintptr_t)p;

    unsigned char *q = obm_realloc(p, usable); /* grow to the usable size */
    CHECKF(debug || (uintptr_t)q == addr, "realloc(%zu-byte block, usable %zu) moved", n, usable);
    CHECK(q != NULL && first_bad(q, usable, i) == usable);
    addr = (uintptr_t)q;

    size_t target = usable - usable / 4 + 1; /* 4 * target > 3 * usable */
    if (target > usable) target = usable;
    q = obm_realloc(q, target);
    CHECKF(debug || (uintptr_t)q == addr,
           "realloc shrink %zu -> %zu (> 75 %% of usable %zu) moved the block", n, target, usable);
    CHECK(first_bad(q, target, i) == target);
    CHECK(obm_usable_size(q) >= target);
    addr = (uintptr_t)q;

    q = obm_realloc(q, n); /* and back up to the original request */
    CHECKF(debug || (uintptr_t)q == addr, "realloc back to %zu moved the block", n);
    CHECK(first_bad(q, target < n ? target : n, i) == (target < n ? target : n));
    obm_free(q);
  }
  /* Shrinking a lot still keeps the contents (whether or not it moves). */
  unsigned char *p = obm_malloc(60000);
  CHECK(p != NULL);
  fill(p, 60000, 9);
  p = obm_realloc(p, 100);
  CHECK(p != NULL && first_bad(p, 100, 9) == 100);
  obm_free(p);
}

/* ---- sizes and classes -------------------------------------------------------------------- */

static void test_size_classes(void) {
  CHECK(obm_size_class(0) == 0);
  for (size_t n = 1; n <= 16; n++)
    CHECKF(obm_size_class(n) == 0, "size_class(%zu) = %d", n, obm_size_class(n));
  CHECK(obm_size_class(17) == 1);
  CHECK(obm_size_class(32) == 1);
  CHECK(obm_size_class(33) == 2);
  CHECK(obm_size_class(511) == 31);
  CHECK(obm_size_class(512) == 31);
  CHECK(obm_size_class(513) == 32);
  CHECK(obm_size_class(65535) == 59);
  CHECK(obm_size_class(65536) == 59);
  CHECK(obm_size_class(65537) == -1);
  CHECK(obm_size_class(MiB) == -1);
  CHECK(obm_size_class(vsize_max) == -1);

  for (int c = 0; c < OBM_NSMALL_CLASSES; c++)
    CHECKF(obm_class_block_size(c) == (size_t)16 * (size_t)(c + 1), "block_size(%d) = %zu", c,
           obm_class_block_size(c));
  CHECK(obm_class_block_size(OBM_NCLASSES - 1) == OBM_MEDIUM_MAX);
  /* Medium: 4 classes per doubling, so every 4th is a power of two; <= 25 % apart. */
  for (int k = 0; k < 7; k++)
    CHECKF(obm_class_block_size(OBM_NSMALL_CLASSES + 3 + 4 * k) == (size_t)1024 << k,
           "block_size(%d) = %zu", OBM_NSMALL_CLASSES + 3 + 4 * k,
           obm_class_block_size(OBM_NSMALL_CLASSES + 3 + 4 * k));
  for (int c = 0; c < OBM_NCLASSES; c++) {
    size_t b = obm_class_block_size(c);
    CHECKF(b % OBM_ALIGNMENT == 0, "block_size(%d) = %zu", c, b);
    CHECKF(obm_size_class(b) == c, "size_class(block_size(%d) = %zu) = %d", c, b,
           obm_size_class(b));
    CHECK(obm_size_class(b + 1) == (c + 1 < OBM_NCLASSES ? c + 1 : -1));
    if (c > 0) {
      size_t prev = obm_class_block_size(c - 1);
      CHECK(b > prev);
      if (c >= OBM_NSMALL_CLASSES)
        CHECKF(b * 4 <= prev * 5, "classes %d and %d more than 25 %% apart: %zu %zu", c - 1, c,
               prev, b);
    }
  }
  /* Every request size maps to the smallest class that holds it. */
  for (size_t n = 1; n <= OBM_MEDIUM_MAX; n++) {
    int c = obm_size_class(n);
    CHECKF(c >= 0 && c < OBM_NCLASSES, "size_class(%zu) = %d", n, c);
    if (obm_class_block_size(c) < n || (c > 0 && obm_class_block_size(c - 1) >= n))
      CHECKF(0, "size_class(%zu) = %d (block %zu)", n, c, obm_class_block_size(c));
  }
}

static void test_usable_size(void) {
  CHECK(obm_usable_size(NULL) == 0);
  bool debug = obm_debug_enabled() != 0;
  size_t n = 1;
  while (n <= 8 * MiB) {
    void *p = obm_malloc(n);
    CHECK(p != NULL);
    size_t usable = obm_usable_size(p);
    CHECKF(usable >= n, "usable_size(malloc(%zu)) = %zu", n, usable);
    int c = obm_size_class(n);
    if (c >= 0 && !debug)
      CHECKF(usable == obm_class_block_size(c), "usable_size(malloc(%zu)) = %zu, class %d = %zu", n,
             usable, c, obm_class_block_size(c));
    if (c < 0)
      CHECKF(usable < n + MiB + OBM_POOL_SIZE, "usable_size(malloc(%zu)) = %zu", n, usable);
    memset(p, 0x11, usable); /* usable means writable */
    obm_free(p);
    if (n < 2048)
      n += 1;
    else if (n < 3 * OBM_MEDIUM_MAX)
      n += n / 13 + 1;
    else
      n = n * 2 + 1;
  }
  /* Boundaries exactly. */
  const size_t edge[] = {511, 512, 513, 1023, 1024, 1025, 65535, 65536, 65537};
  for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
    void *p = obm_malloc(edge[i]);
    CHECK(p != NULL && obm_usable_size(p) >= edge[i]);
    obm_free(p);
  }
}

/* ---- ownership and foreign pointers ------------------------------------------------------- */

static int static_var;

static void test_owns(void) {
  int stack_var = 0;
  const size_t sizes[] = {1, 16, 100, 512, 1000, 40000, 65536, 100000, 3 * MiB};
  void *blocks[9];
  for (int i = 0; i < 9; i++) {
    size_t n = sizes[i];
    unsigned char *p = obm_malloc(n);
    CHECK(p != NULL);
    blocks[i] = p;
    CHECKF(obm_owns(p), "owns(malloc(%zu))", n);
    CHECKF(obm_owns(p + n - 1), "owns(last byte of malloc(%zu))", n);
    CHECKF(obm_owns(p + n / 2), "owns(middle of malloc(%zu))", n);
  }
  CHECK(!obm_owns(NULL));
  CHECK(!obm_owns(&stack_var));
  CHECK(!obm_owns(&static_var));
  CHECK(!obm_owns((void *)(uintptr_t)&test_owns));
  CHECK(!obm_owns((void *)(uintptr_t)1));
  CHECK(!obm_owns((void *)(uintptr_t)4096));
  CHECK(!obm_owns((void *)UINTPTR_MAX));
  CHECK(!obm_owns((void *)(UINTPTR_MAX - 4095)));
  CHECK(!obm_owns((void *)(uintptr_t)0x0000800000000000ull)); /* non-canonical */
  CHECK(!obm_owns((void *)(uintptr_t)0xffff800000000000ull)); /* kernel half */
  void *g_small = malloc(100);
  void *g_big = malloc(4 * MiB); /* glibc mmaps this one */
  CHECK(g_small != NULL && g_big != NULL);
  CHECK(!obm_owns(g_small));
  CHECK(!obm_owns(g_big));
  CHECK(!obm_owns((char *)g_big + 2 * MiB));
  free(g_small);
  free(g_big);
  for (int i = 0; i < 9; i++)
    obm_free(blocks[i]);
}

static void test_free_null(void) {
  static obm_stats_t a, b;
  obm_stats_get(&a);
  expect_no_reports();
  obm_free(NULL);
  obm_free(NULL);
  void *p = obm_realloc(NULL, 0);
  CHECK(p != NULL);
  obm_free(p);
  obm_stats_get(&b);
  CHECK(a.bytes_in_use == b.bytes_in_use);
  CHECK(a.large_blocks == b.large_blocks);
}

/* obm_free_or's other free: counts the calls and frees with libc. */
static struct {
  int n, seen_foreign;
  void *last;
} other_frees;
static void other_free(void *ctx, void *p) {
  CHECK(ctx == &other_frees);
  other_frees.n++;
  other_frees.last = p;
  if (p != NULL) other_frees.seen_foreign = 1;
  free(p);
}
static void test_foreign_pointers(void) {
  long stack_var[4] = {1, 2, 3, 4};
  unsigned char *g = malloc(256);
  CHECK(g != NULL);
  fill(g, 256, 3);

  expect_reports();
  obm_free(&stack_var[1]);
  CHECKF(err.ncalls == 1, "free(stack address) made %d reports", err.ncalls);
  CHECKF(err.code == OBM_ERR_FOREIGN_POINTER, "free(stack address) reported code %d",
         (int)err.code);
  CHECK(err.address == (void *)&stack_var[1]);
  CHECK(err.message[0] != '\0');
  CHECK(stack_var[0] == 1 && stack_var[1] == 2 && stack_var[2] == 3 && stack_var[3] == 4);

  expect_reports();
  obm_free(g);
  CHECKF(err.ncalls == 1 && err.code == OBM_ERR_FOREIGN_POINTER,
         "free(glibc block): %d reports, code %d", err.ncalls, (int)err.code);
  CHECK(err.address == (void *)g);
  CHECK(first_bad(g, 256, 3) == 256);

  expect_reports();
  obm_free(&static_var);
  CHECK(err.ncalls == 1 && err.code == OBM_ERR_FOREIGN_POINTER);

  /* obm_free_if_owned: a foreign pointer is left alone and not reported */
  expect_no_reports();
  CHECK(obm_free_if_owned(g) == 0 && obm_free_if_owned(&stack_var[0]) == 0);
  CHECK(obm_free_if_owned(NULL) == 0);
  CHECK(first_bad(g, 256, 3) == 256);
  /* Memory of another mapping in the same 1 MiB page-map chunk as a large block: the page
   * map points at the large segment there, and only its bounds tell the two apart. */
  unsigned char *big = obm_malloc(200 * KiB);
  CHECK(big != NULL);
  uintptr_t chunk = (uintptr_t)big & ~(uintptr_t)(MiB - 1);
  void *other = MAP_FAILED;
  for (uintptr_t a = chunk; a < chunk + MiB && other == MAP_FAILED; a += 4096) {
    if (obm_owns((void *)a)) continue;
    other = mmap((void *)a, 4096, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (other != MAP_FAILED && other != (void *)a) {
      munmap(other, 4096); /* an old kernel took the address as a hint */
      other = MAP_FAILED;
    }
  }
  if (other != MAP_FAILED) {
    unsigned char *q = (unsigned char *)other + 64;
    q[0] = 0x5A;
    CHECK(!obm_owns(q));
    CHECKF(obm_free_if_owned(q) == 0,
           "obm_free_if_owned(%p): another mapping beside large "
           "block %p",
           (void *)q, (void *)big);
    CHECK(q[0] == 0x5A);
    expect_reports();
    obm_free(q);
    CHECKF(err.ncalls == 1 && err.code == OBM_ERR_FOREIGN_POINTER,
           "free(another mapping beside a large block): %d reports, code %d", err.ncalls,
           (int)err.code);
    expect_no_reports();
    munmap(other, 4096);
  } else {
    printf("test_api: no free page beside the large block at %p; that case not run\n", (void *)big);
  }
  obm_free(big);
  for (size_t n = 8; n <= 4 * MiB; n *= 8) {
    uint64_t before = small_medium_in_use();
    void *mine = obm_malloc(n);
    CHECK(mine != NULL);
    CHECKF(obm_free_if_owned(mine) == 1, "obm_free_if_owned(obm_malloc(%zu)) != 1", n);
    CHECK(small_medium_in_use() == before);
    /* obm_free_or: obmem's blocks freed, anything else handed to the other free */
    mine = obm_malloc(n);
    CHECK(mine != NULL);
    other_frees.n = 0;
    obm_free_or(mine, other_free, &other_frees);
    CHECKF(other_frees.n == 0 && small_medium_in_use() == before, "obm_free_or(obm_malloc(%zu))",
           n);
  }
  int reports = err.ncalls; /* expect_no_reports: a report fails the test itself */
  void *foreign = malloc(40);
  obm_free_or(foreign, other_free, &other_frees);
  obm_free_or(NULL, other_free, &other_frees);
  CHECK(other_frees.n == 2 && other_frees.last == NULL && other_frees.seen_foreign);
  CHECK(err.ncalls == reports);

  expect_reports();
  size_t u = obm_usable_size(&stack_var[0]);
  CHECKF(u == 0, "usable_size(stack address) = %zu", u);
  CHECK(err.ncalls == 1 && err.code == OBM_ERR_FOREIGN_POINTER);

  expect_reports();
  errno = 0;
  void *q = obm_realloc(g, 1000);
  CHECKF(q == NULL && errno == EINVAL, "realloc(glibc block) = %p errno %d", q, errno);
  CHECK(err.ncalls == 1 && err.code == OBM_ERR_FOREIGN_POINTER);
  CHECK(first_bad(g, 256, 3) == 256);
  expect_no_reports();
  free(g);

  /* The allocator still works after the abandoned calls. */
  void *p = obm_malloc(50);
  CHECK(p != NULL);
  obm_free(p);
}

/* Interior pointers of live blocks: obmem memory, but never handed out. */
static void interior_child(void) {
  const size_t sizes[] = {64, 3000, 200 * KiB};
  const size_t offsets[] = {16, 512, 4096};
  for (int i = 0; i < 3; i++) {
    unsigned char *p = obm_malloc(sizes[i]);
    CHECK(p != NULL);
    fill(p, sizes[i], 40 + (uint64_t)i);
    unsigned char *inner = p + offsets[i];
    expect_reports();
    obm_free(inner);
    CHECKF(err.ncalls == 1, "free(p + %zu) of a live %zu-byte block made %d reports", offsets[i],
           sizes[i], err.ncalls);
    CHECKF(err.code == OBM_ERR_NOT_BLOCK_START || err.code == OBM_ERR_FOREIGN_POINTER,
           "free(p + %zu) of a %zu-byte block reported code %d", offsets[i], sizes[i],
           (int)err.code);
    CHECK(err.address == (void *)inner);
    expect_reports();
    void *q = obm_realloc(inner, 10);
    CHECK(q == NULL && err.ncalls == 1);
    expect_no_reports();
    /* The block is intact and two more blocks of its class do not overlap it. */
    CHECK(first_bad(p, sizes[i], 40 + (uint64_t)i) == sizes[i]);
    unsigned char *x = obm_malloc(sizes[i]);
    unsigned char *y = obm_malloc(sizes[i]);
    CHECK(x != NULL && y != NULL);
    CHECK(x + sizes[i] <= p || x >= p + sizes[i]);
    CHECK(y + sizes[i] <= p || y >= p + sizes[i]);
    memset(x, 0, sizes[i]);
    memset(y, 0, sizes[i]);
    CHECK(first_bad(p, sizes[i], 40 + (uint64_t)i) == sizes[i]);
    obm_free(x);
    obm_free(y);
    obm_free(p);
  }
}

static void test_interior_pointers(void) {
  run_in_child("free of interior pointers", interior_child);
}

/* A double free into a pool that the first free emptied: the class's current pool stays
 * listed when it empties (so that a malloc/free pair stays on the fast paths); the second
 * free must be reported and undone, not push the block twice and wrap the pool's count. */
static void test_double_free_empty_pool(void) {
  static const size_t sizes[] = {48, 496, 3000, 40000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t n = sizes[i];
    uint64_t before = small_medium_in_use();
    void *p = obm_malloc(n);
    CHECK(p != NULL);
    obm_free(p);
    expect_reports();
    obm_free(p);
    CHECKF(err.ncalls == 1 && err.code == OBM_ERR_DOUBLE_FREE,
           "double free of %zu B into an empty pool: %d reports, code %d", n, err.ncalls,
           (int)err.code);
    CHECK(err.address == p);
    expect_no_reports();
    void *x = obm_malloc(n);
    void *y = obm_malloc(n);
    CHECKF(x != NULL && y != NULL && x != y, "%zu B after a double free: %p and %p", n, x, y);
    obm_free(x);
    obm_free(y);
    CHECKF(small_medium_in_use() == before, "%zu B: %" PRIu64 " blocks in use, %" PRIu64 " before",
           n, small_medium_in_use(), before);
    CHECKF(obm_check() == 0, "%zu B: the checker found problems after a double free", n);
  }
}

/* ---- stats and trim ----------------------------------------------------------------------- */

static void test_stats_bookkeeping(void) {
  static obm_stats_t a, b, c;
  enum { N = 300 };
  void *blocks[N];
  int cls = obm_size_class(100);
  CHECK(cls == 6);
  bool debug = obm_debug_enabled() != 0; /* guard bytes may move requests up a class */
  obm_stats_get(&a);
  for (int i = 0; i < OBM_NCLASSES; i++)
    CHECKF(a.classes[i].block_size == obm_class_block_size(i), "stats class %d block_size %u", i,
           a.classes[i].block_size);
  for (int i = 0; i < N; i++) {
    blocks[i] = obm_malloc(100);
    CHECK(blocks[i] != NULL);
  }
  void *big = obm_malloc(3 * MiB);
  CHECK(big != NULL);
  obm_stats_get(&b);
  if (!debug) {
    CHECKF(b.classes[cls].blocks_in_use == a.classes[cls].blocks_in_use + N,
           "blocks_in_use %" PRIu64 " -> %" PRIu64, a.classes[cls].blocks_in_use,
           b.classes[cls].blocks_in_use);
    CHECK(b.classes[cls].nmalloc >= a.classes[cls].nmalloc + N);
    CHECK(b.classes[cls].npools >= 1);
  }
  CHECK(b.large_blocks == a.large_blocks + 1);
  CHECK(b.large_bytes >= a.large_bytes + 3 * MiB);
  CHECK(b.large_nmalloc == a.large_nmalloc + 1);
  CHECK(b.bytes_in_use >= a.bytes_in_use + N * 112 + 3 * MiB);
  CHECK(b.bytes_mapped >= b.bytes_in_use);
  CHECK(b.bytes_mapped_peak >= b.bytes_mapped);
  CHECK(b.arenas_current >= 1 && b.arenas_highwater >= b.arenas_current);
  CHECK(b.nheaps >= 1);
  for (int i = 0; i < N; i++)
    obm_free(blocks[i]);
  obm_free(big);
  obm_stats_get(&c);
  CHECK(c.classes[cls].blocks_in_use == a.classes[cls].blocks_in_use);
  CHECK(c.large_blocks == a.large_blocks);
  CHECK(c.bytes_in_use == a.bytes_in_use);

  /* The printers run and the JSON looks like one object. */
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  CHECK(f != NULL);
  obm_stats_print_json(f);
  fclose(f);
  CHECK(buf != NULL && len > 2);
  size_t s = 0, e = len;
  while (s < len && (buf[s] == ' ' || buf[s] == '\n'))
    s++;
  while (e > s && (buf[e - 1] == ' ' || buf[e - 1] == '\n'))
    e--;
  CHECKF(buf[s] == '{' && buf[e - 1] == '}', "JSON: %.60s", buf);
  long depth = 0, mindepth = 1;
  for (size_t i = s; i < e; i++) {
    depth += buf[i] == '{' || buf[i] == '[';
    depth -= buf[i] == '}' || buf[i] == ']';
    if (i + 1 < e && depth < mindepth) mindepth = depth;
  }
  CHECK(depth == 0 && mindepth >= 1);
  CHECK(strstr(buf, "arenas") != NULL);
  free(buf);
  buf = NULL;
  f = open_memstream(&buf, &len);
  CHECK(f != NULL);
  obm_stats_print(f);
  fclose(f);
  CHECK(buf != NULL && len > 100);
  free(buf);

  CHECK(strcmp(obm_option_name(OBM_OPTION_STATS), "OBMEM_STATS") == 0);
  CHECK(strcmp(obm_option_name(OBM_OPTION_DEBUG), "OBMEM_DEBUG") == 0);
  if (getenv("OBMEM_ARENA_SPARE") == NULL) CHECK(obm_option_get(OBM_OPTION_ARENA_SPARE) == 1);
}

static void test_rss_bytes(void) {
  /* 8 MiB of fresh pages touched show in the resident size (a mapping of its own: obmem's
   * caches may hold resident memory that a block would reuse); trimmed first, so that the
   * purge thread has nothing of the tests before to give back while we measure (a pass in
   * between lowered the reading below before + 4 MiB once in a loaded run) */
  obm_trim();
  size_t before = obm_rss_bytes();
  CHECKF(before > 0, "obm_rss_bytes() = %zu", before);
  enum { SIZE = 8 << 20 };
  unsigned char *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(p != MAP_FAILED);
  memset(p, 1, SIZE);
  size_t during = obm_rss_bytes();
  CHECKF(during >= before + SIZE / 2, "RSS %zu before, %zu with 8 MiB touched", before, during);
  munmap(p, SIZE);
}

static void test_trim(void) {
  static obm_stats_t st;
  enum { N = 4000 };
  void **blocks = malloc(N * sizeof(void *));
  CHECK(blocks != NULL);
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < N; i++) {
      size_t n = i % 10 == 0 ? 20000 : (i % 97 == 0 ? 300 * KiB : 200);
      blocks[i] = obm_malloc(n);
      CHECK(blocks[i] != NULL);
      memset(blocks[i], i, n < 4096 ? n : 4096);
    }
    for (int i = 0; i < N; i++)
      obm_free(blocks[i]);
    obm_trim();
    obm_stats_get(&st);
    CHECKF(st.arenas_spare == 0, "after obm_trim: %" PRIu64 " spare arenas", st.arenas_spare);
    CHECKF(st.large_cached_blocks == 0 && st.large_cached_bytes == 0,
           "after obm_trim: %" PRIu64 " cached large blocks", st.large_cached_blocks);
    CHECK(st.remote_frees_pending == 0);
    CHECK(st.arenas_reclaimed >= 1);
    CHECK(st.os_unmaps >= 1);
  }
  free(blocks);
  obm_trim();
  obm_trim(); /* idempotent */
  void *p = obm_malloc(10);
  CHECK(p != NULL);
  obm_free(p);
}

/* An emptied pool that is not its class's current one is kept (the pool cache): the class's
 * next malloc that finds no listed pool with a free block takes it back with its free list,
 * so the first block handed out is the last one freed there.  (Released and taken again, the
 * pool would be formatted afresh and hand out its first block.) */
static void test_pool_cache(void) {
  enum { SIZE = 2048, PER_POOL = 16384 / SIZE, N = 3 * PER_POOL };
  obm_trim(); /* no empty or cached pool of the class left by the tests before */
  char *b[N];
  for (int i = 0; i < N; i++) {
    b[i] = obm_malloc(SIZE);
    CHECK(b[i] != NULL);
  }
  for (int i = 0; i < N; i++)
    CHECKF(((uintptr_t)b[i] >> 14) == ((uintptr_t)b[i / PER_POOL * PER_POOL] >> 14) &&
               b[i] == b[i / PER_POOL * PER_POOL] + (size_t)(i % PER_POOL) * SIZE,
           "block %d of a fresh pool at %p is not at its place", i, (void *)b[i]);
  obm_free(b[0]); /* pool A gets a free block back and becomes the class's current pool */
  for (int i = PER_POOL; i < 2 * PER_POOL; i++)
    obm_free(b[i]);               /* pool B empties while A is current: cached */
  char *again = obm_malloc(SIZE); /* A's free block */
  CHECK(again == b[0]);
  char *from_cache = obm_malloc(SIZE); /* A is full: B comes back from the cache */
  /* OBMEM_PURGE_DELAY_MS=0 (purge at once) keeps nothing: B was released, and is taken and
   * formatted again */
  char *expected = obm_option_get(OBM_OPTION_PURGE_DELAY_MS) ? b[2 * PER_POOL - 1] : b[PER_POOL];
  CHECKF(from_cache == expected, "got %p, expected %p", (void *)from_cache, (void *)expected);
  obm_free(from_cache);
  for (int i = 0; i < N; i++)
    if (i < PER_POOL || i >= 2 * PER_POOL) obm_free(b[i]);
  CHECK(obm_check() == 0);
  obm_trim();
}

int main(int argc, char **argv) {
  check_seed_init("test_api", argc, argv, 1, 1);
  obm_set_error_handler(on_error, NULL);

  test_size_zero();
  test_huge_sizes();
  test_calloc_overflow();
  test_calloc_zeroes_reused();
  test_alignment();
  test_bad_alignment();
  test_realloc_tiers();
  test_realloc_edges();
  test_realloc_in_place();
  test_size_classes();
  test_usable_size();
  test_owns();
  test_free_null();
  test_foreign_pointers();
  test_interior_pointers();
  test_double_free_empty_pool();
  test_stats_bookkeeping();
  test_rss_bytes();
  test_trim();
  test_pool_cache();

  CHECKF(small_medium_in_use() == 0, "%" PRIu64 " blocks still in use at the end",
         small_medium_in_use());
  return check_done();
}
